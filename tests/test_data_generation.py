"""Data generation against a real HTTP server on 127.0.0.1 that injects failures."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nli_finetune.data_io import read_jsonl
from nli_finetune.llm_api import ApiError, ChatClient
from nli_finetune.testing.fake_chat_server import FakeChatServer
from scripts.generate_thoughts import main as generate
from scripts.generate_thoughts_reflected import main as reflect
from scripts.score_thoughts import main as score
from tests.conftest import FAST, REPO_ROOT

KEY = "sk-test-CANARY-4f1d9a7e"


@pytest.fixture(autouse=True)
def api_key(monkeypatch, fast_retries):
    monkeypatch.setenv("API_KEY", KEY)


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "premise", "hypothesis", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


MODES = ["ok", "429once", "500twice", "slowonce", "badjson", "badlabel", "alwaysbad", "always500"]


def test_every_id_ends_exactly_once_in_output_or_failures(server, tmp_path, capsys):
    rows = [{"id": f"r{i}", "premise": f"Premise {i} [mode:{mode}]", "hypothesis": f"Hypothesis {i} [label:{i % 2}]",
             "label": i % 2} for i, mode in enumerate(MODES * 2)]
    data = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "thoughts.jsonl"
    code = generate(["--input-csv", str(data), "--output-json", str(out), "--api-base", server.base_url,
                     "--workers", "4", *FAST])
    assert code == 1  # some examples failed for good
    written = read_jsonl(out)
    failed = read_jsonl(tmp_path / "thoughts.failures.jsonl")
    written_ids, failed_ids = [r["id"] for r in written], [r["id"] for r in failed]
    assert sorted(written_ids + failed_ids) == sorted(r["id"] for r in rows)  # each exactly once
    assert {r["id"] for r in rows if "always" in r["premise"]} == set(failed_ids)
    assert all("invalid after 3 answers" in f["reason"] or "gave up after 4 attempts" in f["reason"] for f in failed)
    for record in written:
        assert record["predicted_label"] in (0, 1) and record["correct"] is True
        assert record["thought_process"].startswith("Step 1.")  # kept as written, not lower-cased
    by_id = {r["id"]: r for r in written}
    assert by_id["r4"]["reprompt_counts"] == 1 and by_id["r5"]["reprompt_counts"] == 1  # bad answers re-asked
    summary = capsys.readouterr().out
    assert "12 done, 4 failed" in summary and "teacher accuracy 1.000" in summary

    # rerun: failures are retried (and fail again), nothing done is redone or duplicated
    before = server.requests
    generate(["--input-csv", str(data), "--output-json", str(out), "--api-base", server.base_url, *FAST])
    assert len(read_jsonl(out)) == 12 and len(read_jsonl(tmp_path / "thoughts.failures.jsonl")) == 8
    assert server.requests > before
    before = server.requests
    generate(["--input-csv", str(data), "--output-json", str(out), "--api-base", server.base_url, "--skip-failed",
              *FAST])
    assert server.requests == before  # nothing left to do


def test_retry_after_is_honoured(tmp_path):
    with FakeChatServer(retry_after="1") as slow_server:
        client = ChatClient(base_url=slow_server.base_url, api_key=KEY, model="m", timeout=5, backoff_base=0.01)
        started = time.time()
        content, _ = client.chat([{"role": "user", "content": "Premise: p [mode:429once]\nHypothesis: h"}])
        assert time.time() - started >= 1.0 and json.loads(content)["predicted_label"] in (0, 1)


def test_the_key_is_sent_but_never_written(server, tmp_path, capsys):
    rows = [{"id": i, "premise": f"p{i} [mode:{m}]", "hypothesis": "h", "label": 1} for i, m in enumerate(MODES)]
    data = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "t.jsonl"
    generate(["--input-csv", str(data), "--output-json", str(out), "--api-base", server.base_url, *FAST])
    assert server.auth_headers and all(h == f"Bearer {KEY}" for h in server.auth_headers)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    for path in tmp_path.iterdir():
        assert KEY not in path.read_text(errors="ignore"), path
    client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", max_attempts=1)
    with pytest.raises(ApiError) as error:  # a server that echoes the key back in an error body
        client.chat([{"role": "user", "content": "Premise: p [mode:echo401]"}])
    assert "HTTP 401" in str(error.value) and "***" in str(error.value) and KEY not in str(error.value)


def test_missing_key_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    data = write_csv(tmp_path / "in.csv", [{"id": 1, "premise": "p", "hypothesis": "h", "label": 1}])
    code = generate(["--input-csv", str(data), "--output-json", str(tmp_path / "o.jsonl"), "--api", "mistral"])
    assert code == 2 and "MISTRAL_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_input_names_file_row_field(server, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", [{"id": 1, "premise": "p", "hypothesis": "h", "label": 1},
                                           {"id": 2, "premise": "p", "hypothesis": "", "label": 1}])
    code = generate(["--input-csv", str(data), "--output-json", str(tmp_path / "o.jsonl"), "--api-base",
                     server.base_url, *FAST])
    assert code == 2 and "in.csv: row 2: missing field 'hypothesis'" in capsys.readouterr().err


def test_reflection_and_scoring(server, tmp_path, capsys):
    thoughts = tmp_path / "thoughts.jsonl"
    rows = [{"id": i, "premise": f"p{i}" + (" [reflect:disagree]" if i == 2 else ""), "hypothesis": "h",
             "thought_process": "Step 1. wrong.", "predicted_label": 0, "true_label": 1 if i < 3 else 0,
             "correct": i >= 3} for i in range(5)]
    thoughts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "reflections.jsonl"
    assert reflect(["--input-thoughts-json", str(thoughts), "--output-reflection-json", str(out),
                    "--api-base", server.base_url, *FAST]) == 0
    reflections = {r["id"]: r for r in read_jsonl(out)}
    assert sorted(reflections) == [0, 1, 2]  # only the incorrect ones
    assert all(r["predicted_label"] == 0 for r in reflections.values())  # the original label is kept
    assert reflections[2]["reflection_agrees"] is False and reflections[0]["reflection_agrees"] is True
    assert "1 reflections disagree with the true label (ids 2)" in capsys.readouterr().out

    from scripts.prepare_ft_data import main as prepare
    assert prepare(["--original-thoughts", str(thoughts), "--reflected-thoughts", str(out), "--ablation", "2",
                    "--output-file", str(tmp_path / "ft.jsonl")]) == 0
    assert {r["source"] for r in read_jsonl(tmp_path / "ft.jsonl")} == {"original", "reflection"}
    assert len(read_jsonl(tmp_path / "ft.jsonl")) == 2 + 2  # 2 correct originals + 2 agreeing reflections

    scored = tmp_path / "scored.jsonl"
    assert score(["--input-thoughts-json", str(thoughts), "--output-json", str(scored), "--api-base",
                  server.base_url, *FAST]) == 0
    assert all(1 <= r["score"] <= 5 for r in read_jsonl(scored)) and len(read_jsonl(scored)) == 5


def script_job(tmp_path, server, n: int, workers: int):
    """(rows, output, command) of generate_thoughts.py run as a process on n plain rows."""
    rows = [{"id": f"k{i}", "premise": f"Premise {i}", "hypothesis": f"H {i}", "label": i % 2} for i in range(n)]
    data, out = write_csv(tmp_path / "in.csv", rows), tmp_path / "t.jsonl"
    return rows, out, [sys.executable, "scripts/generate_thoughts.py", "--input-csv", str(data), "--output-json",
                       str(out), "--api-base", server.base_url, "--workers", str(workers), *FAST]


@pytest.mark.slow
def test_sigkill_mid_run_and_rerun_loses_and_duplicates_nothing(tmp_path):
    with FakeChatServer(latency=0.05) as server:
        rows, out, cmd = script_job(tmp_path, server, 120, workers=4)
        env = dict(os.environ, API_KEY=KEY)
        for kill_at in (10, 60):
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < kill_at):
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True).returncode == 0
        ids = [r["id"] for r in read_jsonl(out)]
        assert sorted(ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids))


@pytest.mark.parametrize("script", ["data/download_data.py", "models/download_model.py"])
def test_downloads_fail_fast_and_clearly_offline(script, tmp_path):
    started = time.time()
    proc = subprocess.run([sys.executable, script, "--repo-id", "someone/something", "--out", str(tmp_path / "x")],
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", HF_TOKEN=KEY))
    assert proc.returncode == 2 and "could not download" in proc.stderr and time.time() - started < 30
    assert KEY not in proc.stdout + proc.stderr


def test_resume_is_tied_to_the_input_and_ids_and_paths_are_checked(server, tmp_path, capsys):
    rows = [{"id": i, "premise": f"Premise {i}", "hypothesis": f"H {i}", "label": i % 2} for i in range(3)]
    first, other = write_csv(tmp_path / "a.csv", rows), write_csv(tmp_path / "b.csv", [
        {**r, "premise": f"Another premise {r['id']}"} for r in rows])
    out = tmp_path / "t.jsonl"
    args = ["--output-json", str(out), "--api-base", server.base_url, *FAST]
    assert generate(["--input-csv", str(first), *args]) == 0
    assert [r["id"] for r in read_jsonl(out)] == ["0", "1", "2"] or sorted(r["id"] for r in read_jsonl(out)) == [
        "0", "1", "2"]  # an id of 0 stays 0
    before = out.read_bytes()
    assert generate(["--input-csv", str(other), *args]) == 2  # same ids, other rows: never "already done"
    err = capsys.readouterr().err
    assert "this record was computed from other premise than this run (input" in err and out.read_bytes() == before
    dupes = write_csv(tmp_path / "d.csv", [rows[0], rows[0]])
    assert generate(["--input-csv", str(dupes), "--output-json", str(tmp_path / "d.jsonl"), "--api-base",
                     server.base_url, *FAST]) == 2
    assert "row 2: field 'id': duplicate id 0" in capsys.readouterr().err
    thoughts = tmp_path / "th.jsonl"
    thoughts.write_text(out.read_text())
    assert score(["--input-thoughts-json", str(thoughts), "--output-json", str(thoughts), "--api-base",
                  server.base_url, *FAST]) == 2
    assert "same file as input" in capsys.readouterr().err and thoughts.read_text() == out.read_text()
    assert not (tmp_path / "d.failures.jsonl").exists() and not (tmp_path / "t.failures.jsonl").exists()


def test_ctrl_c_stops_new_requests_keeps_what_finished_and_exits_130(tmp_path):
    with FakeChatServer(latency=0.3) as server:
        rows, out, cmd = script_job(tmp_path, server, 60, workers=2)
        # a job started in the background inherits an ignored SIGINT (as under `make test &`): restore Ctrl-C
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ, API_KEY=KEY), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        sent_by_then = server.requests
        time.sleep(1.0)
        assert proc.returncode == 130 and "Traceback" not in err
        assert "interrupted by Ctrl-C" in err and "rerun the same command" in err
        written = read_jsonl(out)
        assert server.requests == sent_by_then  # nothing was sent after the process ended
        assert len(written) <= server.requests <= len(written) + 2  # only requests in flight were not saved
        assert len(written) < len(rows)
