"""The SFT data formats: which one a record is, and its token segments (prompt masked, answer trained).
Shared by training (train/sft_data.py masks and batches them) and evaluation (eval_inputs.py takes the
prompt part of a chat-format row as the prompt to answer).

- `prompt_completion`: {"prompt": str | [messages], "completion": str | [assistant message]}.
  A string prompt is used as-is (raw text, bos added once); a message list goes through the chat template.
- `prompt_response`: {"prompt": str, "response": str} (CAL style): the prompt becomes one user turn.
- `messages`: {"messages": [system?, user, assistant, ...]}: loss on assistant turns only.
- `question_answer`: {"question": str, "answer": str | number}: the question becomes one user turn.
- `text`: the legacy {"text": "<s>[INST] ... [/INST] {json} </s>"}: split at the last `[/INST]`.
- `record`: a raw row of a label task: its input fields and label (NLI: {"premise", "hypothesis",
  "thought_process", "predicted_label" | "label"}); prompt and answer from its `prompts.Task`.
- `confidence`: {"question", "tagged_response", "dataset"}: only the confidence token is trained.
"""

import re

from nli_finetune.data_io import DataError, row_label, row_text
from prompts import Task, confidence_user_message, encode_prompt

FORMATS = ("prompt_completion", "prompt_response", "messages", "text", "question_answer", "record", "confidence")
# "nli" is the name `record` had while NLI was the only task with raw rows; configs may still say it
FORMAT_ALIASES = {"nli": "record"}
CHAT_FORMATS = ("messages", "prompt_completion", "prompt_response", "question_answer", "text")  # rows that carry their own prompt
CONFIDENCE_TOKEN = re.compile(r"<[CU]_[A-Za-z0-9]+>")


def detect_format(record: dict, task: Task) -> str | None:
    """The record's format; a raw row (`record`) is one that holds every input field of `task`."""
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
    fields = task.input_fields
    if fields and all(name in record for name in fields):
        return "record"
    if "question" in record and "answer" in record:
        return "question_answer"
    return None


ROLES = ("system", "user", "assistant")


def message_text(message, where: str) -> str:
    """A message's content as text: a string, or a list of text parts (`{"type": "text", "text": ...}` as
    chat exports write them, or plain strings) joined; anything else is an error naming the field."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = [part if isinstance(part, str) else part.get("text") if isinstance(part, dict)
                 and part.get("type", "text") == "text" else None for part in content]
        if all(isinstance(part, str) for part in parts):
            return "".join(parts)
    raise DataError(f"{where}: field 'content': expected text or a list of text parts, got {content!r}"[:300])


def chat_messages(messages, where: str, field: str = "messages") -> list[dict]:
    """[{role, content}] with a role word and text content for every message (text parts joined), so the
    chat template, the tokenizer and an API get plain text; a bad message is an error naming it."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of {{role, content}} messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else message
            raise DataError(f"{where}: {field}[{i}]: field 'role' must be one of {', '.join(ROLES)}, got {role!r}"[:300])
        checked.append({"role": message["role"], "content": message_text(message, f"{where}: {field}[{i}]")})
    return checked


def _content(message, where: str) -> str:
    content = message_text(message, where)
    if message.get("role") == "assistant" and not content.strip():
        raise DataError(f"{where}: the assistant answer is empty: nothing to train on")
    return content


def _record_answer(record: dict, task: Task, where: str) -> str:
    """The answer a raw row of a label task teaches, refusing what would teach a wrong format or label."""
    for name in task.input_fields:
        row_text(record, name, where)
    label = row_label(record, task.row_label(record)[0], task, where)
    reasoning = row_text(record, task.row_reasoning(record)[0], where) if task.reasoning_field else None
    return task.answer(label, reasoning)


def _messages_segments(tokenizer, messages: list, where: str) -> list[tuple[list[int], bool]]:
    """[(ids, trained)] for a chat: each assistant turn is trained (content + eos), all else masked.
    Each prefix is rendered by the chat template with the generation prompt, exactly as at inference."""
    messages = chat_messages(messages, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn to train on")
    segments, ids = [], []
    for i, message in enumerate(messages):
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


def example_segments(tokenizer, record: dict, fmt: str, task: Task, where: str) -> list[tuple[list[int], bool]]:
    """The example as [(token ids, trained?)] segments, in order."""
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    eos = [tokenizer.eos_token_id]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    if fmt == "messages":
        return _messages_segments(tokenizer, record["messages"], where)
    if fmt == "prompt_completion":
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            if isinstance(completion, list):
                completion = _content(completion[-1] if completion else None, f"{where}: field 'completion'")
            elif not isinstance(completion, str):
                raise DataError(f"{where}: field 'completion' must be text or an assistant message list")
            prompt = chat_messages(prompt, where, "prompt")
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
    if fmt == "question_answer":
        return _messages_segments(tokenizer, question_answer_messages(record, where), where)
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
    if fmt == "record":
        if task.free_text or not all(name in record for name in task.input_fields):
            raise DataError(f"{where}: a raw row of the '{task.name}' task needs its fields "
                            f"{', '.join(task.input_fields) or '(none: free text reads prompt/response rows)'}")
        messages = task.messages(record) + [{"role": "assistant", "content": _record_answer(record, task, where)}]
        return _messages_segments(tokenizer, messages, where)
    raise DataError(f"{where}: unknown data format '{fmt}'; use one of {', '.join(FORMATS)}")


def question_answer_messages(record: dict, where: str) -> list[dict]:
    if not isinstance(record.get("question"), str) or record.get("answer") in (None, ""):
        raise DataError(f"{where}: fields 'question' (text) and 'answer' are required")
    return [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": str(record["answer"])}]


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
