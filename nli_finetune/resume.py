"""Resume never reuses stale work: the one comparison behind it.

Training (a checkpoint's run_fingerprint.json), inference (a progress file's settings), API jobs (an
output's records) and the study (each stage's inputs) each choose what their saved work was computed
from; this module fingerprints it, compares the saved with the wanted, names what changed (nested keys,
e.g. `settings.max_steps`, `files.train.jsonl`) and words the refusal, so the four say it the same way.
"""
from __future__ import annotations

import json

from nli_finetune.data_io import content_fingerprint, path_fingerprint


def comparable(value):
    """`value` as it reads back from JSON (tuples as lists, keys as strings, other objects as text), so
    what was saved compares equal to the same thing computed now."""
    return json.loads(json.dumps(value, default=str))


def file_fingerprints(files: dict) -> dict:
    """{name: fingerprint of the file or folder at path} for each named path (None: not used)."""
    return {name: path_fingerprint(path) for name, path in files.items() if path is not None}


def fingerprint(settings: dict, files: dict) -> dict:
    """What work was computed from: the settings that change it and the content of the files it read
    ({name: path}), with a hash of the settings for a quick look."""
    settings = comparable(settings)
    return {"settings": settings, "settings_hash": content_fingerprint(settings), "files": file_fingerprints(files)}


def changes(saved, wanted) -> list[str]:
    """The dotted names of what differs between `saved` and `wanted`, descending into dicts on both sides
    (a key on one side only is a change, unless its value is None: absent and None are the same);
    [""] when two values that are not both dicts differ."""
    return _differences(comparable(saved), comparable(wanted), "")


def _differences(saved, wanted, prefix: str) -> list[str]:
    if not (isinstance(saved, dict) and isinstance(wanted, dict)):
        return [prefix] if saved != wanted else []
    found = []
    for key in sorted(set(saved) | set(wanted)):
        found += _differences(saved.get(key), wanted.get(key), f"{prefix}.{key}" if prefix else key)
    return found


def refusal(file, changed: list[str], fix: str, what: str = "saved work", than: str = "this run") -> str:
    """The one line refusing to resume `file`: what changed and how to go on (the fix names the option:
    --restart, another --output_file, another --output_dir, ...)."""
    return f"{file}: {what} was computed from other {', '.join(changed)} than {than}; {fix}"


def unknown_origin(file, record: str, fix: str, what: str = "saved work") -> str:
    """The refusal for saved work whose record of what it was computed from is missing or unreadable."""
    return f"{file}: {what} has no readable {record}, so what it was computed from is unknown; {fix}"
