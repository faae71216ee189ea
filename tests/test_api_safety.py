"""The API edges of issue #22 and the one job runner of issue #24 section 3, against a real HTTP server on
127.0.0.1 (nli_finetune/testing/fake_chat_server.py): data generation and `sample_model --backend openai` stop, save and
refuse the same way; answers of every legal shape are read; nothing written holds a credential."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evaluate.api_backend import answer_result
from evaluate.sample_model import main as sample_main
from nli_finetune import job_runner
from nli_finetune.data_io import read_jsonl
from nli_finetune.llm_api import ApiError, ChatClient
from nli_finetune.redaction import redact, safe_url
from nli_finetune.testing.fake_chat_server import FakeChatServer
from prompts import TASKS
from scripts.generate_thoughts import main as generate
from tests.conftest import REPO_ROOT

KEY = "sk-test-CANARY-4f1d9a7e"
FAST = ["--api", "local", "--timeout", "2", "--max-attempts", "3", "--max-retries", "1"]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("API_KEY", KEY)


def pairs_csv(path, n, mode=lambda i: "ok"):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "premise", "hypothesis", "label"])
        writer.writeheader()
        writer.writerows({"id": f"p{i}", "premise": f"Premise {i} [mode:{mode(i)}]",
                          "hypothesis": f"Hypothesis {i} [label:{i % 2}]", "label": i % 2} for i in range(n))
    return path


def gen_args(server, data, out, *extra):
    return ["--input-csv", str(data), "--output-json", str(out), "--api-base", server.base_url, *FAST,
            *map(str, extra)]


def eval_args(server, data, out, *extra):
    return ["--backend", "openai", "--api", "local", "--api_base", server.base_url, "--model_name", "teacher",
            "--test_file", str(data), "--output_file", str(out), "--quiet", "--timeout", "2", *map(str, extra)]


def failing_append(monkeypatch, module):
    """Patch `module.append_jsonl` to fail like a full disk from its 4th call, and ChatClient to note when
    each request is sent; returns {"error_at": when the save failed, "sent_at": [when each request went out]}."""
    seen = {"calls": 0, "error_at": None, "sent_at": []}
    real_append, real_post = module.append_jsonl, ChatClient._post

    def append(f, record, sync=True):
        seen["calls"] += 1
        if seen["calls"] > 3:
            seen["error_at"] = seen["error_at"] or time.monotonic()
            raise OSError(28, "No space left on device")
        real_append(f, record, sync)

    def post(self, body, headers):
        seen["sent_at"].append(time.monotonic())
        return real_post(self, body, headers)
    monkeypatch.setattr(module, "append_jsonl", append)
    monkeypatch.setattr(ChatClient, "_post", post)
    return seen


# --- H6: after any failure nothing queued is sent --------------------------------------------------------

@pytest.mark.parametrize("tool", ["generate_thoughts", "sample_model"])
def test_a_failed_save_sends_no_request_after_the_error(tool, tmp_path, monkeypatch, capsys):
    import evaluate.sample_model as sample_model
    data = pairs_csv(tmp_path / "in.csv", 60)
    with FakeChatServer(latency=0.05) as server:
        if tool == "sample_model":
            seen = failing_append(monkeypatch, sample_model)
            code = sample_main(eval_args(server, data, tmp_path / "o.json", "--workers", 4))
        else:
            seen = failing_append(monkeypatch, job_runner)
            code = generate(gen_args(server, data, tmp_path / "t.jsonl", "--workers", 4))
        time.sleep(0.3)
        assert code == 1 and "cannot write: [Errno 28] No space left" in capsys.readouterr().err
        assert max(seen["sent_at"]) < seen["error_at"] and server.requests < 20  # before: all 60 were sent


# --- M3: a fatal error or Ctrl-C stops workers that are waiting to retry ---------------------------------

def test_a_fatal_answer_stops_workers_in_backoff_at_once(tmp_path, capsys):
    """Default backoff (1 s, doubling): before, the 401 run waited out every retry of the 500s."""
    with FakeChatServer() as server:
        data = pairs_csv(tmp_path / "in.csv", 4, lambda i: "echo401" if i == 3 else "always500")
        started = time.time()
        code = generate(["--input-csv", str(data), "--output-json", str(tmp_path / "t.jsonl"), "--api", "local",
                         "--api-base", server.base_url, "--workers", "4", "--max-attempts", "6"])
        elapsed, sent = time.time() - started, server.requests
        time.sleep(1.5)
        assert code == 1 and elapsed < 3 and server.requests == sent
    err = capsys.readouterr().err
    assert "HTTP 401" in err and KEY not in err


@pytest.mark.parametrize("tool", ["generate_thoughts", "sample_model"])
def test_ctrl_c_ends_both_api_tools_within_a_second_or_two(tool, tmp_path):
    """Every row answers 500 for ever; after Ctrl-C neither tool waits out its backoff nor sends more."""
    data = pairs_csv(tmp_path / "in.csv", 30, lambda i: "always500")
    env = {**os.environ, "API_KEY": KEY, "PYTHONPATH": str(REPO_ROOT)}
    with FakeChatServer() as server:
        if tool == "sample_model":
            cmd = [sys.executable, "-m", "evaluate.sample_model",
                   *eval_args(server, data, tmp_path / "o.json", "--workers", 3, "--max_attempts", 8)]
        else:
            cmd = [sys.executable, "scripts/generate_thoughts.py", "--input-csv", str(data), "--output-json",
                   str(tmp_path / "t.jsonl"), "--api", "local", "--api-base", server.base_url, "--workers", "3",
                   "--max-attempts", "8"]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 30
        while time.time() < deadline and server.requests < 6:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stopped, err = time.time(), ""
        for line in proc.stderr:  # timed at the last line: tearing torch down takes seconds of its own here
            err += line
            if "interrupted by Ctrl-C" in line:
                break
        elapsed, sent = time.time() - stopped, server.requests
        err += proc.communicate(timeout=30)[1]
        time.sleep(1.0)
    assert proc.returncode == 130 and "Traceback" not in err and elapsed < 1.5, (elapsed, err)
    assert server.requests == sent


# --- M4: an endpoint that refuses everything ---------------------------------------------------------------

@pytest.mark.parametrize("tool", ["generate_thoughts", "sample_model"])
def test_an_all_refused_endpoint_exits_1_with_one_line_and_a_rerun_asks_again(tool, tmp_path, capsys,
                                                                             fast_retries):
    data = pairs_csv(tmp_path / "in.csv", 30)
    out = tmp_path / ("t.jsonl" if tool == "generate_thoughts" else "o.json")

    def run_tool():
        if tool == "generate_thoughts":
            return generate(gen_args(server, data, out, "--workers", 2))
        return sample_main(eval_args(server, data, out, "--workers", 2))
    with FakeChatServer() as server:
        server.force_mode = "toolong"
        assert run_tool() == 1
        err = capsys.readouterr().err.strip().splitlines()  # in a log a progress line may come first
        assert [line for line in err if line.startswith("error")] == err[-1:] and "Traceback" not in str(err)
        assert "the endpoint failed the first" in err[-1] and "maximum context length" in err[-1]
        assert server.requests < 10  # stopped after the first answers, not 30 refusals
        server.force_mode = None  # the endpoint is fixed (or the model swapped): the refused prompts are asked again
        assert run_tool() == 0
    if tool == "generate_thoughts":
        assert len(read_jsonl(out)) == 30 and all(r["correct"] for r in read_jsonl(out))
    else:
        result = json.loads(out.read_text())
        assert len(result["records"]) == 30 and all(r["stop_reason"] == "json" for r in result["records"])
        assert result["metrics"]["accuracy"] == 1.0


# --- M1: answer shapes --------------------------------------------------------------------------------------

def test_answer_shapes_text_parts_are_joined_and_others_are_malformed(fast_retries):
    with FakeChatServer() as server:
        client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", max_attempts=2, backoff_base=0.01)
        content, usage = client.chat([{"role": "user", "content": "Hypothesis: h [label:1] [mode:parts]"}])
        assert json.loads(content)["predicted_label"] == 1 and usage == {"prompt_tokens": 3, "completion_tokens": 5}
        for mode, why in [("dictcontent", "content is a dict"), ("intcontent", "content is a int"),
                          ("usagelist", "usage is a list"), ("usagestr", "usage.completion_tokens is 'five'")]:
            with pytest.raises(ApiError) as error:
                client.chat([{"role": "user", "content": f"Hypothesis: h [mode:{mode}]"}])
            assert error.value.kind == "exhausted" and why in str(error.value), str(error.value)
            assert "\n" not in str(error.value)


def test_backend_openai_reads_text_parts_and_records_a_malformed_answer_without_a_traceback(tmp_path, capsys,
                                                                                           fast_retries):
    data = pairs_csv(tmp_path / "in.csv", 6, lambda i: {1: "parts", 2: "dictcontent", 3: "prose"}.get(i, "ok"))
    out = tmp_path / "o.json"
    with FakeChatServer() as server:
        assert sample_main(eval_args(server, data, out, "--workers", 2, "--max_attempts", 2)) == 0
    records = {r["id"]: r for r in json.loads(out.read_text())["records"]}
    assert records["p1"]["predicted_label"] == 1 and records["p1"]["stop_reason"] == "json"
    assert records["p2"]["stop_reason"] == "error" and "content is a dict" in records["p2"]["error"]
    assert records["p3"]["predicted_label"] == 1 and records["p3"]["raw_output"].startswith("Premise says {a dog}")
    assert "Traceback" not in capsys.readouterr().err


# --- M5 and generated_tokens ---------------------------------------------------------------------------------

def test_an_answer_is_cut_only_after_a_complete_valid_answer_object():
    prose = 'Premise says {a dog}; so the answer is {"predicted_label": 1} and then {"more": 2}'
    result = answer_result({"message": {"content": prose}, "finish_reason": "stop"}, {"completion_tokens": 20}, "",
                           stop_at_json=True, task=TASKS["nli"])
    assert result["text"] == 'Premise says {a dog}; so the answer is {"predicted_label": 1}'
    assert result["stop_reason"] == "json"
    invalid = 'I think {"predicted_label": "0 or 1"} hmm'  # no valid answer object: the whole answer is kept
    kept = answer_result({"message": {"content": invalid}, "finish_reason": "stop"}, {}, "", stop_at_json=True, task=TASKS["nli"])
    assert kept["text"] == invalid and kept["stop_reason"] == "eos"


def test_generated_tokens_is_never_negative():
    zero = answer_result({"message": {"content": "{}"}, "finish_reason": "stop"}, {"completion_tokens": 0},
                         "vllm-0.32", stop_at_json=False, task=TASKS["nli"])
    assert zero["generated_tokens"] == 0


# --- M2: Retry-After ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("retry_after", ["-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_negative_or_nan_retry_after_is_clamped_or_ignored(retry_after):
    with FakeChatServer(retry_after=retry_after) as server:
        client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", backoff_base=0.01, backoff_cap=2)
        started = time.time()
        content, _ = client.chat([{"role": "user", "content": "Hypothesis: h [label:0] [mode:429once]"}])
        assert json.loads(content)["predicted_label"] == 0 and time.time() - started < 1.5
    assert ChatClient(base_url="http://x", api_key="k", model="m", backoff_cap=7)._backoff(0, "1e9") == 7


# --- LOW: a whole request within --timeout, a size cap, --timeout 1e999 ------------------------------------

def test_timeout_bounds_the_whole_request_not_the_gap_between_bytes():
    with FakeChatServer(slow_seconds=4) as server:  # the body comes in pieces over 4 s
        client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", timeout=1, max_attempts=1)
        started = time.time()
        with pytest.raises(ApiError, match="gave up after 1 attempts: Timeout"):
            client.chat([{"role": "user", "content": "Hypothesis: h [mode:drip]"}])
        assert time.time() - started < 2.5


def test_an_answer_of_20_mb_is_refused_not_stored():
    with FakeChatServer() as server:
        client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", max_attempts=3)
        with pytest.raises(ApiError) as error:
            client.chat([{"role": "user", "content": "Hypothesis: h [mode:huge]"}])
        assert error.value.kind == "refused" and "bytes refused" in str(error.value)
        assert server.requests == 1  # not asked again: the same prompt gives the same answer


def test_an_infinite_timeout_or_a_url_without_scheme_is_one_line_exit_2(tmp_path, capsys):
    data = pairs_csv(tmp_path / "in.csv", 2)
    with pytest.raises(SystemExit) as exit_:
        generate(["--input-csv", str(data), "--output-json", str(tmp_path / "t.jsonl"), "--api", "local",
                  "--timeout", "1e999"])
    assert exit_.value.code == 2 and "at most 86400 seconds" in capsys.readouterr().err
    assert sample_main(["--backend", "openai", "--api", "local", "--model_name", "m", "--test_file", str(data),
                        "--output_file", str(tmp_path / "o.json"), "--timeout", "1e999"]) == 2
    assert "--timeout must be above 0 and at most" in capsys.readouterr().err
    assert sample_main(["--backend", "openai", "--api", "local", "--model_name", "m", "--test_file", str(data),
                        "--output_file", str(tmp_path / "o.json"), "--api_base", "localhost:8000/v1"]) == 2
    assert "expected a URL such as http://127.0.0.1:8000/v1" in capsys.readouterr().err


# --- H5: credentials in --api_base and echoed keys ---------------------------------------------------------

def test_a_credential_in_api_base_or_an_echoed_key_is_never_written(tmp_path, capsys, monkeypatch, fast_retries):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETtoken1234567890")
    data = pairs_csv(tmp_path / "in.csv", 4)
    out = tmp_path / "o.json"
    with FakeChatServer() as server:
        base = server.base_url.replace("http://", f"http://user:{KEY}@") + f"?api_key={KEY}&tenant=t1"
        args = eval_args(server, data, out)
        args[args.index("--api_base") + 1] = base
        assert sample_main(args) == 0
        settings = json.loads(out.read_text())["settings"]
        assert settings["api_base"] == server.base_url + "?tenant=t1"
        client = ChatClient(base_url=server.base_url, api_key=KEY, model="m", max_attempts=1)
        with pytest.raises(ApiError) as error:
            client.chat([{"role": "user", "content": "Hypothesis: h [mode:echopartial]"}])
    assert "HTTP 401" in str(error.value) and KEY[:12] not in str(error.value)
    written = "".join(p.read_text(errors="ignore") for p in tmp_path.iterdir() if p.is_file())
    assert KEY not in written and KEY[:12] not in written
    assert redact("echo hf_SECRETtoken12 and the rest") == "echo *** and the rest"
    assert safe_url(f"https://u:p@api.example.com/v1?key={KEY}&sig=abc&x=1") == "https://api.example.com/v1?x=1"


# --- two runs on one output; resume with another teacher --------------------------------------------------

def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, capsys, fast_retries):
    data = pairs_csv(tmp_path / "in.csv", 3)
    out = tmp_path / "t.jsonl"
    with FakeChatServer() as server:
        with job_runner.output_lock(out):  # as another process running the same command holds it
            assert generate(gen_args(server, data, out)) == 2
            assert "another run is writing it now" in capsys.readouterr().err
            with job_runner.output_lock(tmp_path / "o.json.progress.jsonl"):
                assert sample_main(eval_args(server, data, tmp_path / "o.json")) == 2
                assert "another run is writing it now" in capsys.readouterr().err
        assert server.requests == 0 and not out.exists()
        assert generate(gen_args(server, data, out)) == 0  # released: the next run works
    assert not (tmp_path / "t.jsonl.lock").exists()


def test_a_resume_with_another_teacher_model_is_refused(tmp_path, capsys, fast_retries):
    data = pairs_csv(tmp_path / "in.csv", 3)
    out = tmp_path / "t.jsonl"
    with FakeChatServer() as server:
        assert generate(gen_args(server, data, out, "--model-name", "teacher-a", "--end-index", 2)) == 0
        before, sent = out.read_bytes(), server.requests
        assert generate(gen_args(server, data, out, "--model-name", "teacher-b")) == 2
        assert server.requests == sent and out.read_bytes() == before
    err = capsys.readouterr().err
    assert "record was computed from other model than this run (input " in err and "model 'teacher-b')" in err


def test_docker_backend_openai_reaches_the_host_and_gets_the_exported_key_by_name():
    env = dict(os.environ, HF_HOME="/hf-cache", OPENAI_API_KEY=KEY)
    proc = subprocess.run(["bash", "run_inference.sh", "--dry-run", "--docker", "--backend", "openai", "--api", "openai",
                           "--model_name", "gpt-4o", "--data", "d.csv"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--network host -e OPENAI_API_KEY " in proc.stdout and KEY not in proc.stdout + proc.stderr
    hf = subprocess.run(["bash", "run_inference.sh", "--dry-run", "--docker", "--model", "m", "--data", "d.csv"],
                        cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert "--network host" not in hf.stdout and "OPENAI_API_KEY" not in hf.stdout  # only the API backend needs them
