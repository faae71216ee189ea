"""Ablation 2 from the teacher-CoT CSV (issue #23): generate_thoughts_reflected.py reflects on the CSV's wrong
thoughts against a local fake endpoint, and prepare_ft_data.py --ablation 2 puts each reflection in place
of its wrong thought; the study adds its ablation2 arm once the reflections exist."""

import csv
import json
import shutil
from argparse import Namespace

import pytest

from nli_finetune.data_io import read_jsonl
from nli_finetune.teacher_data import load_originals
from scripts.generate_thoughts_reflected import main as reflect
from scripts.prepare_ft_data import main as prepare
from scripts.study import load_study
from tests.conftest import FAST, REPO_ROOT


@pytest.fixture(autouse=True)
def api_key(monkeypatch, fast_retries):
    monkeypatch.setenv("API_KEY", "sk-test-ablation2")

TEACHER_SAMPLE = REPO_ROOT / "data" / "sample" / "teacher_cot_1000.csv"


def teacher_rows() -> list[dict]:
    """The first 5 correct and first 3 wrong rows of the bundled teacher CSV, in file order."""
    with open(TEACHER_SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    correct = [r for r in rows if r["prediction"] == r["label"]][:5]
    wrong = [r for r in rows if r["prediction"] != r["label"]][:3]
    return [r for r in rows if r in correct or r in wrong]


def write_teacher_csv(path, rows, with_ids=True):
    fields = ["id", "premise", "hypothesis", "label", "prediction", "correct_prediction", "thoughts"]
    fields = fields if with_ids else fields[1:]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("with_ids", [True, False])
def test_reflections_from_the_teacher_csv_join_their_wrong_thoughts(server, tmp_path, capsys, with_ids):
    rows = teacher_rows()
    wrong = [i for i, r in enumerate(rows) if r["prediction"] != r["label"]]
    assert len(wrong) == 3 and len(rows) == 8
    rows[wrong[1]] = {**rows[wrong[1]], "thoughts": rows[wrong[1]]["thoughts"] + " [reflect:disagree]"}
    teacher = write_teacher_csv(tmp_path / "teacher.csv", rows, with_ids)
    # the id prepare_ft_data gives each row: the CSV's id, else <file name>:<data row>
    ids = [r["id"] if with_ids else f"teacher.csv:{n}" for n, r in enumerate(rows, start=1)]
    wrong_ids = {ids[i] for i in wrong}
    out = tmp_path / "reflections.jsonl"
    assert reflect(["--input-thoughts-json", str(teacher), "--output-reflection-json", str(out),
                    "--api-base", server.base_url, *FAST]) == 0
    reflections = read_jsonl(out)
    assert sorted(r["id"] for r in reflections) == sorted(wrong_ids)  # exactly the wrong rows, once each
    by_id = {r["id"]: r for r in reflections}
    for i in wrong:
        record = by_id[ids[i]]
        assert (record["premise"], record["hypothesis"]) == (rows[i]["premise"], rows[i]["hypothesis"])
        assert record["thought_process"] == rows[i]["thoughts"]  # the flawed thought it reflected on
        assert record["predicted_label"] == int(rows[i]["prediction"])  # the teacher's label, kept
        assert record["true_label"] == int(rows[i]["label"])
    assert [by_id[ids[i]]["reflection_agrees"] for i in wrong] == [True, False, True]
    assert f"3 incorrect of 8 thoughts; 1 reflections disagree with the true label (ids {ids[wrong[1]]})" \
        in capsys.readouterr().out

    asked = server.requests  # a rerun finds every id done and asks nothing
    assert reflect(["--input-thoughts-json", str(teacher), "--output-reflection-json", str(out),
                    "--api-base", server.base_url, *FAST]) == 0
    assert server.requests == asked and len(read_jsonl(out)) == 3
    assert "0 done, 0 failed, 3 skipped" in capsys.readouterr().out

    ft = tmp_path / "ablation2.jsonl"
    assert prepare(["--ablation", "2", "--original-thoughts", str(teacher), "--reflected-thoughts", str(out),
                    "--output-file", str(ft)]) == 0
    assert "reflections used: 2, disagreeing with the true label (skipped): 1" in capsys.readouterr().out
    examples = {e["id"]: e for e in read_jsonl(ft)}
    by_source = {s: {i for i, e in examples.items() if e["source"] == s} for s in ("original", "reflection")}
    assert by_source["original"] == set(ids) - wrong_ids  # the 5 correct originals
    assert by_source["reflection"] == {ids[wrong[0]], ids[wrong[2]]}  # the agreeing reflections, joined by id
    for i, item_id in enumerate(ids):
        if item_id not in examples:
            continue
        example, row = examples[item_id], rows[i]
        assert (example["premise"], example["hypothesis"], example["label"]) == \
            (row["premise"], row["hypothesis"], int(row["label"]))  # the right pair and its true label
        assert row["premise"] in example["prompt"][-1]["content"]
        answer = json.loads(example["completion"][0]["content"])
        assert answer["predicted_label"] == int(row["label"])
        expected = row["thoughts"] if example["source"] == "original" else by_id[item_id]["improved_thought_process"]
        assert answer["thought_process"] == expected


def test_a_teacher_row_without_thoughts_exits_2_naming_file_row_and_field(server, tmp_path, capsys):
    rows = teacher_rows()
    rows[2] = {**rows[2], "thoughts": ""}
    teacher = write_teacher_csv(tmp_path / "teacher.csv", rows)
    out = tmp_path / "reflections.jsonl"
    assert reflect(["--input-thoughts-json", str(teacher), "--output-reflection-json", str(out),
                    "--api-base", server.base_url, *FAST]) == 2
    assert f"error: {teacher}: row 3: missing field 'thoughts'" in capsys.readouterr().err
    assert server.requests == 0 and not out.exists()  # refused before any request or output
    # one reader: prepare_ft_data refuses the same row with the same words
    assert prepare(["--ablation", "1", "--original-thoughts", str(teacher), "--output-file",
                    str(tmp_path / "ft.jsonl")]) == 2
    assert f"error: {teacher}: row 3: missing field 'thoughts'" in capsys.readouterr().err


def test_generate_thoughts_jsonl_reads_under_a_json_name_too(tmp_path):
    # generate_thoughts.py's --output-json invites thoughts.json; the old reflection script read it as JSONL
    thoughts = tmp_path / "thoughts.json"
    thoughts.write_text("".join(json.dumps({"id": i, "premise": f"p{i}", "hypothesis": "h", "thought_process": "t",
                                            "predicted_label": 0, "true_label": i % 2}) + "\n" for i in range(3)))
    rows = load_originals(thoughts)
    assert [(r["id"], r["_id_as_written"], r["true_label"]) for r in rows] == [("0", 0, 0), ("1", 1, 1), ("2", 2, 0)]


def test_the_study_adds_ablation2_only_when_the_reflections_exist(tmp_path):
    config = tmp_path / "study" / "nli_smollm2.py"  # a copy: its REPO is tmp_path, whose data/ we control
    config.parent.mkdir()
    shutil.copy(REPO_ROOT / "study" / "nli_smollm2.py", config)
    args = Namespace(arms=None, model=None, seeds=None, output_dir=str(tmp_path / "out"))
    without = load_study(str(config), args)  # loadable without the file
    assert "ablation2" not in [run.name for run in without.runs]

    reflections = tmp_path / "data" / "generated" / "teacher_reflections.jsonl"
    reflections.parent.mkdir(parents=True)
    reflections.write_text("")
    from study.nli_arms import COT_EVAL, COT_TRAIN, TEACHER
    arms = {run.name: run for run in load_study(str(config), args).runs}
    assert list(arms)[-1] == "ablation2"
    assert arms["ablation2"].data == ("--ablation", "2", "--original-thoughts", TEACHER,
                                      "--reflected-thoughts", "data/generated/teacher_reflections.jsonl")
    assert arms["ablation2"].train == arms["ablation1"].train == COT_TRAIN
    assert arms["ablation2"].eval == arms["ablation1"].eval == COT_EVAL
