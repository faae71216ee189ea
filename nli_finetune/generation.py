"""Batched greedy generation that stops early and gives results back in input order.

Prompts are sorted by length so each left-padded batch wastes little; a sequence stops at eos or, with
`stop_at_json`, as soon as it has closed a complete top-level JSON object; the batch ends when all
have stopped. Only generated tokens are decoded (never the prompt). Batches go through
`greedy_decode.py` (same tokens, faster) unless the model needs transformers' `generate`
(`decoder="generate"` forces it).
"""

import sys

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from nli_finetune.cli import progress as progress_bar
from nli_finetune.extraction import JsonScanner
from nli_finetune.greedy_decode import greedy_decode, left_pad, unsupported_reason

DECODERS = ("auto", "generate")


class JsonCloseTracker:
    """Per-row JSON state of the generated text, fed one token at a time through extraction's scanner;
    `feed` returns True once the row has opened and closed a top-level JSON object (what
    `extraction.json_close_index` finds in the whole text)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.token_text: dict[int, str] = {}
        self.state: dict[int, list] = {}  # row -> [scanner, depth], from the row's first "{"
        self.done: set[int] = set()

    def _text(self, token_id: int) -> str:
        if token_id not in self.token_text:
            self.token_text[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=True)
        return self.token_text[token_id]

    def feed(self, row: int, token_id: int) -> bool:
        if row in self.done:
            return True
        text, state = self._text(token_id), self.state.get(row)
        if state is None:  # nothing before the first "{" counts, not even a quote
            if "{" not in text:
                return False
            text, state = text[text.index("{"):], self.state.setdefault(row, [JsonScanner(), 0])
        for _, ch in state[0].scan(text):
            state[1] += {"{": 1, "}": -1}.get(ch, 0)
            if state[1] == 0:
                self.done.add(row)
                return True
        return False


class JsonAnswerComplete(StoppingCriteria):
    """The tracker as a `generate` stopping criterion (one per batch)."""

    def __init__(self, tokenizer, batch_size: int):
        self.tracker = JsonCloseTracker(tokenizer)
        self.done = [False] * batch_size

    def __call__(self, input_ids, scores, **kwargs):
        for row, token_id in enumerate(input_ids[:, -1].tolist()):
            self.done[row] = self.done[row] or self.tracker.feed(row, token_id)
        return torch.tensor(self.done, device=input_ids.device)


def answer_record(tokenizer, generated: list[int], stop_reason: str) -> dict:
    """One prompt's result, the same from every backend: only the generated tokens are decoded."""
    return {"text": tokenizer.decode(generated, skip_special_tokens=True), "stop_reason": stop_reason,
            "generated_tokens": len(generated)}


def generate_batch(model, prompts: list[list[int]], *, eos_id: int, pad_id: int, max_new_tokens: int,
                   json_tokenizer=None) -> list[tuple[list[int], str]]:
    """What `greedy_decode` returns, through transformers' `generate`; `json_tokenizer` turns on the
    stop at a complete JSON answer."""
    input_ids, attention_mask = left_pad(prompts, pad_id)
    json_stop = JsonAnswerComplete(json_tokenizer, len(prompts)) if json_tokenizer is not None else None
    output = model.generate(
        input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device), do_sample=False,
        max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
        stopping_criteria=StoppingCriteriaList([json_stop]) if json_stop else None)
    results = []
    for row in range(len(prompts)):
        generated = output[row, input_ids.shape[1]:].tolist()
        if eos_id in generated:
            generated, reason = generated[:generated.index(eos_id)], "eos"
        elif json_stop is not None and json_stop.done[row]:
            reason = "json"
            while generated and generated[-1] == pad_id:  # `generate` pads rows that stopped early
                generated.pop()
        else:
            reason = "length"
        results.append((generated, reason))
    return results


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[list[int]], *, batch_size: int = 8,
                     max_new_tokens: int = 256, stop_at_json: bool = True, on_batch=None,
                     progress: bool = True, sort_by_length: bool = True, decoder: str = "auto") -> list[dict]:
    """One result per prompt (same order): {"text", "stop_reason" (eos|json|length), "generated_tokens"}.
    `on_batch([(index, result), ...])` is called as each batch finishes (for progress files)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got '{decoder}'")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if sort_by_length else list(range(len(prompts)))
    results: list[dict | None] = [None] * len(prompts)
    bar = progress_bar(total=len(prompts), desc="generating", unit="ex", disable=not progress)
    told = False
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        batch_prompts = [prompts[i] for i in batch]
        reason = "forced" if decoder == "generate" else unsupported_reason(
            model, max(map(len, batch_prompts)), max_new_tokens)
        if reason is None:
            decoded = greedy_decode(model, batch_prompts, eos_id=tokenizer.eos_token_id,
                                    pad_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
                                    json_tracker=JsonCloseTracker(tokenizer) if stop_at_json else None)
        else:
            if reason != "forced" and not told:
                print(f"generation: using transformers' generate ({reason})", file=sys.stderr)
                told = True
            decoded = generate_batch(model, batch_prompts, eos_id=tokenizer.eos_token_id,
                                     pad_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
                                     json_tokenizer=tokenizer if stop_at_json else None)
        finished = []
        for i, (generated, stop_reason) in zip(batch, decoded):
            results[i] = answer_record(tokenizer, generated, stop_reason)
            finished.append((i, results[i]))
        if on_batch:
            on_batch(finished)
        bar.update(len(batch))
    bar.close()
    return results
