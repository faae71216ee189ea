"""Step-by-step distillation (issue #23): prepare_ft_data.py --answer distill writes the label rows of
--answer label plus rationale rows under their own prompt; a model trained on them is a label-task model;
a study arm with model_of evaluates another arm's model without retraining it."""

import csv
import json

import pytest

from prompts import NLI_RATIONALE_PREFIX, TASKS, encode_prompt
from tests.conftest import REPO_ROOT, run_train

# id, premise, hypothesis, label, prediction (teacher), thoughts: two wrong thoughts, one pair in the eval file
TEACHER = [
    ("a1", "A man plays a guitar on stage.", "Someone makes music.", 1, 1, "step 1: playing a guitar makes music."),
    ("a2", "A dog sleeps on the porch.", "The dog is running.", 0, 0, "step 1: sleeping is not running."),
    ("a3", "Two kids eat ice cream.", "Children have a snack.", 1, 0, "step 1: ice cream is not food, wrongly."),
    ("a4", "A woman reads in a library.", "The woman is swimming.", 0, 0, "step 1: reading is not swimming."),
    ("a5", "The sun sets over the sea.", "It is evening.", 1, 1, "step 1: a sunset happens in the evening."),
    ("a6", "A chef cuts onions.", "A cook prepares food.", 1, 0, "step 1: cutting is not cooking, wrongly."),
    ("a7", "A cat climbs a tree.", "An animal is outdoors.", 1, 1, "step 1: trees grow outdoors."),
]
LEAKED = "a7"


def write_teacher(tmp_path):
    path, eval_path = tmp_path / "teacher.csv", tmp_path / "eval.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "premise", "hypothesis", "label", "prediction", "correct_prediction", "thoughts"])
        for i, p, h, label, pred, thought in TEACHER:
            writer.writerow([i, p, h, label, pred, label == pred, thought])
    leaked = next(row for row in TEACHER if row[0] == LEAKED)
    eval_path.write_text(f"id,premise,hypothesis,label\ne1,{leaked[1].upper()},{leaked[2]},{leaked[3]}\n")
    return path, eval_path


def prepare(tmp_path, name, *options):
    from scripts.prepare_ft_data import main
    out = tmp_path / f"{name}.jsonl"
    assert main([*map(str, options), "--output-file", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()], out.read_text().splitlines()


def split(rows):
    return [r for r in rows if r["source"] != "rationale"], [r for r in rows if r["source"] == "rationale"]


def test_distill_rows_are_the_label_rows_plus_correct_rationales_under_their_own_prompt(tmp_path):
    teacher, eval_file = write_teacher(tmp_path)
    rows, lines = prepare(tmp_path, "distill", "--answer", "distill", "--original-thoughts", teacher,
                          "--eval-file", eval_file)
    _, label_lines = prepare(tmp_path, "label", "--answer", "label", "--pairs", teacher, "--eval-file", eval_file)
    distill_label_lines = [line for line, row in zip(lines, rows) if row["source"] != "rationale"]
    assert sorted(distill_label_lines) == sorted(label_lines)  # byte for byte what --answer label writes
    labels, rationales = split(rows)
    assert {r["id"] for r in labels} == {t[0] for t in TEACHER} - {LEAKED}  # every pair but the leaked one
    correct = {t[0]: t for t in TEACHER if t[3] == t[4] and t[0] != LEAKED}
    assert {r["id"] for r in rationales} == {f"{i}:rationale" for i in correct}
    for r in rationales:
        pair = correct[r["id"].removesuffix(":rationale")]
        assert r["prompt"] == TASKS["nli_rationale"].messages({"premise": pair[1], "hypothesis": pair[2]})
        assert r["prompt"][-1]["content"].startswith(NLI_RATIONALE_PREFIX + " Premise: " + pair[1])
        assert r["completion"] == [{"role": "assistant", "content": pair[5]}]  # the thought, as written
        assert r["prompt"] != TASKS["nli_label"].messages({"premise": pair[1], "hypothesis": pair[2]})


def test_rationale_weight_and_every_thought_are_honoured_and_seeded(tmp_path):
    teacher, _ = write_teacher(tmp_path)
    base = ["--answer", "distill", "--original-thoughts", teacher]
    every, _ = prepare(tmp_path, "every", *base, "--no-correct-rationales-only")
    assert len(split(every)[1]) == len(TEACHER)  # the wrong thoughts serve too
    half, _ = prepare(tmp_path, "half", *base, "--rationale-weight", "0.5")
    again, _ = prepare(tmp_path, "again", *base, "--rationale-weight", "0.5")
    n_correct = sum(t[3] == t[4] for t in TEACHER)
    assert len(split(half)[1]) == round(0.5 * n_correct) and half == again
    assert len(split(half)[0]) == len(TEACHER)  # the weight never drops a label row
    none, _ = prepare(tmp_path, "none", *base, "--rationale-weight", "0")
    assert split(none)[1] == [] and len(none) == len(TEACHER)


def test_rationales_first_puts_every_rationale_row_before_every_label_row(tmp_path, capsys):
    from scripts.prepare_ft_data import main
    teacher, _ = write_teacher(tmp_path)
    base = ["--answer", "distill", "--original-thoughts", teacher]
    shuffled, _ = prepare(tmp_path, "shuffled", *base)
    curriculum, _ = prepare(tmp_path, "curriculum", *base, "--rationales-first")
    n_rationales = len(split(curriculum)[1])
    assert n_rationales and {r["source"] for r in curriculum[:n_rationales]} == {"rationale"}
    assert "rationale" not in {r["source"] for r in curriculum[n_rationales:]}
    assert split(curriculum) == split(shuffled)  # the same rows, each part in the seeded shuffle's order
    with pytest.raises(SystemExit) as exit_info:
        main(["--answer", "label", "--pairs", str(teacher), "--rationales-first", "--output-file", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--rationales-first" in capsys.readouterr().err


def test_rationales_only_writes_the_rationale_rows_distill_would_and_no_label_row(tmp_path, capsys):
    from scripts.prepare_ft_data import main
    teacher, eval_file = write_teacher(tmp_path)
    base = ["--answer", "distill", "--original-thoughts", str(teacher), "--eval-file", str(eval_file),
            "--rationale-weight", "0.5"]
    both, _ = prepare(tmp_path, "both", *base)
    alone, _ = prepare(tmp_path, "alone", *base, "--rationales-only")
    assert "rationale rows (distillation): " in capsys.readouterr().out
    assert alone and {r["source"] for r in alone} == {"rationale"}
    assert sorted(r["id"] for r in alone) == sorted(r["id"] for r in split(both)[1])  # the same seeded half
    bad = tmp_path / "bad.jsonl"
    assert main([*base, "--rationales-only", "--rationale-weight", "0", "--output-file", str(bad)]) == 2
    assert "no training examples are left" in capsys.readouterr().err and not bad.exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--rationales-only", "--rationales-first", "--output-file", str(bad)])
    assert exit_info.value.code == 2 and "no order to set" in capsys.readouterr().err


def test_bad_distill_options_exit_2(tmp_path, capsys):
    from scripts.prepare_ft_data import main
    teacher, _ = write_teacher(tmp_path)
    out = str(tmp_path / "x.jsonl")
    for options in (["--rationale-weight", "1.5", "--original-thoughts", str(teacher)], ["--pairs", str(teacher)],
                    ["--balance", "--original-thoughts", str(teacher)]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--answer", "distill", *options, "--output-file", out])
        assert exit_info.value.code == 2
    assert "--rationale-weight must be in [0, 1]" in capsys.readouterr().err


def test_label_rows_tokenize_as_inference_prompts_and_rationale_rows_train_the_thought(tmp_path, tiny_mistral):
    from transformers import AutoTokenizer

    from nli_finetune.sft_formats import detect_format, example_segments
    teacher, _ = write_teacher(tmp_path)
    rows, _ = prepare(tmp_path, "distill", "--answer", "distill", "--original-thoughts", teacher)
    tokenizer = AutoTokenizer.from_pretrained(tiny_mistral)
    labels, rationales = split(rows)
    for row in (labels[0], rationales[0]):
        assert detect_format(row, TASKS["nli_label"]) == "prompt_completion"
    (prompt, masked), (answer, trained) = example_segments(tokenizer, labels[0], "prompt_completion", TASKS["nli_label"],
                                                           "x")
    assert prompt == encode_prompt(tokenizer, TASKS["nli_label"].messages(labels[0])) and not masked and trained
    assert tokenizer.decode(answer, skip_special_tokens=True) == TASKS["nli_label"].answer(labels[0]["label"])
    (prompt, _), (answer, _) = example_segments(tokenizer, rationales[0], "prompt_completion", TASKS["nli_label"], "x")
    assert prompt == encode_prompt(tokenizer, TASKS["nli_rationale"].messages(rationales[0]))
    assert tokenizer.decode(answer, skip_special_tokens=True) == rationales[0]["completion"][0]["content"]


def test_training_on_the_distill_file_makes_a_label_task_model(tmp_path, tiny_mistral):
    from evaluate.sample_model import main as sample_model
    rows, _ = prepare(tmp_path, "distill", "--answer", "distill", "--original-thoughts",
                      REPO_ROOT / "data/sample/teacher_cot_1000.csv")
    code, out = run_train(tiny_mistral, tmp_path / "run", "--max_steps", "2", "--batch_size", "2", "--task",
                          "nli_label", "--max_train_examples", "16", train_data=tmp_path / "distill.jsonl")
    assert code == 0
    assert {r["source"] for r in rows[:16]} == {"pair", "rationale"}  # both kinds were trained on
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_samples"] == 16 and results["dropped_too_long"]["train"] == 0
    contract = json.loads((out / "model_contract.json").read_text())
    assert contract["task"] == "nli_label" and contract["answer_format"] == "label_only"
    # sample_model without --task takes the label task from the contract
    result_file = tmp_path / "eval.json"
    assert sample_model(["--model_id", str(out), "--test_file", "data/sample/dev_300.csv", "--limit", "2",
                         "--max_new_tokens", "4", "--output_file", str(result_file), "--quiet"]) == 0
    assert json.loads(result_file.read_text())["settings"]["task"] == "nli_label"
