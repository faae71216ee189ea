import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evaluate.merge_shards import main as merge_main
from evaluate.parse_predictions import main as parse_main
from evaluate.sample_model import main as sample_main
from nli_finetune.data_io import read_records
from tests.conftest import REPO_ROOT, shared_file

SAMPLE = REPO_ROOT / "data/sample/sample.csv"


def infer(model, data, out, *extra):
    return sample_main(["--model_id", str(model), "--test_file", str(data), "--output_file", str(out),
                        "--max_new_tokens", "24", "--quiet", *map(str, extra)])


def records(path):
    return json.loads(path.read_text())["records"]


def comparable(recs):
    return [{k: v for k, v in r.items()} for r in recs]


def test_labelled_run_writes_json_and_csv_in_input_order(trained_adapter, tmp_path):
    out = tmp_path / "r.json"
    assert infer(trained_adapter, SAMPLE, out, "--limit", "20", "--batch_size", "6") == 0
    data = json.loads(out.read_text())
    assert data["settings"]["loaded"]["adapter"] is True
    assert data["metrics"]["n"] == 20 and 0 <= data["metrics"]["accuracy"] <= 1
    assert "confusion_matrix" in data["metrics"] and data["timing"]["samples_per_s"] > 0
    first = data["records"][0]
    for key in ("id", "premise", "hypothesis", "raw_output", "predicted_label", "extraction_method",
                "true_label", "correct", "stop_reason", "generated_tokens"):
        assert key in first
    expected_labels = [int(r["label"]) for r in read_records(SAMPLE)[:20]]
    assert [r["true_label"] for r in data["records"]] == expected_labels  # input order restored
    with open(out.with_suffix(".csv")) as f:
        assert [row["id"] for row in csv.DictReader(f)] == [str(i) for i in range(1, 21)]
    assert "[INST]" not in first["raw_output"]  # only generated tokens are decoded


def test_batched_equals_one_at_a_time_and_sorting_keeps_order(trained_adapter, tmp_path):
    assert infer(trained_adapter, SAMPLE, tmp_path / "b8.json", "--limit", "12", "--batch_size", "8") == 0
    assert infer(trained_adapter, SAMPLE, tmp_path / "b1.json", "--limit", "12", "--batch_size", "1") == 0
    batched, single = records(tmp_path / "b8.json"), records(tmp_path / "b1.json")
    assert [r["id"] for r in batched] == [r["id"] for r in single]
    assert [r["raw_output"] for r in batched] == [r["raw_output"] for r in single]


def test_unlabelled_input_gives_predictions_only(tiny_mistral, tmp_path):
    data = tmp_path / "test.csv"
    rows = list(csv.reader(open(shared_file("nli/test.csv"), encoding="utf-8-sig")))[:6]
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "u.json"
    assert infer(tiny_mistral, data, out) == 0
    result = json.loads(out.read_text())
    assert "accuracy" not in result["metrics"] and result["metrics"]["n"] == 5
    assert all(r["true_label"] is None and r["correct"] is None for r in result["records"])


@pytest.mark.parametrize("content,message", [
    ("premise,label\na,1\n", "row 1: missing field 'hypothesis'"),
    ("premise,hypothesis,label\na,b,1\nc,d,7\n", "row 2: field 'label': '7' is not in the label set"),
    ("premise,hypothesis,label\na,b,1\nc,d,\n", "row 2: field 'label' is missing"),
    ("id,premise,hypothesis\n5,a,b\n5,c,d\n", "duplicate id 5"),
])
def test_bad_inputs_exit_2_with_file_row_field_and_no_output(tiny_mistral, tmp_path, capsys, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    out = tmp_path / "o.json"
    assert infer(tiny_mistral, data, out) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and message in err
    assert not out.exists() and not out.with_suffix(".csv").exists()


def test_unreadable_and_missing_files(tiny_mistral, tmp_path, capsys):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert infer(tiny_mistral, binary, tmp_path / "o.json") == 2
    assert "bin.jsonl" in capsys.readouterr().err
    assert infer(tiny_mistral, tmp_path / "nope.csv", tmp_path / "o.json") == 2
    assert "nope.csv: file not found" in capsys.readouterr().err
    assert infer(tmp_path / "no_model", SAMPLE, tmp_path / "o.json") == 2
    assert "model dir not found" in capsys.readouterr().err


def test_shards_merge_into_the_single_run_outputs(trained_adapter, tmp_path):
    assert infer(trained_adapter, SAMPLE, tmp_path / "all.json", "--limit", "10") == 0
    shard_files = []
    for i in range(3):
        shard_out = tmp_path / f"x.shard-{i}-of-3.json"
        assert infer(trained_adapter, SAMPLE, shard_out, "--limit", "10", "--shard", f"{i}/3") == 0
        shard_files.append(str(shard_out))
    assert merge_main(shard_files[::-1] + ["--output", str(tmp_path / "merged.json")]) == 0
    merged, single = json.loads((tmp_path / "merged.json").read_text()), json.loads((tmp_path / "all.json").read_text())
    assert merged["records"] == single["records"] and merged["metrics"] == single["metrics"]
    assert merge_main(shard_files[:2] + ["--output", str(tmp_path / "m2.json")]) == 2


def test_parse_predictions_rescoring_table(trained_adapter, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert infer(trained_adapter, SAMPLE, out, "--limit", "6") == 0
    assert parse_main([str(out), "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "p.json" in printed and "parse_rate" in printed and "(strict)" in printed


def test_changed_settings_refuse_stale_progress(tiny_mistral, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert infer(tiny_mistral, SAMPLE, out, "--limit", "3") == 0
    assert infer(tiny_mistral, SAMPLE, out, "--limit", "3", "--max_new_tokens", "30") == 2  # argparse: last wins
    assert "--restart" in capsys.readouterr().err
    assert infer(tiny_mistral, SAMPLE, out, "--limit", "3", "--max_new_tokens", "30", "--restart") == 0


@pytest.mark.slow
def test_sigkill_and_rerun_equals_an_uninterrupted_run(trained_adapter, tmp_path):
    base = [sys.executable, "-m", "evaluate.sample_model", "--model_id", str(trained_adapter), "--test_file",
            str(REPO_ROOT / "data/sample/dev_300.csv"), "--limit", "60", "--batch_size", "2", "--max_new_tokens", "40",
            "--quiet"]
    straight = tmp_path / "straight.json"
    assert subprocess.run(base + ["--output_file", str(straight)], cwd=REPO_ROOT, capture_output=True).returncode == 0
    out = tmp_path / "killed.json"
    progress = tmp_path / "killed.json.progress.jsonl"
    for kill_after_lines in (6, 30):  # kill twice, at different points
        proc = subprocess.Popen(base + ["--output_file", str(out)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and (not progress.exists() or progress.read_text().count("\n") < kill_after_lines):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "the run finished before it could be killed"
    resumed = subprocess.run(base + ["--output_file", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr
    a, b = json.loads(straight.read_text()), json.loads(out.read_text())
    assert [r["id"] for r in b["records"]] == [str(i) for i in range(1, 61)]  # no duplicate, no missing id
    assert b["records"] == a["records"] and b["metrics"] == a["metrics"]
    assert len(progress.read_text().splitlines()) == 60


def wrapper_env():
    return dict(os.environ, PATH=f"{REPO_ROOT / '.venv/bin'}:{os.environ['PATH']}")


@pytest.mark.slow  # two inference runs, each in a fresh process
def test_wrapper_resumes(tiny_mistral, tmp_path):
    out = tmp_path / "w.json"
    cmd = ["bash", "evaluate/run_inference.sh", "--local", "--model", str(tiny_mistral), "--data", str(SAMPLE),
           "--output", str(out), "--max_new_tokens", "8", "--limit", "4", "--quiet"]
    assert subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, env=wrapper_env()).returncode == 0
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=wrapper_env())
    assert again.returncode == 0 and "resuming: 4 done, 0 to go" in again.stderr


def test_wrapper_propagates_exit_status(tiny_mistral, tmp_path):
    bad_cmd = ["bash", "evaluate/run_inference.sh", "--local", "--model", str(tiny_mistral),
               "--data", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "x.json")]
    bad = subprocess.run(bad_cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=wrapper_env())
    assert bad.returncode == 2 and "missing.csv" in bad.stderr


def test_vllm_backend_without_vllm_says_how_to_install(tiny_mistral, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here; tests/test_vllm.py covers it")
    except ImportError:
        pass
    assert infer(tiny_mistral, SAMPLE, tmp_path / "v.json", "--backend", "vllm") == 2
    assert "vLLM is not installed" in capsys.readouterr().err and not (tmp_path / "v.json").exists()


class Completion:
    def __init__(self, token_ids, finish_reason):
        self.token_ids, self.finish_reason = token_ids, finish_reason


def test_vllm_results_are_cut_like_the_hf_backend(tiny_mistral):
    """vLLM runs on past a closed JSON answer and counts the eos: the backend turns its completions
    into the records the HF backend writes (the parity itself: tests/test_vllm.py, `make test-vllm`)."""
    from evaluate.vllm_backend import VllmGenerator
    from nli_finetune.modeling import load_tokenizer
    generator = object.__new__(VllmGenerator)  # no engine: only the result shaping is under test
    generator.tokenizer = tokenizer = load_tokenizer(str(tiny_mistral))
    answer = tokenizer('{"thought_process": "a } b", "predicted_label": 1}', add_special_tokens=False)["input_ids"]
    tail = tokenizer(" more text", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    json_cut = generator._result(Completion(answer + tail + [eos], "stop"), stop_at_json=True)
    assert json_cut["stop_reason"] == "json" and json_cut["generated_tokens"] == len(answer)
    assert json_cut["text"] == tokenizer.decode(answer, skip_special_tokens=True)
    eos_cut = generator._result(Completion(answer + tail + [eos], "stop"), stop_at_json=False)
    assert eos_cut["stop_reason"] == "eos" and eos_cut["generated_tokens"] == len(answer + tail)
    too_long = generator._result(Completion(tail * 3, "length"), stop_at_json=True)
    assert too_long["stop_reason"] == "length" and too_long["generated_tokens"] == len(tail * 3)


def test_long_prompts_lose_their_start_never_the_instruction_and_names_are_deterministic(tiny_mistral, tmp_path):
    from evaluate.inference_run import default_output
    from evaluate.sample_model import trim_prompt
    ids = [1] + list(range(100, 160))
    trimmed, cut = trim_prompt(ids, 20, bos_id=1)
    assert cut == 41 and trimmed == [1] + ids[-19:]  # bos kept, the end (instruction, [/INST]) kept
    assert trim_prompt(ids, 100, bos_id=1) == (ids, 0)
    assert default_output("models/tiny-x/", "data/dev.csv", None).name == "tiny-x-dev.json"
    assert default_output("models/a", "d.jsonl", (1, 4)).name == "a-d.shard-1-of-4.json"
    out = tmp_path / "t.json"
    assert infer(tiny_mistral, SAMPLE, out, "--limit", "3", "--max_prompt_tokens", "40") == 0
    assert all(r["prompt_tokens_trimmed"] > 0 for r in records(out))


def test_an_output_that_is_an_input_is_refused_before_anything_is_written(tiny_mistral, tmp_path, capsys):
    data = tmp_path / "dev.csv"
    data.write_text(SAMPLE.read_text())
    before = data.read_bytes()
    # the default CSV output of X/dev.json is X/dev.csv: the input itself
    assert infer(tiny_mistral, data, tmp_path / "dev.json", "--limit", "2") == 2
    assert "--output_csv" in capsys.readouterr().err and data.read_bytes() == before
    link = tmp_path / "link.json"
    link.symlink_to(data)
    assert infer(tiny_mistral, data, link, "--limit", "2") == 2  # the same file through a symlink
    assert "same file as --test_file" in capsys.readouterr().err and data.read_bytes() == before
    assert infer(tiny_mistral, data, tmp_path / "r.csv", "--limit", "2") == 2  # JSON and CSV on one path
    assert "choose distinct output paths" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.progress*")) and not (tmp_path / "r.csv").exists()


def test_resume_is_refused_when_the_input_rows_or_the_model_changed(tiny_mistral, tiny_models, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text(SAMPLE.read_text())
    out = tmp_path / "o.json"
    assert infer(tiny_mistral, data, out, "--limit", "3") == 0
    data.write_text(SAMPLE.read_text().replace(",1\n", ",0\n", 1))  # one label edited
    assert infer(tiny_mistral, data, out, "--limit", "3") == 2
    err = capsys.readouterr().err
    assert "computed from other files.inputs than this run; rerun with --restart" in err
    assert infer(tiny_mistral, data, out, "--limit", "3", "--restart") == 0
    model = tmp_path / "model"
    import shutil
    shutil.copytree(tiny_mistral, model)
    assert infer(model, data, tmp_path / "m.json", "--limit", "3") == 0
    shutil.copy(tiny_models["llama"] / "config.json", model / "config.json")  # the model changed in place
    shutil.copy(tiny_models["llama"] / "model.safetensors", model / "model.safetensors")
    assert infer(model, data, tmp_path / "m.json", "--limit", "3") == 2
    assert "computed from other files.model than this run" in capsys.readouterr().err
    (tmp_path / "m.json.progress.jsonl.meta.json").unlink()  # progress whose settings were lost
    assert infer(model, data, tmp_path / "m.json", "--limit", "3") == 2
    assert "has no readable m.json.progress.jsonl.meta.json" in capsys.readouterr().err
