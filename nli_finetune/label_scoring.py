"""Labels scored, not parsed: the probability of each label's answer given the prompt.

    from nli_finetune.label_scoring import scored_answers
    results = scored_answers(model, tokenizer, prompts, task)   # task: a prompts.Task; [{"label_probs": {"0": p, ...}}]

A label's answer is the text the task's answer format renders for it (`Task.answer`, e.g.
`{"predicted_label": 1}`), tokenized as training tokenizes answers (no special tokens; eos not scored).
log p(answer | prompt) is summed over its tokens and the labels' probabilities are normalised to sum
to 1, so the start the answers share (`{"predicted_label": `) cancels out. The prediction is the most
probable label: no parse failure, no guess.

One forward pass per example: its row is the prompt, the start every label's answer shares, then each
label's own rest in turn; a custom attention mask lets each label's rest see the prompt, the shared
start and itself only, and position ids number it as if it followed the shared start alone. So every
label's answer is scored exactly as if it had been run on its own, for the cost of one row. A batch's
rows go through the model a few at a time, shortest together (SCORE_TOKENS): the [rows, 1, width, width]
mask and eager attention's scores stay in the CPU cache, which made scoring ~1.6x faster (docs/inference.md).

Chain-of-thought tasks (a `reasoning_field`): the model first generates its answer (generation.py, the
same greedy decoding as `--scoring generate`), its reasoning is read from it, and the labels are scored
as the rest of the answer after that reasoning (`Task.answer(label, reasoning)`).

A prompt whose longest label answer would run past the model's context (`max_position_embeddings`) is not
scored: probabilities from positions the model was never trained on would read as a confident prediction.
Its result has no `label_probs`, stop_reason "length" (it ran out of room, as a generated answer cut short
does) and `over_context` saying why; results.score_record makes it an answer without a label.
"""

import torch

from nli_finetune.cli import progress as progress_bar
from nli_finetune.extraction import iter_json_objects
from nli_finetune.generation import generate_answers
from nli_finetune.results import best_label
from prompts import Task

SCORINGS = ("generate", "logprob")
SCORE_TOKENS = 512  # tokens per forward (forward_chunks); chosen by bench/label_scoring_speed.py --score-tokens


def answer_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def label_answers(tokenizer, task: Task, reasoning: str | None = None) -> list[list[int]]:
    """Every label's answer as tokens, in label order (after `reasoning` for chain-of-thought tasks)."""
    return [answer_ids(tokenizer, task.answer(label, reasoning)) for label in task.labels]


def over_context(prompt: list[int], answers: list[list[int]], context_length: int | None) -> str | None:
    """Why the labels can't be scored after `prompt` (its longest answer runs past the context), or None."""
    needed = len(prompt) + max(map(len, answers))
    if not context_length or needed <= context_length:
        return None
    return (f"prompt of {len(prompt)} tokens + answer of {needed - len(prompt)} run past the model's context of "
            f"{context_length} tokens: not scored")


def not_scored(reason: str, generated: dict | None = None) -> dict:
    """The result of a prompt that was not scored (over_context): a generated answer keeps its text."""
    generated = generated or {"text": "", "generated_tokens": 0}
    return {"text": generated["text"], "stop_reason": "length", "generated_tokens": generated["generated_tokens"],
            "over_context": reason}


def reasoning_of(text: str, task: Task) -> str:
    """The reasoning a generated chain-of-thought answer wrote: its JSON reasoning field, else the whole text."""
    field = task.reasoning_field
    for obj in iter_json_objects(text):
        if isinstance(obj.get(field), str):
            return obj[field]
    return text.strip()


def shared_length(answers: list[list[int]]) -> int:
    """How many leading tokens every label's answer shares."""
    shared = 0
    while all(len(a) > shared for a in answers) and len({a[shared] for a in answers}) == 1:
        shared += 1
    return shared


def pack_example(prompt: list[int], answers: list[list[int]]) -> tuple[list[int], list[int], list[list[int]], list]:
    """One row holding every label's answer: prompt + shared start + each label's own rest in turn.
    Returns (tokens, position ids, attended, lookups): a token attends to the prompt, the shared start
    and the earlier tokens of its own label's rest (`attended[i]` lists them), and numbers its position
    as if its label's answer followed the prompt alone; lookups[label] holds (position whose logits
    predict, token) for every token of that label's own rest (the shared start cancels out, so a long
    generated reasoning costs no logits)."""
    shared = shared_length(answers)
    trunk = prompt + answers[0][:shared]
    tokens, positions = list(trunk), list(range(len(trunk)))
    attended = [list(range(i + 1)) for i in range(len(trunk))]
    lookups = []
    for answer in answers:
        lookup = []  # the shared start is left out: the same for every label, it cancels when normalised
        previous = len(trunk) - 1
        own = []
        for j, token in enumerate(answer[shared:]):
            lookup.append((previous, token))
            previous = len(tokens)
            own.append(previous)
            tokens.append(token)
            positions.append(len(trunk) + j)
            attended.append(list(range(len(trunk))) + own)
        lookups.append(lookup)
    return tokens, positions, attended, lookups


def forward_log_probs(model, packed: list[tuple], pad_id: int, keep: int) -> torch.Tensor:
    """Log-softmax of the last `keep` positions of each packed row, left-padded: [rows, keep, vocab].
    The attention mask is a custom 4D additive one (0 = attend), which transformers passes to the
    attention as it is."""
    width = max(len(tokens) for tokens, *_ in packed)
    dtype = model.get_input_embeddings().weight.dtype  # the attention's dtype (LoRA weights may be float32)
    input_ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    position_ids = torch.ones((len(packed), width), dtype=torch.long)
    allowed = torch.zeros((len(packed), 1, width, width), dtype=torch.bool)
    for row, (tokens, positions, attended, _) in enumerate(packed):
        pad = width - len(tokens)
        input_ids[row, pad:] = torch.tensor(tokens)
        position_ids[row, pad:] = torch.tensor(positions)
        for i, keys in enumerate(attended):
            allowed[row, 0, pad + i, [pad + k for k in keys]] = True
        allowed[row, 0, :pad, :pad] = torch.eye(pad, dtype=torch.bool)  # padding attends to itself: no empty row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    inputs = {"input_ids": input_ids.to(model.device), "attention_mask": mask.to(model.device),
              "position_ids": position_ids.to(model.device), "use_cache": False}
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model whose forward has no logits_to_keep: all positions
        logits = model(**inputs).logits
    return torch.log_softmax(logits[:, -keep:].float(), dim=-1)


@torch.inference_mode()
def score_labels(model, tokenizer, prompts: list[list[int]], task: Task, reasonings: list | None = None) -> list[dict]:
    """{label: probability} (labels as strings, probabilities summing to 1) for each prompt, a forward
    pass per few rows (forward_chunks); `reasonings` (chain-of-thought tasks) is the reasoning each answer starts with."""
    packed = []
    for index, prompt in enumerate(prompts):
        reasoning = reasonings[index] if reasonings is not None else None
        packed.append(pack_example(prompt, label_answers(tokenizer, task, reasoning)))
    results: list[dict | None] = [None] * len(packed)
    for chunk in forward_chunks([len(tokens) for tokens, *_ in packed], SCORE_TOKENS):
        for index, probs in zip(chunk, label_probs_of(model, [packed[i] for i in chunk], tokenizer.pad_token_id)):
            results[index] = {str(label): p for label, p in zip(task.labels, probs)}
    return results


def forward_chunks(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices grouped shortest first, each group's rows x its widest row <= budget (at least one row)."""
    chunks: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if chunks and (len(chunks[-1]) + 1) * lengths[index] <= budget:
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks


def label_probs_of(model, packed: list[tuple], pad_id: int) -> list[list[float]]:
    """Each packed row's label probabilities (in its lookups' order), from one forward pass."""
    keep = max(len(tokens) - position for tokens, _, _, lookups in packed for label in lookups
               for position, _ in label)
    log_probs = forward_log_probs(model, packed, pad_id, keep)
    probs = []
    for row, (tokens, _, _, lookups) in enumerate(packed):
        totals = torch.stack([sum(log_probs[row, keep - (len(tokens) - position), token] for position, token in label)
                              for label in lookups])
        probs.append(torch.softmax(totals, dim=0).tolist())
    return probs


def scored_answers(model, tokenizer, prompts: list[list[int]], task: Task, *, batch_size: int = 8,
                   max_new_tokens: int = 512, decoder: str = "auto", on_batch=None, progress: bool = True) -> list[dict]:
    """One result per prompt (same order), the records `generation.generate_answers` gives plus
    `label_probs`. Label-only tasks: "text" is the most probable label's answer, "stop_reason" "scored",
    no generated tokens. Chain-of-thought tasks: the generated answer, its labels scored after its
    reasoning. A prompt whose answer runs past the model's context: not scored (not_scored).
    `on_batch([(index, result), ...])` is called as each batch finishes."""
    if task.free_text:
        raise ValueError(f"the {task.name} task has no labels to score")
    results: list[dict | None] = [None] * len(prompts)
    context_length = getattr(model.config, "max_position_embeddings", None)

    def score_fitting(indexes: list[int], reasonings: dict | None, generated: dict) -> list[tuple[int, dict]]:
        """(index, result) for each of `indexes`: scored where prompt + answer fit the context, else not_scored."""
        reasons = {i: over_context(prompts[i], label_answers(tokenizer, task, reasonings[i] if reasonings else None),
                                   context_length) for i in indexes}
        fits = [i for i in indexes if reasons[i] is None]
        probs = dict(zip(fits, score_labels(model, tokenizer, [prompts[i] for i in fits], task,
                                            reasonings=[reasonings[i] for i in fits] if reasonings else None)))

        def result(i: int) -> dict:
            if reasons[i]:
                return not_scored(reasons[i], generated.get(i))
            if i in generated:  # chain of thought: the generated answer, its labels scored after its reasoning
                return generated[i] | {"label_probs": probs[i]}
            return label_only_result(task, probs[i])
        return [(i, result(i)) for i in indexes]

    def finish(finished: list[tuple[int, dict]]):
        for index, result in finished:
            results[index] = result
        if on_batch:
            on_batch(finished)

    if task.reasoning_field is None:
        bar = progress_bar(total=len(prompts), desc="scoring", unit="ex", disable=not progress)
        for start in range(0, len(prompts), batch_size):
            batch = list(range(start, min(start + batch_size, len(prompts))))
            finish(score_fitting(batch, None, {}))
            bar.update(len(batch))
        bar.close()
        return results

    def score_batch(generated: list[tuple[int, dict]]):
        reasonings = {i: reasoning_of(result["text"], task) for i, result in generated}
        finish(score_fitting([i for i, _ in generated], reasonings, dict(generated)))

    generate_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     stop_at_json=True, on_batch=score_batch, progress=progress, sort_by_length=False, decoder=decoder)
    return results


def label_only_result(task: Task, label_probs: dict) -> dict:
    return {"text": task.answer(best_label(task, label_probs)), "stop_reason": "scored", "generated_tokens": 0, "label_probs": label_probs}
