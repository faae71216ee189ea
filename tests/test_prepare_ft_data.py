import json
import subprocess
import sys

import pytest

from nli_finetune.data_io import read_jsonl
from scripts.prepare_ft_data import main as prepare
from tests.conftest import REPO_ROOT, shared_file

SAMPLE = REPO_ROOT / "data" / "sample"


def run(tmp_path, *args):
    out = tmp_path / "out.jsonl"
    code = prepare(["--original-thoughts", str(SAMPLE / "sample_thoughts.jsonl"),
                    "--reflected-thoughts", str(SAMPLE / "sample_reflections.jsonl"),
                    "--output-file", str(out), *map(str, args)])
    return code, out


@pytest.mark.parametrize("ablation,expected", [(1, 67), (2, 67 + 32), (3, 100)])
def test_three_ablations_on_the_real_sample_files(tmp_path, ablation, expected, capsys):
    code, out = run(tmp_path, "--ablation", ablation)
    assert code == 0
    rows = read_jsonl(out)
    assert len(rows) == expected and len({r["id"] for r in rows}) == expected
    answers = [json.loads(r["completion"][0]["content"]) for r in rows]
    if ablation in (1, 2):  # every training answer carries the true label
        assert all(a["predicted_label"] == r["label"] for a, r in zip(answers, rows))
    else:  # ablation 3 keeps the teacher's wrong labels unmodified
        assert sum(a["predicted_label"] != r["label"] for a, r in zip(answers, rows)) == 33
    printed = capsys.readouterr().out
    if ablation == 2:
        assert sum(r["source"] == "reflection" for r in rows) == 32
        assert "disagreeing with the true label (skipped): 1 (ids 90)" in printed


def test_reasoning_is_kept_as_written_and_the_shuffle_is_seeded(tmp_path):
    _, a = run(tmp_path, "--ablation", "1", "--seed", "3")
    first = [r["id"] for r in read_jsonl(a)]
    _, b = run(tmp_path, "--ablation", "1", "--seed", "3")
    assert [r["id"] for r in read_jsonl(b)] == first
    _, c = run(tmp_path, "--ablation", "1", "--seed", "4")
    assert [r["id"] for r in read_jsonl(c)] != first
    thoughts = {json.loads(line)["id"]: json.loads(line)["thought_process"]
                for line in (SAMPLE / "sample_thoughts.jsonl").read_text().splitlines()}
    row = read_jsonl(c)[0]
    assert json.loads(row["completion"][0]["content"])["thought_process"] == thoughts[int(row["id"])]


def test_holdout_and_legacy_format(tmp_path):
    code, out = run(tmp_path, "--ablation", "2", "--holdout", "19", "--holdout-file", tmp_path / "eval.jsonl")
    train, held = read_jsonl(out), read_jsonl(tmp_path / "eval.jsonl")
    assert code == 0 and len(held) == 19 and len(train) == 99 - 19
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    code, legacy = run(tmp_path, "--ablation", "1", "--format", "text")
    line = read_jsonl(legacy)[0]["text"]
    assert line.startswith("<s>[INST] Premise: ") and " [/INST] {" in line and line.endswith("} </s>")


def test_a_holdout_that_leaves_nothing_is_an_error(tmp_path, capsys):
    code, out = run(tmp_path, "--ablation", "1", "--holdout", "67", "--holdout-file", tmp_path / "eval.jsonl")
    assert code == 2 and "leaves no training examples" in capsys.readouterr().err and not out.exists()


def test_leakage_check_drops_pairs_present_in_the_eval_set(tmp_path, capsys):
    code, out = run(tmp_path, "--ablation", "3", "--eval-file", SAMPLE / "trial.csv")
    assert code == 0
    trial_pairs = {(r["premise"], r["hypothesis"]) for r in __import__("nli_finetune.data_io", fromlist=["data_io"]).read_records(SAMPLE / "trial.csv")}
    kept = {(r["premise"], r["hypothesis"]) for r in read_jsonl(out)}
    assert not kept & trial_pairs
    dropped = 100 - len(kept)
    assert f"{dropped} pairs also in the eval set" in capsys.readouterr().out


def test_teacher_cot_csv_from_the_original_project(tmp_path):
    out = tmp_path / "cot.jsonl"
    code = prepare(["--original-thoughts", str(shared_file("nli/dev_teacher_cot.csv")), "--output-file", str(out),
                    "--ablation", "1"])
    assert code == 0
    rows = read_jsonl(out)
    assert len(rows) == 2266  # 75.4% of 3,005 teacher answers are correct


def test_bad_input_names_file_row_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "premise": "p", "hypothesis": "h", "thought_process": "t", "predicted_label": 5, '
                   '"true_label": 1}\n')
    proc = subprocess.run([sys.executable, "scripts/prepare_ft_data.py", "--original-thoughts", str(bad),
                           "--output-file", str(tmp_path / "o.jsonl"), "--ablation", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.jsonl: row 1: field 'predicted_label'" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
