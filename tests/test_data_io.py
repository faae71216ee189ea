import pytest

from nli_finetune.data_io import (
    DataError,
    append_jsonl,
    atomic_write_jsonl,
    read_jsonl,
    read_records,
    repair_torn_tail,
    require_fields,
)
from tests.conftest import REPO_ROOT


def test_bom_csv_reads_cleanly():
    rows = read_records(REPO_ROOT / "data" / "sample" / "trial.csv")
    assert len(rows) == 50 and "premise" in rows[0]  # not "\ufeffpremise"


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(DataError, match=r"x.jsonl: line 3: invalid JSON"):
        read_jsonl(path)


def test_torn_tail_is_tolerated_and_repaired(tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "te')
    assert [r["id"] for r in read_jsonl(path, tolerate_torn_tail=True)] == [1, 2]
    repair_torn_tail(path)
    with open(path, "a") as f:
        append_jsonl(f, {"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_missing_field_names_row_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    atomic_write_jsonl(path, [{"premise": "p", "hypothesis": "h"}, {"premise": "p"}])
    with pytest.raises(DataError, match=r"d.jsonl: row 2: missing field 'hypothesis'"):
        require_fields(read_jsonl(path), ["premise", "hypothesis"], path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.csv")
