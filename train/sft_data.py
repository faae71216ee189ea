"""SFT examples: read any supported JSONL format, tokenize with the answer-only loss mask, batch.

Formats (detected per file, or forced with `data_format`):
- `prompt_completion`: {"prompt": str | [messages], "completion": str | [assistant message]}.
  A string prompt is used as-is (raw text, bos added once); a message list goes through the chat template.
- `prompt_response`: {"prompt": str, "response": str} (CAL style): the prompt becomes one user turn.
- `messages`: {"messages": [system?, user, assistant, ...]}: loss on assistant turns only.
- `text`: the legacy {"text": "<s>[INST] ... [/INST] {json} </s>"}: split at the last `[/INST]`.
- `nli`: {"premise", "hypothesis", "thought_process", "predicted_label" | "label"}: prompt from prompts.py.

Every completion ends with the tokenizer's eos and carries labels; every prompt token is -100.
Examples longer than `max_seq_length` are never cut inside the answer: dropped, or with
`overlong="trim_prompt"` the prompt loses its start (the instruction at its end is kept).
"""

import re
from dataclasses import dataclass

import torch

from data_io import DataError, read_jsonl
from prompts import confidence_user_message, encode_prompt, example_messages, get_task, nli_completion, normalize_label

IGNORE_INDEX = -100
FORMATS = ("prompt_completion", "prompt_response", "messages", "text", "nli", "confidence")
CONFIDENCE_TOKEN = re.compile(r"<[CU]_[A-Za-z0-9]+>")


def detect_format(record: dict) -> str | None:
    if "tagged_response" in record:
        return "confidence"
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "prompt" in record and "response" in record:
        return "prompt_response"
    if "text" in record and "[/INST]" in str(record["text"]):
        return "text"
    if "premise" in record and "hypothesis" in record:
        return "nli"
    return None


def _content(message, where: str) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise DataError(f"{where}: expected a message with a string 'content'")
    if message.get("role") == "assistant" and not message["content"].strip():
        raise DataError(f"{where}: the assistant answer is empty: nothing to train on")
    return message["content"]


def _nli_answer(record: dict, task: str, where: str) -> str:
    """The answer of an NLI record, refusing what would teach the model a wrong format or label."""
    spec = get_task(task)
    for name in spec["input_fields"]:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field '{name}' must be a non-empty string, got {value!r}"[:300])
    label_field = "predicted_label" if "predicted_label" in record else "label"
    label = normalize_label(record.get(label_field), task)
    if label is None:
        raise DataError(f"{where}: field '{label_field}': {record.get(label_field)!r} is not a label of the "
                        f"{task} task ({', '.join(map(str, spec['labels']))})"[:300])
    thought = None
    if spec["reasoning_field"]:
        thought_field = "thought_process" if "thought_process" in record else "improved_thought_process"
        thought = record.get(thought_field)
        if not isinstance(thought, str) or not thought.strip():
            raise DataError(f"{where}: field '{thought_field}' must be a non-empty string, got {thought!r}"[:300])
    return nli_completion(thought, label, task)


def _messages_segments(tokenizer, messages: list, where: str) -> list[tuple[list[int], bool]]:
    """[(ids, trained)] for a chat: each assistant turn is trained (content + eos), all else masked.
    Each prefix is rendered by the chat template with the generation prompt, exactly as at inference."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn to train on")
    segments, ids = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{i}] needs a role of system, user or assistant")
        if message["role"] != "assistant":
            continue
        prefix = encode_prompt(tokenizer, messages[:i])
        if prefix[:len(ids)] != ids:  # the template re-renders earlier turns differently: mask them all
            segments, ids = [], []
        segments.append((prefix[len(ids):], False))
        answer = tokenizer(_content(message, f"{where}: messages[{i}]"), add_special_tokens=False)["input_ids"]
        answer = answer + [tokenizer.eos_token_id]
        segments.append((answer, True))
        ids = prefix + answer
    return segments


def _raw_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Raw prompt text with exactly one bos (the legacy files start with a literal `<s>`)."""
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos):
        prompt = prompt[len(bos):]
    ids = tokenizer(prompt.lstrip() if bos else prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


def example_segments(tokenizer, record: dict, fmt: str, task: str, where: str) -> list[tuple[list[int], bool]]:
    """The example as [(token ids, trained?)] segments, in order."""
    eos = [tokenizer.eos_token_id]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    if fmt == "messages":
        return _messages_segments(tokenizer, record["messages"], where)
    if fmt == "prompt_completion":
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            if isinstance(completion, list):
                completion = _content(completion[-1] if completion else None, f"{where}: field 'completion'")
            return _messages_segments(tokenizer, prompt + [{"role": "assistant", "content": completion}], where)
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
            raise DataError(f"{where}: fields 'prompt' and 'completion' must be non-empty strings or message lists")
        return [(_raw_prompt_ids(tokenizer, prompt), False), (encode(completion) + eos, True)]
    if fmt == "prompt_response":
        if not isinstance(record["response"], str) or not record["response"].strip():
            raise DataError(f"{where}: field 'response' must be a non-empty string")
        messages = [{"role": "user", "content": str(record["prompt"])},
                    {"role": "assistant", "content": record["response"]}]
        return _messages_segments(tokenizer, messages, where)
    if fmt == "text":
        text = str(record["text"])
        cut = text.rfind("[/INST]") + len("[/INST]")
        completion = text[cut:].strip()
        if tokenizer.eos_token and completion.endswith(tokenizer.eos_token):
            completion = completion[: -len(tokenizer.eos_token)].rstrip()
        if completion.endswith("</s>"):
            completion = completion[:-4].rstrip()
        if not completion:
            raise DataError(f"{where}: field 'text' has nothing after [/INST] to train on")
        return [(_raw_prompt_ids(tokenizer, text[:cut]), False), (encode(completion) + eos, True)]
    if fmt == "confidence":
        return confidence_segments(tokenizer, record, where)
    if fmt == "nli":
        if get_task(task).get("free_text") or "premise" not in get_task(task)["input_fields"]:
            raise DataError(f"{where}: an NLI record (premise, hypothesis, label) needs an NLI task, not '{task}'")
        answer = _nli_answer(record, task, where)
        messages = example_messages(record, task) + [{"role": "assistant", "content": answer}]
        return _messages_segments(tokenizer, messages, where)
    raise DataError(f"{where}: unknown data format '{fmt}'; use one of {', '.join(FORMATS)}")


def confidence_segments(tokenizer, record: dict, where: str) -> list[tuple[list[int], bool]]:
    """Prompt and answer masked; only the confidence token (found where it is, not assumed last) trained."""
    response = record.get("tagged_response")
    if not isinstance(response, str) or not isinstance(record.get("question"), str):
        raise DataError(f"{where}: a confidence example needs string fields 'question' and 'tagged_response'")
    match = CONFIDENCE_TOKEN.search(response)
    if match is None:
        raise DataError(f"{where}: field 'tagged_response' has no confidence token such as <C_READ>")
    token_id = tokenizer.convert_tokens_to_ids(match.group(0))
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise DataError(f"{where}: confidence token {match.group(0)} is not in the tokenizer; add it to "
                        "confidence_tokens in the config")
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": confidence_user_message(record)}])
    answer = tokenizer(response[:match.start()].rstrip(), add_special_tokens=False)["input_ids"]
    return [(prompt, False), (answer, False), ([token_id], True)]


def tokenize_example(tokenizer, record: dict, fmt: str, task: str, max_len: int, overlong: str,
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

    def line(self) -> str:
        line = (f"{self.path}: {self.kept}/{self.read} examples kept ({self.format}); "
                f"{self.dropped_too_long} dropped as longer than max_seq_length")
        if self.skipped_invalid:
            line += f"; {self.skipped_invalid} invalid skipped (first: {self.first_invalid})"
        return line


def load_sft_examples(path, tokenizer, *, data_format="auto", task="nli", max_seq_length=512,
                      overlong="drop", limit=None, invalid="error") -> tuple[list[dict], LoadReport]:
    """(examples, report). An invalid example is an error naming its file, line and field, or with
    invalid="skip" is skipped and counted."""
    records = read_jsonl(path)
    if limit:
        records = records[:limit]
    if not records:
        raise DataError(f"{path}: no examples")
    report = LoadReport(path=str(path), read=len(records))
    examples = []
    for record in records:
        where = f"{path}: line {record['_line']}"
        fmt = data_format if data_format != "auto" else detect_format(record)
        if fmt is None:
            raise DataError(f"{where}: unrecognised example; expected fields prompt/completion, prompt/response, "
                            "messages, text, or premise/hypothesis/thought_process")
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
    if not examples:
        why = f"every example is longer than max_seq_length={max_seq_length}" if not report.skipped_invalid \
            else f"no valid example ({report.skipped_invalid} invalid, first: {report.first_invalid})"
        raise DataError(f"{path}: {why}")
    return examples, report


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

        def window(labels) -> int:  # columns from one before the first trained label to the end
            first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
            return len(labels) - first + 1
        keep = min(width, max(window(f["labels"]) for f in features))
        input_ids, mask, labels, positions = [], [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append([self.pad_token_id] * pad + list(f["input_ids"]))
            mask.append([0] * pad + [1] * len(f["input_ids"]))
            labels.append(([IGNORE_INDEX] * pad + list(f["labels"]))[-keep:])
            positions.append([0] * pad + list(range(len(f["input_ids"]))))
        return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(mask),
                "position_ids": torch.tensor(positions), "labels": torch.tensor(labels), "logits_to_keep": keep}
