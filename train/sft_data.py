"""SFT examples: read any supported JSONL format (sft_formats.py), tokenize with the answer-only loss
mask, batch. Formats are detected per record, or forced with `data_format`.

Every completion ends with the tokenizer's eos and carries labels; every prompt token is -100.
Examples longer than `max_seq_length` are never cut inside the answer: dropped, or with
`overlong="trim_prompt"` the prompt loses its start (the instruction at its end is kept).
"""

from dataclasses import dataclass

import torch

from nli_finetune.data_io import DataError, read_records
from nli_finetune.sft_formats import detect_format, example_segments
from prompts import Task

IGNORE_INDEX = -100


def tokenize_example(tokenizer, record: dict, fmt: str, task: Task, max_len: int, overlong: str,
                     where: str) -> dict | None:
    """{"input_ids", "labels"} or None when the example is too long to keep whole."""
    segments = example_segments(tokenizer, record, fmt, task, where)
    input_ids = [t for ids, _ in segments for t in ids]
    labels = [t if trained else IGNORE_INDEX for ids, trained in segments for t in ids]
    excess = len(input_ids) - max_len
    if excess > 0:
        if overlong != "trim_prompt" or len(segments) != 2:
            return None
        prompt_ids, answer = segments[0][0], segments[1][0]
        keep_head = 1 if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else 0
        if len(prompt_ids) - keep_head - excess < 8:  # nothing meaningful left of the prompt
            return None
        prompt_ids = prompt_ids[:keep_head] + prompt_ids[keep_head + excess:]
        input_ids = prompt_ids + answer
        labels = [IGNORE_INDEX] * len(prompt_ids) + answer
    return {"input_ids": input_ids, "labels": labels}


def record_unit(path) -> str:
    """What `_line` counts in this file: CSV data rows, JSON records, JSONL lines."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    return {"csv": "row", "json": "record"}.get(suffix, "line")


@dataclass
class LoadReport:
    path: str
    read: int = 0
    kept: int = 0
    dropped_too_long: int = 0
    skipped_invalid: int = 0
    first_invalid: str = ""
    trimmed: int = 0
    format: str = ""
    longest: int = 0         # tokens of the longest kept example
    longest_answer: int = 0  # columns of the widest answer window (where the answer-window collator computes logits)
    estimated: bool = False  # lengths estimated without a tokenizer (the preflight's fallback)

    def line(self) -> str:
        line = (f"{self.path}: {self.kept}/{self.read} examples kept ({self.format}); "
                f"{self.dropped_too_long} dropped as longer than max_seq_length")
        if self.skipped_invalid:
            line += f"; {self.skipped_invalid} invalid skipped (first: {self.first_invalid})"
        return line


def load_sft_examples(path, tokenizer, *, task: Task, data_format="auto", max_seq_length=512,
                      overlong="drop", limit=None, invalid="error") -> tuple[list[dict], LoadReport]:
    """(examples, report). An invalid example is an error naming its file, line and field, or with
    invalid="skip" is skipped and counted. `task` reads raw rows (the `record` format)."""
    records = read_records(path)
    if limit:
        records = records[:limit]
    if not records:
        raise DataError(f"{path}: no examples")
    report = LoadReport(path=str(path), read=len(records))
    examples = []
    for record in records:
        where = f"{path}: {record_unit(path)} {record['_line']}"
        fmt = data_format if data_format != "auto" else detect_format(record, task)
        if fmt is None:
            raise DataError(f"{where}: unrecognised example; expected fields prompt/completion, prompt/response, "
                            f"messages, text, or the {task.name} task's raw fields "
                            f"({', '.join(task.input_fields) or 'none'} and a label)")
        report.format = report.format if report.format in ("", fmt) else "mixed"
        report.format = report.format or fmt
        try:
            example = tokenize_example(tokenizer, record, fmt, task, max_seq_length, overlong, where)
            if example is not None and not any(label != IGNORE_INDEX for label in example["labels"]):
                raise DataError(f"{where}: no answer tokens to train on")
        except DataError as exc:
            if invalid != "skip":
                raise
            report.skipped_invalid += 1
            report.first_invalid = report.first_invalid or str(exc)
            continue
        if example is None:
            report.dropped_too_long += 1
            continue
        examples.append(example)
    report.kept = len(examples)
    report.longest = max((len(example["input_ids"]) for example in examples), default=0)
    report.longest_answer = max((answer_window(example["labels"]) for example in examples), default=0)
    if not examples:
        why = f"every example is longer than max_seq_length={max_seq_length}" if not report.skipped_invalid \
            else f"no valid example ({report.skipped_invalid} invalid, first: {report.first_invalid})"
        raise DataError(f"{path}: {why}")
    return examples, report


def answer_window(labels) -> int:
    """Columns from one before the first trained label to the end: the positions whose logits the loss
    reads (the column before the first label is what predicts it)."""
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    return len(labels) - first + 1


class PaddingFreeCollator:
    """Concatenate a batch into one row; position_ids restart at 0 for each example, which makes
    transformers build a block-diagonal causal mask (no attention across examples) and lets
    flash-attention use variable-length kernels. No pad tokens are computed at all."""

    def __call__(self, features: list[dict]) -> dict:
        input_ids, labels, positions = [], [], []
        for f in features:
            input_ids += f["input_ids"]
            # the first token of each example is never a target (it would be predicted from the previous one)
            labels += [IGNORE_INDEX] + list(f["labels"][1:])
            positions += list(range(len(f["input_ids"])))
        # use_cache=False: transformers only detects packed sequences when no KV cache is being built
        return {"input_ids": torch.tensor([input_ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions]), "use_cache": False}


class PaddedCollator:
    """Right-pad to the longest example of the batch (labels -100 on padding)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        def pad(seq, value):
            return list(seq) + [value] * (width - len(seq))
        return {
            "input_ids": torch.tensor([pad(f["input_ids"], self.pad_token_id) for f in features]),
            "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features]),
            "labels": torch.tensor([pad(f["labels"], IGNORE_INDEX) for f in features]),
        }


class AnswerWindowCollator:
    """Left-pad a batch so every answer ends at the last column, and ask the model for logits over the
    last columns only (`logits_to_keep`): the LM head and the loss then run on the answer window instead
    of every prompt token. Same loss as PaddedCollator (the window starts one token before the first
    trained label, which is what predicts it); with a 49k vocabulary and answers a tenth of the sequence,
    it saves most of the LM head's work. position_ids count from each row's first real token."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        keep = min(width, max(answer_window(f["labels"]) for f in features))
        input_ids, mask, labels, positions = [], [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append([self.pad_token_id] * pad + list(f["input_ids"]))
            mask.append([0] * pad + [1] * len(f["input_ids"]))
            labels.append(([IGNORE_INDEX] * pad + list(f["labels"]))[-keep:])
            positions.append([0] * pad + list(range(len(f["input_ids"]))))
        return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(mask),
                "position_ids": torch.tensor(positions), "labels": torch.tensor(labels), "logits_to_keep": keep}
