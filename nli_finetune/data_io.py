"""Reading and writing data files: JSONL/CSV/JSON in, atomic or append-and-flush out.

Every reader error is a `DataError` whose message names the file, the row (1-based line number for
JSONL, data row number for CSV) and the field, so scripts can print it and exit with status 2.
Writers never leave a half-written file: `atomic_write_*` writes a temp file and renames it;
`append_jsonl` flushes (and by default fsyncs) each record so a killed run loses at most the line in flight,
and `read_jsonl(..., tolerate_torn_tail=True)` drops such a torn last line on resume.
"""

import csv
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

CSV_FIELD_LIMIT = 64 * 2**20  # Python's default of 128 KB rejects long documents in one cell


def load_env_file(path=".env") -> None:
    """Variables from a `.env` file (API keys, HF_TOKEN, WANDB_API_KEY) into the environment, without
    overriding what is already set. The one place any script reads `.env`."""
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(path, override=False)


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_field(value, name: str = "") -> str | None:
    """The field holding a lone surrogate ("\\ud800" is valid JSON but not text: it can't be written as
    UTF-8), such as `messages[0].content`, or None."""
    if isinstance(value, str):
        return name if _SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{name}[{key}]" if isinstance(key, int) else f"{name}.{key}" if name else str(key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return inner
        found = _surrogate_field(item, inner)
        if found is not None:
            return found
    return None


def _check_text(record, path, where: str, raw: str) -> None:
    """Refuse a record with a lone surrogate at load time, before any work is paid for."""
    if _SURROGATE_ESCAPE.search(raw):  # a surrogate can only come from an escape in the file
        field = _surrogate_field(record)
        if field is not None:
            raise DataError(f"{path}: {where}: field '{field}': a lone surrogate escape (such as \\ud800) is not "
                            "text; fix or drop it")


def read_jsonl(path, tolerate_torn_tail: bool = False) -> list[dict]:
    """Records of a JSONL file (blank lines skipped). A malformed line is an error naming it,
    except a last line without a newline when `tolerate_torn_tail` (a run killed mid-write)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_torn_tail and number == len(lines):
                break  # the last write was cut off; the caller redoes that record
            raise DataError(f"{path}: line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
        _check_text(record, path, f"line {number}", line)
        record["_line"] = number
        records.append(record)
    return records


def read_csv(path) -> list[dict]:
    """Rows of a CSV file as dicts (a UTF-8 BOM is read transparently); `_line` is the data row number."""
    path = Path(path)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for number, row in enumerate(reader, start=1):
                if None in row:  # more fields than the header: an unquoted comma split a value
                    raise DataError(f"{path}: row {number}: {len(reader.fieldnames) + len(row[None])} fields but the "
                                    f"header has {len(reader.fieldnames)} (a value with a comma must be quoted)")
                if any(value is None for value in row.values()):
                    raise DataError(f"{path}: row {number}: fewer fields than the header's {len(reader.fieldnames)}")
                row["_line"] = number
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        where = f"row {len(rows) + 1}: " if rows or isinstance(exc, csv.Error) else ""
        raise DataError(f"{path}: {where}cannot read CSV: {exc}") from exc
    return rows


def read_records(path) -> list[dict]:
    """CSV, JSONL or a JSON array/object-of-records, chosen by extension (the keys of an object of records
    are their ids, unless a record has its own `id`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        try:
            text = path.read_text(encoding="utf-8-sig")
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: invalid JSON: {exc}") from exc
        items = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else None
        if items is None or not all(isinstance(r, dict) for r in items):
            raise DataError(f"{path}: expected a JSON array (or object) of records")
        ids = list(data) if isinstance(data, dict) else [None] * len(items)
        for number, (key, record) in enumerate(zip(ids, items), start=1):
            _check_text(record, path, f"row {number}", text)
            record["_line"] = number
            if key is not None:
                record.setdefault("id", key)  # an object of records keyed by id: the keys are the ids
        return items
    return read_jsonl(path)


def is_blank(value) -> bool:
    """A field that is absent, null or only whitespace: missing, wherever a row is read."""
    return value is None or (isinstance(value, str) and not value.strip())


def require_fields(records: list[dict], fields, path) -> None:
    """Fail on the first record that lacks one of `fields` (or has it empty)."""
    for record in records:
        for field in fields:
            if is_blank(record.get(field)):
                raise DataError(f"{path}: row {record.get('_line', '?')}: missing field '{field}'")


def row_id(record: dict, prefix: str = "") -> str:
    """A row's id: its `id` field (0 is an id), else its 1-based row number, after `prefix` where the rows
    of several files are mixed."""
    raw = record.get("id")
    return str(raw) if raw not in (None, "") else f"{prefix}{record.get('_line', '?')}"


def check_unique_ids(ids_and_places) -> None:
    """DataError at the first (id, where) whose id an earlier one had: results are keyed by id."""
    seen = set()
    for item_id, where in ids_and_places:
        if item_id in seen:
            raise DataError(f"{where}: field 'id': duplicate id {item_id}")
        seen.add(item_id)


def row_text(record: dict, field: str, where: str) -> str:
    """record[field] as written (a task's input, a thought), or DataError when it is missing or not text."""
    value = record.get(field)
    if is_blank(value):
        raise DataError(f"{where}: missing field '{field}'")
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be text, got {type(value).__name__}")
    return value


def row_label(record: dict, field: str, task, where: str):
    """The `task`'s label in record[field] (its other names and 1.0 for 1 included), or DataError."""
    label = task.normalize_label(record.get(field))
    if label is None:
        raise DataError(f"{where}: field '{field}': {record.get(field)!r:.200} is not in the label set "
                        f"{list(task.labels)}")
    return label


def seeded_split(rows: list, share: float, seed: int) -> tuple[list, list]:
    """(`share` of the rows, the rest), drawn at random with `seed`: the same inputs and seed always
    hold out the same rows."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    cut = round(len(rows) * share)
    return rows[:cut], rows[cut:]


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _writable_location(path: Path) -> str | None:
    """Why `path` can't be written, or None: checked before any work, so a run never fails at its end."""
    if path.is_dir():
        return "is a folder"
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # mkdir would fail on it at the end of the run
            return f"{ancestor} is a symlink to a missing {os.readlink(ancestor)}"
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"folder {ancestor} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "is read-only"
    return None


def path_overlap(output, input_path) -> str | None:
    """How an output path sits against an input (after resolving symlinks): "is" it, "contains" it or
    "lies inside" it; None when they are apart. Writing in any of these ways changes the input."""
    out, target = Path(output).expanduser().resolve(), Path(input_path).expanduser().resolve()
    return "is" if out == target else "contains" if out in target.parents else \
        "lies inside" if target in out.parents else None


def check_outputs(inputs: dict, outputs: dict) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output (after resolving
    symlinks and hard links), and an output location that can't be written. `inputs` and `outputs` map
    a name for the message (such as "--test_file") to a path; None values are ignored."""
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    for i, (name, path) in enumerate(outs):
        for in_name, in_path in ins:
            if _same_file(path, in_path):
                raise DataError(f"{name} {path} is the same file as {in_name} {in_path}: writing it would "
                                "destroy the input; choose another output path")
        for other_name, other in outs[:i]:
            if _same_file(path, other):
                raise DataError(f"{name} {path} is the same file as {other_name} {other}: one would overwrite "
                                "the other; choose distinct output paths")
        problem = _writable_location(path)
        if problem:
            raise DataError(f"{name} {path}: cannot write there: {problem}")


def overlap(output, input_path) -> str | None:
    """How a path a run writes relates to one it reads: "is", "contains" or "lies inside" (after symlinks
    and hard links), or None when writing one can't touch the other."""
    output, input_path = Path(output).expanduser(), Path(input_path).expanduser()
    if _same_file(output, input_path):
        return "is"
    out, target = output.resolve(), input_path.resolve()
    return "contains" if out in target.parents else "lies inside" if target in out.parents else None


def strip_private(record: dict) -> dict:
    """The record without bookkeeping keys such as `_line`."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _mode_for(path: Path) -> int:
    """A replaced file keeps its mode; a new one gets what open() would give it under the umask
    (mkstemp's 0600 would hide the file from a host user when a container wrote it)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _atomic_write(path, write, binary: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def linked_tree(source: Path, into: Path) -> None:
    """`into`, made anew, with `source`'s files as hard links (copies where the file system refuses links):
    a model folder shared without its bytes twice, where a file added to `into` (a calibration.json) does
    not reach `source`."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(source, into, copy_function=link_or_copy)


def atomic_write_bytes(path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_write_text(path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path, obj) -> Path:
    return _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def atomic_write_jsonl(path, records) -> Path:
    def write(f):
        for record in records:
            f.write(json.dumps(strip_private(record), ensure_ascii=False) + "\n")
    return _atomic_write(path, write)


def atomic_write_csv(path, rows: list[dict], fieldnames: list[str]) -> Path:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return _atomic_write(path, write)


def append_jsonl(f, record: dict, sync: bool = True) -> None:
    """Append one record to an open file and flush it (a killed process loses nothing flushed);
    `sync` also fsyncs it, so it survives a crash of the machine. Callers writing a group of records
    pass sync=False and call `sync_file` once after the group."""
    f.write(json.dumps(strip_private(record), ensure_ascii=False) + "\n")
    f.flush()
    if sync:
        os.fsync(f.fileno())


def sync_file(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def repair_torn_tail(path) -> None:
    """Cut a trailing partial line (a run killed mid-write) so appends start on a fresh line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)


FULL_HASH_LIMIT = 64 * 2**20  # files up to this size are hashed whole; larger ones by size, mtime and ends
PORTABLE_BLOCKS = 16  # MiB blocks a portable hash reads of a larger file


def _file_digest(path: Path, h, portable: bool = False) -> None:
    stat = path.stat()
    h.update(f"{'' if portable else path.name}\0{stat.st_size}\0".encode())
    with open(path, "rb") as f:
        if stat.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return
        # multi-GB weights: hashing them whole would cost a minute per run; a retrained or replaced
        # file changes its mtime, size or first/last MiB. A portable hash can't use the mtime (a copy
        # changes it): it reads blocks spread over the whole file instead.
        if not portable:
            h.update(str(stat.st_mtime_ns).encode())
        offsets = [0, stat.st_size - 2**20] if not portable else \
            [(stat.st_size - 2**20) * i // (PORTABLE_BLOCKS - 1) for i in range(PORTABLE_BLOCKS)]
        for offset in offsets:
            f.seek(offset)
            h.update(f.read(2**20))


def path_fingerprint(path, include=None, portable: bool = False) -> str:
    """A short hash of a file's or a folder's content (every file below it, by relative path, or those
    whose relative path `include` accepts), used to tie saved progress to what it was computed from.
    A path that doesn't exist (a hub id) hashes its name. `portable`: by content alone, so a copied,
    moved or renamed file hashes the same (no mtime, no file name; the relative paths in a folder count)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _file_digest(path, h, portable)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and "checkpoint-" not in str(p.relative_to(path))
                           and (include is None or include(p.relative_to(path)))):
            h.update(str(file.relative_to(path)).encode() + b"\0")
            _file_digest(file, h, portable)
    else:
        h.update(f"hub:{path}".encode())
    return h.hexdigest()[:16]


def content_fingerprint(obj) -> str:
    """A short hash of any JSON-serialisable value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
