import csv
import json
import subprocess
import sys
import unicodedata

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


# H4 (issue 40): leakage is decided on each row's own pair, ids never collide across files, and an
# evaluation pair written in another Unicode form or with a space before its punctuation still counts.
def write_pairs(path, rows, with_id=True):
    """A labelled-pairs CSV: rows of (id, premise, hypothesis, label), the id column left out on request."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "premise", "hypothesis", "label"] if with_id else ["premise", "hypothesis", "label"])
        writer.writerows(rows if with_id else [row[1:] for row in rows])
    return path


EVAL_PAIR = ("e1", "A dog sleeps on the porch.", "The dog is running.", 0)
OTHER_PAIR = ("o1", "A man plays a guitar.", "Someone makes music.", 1)


def label_run(tmp_path, pairs, eval_rows=(EVAL_PAIR,)):
    out = tmp_path / "out" / "train.jsonl"
    eval_file = write_pairs(tmp_path / "eval.csv", list(eval_rows))
    code = prepare(["--answer", "label", "--pairs", *map(str, pairs), "--eval-file", str(eval_file),
                    "--output-file", str(out)])
    return code, out


def test_h4_two_pairs_files_of_one_name_in_two_folders_are_refused_naming_both(tmp_path, capsys):
    first = write_pairs(tmp_path / "a" / "pairs.csv", [EVAL_PAIR], with_id=False)
    second = write_pairs(tmp_path / "b" / "pairs.csv", [OTHER_PAIR], with_id=False)
    code, out = label_run(tmp_path, [first, second])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1
    assert str(first) in err and str(second) in err and "pairs.csv:1" in err


@pytest.mark.parametrize("answer", ["label", "distill"])
def test_h4_two_files_that_both_use_id_7_are_refused_naming_both_files_and_the_id(tmp_path, capsys, answer):
    rows = [("7", *EVAL_PAIR[1:]), ("7", *OTHER_PAIR[1:])]
    if answer == "label":
        first, second = (write_pairs(tmp_path / name, [row]) for name, row in zip(("x.csv", "y.csv"), rows))
        code, out = label_run(tmp_path, [first, second])
    else:  # teacher-CoT CSVs: id, premise, hypothesis, label, prediction, correct_prediction, thoughts
        first, second = tmp_path / "x.csv", tmp_path / "y.csv"
        for path, (i, p, h, label) in zip((first, second), rows):
            path.write_text(f"id,premise,hypothesis,label,prediction,correct_prediction,thoughts\n"
                            f"{i},{p},{h},{label},{label},True,step 1.\n")
        out = tmp_path / "train.jsonl"
        code = prepare(["--answer", "distill", "--original-thoughts", str(first), str(second),
                        "--eval-file", str(write_pairs(tmp_path / "eval.csv", [EVAL_PAIR])),
                        "--output-file", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1
    assert str(first) in err and str(second) in err and "id 7 " in err


def test_h4_leakage_is_decided_on_each_rows_own_pair_and_the_counts_are_true(tmp_path, capsys):
    # one file, one id twice: the evaluation pair first, then another pair
    pairs = write_pairs(tmp_path / "pairs.csv", [("7", *EVAL_PAIR[1:]), ("7", *OTHER_PAIR[1:])])
    code, out = label_run(tmp_path, [pairs])
    assert code == 0
    kept = [(r["premise"], r["hypothesis"]) for r in read_jsonl(out)]
    assert kept == [OTHER_PAIR[1:3]]  # the evaluation pair is out, the other pair in
    assert "dropped: 0 duplicate ids, 1 pairs also in the eval set" in capsys.readouterr().out


@pytest.mark.parametrize("eval_premise,eval_hypothesis", [
    (unicodedata.normalize("NFD", "Zoë drinks a café au lait."), "Someone drinks coffee."),  # NFD vs NFC
    ("Zoë drinks a café au lait .", "Someone  drinks\u00a0coffee ."),  # a space before the punctuation
], ids=["nfd", "space-before-punctuation"])
def test_h4_an_eval_pair_in_another_unicode_form_or_spacing_is_caught(tmp_path, capsys, eval_premise,
                                                                     eval_hypothesis):
    leaked = ("t1", unicodedata.normalize("NFC", "Zoë drinks a café au lait."), "Someone drinks coffee.", 1)
    kept = ("t2", unicodedata.normalize("NFD", "Zoë reads a book ."), "Zoë  reads.", 1)  # written as it is
    pairs = write_pairs(tmp_path / "pairs.csv", [leaked, kept])
    code, out = label_run(tmp_path, [pairs], eval_rows=[("e1", eval_premise, eval_hypothesis, 1)])
    assert code == 0 and "1 pairs also in the eval set" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert [(r["premise"], r["hypothesis"]) for r in rows] == [kept[1:3]]  # the training text as written


def test_h4_the_check_text_is_normalised_one_way():
    from nli_finetune.teacher_data import pair_key
    assert pair_key("Zoë  sleeps .", "A\u00a0Cat!") == pair_key(unicodedata.normalize("NFD", "ZOË sleeps."), "a cat !")
    assert pair_key("A man sleeps.", "x") != pair_key("A man sleeps", "x")  # the punctuation itself counts


def test_h42_eval_file_takes_several_files_and_drops_pairs_found_in_either(tmp_path, capsys):
    # a study's tune file and test file: a training pair in either one is leakage
    pairs = write_pairs(tmp_path / "pairs.csv", [EVAL_PAIR, OTHER_PAIR, ("t1", "A cat naps.", "A cat sleeps.", 1)])
    tune = write_pairs(tmp_path / "tune.csv", [EVAL_PAIR])
    test = write_pairs(tmp_path / "test.csv", [OTHER_PAIR])
    out = tmp_path / "train.jsonl"
    assert prepare(["--answer", "label", "--pairs", str(pairs), "--eval-file", str(tune), str(test),
                    "--output-file", str(out)]) == 0
    assert [r["premise"] for r in read_jsonl(out)] == ["A cat naps."]
    assert "2 pairs also in the eval set" in capsys.readouterr().out


def test_h42_max_pairs_draws_the_same_pairs_for_label_only_and_distillation(tmp_path, capsys):
    teacher, tune = SAMPLE / "teacher_cot_1000.csv", SAMPLE / "dev_300_tune.csv"

    def pair_ids(answer, *more, seed="42", max_pairs="100"):
        out = tmp_path / f"{answer}_{seed}_{max_pairs}.jsonl"
        source = ["--pairs", teacher] if answer == "label" else ["--original-thoughts", teacher]
        assert prepare(["--answer", answer, *map(str, source), "--max-pairs", max_pairs, "--seed", seed,
                        "--eval-file", str(tune), "--output-file", str(out), *more]) == 0
        return out, {str(row["id"]).removesuffix(":rationale") for row in read_jsonl(out)}

    _, label = pair_ids("label")
    assert len(label) == 100
    distill_file, distill = pair_ids("distill", "--rationale-weight", "0.5")
    assert distill == label  # drawn before distill keeps only the correct thoughts' rationales
    rationales = [row for row in read_jsonl(distill_file) if row["source"] == "rationale"]
    assert 0 < len(rationales) < 100
    _, rationales_only = pair_ids("distill", "--rationale-weight", "0.5", "--rationales-only")
    assert rationales_only == {row["id"].removesuffix(":rationale") for row in rationales}
    assert "pairs: 100 of the pool's" in capsys.readouterr().out
    _, other_seed = pair_ids("label", seed="3")
    assert len(other_seed) == 100 and other_seed != label
    _, fewer = pair_ids("label", max_pairs="40")
    assert fewer < label  # a smaller N of the same seed: among the larger N's pairs


def test_h42_max_pairs_beyond_the_pool_is_an_error_naming_its_size(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    # the pool: every pair of trial.csv (no eval file given)
    assert prepare(["--answer", "label", "--pairs", str(SAMPLE / "trial.csv"), "--output-file", str(out)]) == 0
    pool = len(read_jsonl(out))
    capsys.readouterr()
    assert prepare(["--answer", "label", "--pairs", str(SAMPLE / "trial.csv"), "--max-pairs", str(pool + 1),
                    "--output-file", str(out)]) == 2
    assert f"--max-pairs {pool + 1}: the pool holds only {pool} labelled pairs" in capsys.readouterr().err
