"""Off a terminal (a CI log, `docker logs`) progress is a line now and then, never a carriage-return
update per step."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def run_logged(*args):
    # bytes, not text: text mode would turn the carriage returns looked for into newlines
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, output[-2000:]
    return output


@pytest.mark.slow  # a training run and an inference run, each in a fresh process (~20 s)
def test_training_and_inference_logs_have_no_progress_bar_updates(tiny_mistral, tmp_path):
    training = run_logged("train.train_sft", "tiny_cpu.py", "--model_id", tiny_mistral, "--output_dir", tmp_path / "run",
                          "--train_data", "data/sample/sample_thoughts.jsonl", "--eval_data", "None", "--max_steps", "6",
                          "--batch_size", "2", "--logging_steps", "2", "--max_train_examples", "12", "--save_steps", "100")
    assert "\r" not in training
    assert training.count("'loss'") == 3  # one line per logging step instead
    inference = run_logged("evaluate.sample_model", "--model_id", tiny_mistral, "--test_file", "data/sample/sample.csv",
                           "--limit", "6", "--max_new_tokens", "8", "--batch_size", "2",
                           "--output_file", tmp_path / "out.json")
    assert "\r" not in inference and "sample_model: 6 examples" in inference


def test_line_progress_prints_a_line_now_and_then_and_one_at_the_end(monkeypatch, capsys):
    from nli_finetune import cli
    monkeypatch.setattr(cli, "on_terminal", lambda: False)
    monkeypatch.setattr(cli, "LOGGED_PROGRESS_SECONDS", 0)  # every update is "30 s later"
    assert list(cli.progress(range(3), total=3, desc="requests", unit="ex")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    # a line per update; the end's count was the last line already, so closing adds none
    assert [line.split(" in ")[0] for line in lines] == ["requests: 1/3 ex (33%)", "requests: 2/3 ex (67%)",
                                                         "requests: 3/3 ex (100%)"] and "\r" not in "".join(lines)
    monkeypatch.setattr(cli, "LOGGED_PROGRESS_SECONDS", 3600)
    with cli.progress(total=10, desc="generating", unit="ex") as bar:
        bar.update(4)
    bar.close()  # closed twice: printed once
    assert capsys.readouterr().err.splitlines() == ["generating: 4/10 ex (40%) in 0s"]
