"""Robust label extraction from generated text (used by inference and by training-time eval).

Policy, in order:
1. scan the text with a string-aware JSON scanner (braces inside strings don't count) and take the
   first complete JSON object whose label field holds a valid label (method "json"); an object that
   repeats the label field with different values holds no valid label (json would keep the last);
2. otherwise the label field of a cut-off object (`{"thought_process": "...", "predicted_label": 1`
   at the end of a truncated answer), or an explicit phrase outside any JSON object such as
   `final label: 0` (method "phrase"): the value must be exactly one label, so `0 or 1`, `0/1`, `1.5`,
   `1...` and two phrases that disagree are parse failures;
3. otherwise the prediction is None (method "none") and counts as a parse failure: never a guess.

The scan is linear in the text (each brace is matched once), so a 20 MB answer full of braces costs
seconds, not hours. Its string/escape state machine, `JsonScanner`, is the only one: the decoders' stop
at a closed JSON answer (generation.JsonCloseTracker) feeds it one token at a time.

    from nli_finetune.extraction import extract_label
    extract_label('{"thought_process": "...", "predicted_label": 1}', nli)   # nli: the prompts.Task -> (1, "json")
"""

import json
import re

from prompts import Task

MAX_NESTING = 100  # an object nested deeper is not an answer (and would exhaust json's recursion)
_SPECIAL = re.compile(r'[{}"\\]')
_KEY_SEPARATOR = re.compile(r"\s*:\s*")


class DuplicateKey:
    """The value of a key an object repeats with different values: json keeps the last one silently;
    here neither counts (it is no label)."""

    def __init__(self, values: list):
        self.values = values

    def __repr__(self):
        return "duplicate key with values " + " / ".join(json.dumps(v, default=repr) for v in self.values)

    def __eq__(self, other):
        return isinstance(other, DuplicateKey) and self.values == other.values


def _object_from_pairs(pairs) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj and obj[key] != value:
            previous = obj[key]
            obj[key] = DuplicateKey((previous.values if isinstance(previous, DuplicateKey) else [previous]) + [value])
        else:
            obj[key] = value
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object_from_pairs)


class JsonScanner:
    """The one string-aware JSON state machine: reads text left to right, whole or a piece at a time
    (a decoder's tokens), and yields (index, char) for each `{`, `}` and string-opening `"` outside
    strings; braces and quotes inside a string, or escaped by a backslash, count for nothing."""

    def __init__(self):
        self.in_string = False
        self.position = 0
        self._carry = 0  # 1 when the last piece ended on a backslash inside a string: it escapes the next char

    def scan(self, text: str, start: int = 0, stop: int | None = None):
        """The events of text[start:stop], read on from the state the previous piece left."""
        stop = len(text) if stop is None else stop
        self.position = start + self._carry
        while (match := _SPECIAL.search(text, self.position, stop)) is not None:
            index, ch = match.start(), match.group()
            self.position = index + 1
            if self.in_string:
                if ch == "\\":
                    self.position += 1
                elif ch == '"':
                    self.in_string = False
            elif ch != "\\":
                self.in_string = ch == '"'
                yield index, ch
        self._carry = max(0, self.position - stop)

    def skip_to(self, index: int) -> None:
        """Go on reading at `index`, known to be outside any string (a caller skips a span it has read)."""
        self.position, self.in_string = index, False


def _structural_braces(text: str, start: int, stop: int | None = None):
    """(index, brace) of each brace outside strings in text[start:stop], read from `start` outside any string."""
    return ((index, ch) for index, ch in JsonScanner().scan(text, start, stop) if ch != '"')


def _brace_pairs(text: str, start: int, stop: int) -> tuple[list, list]:
    """([open, close] of the braces outside strings in text[start:stop], in order of the opening brace;
    the opening braces still unclosed at `stop`)."""
    pairs, stack = [], []
    for index, ch in _structural_braces(text, start, stop):
        if ch == "{":
            stack.append(len(pairs))
            pairs.append([index, None])
        elif stack:
            pairs[stack.pop()][1] = index
    return pairs, [pairs[i][0] for i in stack]


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the object opened at text[start], skipping strings (with escapes)."""
    depth = 0
    for index, ch in _structural_braces(text, start):
        depth += 1 if ch == "{" else -1
        if depth == 0:
            return index
    return None


def json_close_index(text: str) -> int | None:
    """Index just past the brace closing the first JSON object opened in `text` (valid JSON or not),
    where the local decoders' JSON stop ends an answer; None while it is still open."""
    start = text.find("{")
    end = _closing_brace(text, start) if start >= 0 else None
    return None if end is None else end + 1


def _match_braces(text: str, start: int, closes: dict, depths: dict) -> None:
    """Read from the brace at `start`: record in `closes` the index closing every brace it opens (None
    when never closed) and in `depths` how deep each one nests. A brace an earlier reading matched is
    skipped whole (the rest of the text reads the same from there), so each brace is matched once."""
    stack, scanner = [], JsonScanner()  # stack: [open index, deepest child]
    for index, ch in scanner.scan(text, start):
        if ch == "{" and index in closes:
            if closes[index] is None:
                break
            stack[-1][1] = max(stack[-1][1], depths[index])
            scanner.skip_to(closes[index] + 1)
        elif ch == "{":
            stack.append([index, 0])
        elif ch == "}" and stack:
            opened, child = stack.pop()
            closes[opened], depths[opened] = index, child + 1
            if not stack:
                return
            stack[-1][1] = max(stack[-1][1], child + 1)
    for opened, _ in stack:
        closes[opened] = None


def _nested_dicts(obj: dict) -> list:
    """The objects inside a parsed object, in the order of their opening braces in the text."""
    found, stack = [], [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            found.append(value)
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list | DuplicateKey):
            stack.extend(reversed(value if isinstance(value, list) else value.values))
    return found[1:]


def iter_json_spans(text: str):
    """Yield (start, end, object) for every complete JSON object in `text` (outer ones before the ones
    nested in them), in order of the opening brace. Braces inside strings don't open or close anything."""
    closes, depths, settled = {}, {}, {}  # settled: brace -> its span, or None when no object starts there
    for start in (m.start() for m in re.finditer(r"\{", text)):
        if start in settled:
            if settled[start] is not None:
                yield settled[start]
            continue
        if start not in closes:
            _match_braces(text, start, closes, depths)
        if closes[start] is None or depths[start] > MAX_NESTING:
            continue
        try:
            obj, stop = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            # the objects still open where the parse failed fail at the same place on their own
            settled.update((inner, None) for inner in _brace_pairs(text, start, max(exc.pos, start + 1))[1])
            continue
        except RecursionError:
            continue
        yield start, stop - 1, obj
        pairs, _ = _brace_pairs(text, start + 1, stop - 1)
        nested = _nested_dicts(obj)
        if len(nested) == len(pairs):  # duplicate keys may hide some: then they are parsed on their own
            settled.update((s, (s, e, inner)) for (s, e), inner in zip(pairs, nested))


def iter_json_objects(text: str):
    """Every complete JSON object in `text`, in order of the opening brace."""
    for _, _, obj in iter_json_spans(text):
        yield obj


def count_json_objects(text: str) -> int:
    """How many complete top-level JSON objects the text holds (the original model wrote 3.75 per answer)."""
    count, covered_to = 0, -1
    for start, end, _ in iter_json_spans(text):
        if start > covered_to:
            count, covered_to = count + 1, end
    return count


def _phrase_pattern(task: Task) -> re.Pattern:
    """An explicit label phrase whose value is one label and nothing more: not `0/1`, `1.5`, `1...`,
    `"0 or 1"` or `1 or 0`."""
    names = [name for name in task.label_names if isinstance(name, str)]
    words = sorted([str(label) for label in task.labels] + names, key=len, reverse=True)
    choices = "|".join(re.escape(w) for w in words)
    field = re.escape(task.label_field)
    return re.compile(
        rf"(?:\"{field}\"\s*:\s*|(?:final|predicted)[ _]label\s*(?:is|:|=)\s*)(?P<quote>[\"'*]*)(?P<label>{choices})"
        r"(?P=quote)(?=$|[\s,;:)}\]!?]|\.(?![.\d]))(?!\s*(?:(?:or|and)\b|[/|]))",
        re.IGNORECASE)


def _outside_json(text: str, spans: list) -> str:
    """The text with every complete JSON object blanked out (a phrase inside one is not a label)."""
    chars, covered_to = list(text), -1
    for start, end, _ in spans:
        if start > covered_to:
            chars[start:end + 1] = " " * (end + 1 - start)
            covered_to = end
    return "".join(chars)


def _cut_off_start(text: str) -> int | None:
    """Where an object opens that the text never closes (a truncated answer)."""
    closes, depths = {}, {}
    for start in (m.start() for m in re.finditer(r"\{", text)):
        if start not in closes:
            _match_braces(text, start, closes, depths)
        if closes[start] is None:
            return start
    return None


def _cut_off_field_values(text: str, start: int, field: str) -> list:
    """The values of `field` used as a key (not inside a string) in the cut-off object at text[start]; a
    value cut off mid-way, or followed by anything but `,` `}` or the end, reads as None."""
    key, values, scanner = json.dumps(field), [], JsonScanner()
    for index, ch in scanner.scan(text, start):
        after = _KEY_SEPARATOR.match(text, index + len(key)) if ch == '"' else None
        if after and text.startswith(key, index):
            values.append(_value_at(text, after.end()))
            scanner.skip_to(after.end())
    return values


def _value_at(text: str, index: int):
    try:
        value, end = _DECODER.raw_decode(text, index)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if re.fullmatch(r"\s*(?:[,}].*)?", text[end:], re.DOTALL) else None


def extract_label(generated_text: str, task: Task):
    """(label or None, method) for one generated answer; method is "json", "phrase" or "none".
    A complete JSON object that holds the label field decides: the first valid label wins, and when
    every such object holds an invalid value ("0 or 1", 1.5, null) the answer is None, never read
    again by the phrase fallback. Next, a cut-off object's label field decides; phrases count only
    outside every JSON object, complete or cut off, and must agree."""
    field = task.label_field
    spans = list(iter_json_spans(generated_text))
    with_field = [obj for _, _, obj in spans if field in obj]
    for obj in with_field:
        label = task.normalize_label(obj[field])
        if label is not None:
            return label, "json"
    if with_field:
        return None, "none"
    outside = _outside_json(generated_text, spans)
    cut_off = _cut_off_start(outside)
    if cut_off is not None:
        values = _cut_off_field_values(outside, cut_off, field)
        if values:
            labels = {task.normalize_label(value) for value in values}
            return (labels.pop(), "phrase") if len(labels) == 1 and None not in labels else (None, "none")
        outside = outside[:cut_off]
    labels = {task.normalize_label(m.group("label")) for m in _phrase_pattern(task).finditer(outside)}
    if len(labels) == 1 and None not in labels:
        return labels.pop(), "phrase"
    return None, "none"
