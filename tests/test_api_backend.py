"""`sample_model --backend openai` against a real HTTP server on 127.0.0.1 (nli_finetune/testing/fake_chat_server.py):
the same records and metrics as the local backends, retries, and resume after kill -9 exactly once."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

from evaluate.api_backend import answer_result
from evaluate.sample_model import main as sample_main
from nli_finetune.testing.fake_chat_server import FakeChatServer
from prompts import TASKS
from tests.conftest import REPO_ROOT

MARKERS = ["[mode:429once]", "[mode:500twice]", "[mode:slowonce]", "", "", ""]


def nli_rows(path, n=12):
    """Real sample pairs; the fake teacher answers the [label:x] marker (the true label) and the
    [mode:...] markers inject failures."""
    rows = list(csv.DictReader(open(REPO_ROOT / "data/sample/sample.csv", encoding="utf-8-sig")))[:n]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "premise", "hypothesis", "label"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"id": f"pair-{i}", "premise": row["premise"], "label": row["label"],
                             "hypothesis": f"{row['hypothesis']} [label:{row['label']}] {MARKERS[i % len(MARKERS)]}"})
    return path


def api_args(server, data, out, *extra):
    return ["--backend", "openai", "--api", "local", "--api_base", server.base_url, "--model_name", "teacher",
            "--test_file", str(data), "--output_file", str(out), "--quiet", "--timeout", "1", *map(str, extra)]


def test_an_api_gives_the_records_and_metrics_of_the_local_backends(tmp_path, fast_retries):
    data = nli_rows(tmp_path / "pairs.csv")
    out = tmp_path / "teacher.json"
    with FakeChatServer(slow_seconds=2) as server:
        assert sample_main(api_args(server, data, out, "--workers", "3")) == 0
        attempts = dict(server.attempts)
    result = json.loads(out.read_text())
    records = result["records"]
    assert [r["id"] for r in records] == [f"pair-{i}" for i in range(12)]  # input order
    assert result["metrics"]["accuracy"] == 1.0 and result["metrics"]["parse_rate"] == 1.0
    assert {r["stop_reason"] for r in records} == {"json"} and all(r["json_objects"] == 1 for r in records)
    assert result["settings"]["api_base"] == server.base_url and result["settings"]["model_name"] == "teacher"
    retried = [user for user, count in attempts.items() if count > 1]
    assert len(retried) == 6  # 429, 500 x2 and the slow one (timed out) were asked again, then answered
    with open(out.with_suffix(".csv"), encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 12


def test_answers_are_shaped_like_the_local_backends():
    vllm = {"message": {"content": '{"predicted_label": 1} trailing'}, "finish_reason": "stop"}
    assert answer_result(vllm, {"completion_tokens": 9}, "vllm-0.32.0", stop_at_json=True, task=TASKS["nli"]) == \
        {"text": '{"predicted_label": 1}', "stop_reason": "json", "generated_tokens": 8}  # vLLM counts its eos
    free = {"message": {"content": "no json here"}, "finish_reason": "length"}
    assert answer_result(free, {"completion_tokens": 5}, "", stop_at_json=True, task=TASKS["nli"]) == \
        {"text": "no json here", "stop_reason": "length", "generated_tokens": 5}
    assert answer_result(vllm, {"completion_tokens": 9}, "fp_openai", stop_at_json=False, task=TASKS["nli"])["stop_reason"] == "eos"


# `python -m evaluate.sample_model` in a process of its own, retrying after 0.01 s, 0.02 s, ... (the 500twice
# and slowonce rows waited out 1-2 s backoffs: 15 s a run)
SAMPLE_MODEL_FAST_RETRIES = ("import sys; from tests.conftest import patch_fast_retries; patch_fast_retries(); "
                             "from evaluate.sample_model import main; sys.exit(main(sys.argv[1:]))")


def test_a_run_killed_mid_way_resumes_and_asks_each_pair_exactly_once(tmp_path):
    data = nli_rows(tmp_path / "pairs.csv", n=24)
    out = tmp_path / "teacher.json"
    progress = tmp_path / "teacher.json.progress.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with FakeChatServer(latency=0.15, slow_seconds=2, retry_after="0") as server:
        command = [sys.executable, "-c", SAMPLE_MODEL_FAST_RETRIES, *api_args(server, data, out, "--workers", "2")]
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and (not progress.exists() or len(progress.read_text().splitlines()) < 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = {json.loads(line)["id"] for line in progress.read_text().splitlines() if line.strip()}
        assert 6 <= len(done_before) < 24 and not out.exists()
        asked_before = dict(server.attempts)
        rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming" in rerun.stderr
        asked_again = {user for user, count in server.attempts.items() if count > asked_before.get(user, 0)}
    ids = [json.loads(line)["id"] for line in progress.read_text().splitlines() if line.strip()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 24  # every pair once in the progress file
    records = json.loads(out.read_text())["records"]
    assert [r["id"] for r in records] == [f"pair-{i}" for i in range(24)]
    hypotheses = {r["id"]: r["hypothesis"] for r in records}
    assert not any(hypotheses[i] in user for i in done_before for user in asked_again)  # nothing asked twice


def test_api_setup_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    data = nli_rows(tmp_path / "pairs.csv", n=2)
    assert sample_main(["--backend", "openai", "--test_file", str(data), "--api_base", "http://127.0.0.1:9/v1"]) == 2
    assert "needs --model_name" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    assert sample_main(["--backend", "openai", "--api", "openai", "--model_name", "gpt-4o", "--test_file",
                        str(data), "--output_file", str(tmp_path / "o.json")]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert sample_main(["--test_file", str(data)]) == 2
    assert "needs --model_id" in capsys.readouterr().err


def test_progress_from_another_endpoint_or_model_is_refused(tmp_path, capsys, fast_retries):
    data = nli_rows(tmp_path / "pairs.csv", n=3)
    out = tmp_path / "teacher.json"
    with FakeChatServer() as server:
        assert sample_main(api_args(server, data, out, "--limit", "2")) == 0
        out.unlink()
        assert sample_main(api_args(server, data, out, "--limit", "2", "--model_name", "other")) == 2
    assert "saved progress was computed from other settings.model_id, settings.model_name than this run" in capsys.readouterr().err


def test_a_prompt_the_api_refuses_is_an_error_record_and_a_bad_key_stops_the_run(tmp_path, capsys, fast_retries):
    data = nli_rows(tmp_path / "pairs.csv", n=4)
    rows = data.read_text().splitlines()
    rows[2] = rows[2].replace("[label:", "[mode:toolong] [label:")
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "teacher.json"
    with FakeChatServer() as server:
        assert sample_main(api_args(server, data, out)) == 0
        result = json.loads(out.read_text())
        refused = result["records"][1]
        assert refused["stop_reason"] == "error" and "HTTP 400" in refused["error"] and refused["predicted_label"] is None
        assert result["metrics"]["api_errors"] == 1 and result["metrics"]["parse_rate"] == 0.75
        assert result["metrics"]["stop_rate"] == 0.75  # a refused prompt did not stop by itself
        rows[1] = rows[1].replace("[label:", "[mode:echo401] [label:")
        data.write_text("\n".join(rows) + "\n")
        assert sample_main(api_args(server, data, tmp_path / "other.json")) == 1  # 401: every prompt would fail
    assert "HTTP 401" in capsys.readouterr().err
