"""Evaluation inputs: raw task rows (CSV/JSONL with the task's input fields and an optional label) or
SFT-format rows (prompt/completion, messages, text), turned into (id, prompt ids, true label).

Prompts come from `prompts.encode_prompt` (raw rows) or from the SFT tokenization (the prompt part of
an SFT example), so they are exactly what training fed the model before the answer. Without a
tokenizer (an API backend) each item carries the chat messages instead, for the server to render.
"""

from dataclasses import dataclass, field

from nli_finetune.data_io import DataError, check_unique_ids, is_blank, read_records, row_id, row_label, row_text
from nli_finetune.extraction import extract_label
from nli_finetune.sft_formats import (
    CHAT_FORMATS,
    chat_messages,
    detect_format,
    example_segments,
    question_answer_messages,
)
from prompts import Task, encode_prompt


@dataclass
class EvalItem:
    id: str
    prompt_ids: list[int]
    true_label: object = None
    inputs: dict = field(default_factory=dict)
    trimmed: int = 0  # prompt tokens cut from the start (--max_prompt_tokens)
    messages: list = field(default_factory=list)  # the prompt as chat messages (API backends)


def _reference_label(reference: str, task: Task, where: str, field: str):
    """The label a chat row's reference answer gives; an answer with no valid label is an error (the row
    would otherwise count as unlabelled without a word)."""
    if task.free_text:
        return reference
    label = extract_label(reference, task)[0]
    if label is None:
        label = task.normalize_label(reference.strip())  # a bare label as the whole answer
    if label is None:
        raise DataError(f"{where}: field '{field}': the reference answer {reference!r} holds no valid "
                        f"'{task.label_field}' (one of {list(task.labels)})"[:400])
    return label


def _reference_field(record: dict, fmt: str, turns: list | None = None) -> str:
    if fmt == "messages":
        return f"messages[{next(i for i, t in enumerate(turns) if t['role'] == 'assistant')}].content"
    return {"prompt_completion": "completion", "prompt_response": "response", "question_answer": "answer"}.get(fmt, fmt)


def _sft_prompt_and_label(record: dict, tokenizer, task: Task, where: str):
    """The tokens before the first trained segment, and the label its reference answer gives."""
    fmt = detect_format(record, task)
    segments = example_segments(tokenizer, record, fmt, task, where)
    first_trained = next(i for i, (_, trained) in enumerate(segments) if trained)
    prompt = [t for ids, _ in segments[:first_trained] for t in ids]
    reference = tokenizer.decode(segments[first_trained][0], skip_special_tokens=True)
    turns = chat_messages(record["messages"], where) if fmt == "messages" else None
    return prompt, _reference_label(reference, task, where, _reference_field(record, fmt, turns))


def _sft_messages_and_label(record: dict, task: Task, where: str):
    """The chat messages before the first answer of a chat-format SFT row, and its reference label."""
    fmt = detect_format(record, task)
    if fmt == "messages":
        turns = chat_messages(record["messages"], where)
    elif fmt == "question_answer":
        turns = question_answer_messages(record, where)
    elif fmt in ("prompt_completion", "prompt_response") and isinstance(record["prompt"], list):
        completion = record.get("completion")
        turns = chat_messages(record["prompt"] + (completion if isinstance(completion, list) else
                                                  [{"role": "assistant", "content": completion}]), where, "prompt")
    elif fmt in ("prompt_completion", "prompt_response"):
        answer = record.get("completion", record.get("response"))
        turns = chat_messages([{"role": "user", "content": record["prompt"]},
                               {"role": "assistant", "content": answer}], where, fmt.split("_")[1])
    else:
        raise DataError(f"{where}: an API backend needs raw rows or chat-format rows (messages, prompt/completion, "
                        "prompt/response), not the legacy text format")
    first_answer = next((i for i, t in enumerate(turns) if t["role"] == "assistant"), None)
    if not first_answer:
        raise DataError(f"{where}: no prompt before an assistant answer")
    field = f"messages[{first_answer}].content" if fmt == "messages" else _reference_field(record, fmt)
    return turns[:first_answer], _reference_label(turns[first_answer]["content"], task, where, field)


def load_eval_items(path, tokenizer, task: Task, limit: int | None = None) -> tuple[list[EvalItem], bool]:
    """(items, has_labels). Raw rows need the task's input fields; a label, when present, must be in
    the task's label set. Ids come from an `id` column, else the row number; duplicates are errors."""
    records = read_records(path)
    if limit:
        records = records[:limit]
    if not records:
        raise DataError(f"{path}: no rows")
    check_unique_ids((row_id(record), f"{path}: row {record.get('_line', '?')}") for record in records)
    items = []
    for record in records:
        where, item_id = f"{path}: row {record.get('_line', '?')}", row_id(record)
        has_inputs = bool(task.input_fields) and all(record.get(name) not in (None, "") for name in task.input_fields)
        if not has_inputs and detect_format(record, task) in CHAT_FORMATS:
            if tokenizer is None:
                messages, label = _sft_messages_and_label(record, task, where)
                items.append(EvalItem(item_id, [], label, {}, messages=messages))
            else:
                prompt, label = _sft_prompt_and_label(record, tokenizer, task, where)
                items.append(EvalItem(item_id, prompt, label, {}))
            continue
        if not task.input_fields:
            raise DataError(f"{where}: the {task.name} task reads prompt/completion, prompt/response, messages, "
                            "question/answer or text rows; this row is none of them")
        inputs = {name: row_text(record, name, where) for name in task.input_fields}
        label_field = task.true_label_field if task.true_label_field in record else "true_label"
        label = None if is_blank(record.get(label_field)) else row_label(record, label_field, task, where)
        messages = task.messages(record)
        prompt = encode_prompt(tokenizer, messages) if tokenizer is not None else []
        items.append(EvalItem(item_id, prompt, label, inputs, messages=messages))
    labelled = [item.true_label is not None for item in items]
    if any(labelled) and not all(labelled):
        missing = next(i for i, has in enumerate(labelled) if not has)
        raise DataError(f"{path}: row {records[missing].get('_line', '?')}: field '{task.true_label_field}' is "
                        "missing (label every row or none)")
    return items, all(labelled)
