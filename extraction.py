"""Robust label extraction from generated text (used by inference and by training-time eval).

Policy, in order:
1. scan the text with a string-aware JSON scanner (braces inside strings don't count) and take the
   first complete JSON object whose label field holds a valid label (method "json");
2. otherwise an explicit phrase such as `final label: 0` or a truncated `"predicted_label": 1`
   (method "phrase");
3. otherwise the prediction is None (method "none") and counts as a parse failure: never a guess.

    from extraction import extract_label
    extract_label('{"thought_process": "...", "predicted_label": 1}')   # -> (1, "json")
"""

import json
import re

from prompts import get_task


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the object opened at text[start], skipping strings (with escapes)."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        ch = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def json_close_index(text: str) -> int | None:
    """Index just past the brace closing the first JSON object opened in `text` (valid JSON or not),
    where the local decoders' JSON stop ends an answer; None while it is still open."""
    start = text.find("{")
    end = _closing_brace(text, start) if start >= 0 else None
    return None if end is None else end + 1


def _parse_object(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def iter_json_spans(text: str):
    """Yield (start, end, object) for every complete JSON object in `text` (outer ones before the ones
    nested in them), in order of the opening brace. Braces inside strings don't open or close anything."""
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        end = _closing_brace(text, start)
        obj = _parse_object(text[start:end + 1]) if end is not None else None
        if obj is not None:
            yield start, end, obj


def iter_json_objects(text: str):
    """Every complete JSON object in `text`, in order of the opening brace."""
    for _, _, obj in iter_json_spans(text):
        yield obj


def count_json_objects(text: str) -> int:
    """How many complete top-level JSON objects the text holds (the original model wrote 3.75 per answer)."""
    count, position = 0, text.find("{")
    while position != -1:
        end = _closing_brace(text, position)
        if end is not None and _parse_object(text[position:end + 1]) is not None:
            count += 1
            position = text.find("{", end + 1)
        else:
            position = text.find("{", position + 1)
    return count


def _phrase_pattern(task) -> re.Pattern:
    task = get_task(task)
    names = [name for name in task.label_names if isinstance(name, str)]
    words = sorted([str(label) for label in task.labels] + names, key=len, reverse=True)
    choices = "|".join(re.escape(w) for w in words)
    field = re.escape(task.label_field)
    return re.compile(
        rf"(?:\"{field}\"\s*:\s*|(?:final|predicted)[ _]label\s*(?:is|:|=)\s*)[\"'*]*({choices})\b[\"'*]*",
        re.IGNORECASE)


def _outside_json(text: str, spans: list) -> str:
    """The text with every complete JSON object blanked out (a phrase inside one is not a label)."""
    chars, covered_to = list(text), -1
    for start, end, _ in spans:
        if start > covered_to:
            chars[start:end + 1] = " " * (end + 1 - start)
            covered_to = end
    return "".join(chars)


def extract_label(generated_text: str, task="nli"):
    """(label or None, method) for one generated answer; method is "json", "phrase" or "none".
    A complete JSON object that holds the label field decides: the first valid label wins, and when
    every such object holds an invalid value ("0 or 1", 1.5, null) the answer is None, never read
    again by the phrase fallback. Phrases count only outside complete JSON objects."""
    task = get_task(task)
    field = task.label_field
    spans = list(iter_json_spans(generated_text))
    with_field = [obj for _, _, obj in spans if field in obj]
    for obj in with_field:
        label = task.normalize_label(obj[field])
        if label is not None:
            return label, "json"
    if with_field:
        return None, "none"
    match = _phrase_pattern(task).search(_outside_json(generated_text, spans))
    if match:
        label = task.normalize_label(match.group(1))
        if label is not None:
            return label, "phrase"
    return None, "none"
