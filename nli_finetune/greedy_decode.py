"""Greedy batch decoding that gives the tokens `model.generate(do_sample=False)` gives, faster.

Used by `generation.py` (so by sample_model.py and training-time generation eval) whenever
`unsupported_reason` finds nothing in the way; everything else goes through `generate`. Three things
`generate` does that cost a small model most of its time on a CPU (bench/inference_throughput.py):
- `DynamicCache` concatenates every layer's keys and values again at every step, which copies the
  whole cache once per token. `InPlaceKV` writes each new position into spare capacity instead.
- A batch keeps computing rows that have already stopped. Here they leave the batch at once: the
  last rows still generating move into their places, so the batch stays a prefix of the buffers.
- The whole batch is prefilled in one forward, whose activations outgrow the CPU cache. Here a
  few rows at a time are prefilled and their keys and values copied into the batch cache.
tests/test_generation.py checks that the tokens equal `generate`'s on each tiny architecture.
"""

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

PREFILL_TOKENS = 2048   # tokens per prefill forward: rows = this // prompt width (at least one row)
GROW = 64               # positions of spare capacity added when the cache is full

# generation_config fields that change greedy logits (with their neutral values); any other value
# sends the batch through `generate`, which applies them.
LOGITS_SETTINGS = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                   "min_length": 0, "min_new_tokens": 0, "bad_words_ids": None, "suppress_tokens": None,
                   "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                   "sequence_bias": None, "exponential_decay_length_penalty": None, "guidance_scale": None,
                   "watermarking_config": None, "renormalize_logits": False, "remove_invalid_values": False}


class InPlaceKV(DynamicLayer):
    """One layer's keys and values in preallocated [rows, heads, capacity, dim] buffers; `keys` and
    `values` are views of the filled part, which is what attention reads."""

    def fill(self, rows: int, width: int, like_keys: torch.Tensor, like_values: torch.Tensor):
        """Zeroed buffers for `rows` prompts left-padded to `width` (pad positions are masked out)."""
        self.lazy_initialization(like_keys, like_values)
        heads = like_keys.shape[1]
        self._k = like_keys.new_zeros(rows, heads, width + GROW, like_keys.shape[-1])
        self._v = like_values.new_zeros(rows, heads, width + GROW, like_values.shape[-1])
        self._set_length(width)

    def put_rows(self, start: int, keys: torch.Tensor, values: torch.Tensor):
        """Prefilled rows [start, start + n), right-aligned like their left-padded prompts."""
        width = keys.shape[-2]
        self._k[start:start + keys.shape[0], :, self._length - width:self._length] = keys
        self._v[start:start + keys.shape[0], :, self._length - width:self._length] = values

    def _set_length(self, length: int):
        self._length = length
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

    def _grow(self, capacity: int):
        keys, values = self._k[:, :, :self._length], self._v[:, :, :self._length]
        self._k = keys.new_empty(keys.shape[0], keys.shape[1], capacity, keys.shape[-1])
        self._v = values.new_empty(values.shape[0], values.shape[1], capacity, values.shape[-1])
        self._k[:, :, :self._length], self._v[:, :, :self._length] = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._grow(end + GROW)
        self._k[:, :, self._length:end] = key_states
        self._v[:, :, self._length:end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def pack_rows(self, holes: torch.Tensor, movers: torch.Tensor, count: int) -> None:
        """Keep `count` rows: each row of `movers` (all >= count) is copied into the stopped row of
        `holes` (all < count), then the buffers are cut to their first `count` rows (a view, no copy)."""
        if len(holes):
            self._k[holes, :, :self._length] = self._k[movers, :, :self._length]
            self._v[holes, :, :self._length] = self._v[movers, :, :self._length]
        self._k, self._v = self._k[:count], self._v[:count]
        self._set_length(self._length)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with the prompts right-aligned, as decoder-only generation needs."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def unsupported_reason(model, width: int, max_new_tokens: int) -> str | None:
    """Why this model can't be decoded here (so `generate` must), or None."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    generation_config = model.generation_config
    for name, neutral in LOGITS_SETTINGS.items():
        if getattr(generation_config, name, None) not in (None, neutral):
            return f"generation_config.{name} = {getattr(generation_config, name)!r}"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(type(base).forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    for layer in DynamicCache(config=config).layers:
        if type(layer) is DynamicSlidingWindowLayer:
            if layer.sliding_window <= width + max_new_tokens:
                return f"sliding window {layer.sliding_window} <= prompt + new tokens {width + max_new_tokens}"
        elif type(layer) is not DynamicLayer:
            return f"cache layer {type(layer).__name__}"
    return None


def _prefill(model, prompts: list[list[int]], pad_id: int, cache: DynamicCache) -> torch.Tensor:
    """Fill `cache` with the prompts' keys and values a few rows at a time; the first new token of each."""
    device = model.device
    width = max(map(len, prompts))
    rows_per_forward = max(1, PREFILL_TOKENS // width)
    first_tokens = []
    for start in range(0, len(prompts), rows_per_forward):
        input_ids, mask = left_pad(prompts[start:start + rows_per_forward], pad_id)
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)  # as `generate` numbers left-padded rows
        part = DynamicCache(config=model.config)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), past_key_values=part, use_cache=True,
                       logits_to_keep=1).logits
        first_tokens.append(logits[:, -1].float().argmax(-1))
        for layer, filled in zip(cache.layers, part.layers):
            if start == 0:
                layer.fill(len(prompts), width, filled.keys, filled.values)
            layer.put_rows(start, filled.keys, filled.values)
    return torch.cat(first_tokens)


@torch.inference_mode()
def greedy_decode(model, prompts: list[list[int]], *, eos_id: int, pad_id: int, max_new_tokens: int,
                  json_tracker=None) -> list[tuple[list[int], str]]:
    """(generated ids without the eos, stop reason eos|json|length) per prompt, in order.
    `json_tracker.feed(row, token_id)` returns True once that row has closed a JSON answer."""
    device = model.device
    cache = DynamicCache(config=model.config)
    cache.layers = [InPlaceKV() for _ in cache.layers]
    mask = left_pad(prompts, pad_id)[1].to(device)
    positions = mask.sum(-1) - 1
    next_tokens = _prefill(model, prompts, pad_id, cache)
    generated: list[list[int]] = [[] for _ in prompts]
    reasons = ["length"] * len(prompts)
    rows: list[int | None] = list(range(len(prompts)))  # batch row -> prompt index, None once stopped
    for step in range(1, max_new_tokens + 1):
        for row, token in enumerate(next_tokens.tolist()):
            index = rows[row]
            if index is None:
                continue
            if token == eos_id:
                rows[row], reasons[index] = None, "eos"
                continue
            generated[index].append(token)
            if json_tracker is not None and json_tracker.feed(index, token):
                rows[row], reasons[index] = None, "json"
        live = [row for row, index in enumerate(rows) if index is not None]
        if not live or step == max_new_tokens:
            break
        if len(live) < len(rows):
            count = len(live)
            holes = [row for row in range(count) if rows[row] is None]
            movers = [row for row in live if row >= count]
            order = list(range(count))
            for hole, mover in zip(holes, movers):
                order[hole] = mover
            for layer in cache.layers:
                layer.pack_rows(torch.tensor(holes, device=device), torch.tensor(movers, device=device), count)
            order = torch.tensor(order, device=device)
            mask, positions, next_tokens = mask[order], positions[order], next_tokens[order]
            rows = [rows[row] for row in order.tolist()]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        positions = positions + 1
        logits = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                       past_key_values=cache, use_cache=True).logits
        next_tokens = logits[:, -1].float().argmax(-1)
    return list(zip(generated, reasons))
