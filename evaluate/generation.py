"""Batched greedy generation that stops early and gives results back in input order.

Prompts are sorted by length so each left-padded batch wastes little; a sequence stops at eos or, with
`stop_at_json`, as soon as it has closed a complete top-level JSON object; the batch ends when all
have stopped. Only generated tokens are decoded (never the prompt).
"""

import torch
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList


class JsonAnswerComplete(StoppingCriteria):
    """Per-sequence stop once the generated text has opened and closed a top-level JSON object.
    Tracks brace depth and string state incrementally, one new token per step."""

    def __init__(self, tokenizer, batch_size: int):
        self.tokenizer = tokenizer
        self.token_text: dict[int, str] = {}
        self.state = [[0, False, False, False] for _ in range(batch_size)]  # depth, in_string, escaped, opened
        self.done = [False] * batch_size

    def _text(self, token_id: int) -> str:
        if token_id not in self.token_text:
            self.token_text[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=True)
        return self.token_text[token_id]

    def __call__(self, input_ids, scores, **kwargs):
        for i, token_id in enumerate(input_ids[:, -1].tolist()):
            if self.done[i]:
                continue
            state = self.state[i]
            for ch in self._text(token_id):
                depth, in_string, escaped, opened = state
                if in_string:
                    state[2] = (not escaped) and ch == "\\"
                    if ch == '"' and not escaped:
                        state[1] = False
                elif ch == '"' and depth > 0:
                    state[1] = True
                elif ch == "{":
                    state[0], state[3] = depth + 1, True
                elif ch == "}" and depth > 0:
                    state[0] = depth - 1
                    if state[0] == 0 and opened:
                        self.done[i] = True
                        break
        return torch.tensor(self.done, device=input_ids.device)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with the prompts right-aligned, as decoder-only generation needs."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def _batches(order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[list[int]], *, batch_size: int = 8,
                     max_new_tokens: int = 256, stop_at_json: bool = True, on_batch=None,
                     progress: bool = True, sort_by_length: bool = True) -> list[dict]:
    """One result per prompt (same order): {"text", "stop_reason" (eos|json|length), "generated_tokens"}.
    `on_batch([(index, result), ...])` is called as each batch finishes (for progress files)."""
    device = model.device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if sort_by_length else list(range(len(prompts)))
    results: list[dict | None] = [None] * len(prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    bar = tqdm(total=len(prompts), desc="generating", unit="ex", disable=not progress)
    for batch in _batches(order, batch_size):
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], pad)
        width = input_ids.shape[1]
        json_stop = JsonAnswerComplete(tokenizer, len(batch)) if stop_at_json else None
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=False,
            max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
            stopping_criteria=StoppingCriteriaList([json_stop]) if json_stop else None)
        finished = []
        for row, i in enumerate(batch):
            generated = output[row, width:].tolist()
            if eos in generated:
                generated, reason = generated[:generated.index(eos)], "eos"
            elif json_stop is not None and json_stop.done[row]:
                reason = "json"
            else:
                reason = "length"
            while generated and generated[-1] == pad and pad != eos:
                generated.pop()
            results[i] = {"text": tokenizer.decode(generated, skip_special_tokens=True),
                          "stop_reason": reason, "generated_tokens": len(generated)}
            finished.append((i, results[i]))
        if on_batch:
            on_batch(finished)
        bar.update(len(batch))
    bar.close()
    return results
