"""The other workflows: splitting, combining, chat-format classification, prompt/response SFT."""

import hashlib
import json
import shutil

import pytest

from evaluate.sample_model import main as sample_main
from nli_finetune.data_io import read_jsonl
from scripts.combine_datasets import main as combine
from scripts.prepare_finetuning_data import main as prepare_chat
from scripts.split_dataset import main as split
from tests.conftest import run_train, shared_file


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_the_cal_data(tmp_path, capsys):
    source = shared_file("cal/train_A.jsonl")
    local = tmp_path / "CAL_inference.jsonl"
    shutil.copy(source, local)
    before = digest(local)
    assert split([str(local)]) == 0
    part1, part2 = tmp_path / "CAL_inference_part1.jsonl", tmp_path / "CAL_inference_part2.jsonl"
    lines1, lines2 = part1.read_text(encoding="utf-8").splitlines(), part2.read_text(encoding="utf-8").splitlines()
    assert len(lines1) == len(lines2) == 250 and digest(local) == before  # input untouched
    assert sorted(lines1 + lines2) == sorted(local.read_text(encoding="utf-8").splitlines())  # UTF-8 byte for byte
    out = capsys.readouterr().out
    assert "total lines: 500" in out and "250 lines (50.0%)" in out

    assert split([str(local), "--output1", str(tmp_path / "DA/train.jsonl"), "--output2", str(tmp_path / "DB/train.jsonl"),
                  "--ratio", "0.2", "--seed", "7"]) == 0
    da = (tmp_path / "DA/train.jsonl").read_text().splitlines()
    assert len(da) == 100
    assert split([str(local), "--output1", str(tmp_path / "again1.jsonl"), "--output2", str(tmp_path / "again2.jsonl"),
                  "--ratio", "0.2", "--seed", "7"]) == 0
    assert (tmp_path / "again1.jsonl").read_text().splitlines() == da  # reproducible by seed


@pytest.mark.parametrize("ratio", ["0", "1", "1.5"])
def test_split_rejects_bad_ratios(tmp_path, ratio, capsys):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    assert split([str(tmp_path / "x.jsonl"), "--ratio", ratio]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


def test_split_malformed_line_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    assert split([str(bad)]) == 2
    assert "bad.jsonl: line 3: invalid JSON" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_combine_sources_into_chat_rows(tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "answer": 2 * i}) + "\n" for i in range(20)))
    out = tmp_path / "combined.jsonl"
    assert combine(["--input", f"cal={shared_file('cal/train_A.jsonl')}", "--input", f"qa={qa}:question_answer",
                    "--input", f"hate={shared_file('hatespeech/ft_validation.jsonl')}", "--output", str(out),
                    "--holdout", "0.1", "--system", "You are helpful."]) == 0
    rows, held = read_jsonl(out), read_jsonl(tmp_path / "combined_holdout.jsonl")
    assert len(rows) + len(held) == 500 + 20 + 55 and len(held) == 58
    assert {r["source"] for r in rows + held} == {"cal", "qa", "hate"}
    assert all(r["messages"][0]["role"] == "system" and r["messages"][-1]["role"] == "assistant" for r in rows)
    table = capsys.readouterr().out
    assert "cal" in table and "0.870" in table  # 500 / 575


def test_chat_classification_data_is_valid_json_and_split_filtered(tmp_path, capsys):
    unified = tmp_path / "unified"
    unified.mkdir()
    shutil.copy(shared_file("hatespeech/unified_val.json"), unified / "unified_val.json")
    shutil.copy(shared_file("hatespeech/unified_test.json"), unified / "unified_test.json")
    records = json.loads((unified / "unified_val.json").read_text())
    train_only = [dict(r, split="holdout") for r in records[:30]]  # no record says "train": warn, use all
    (unified / "unified_train.json").write_text(json.dumps(train_only))
    out = tmp_path / "prepared"
    assert prepare_chat(["--unified_dir", str(unified), "--data_output_dir", str(out), "--include_test"]) == 0
    captured = capsys.readouterr()
    assert "no record has split train; using all 30" in captured.err
    validation = read_jsonl(out / "validation.jsonl")
    assert len(validation) == sum(r["split"] == "val" for r in records) == 55
    assert len(read_jsonl(out / "test.jsonl")) == sum(r["split"] == "test" and bool(r["text"].strip())
                                                      for r in json.loads((unified / "unified_test.json").read_text()))
    for row in validation + read_jsonl(out / "train_optimized.jsonl"):
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        answer = json.loads(row["messages"][-1]["content"])  # the original's doubled braces would fail here
        assert set(answer) == {"classification", "confidence", "reasoning", "protected_group"}
        assert answer["classification"] in ("hate_speech", "not_hate")
    assert "train 30" in captured.out and "validation 55" in captured.out

    again = tmp_path / "simple"
    assert prepare_chat(["--unified_dir", str(unified), "--data_output_dir", str(again), "--strategy", "nope"]) == 0
    assert "unknown strategy 'nope'" in capsys.readouterr().err
    assert sorted(p.name for p in again.iterdir()) == ["train.jsonl", "validation.jsonl"]


def _infer(model, data, out, task, *extra):
    assert sample_main(["--model_id", str(model), "--test_file", str(data), "--output_file", str(out), "--task", task,
                        "--max_new_tokens", "24", "--quiet", *extra]) == 0
    return json.loads(out.read_text())


def test_train_and_infer_on_each_format(tiny_models, tmp_path):
    # 1. prompt/response SFT (CAL) on the qwen2 tiny model, scored as free text
    cal = tmp_path / "cal.jsonl"
    cal.write_text("\n".join(shared_file("cal/train_A.jsonl").read_text(encoding="utf-8").splitlines()[:24]) + "\n")
    code, adapter = run_train(tiny_models["qwen2"], tmp_path / "cal_ft", "--max_steps", "3", "--task", "free_text",
                              "--max_seq_length", "4096", train_data=cal)
    assert code == 0
    result = _infer(adapter, cal, tmp_path / "cal.json", "free_text", "--limit", "4")
    assert {"exact_match", "rouge_l", "stop_rate"} <= set(result["metrics"]) and 0 <= result["metrics"]["rouge_l"] <= 1
    assert result["settings"]["stop_at_json"] is False

    # 2. chat-format classification with JSON answers (hate speech) on the llama tiny model
    unified = tmp_path / "unified"
    unified.mkdir()
    for name in ("unified_val.json", "unified_test.json"):
        shutil.copy(shared_file(f"hatespeech/{name}"), unified / name)
    shutil.copy(unified / "unified_val.json", unified / "unified_train.json")
    assert prepare_chat(["--unified_dir", str(unified), "--data_output_dir", str(tmp_path / "hate"), "--simple_only"]) == 0
    code, adapter = run_train(tiny_models["llama"], tmp_path / "hate_ft", "--max_steps", "3", "--task", "hate_speech",
                              train_data=tmp_path / "hate" / "train.jsonl")
    assert code == 0
    result = _infer(adapter, tmp_path / "hate" / "validation.jsonl", tmp_path / "hate.json", "hate_speech", "--limit", "6")
    metrics = result["metrics"]
    assert {"accuracy", "f1_macro", "per_class", "parse_failure_rate"} <= set(metrics)
    assert set(metrics["per_class"]) == {"hate_speech", "not_hate"}
    assert all(r["true_label"] in ("hate_speech", "not_hate") for r in result["records"])

    # 3. combined chat messages on the mistral tiny model
    combined = tmp_path / "combined.jsonl"
    assert combine(["--input", f"cal={cal}", "--input", f"hate={tmp_path / 'hate' / 'validation.jsonl'}",
                    "--output", str(combined)]) == 0
    code, adapter = run_train(tiny_models["mistral"], tmp_path / "chat_ft", "--max_steps", "3", "--task", "free_text",
                              "--max_seq_length", "4096", train_data=combined)
    assert code == 0
    result = _infer(adapter, combined, tmp_path / "chat.json", "free_text", "--limit", "4")
    assert result["metrics"]["n"] == 4 and "rouge_l" in result["metrics"]
