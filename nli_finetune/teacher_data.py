"""Teacher thoughts and reflections, read one way by every script that uses them
(scripts/prepare_ft_data.py builds the ablations from them, scripts/generate_thoughts_reflected.py picks
the wrong thoughts to reflect on).

Teacher thoughts come in two layouts, told apart row by row:
- generate_thoughts.py's JSONL: id, premise, hypothesis, thought_process, predicted_label, true_label;
- the teacher-CoT CSV (../shared/data/nli/dev_teacher_cot.csv, data/sample/teacher_cot_1000.csv): id,
  premise, hypothesis, label, prediction, correct_prediction, thoughts.
Reflections: generate_thoughts_reflected.py's JSONL (`reflection_label` is the reflection's own label) or
the original project's files (there `predicted_label` is).

Ids: a row's `id` (0 is an id), else `<file name>:<row>`. Where several files are read together
(`load_files`), an id that two files share (two `pairs.csv` in different folders, two files both using 7)
is refused, naming both files: a shared id would tie one file's row to the other's.
prepare_ft_data.py --ablation 2 ties a reflection to its original thought by id: both are read here, and
generate_thoughts_reflected.py writes back `_id_as_written`, which reads back as the original's id.
"""

import re
import unicodedata
from pathlib import Path

from nli_finetune.data_io import DataError, read_jsonl, read_records, row_id, row_label, row_text
from prompts import TASKS

NLI = TASKS["nli"]


def where(record: dict, path) -> str:
    return f"{path}: row {record.get('_line', '?')}"


def label_of(record: dict, field: str, path) -> int:
    return row_label(record, field, NLI, where(record, path))


def text_of(record: dict, field: str, path) -> str:
    return row_text(record, field, where(record, path))


def id_of(record: dict, path) -> str:
    return row_id(record, prefix=f"{Path(path).name}:")  # the rows of several files are mixed


def load_pairs(path) -> list[dict]:
    """Labelled pairs as {id, premise, hypothesis, true_label, _line}."""
    return [{"id": id_of(record, path), "premise": text_of(record, "premise", path),
             "hypothesis": text_of(record, "hypothesis", path), "true_label": label_of(record, "label", path),
             "_line": record.get("_line", "?")}
            for record in read_records(path)]


def load_files(paths, load) -> list[dict]:
    """The rows `load` reads from each of `paths`, in order; DataError when two files share an id."""
    rows, first_seen = [], {}
    for path in paths:
        file_rows = load(path)
        for row in file_rows:
            other, other_line = first_seen.setdefault(row["id"], (str(path), row.get("_line", "?")))
            if other != str(path):
                raise DataError(f"{path}: row {row.get('_line', '?')}: id {row['id']} is also the id of {other} "
                                f"row {other_line}: ids must be unique across the input files (a row without an "
                                "id gets <file name>:<row>; give the rows ids or the files distinct names)")
        rows += file_rows
    return rows


# A space before a punctuation mark ("sleeps ." for "sleeps."); only closing and final marks (Unicode's Po,
# Pe and Pf), so an opening quote or bracket keeps the space before it.
_SPACE_BEFORE_MARK = re.compile(r" (?=[^\w\s])")


def match_text(text: str) -> str:
    """`text` as the leakage check compares it: compatibility-normalised (NFC, NFD and NFKC spellings
    agree), case-folded, whitespace collapsed and no space before punctuation. Only for comparing: the
    training text is written as it was read."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    text = " ".join(text.split())
    return _SPACE_BEFORE_MARK.sub(
        lambda m: "" if unicodedata.category(text[m.end()]) in ("Po", "Pe", "Pf") else m.group(), text)


def pair_key(premise: str, hypothesis: str) -> tuple[str, str]:
    """What makes two pairs the same pair for the leakage check (the one rule every check uses)."""
    return match_text(premise), match_text(hypothesis)


def eval_pair_keys(path) -> set[tuple[str, str]]:
    """The pair keys of an evaluation file (CSV or JSON records with premise and hypothesis)."""
    return {pair_key(text_of(r, "premise", path), text_of(r, "hypothesis", path)) for r in read_records(path)}


def read_thoughts(path) -> list[dict]:
    """The records of a thoughts file: CSV, JSONL, a JSON array, or JSON lines in a `.json` file
    (generate_thoughts.py's --output-json invites the name)."""
    try:
        return read_records(path)
    except DataError as exc:
        error = exc
    if Path(path).suffix.lower() == ".json":
        try:
            return read_jsonl(path)
        except DataError:
            pass
    raise error


def load_originals(path) -> list[dict]:
    """Teacher thoughts as {id, premise, hypothesis, thought_process, predicted_label, true_label}, plus
    `_id_as_written` (the file's own id value, an int staying an int, or the `<file name>:<row>` id) and
    `_line`, for a script that writes records about these rows."""
    rows = []
    for record in read_thoughts(path):
        is_csv_layout = "thoughts" in record and "prediction" in record
        item_id = id_of(record, path)
        rows.append({
            "id": item_id,
            "premise": text_of(record, "premise", path),
            "hypothesis": text_of(record, "hypothesis", path),
            "thought_process": text_of(record, "thoughts" if is_csv_layout else "thought_process", path),
            "predicted_label": label_of(record, "prediction" if is_csv_layout else "predicted_label", path),
            "true_label": label_of(record, "label" if is_csv_layout else "true_label", path),
            "_id_as_written": record["id"] if record.get("id") not in (None, "") else item_id,
            "_line": record.get("_line", "?"),
        })
    return rows


def load_reflections(path) -> list[dict]:
    """Reflections as {id, premise, hypothesis, thought_process (improved), reflection_label, true_label}.
    Files from generate_thoughts_reflected.py carry `reflection_label`; in the original project's files
    `predicted_label` is the reflection's own label."""
    rows = []
    for record in read_thoughts(path):
        label_field = "reflection_label" if "reflection_label" in record else "predicted_label"
        rows.append({
            "id": id_of(record, path),
            "premise": text_of(record, "premise", path),
            "hypothesis": text_of(record, "hypothesis", path),
            "thought_process": text_of(record, "improved_thought_process", path),
            "reflection_label": label_of(record, label_field, path),
            "true_label": label_of(record, "true_label", path),
        })
    return rows
