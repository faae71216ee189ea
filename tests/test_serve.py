"""./run_serve.sh on vLLM's CPU build: a tiny Mistral with a LoRA adapter served on 127.0.0.1 answers
what sample_model's HF backend answers, enforces its key, survives bad requests and stops on SIGTERM.

Runs where vLLM is importable: `make test-vllm` runs it in .venv-vllm (part of `make test`).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from evaluate.sample_model import main as sample_main
from prompts import TASKS
from tests.conftest import REPO_ROOT

pytest.importorskip("vllm")
from nli_finetune.testing.lora import random_lora  # noqa: E402
from tests.test_vllm import FIELDS, SAMPLE  # noqa: E402

KEY = "test-serve-key"
ROWS = 8
NEW_TOKENS = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, key=KEY, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from scripts.make_tiny_model import make_tiny_model
    root = tmp_path_factory.mktemp("serve_models")
    base = make_tiny_model("mistral", root / "mistral", hidden_size=128, head_dim=32)
    return random_lora(base, root / "nli-adapter")


@pytest.fixture(scope="module")
def server(adapter):
    port = free_port()
    env = {**os.environ, "SERVE_API_KEY": KEY, "VLLM_CPU_KVCACHE_SPACE": "1", "PREFLIGHT": "0"}
    proc = subprocess.Popen(["bash", "run_serve.sh", "--local", "--model", str(adapter), "--port", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    ready = ""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and "serve: serving" not in ready:
        ready = proc.stdout.readline()
    assert "serve: serving 'nli-adapter' at" in ready, f"server did not start (exit {proc.poll()})"
    yield {"proc": proc, "port": port, "base": f"http://127.0.0.1:{port}/v1"}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def hf_records(adapter, out):
    assert sample_main(["--model_id", str(adapter), "--test_file", str(SAMPLE), "--output_file", str(out),
                        "--limit", str(ROWS), "--max_new_tokens", str(NEW_TOKENS), "--batch_size", "4", "--quiet",
                        "--stop_at_json", "false"]) == 0
    return json.loads(out.read_text())["records"]


def test_the_adapter_is_listed_and_the_key_is_enforced(server):
    status, models = request(f"{server['base']}/models")
    assert status == 200 and "nli-adapter" in [m["id"] for m in models["data"]]
    assert request(f"{server['base']}/models", key=None)[0] == 401
    assert request(f"{server['base']}/models", key="wrong")[0] == 401


def test_chat_answers_equal_offline_inference(server, adapter, tmp_path):
    offline = hf_records(adapter, tmp_path / "hf.json")
    for record in offline:
        body = {"model": "nli-adapter", "temperature": 0, "max_tokens": NEW_TOKENS,
                "messages": TASKS["nli"].messages(record)}
        status, answer = request(f"{server['base']}/chat/completions", body)
        assert status == 200, answer
        # HF decodes a multi-byte character cut at max_tokens as U+FFFD; vLLM leaves the partial bytes out
        assert answer["choices"][0]["message"]["content"] == record["raw_output"].removesuffix("\ufffd"), record["id"]
    assert len({r["raw_output"] for r in offline}) == ROWS


def test_a_malformed_request_is_a_4xx_and_the_server_keeps_serving(server):
    assert 400 <= request(f"{server['base']}/chat/completions", raw=b"{not json")[0] < 500
    assert 400 <= request(f"{server['base']}/chat/completions", {"model": "nli-adapter"})[0] < 500
    assert 400 <= request(f"{server['base']}/chat/completions", {"model": "no-such-model", "messages": [
        {"role": "user", "content": "hi"}]})[0] < 500
    ok = {"model": "nli-adapter", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    assert request(f"{server['base']}/chat/completions", ok)[0] == 200


def test_the_openai_backend_against_the_server_gives_the_hf_backends_records(server, adapter, tmp_path, monkeypatch):
    offline = hf_records(adapter, tmp_path / "hf.json")
    monkeypatch.setenv("SERVE_API_KEY", KEY)
    out = tmp_path / "served.json"
    assert sample_main(["--backend", "openai", "--api_base", server["base"], "--model_name", "nli-adapter",
                        "--test_file", str(SAMPLE), "--output_file", str(out), "--limit", str(ROWS), "--quiet",
                        "--max_new_tokens", str(NEW_TOKENS), "--stop_at_json", "false", "--workers", "4"]) == 0
    served = json.loads(out.read_text())["records"]

    def comparable(record):
        return {k: (record[k].removesuffix("\ufffd") if k == "raw_output" else record[k]) for k in FIELDS}
    assert [comparable(r) for r in served] == [comparable(r) for r in offline]


def test_sigterm_stops_the_server_and_frees_the_port(server):
    proc = server["proc"]
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    assert "stopped by SIGTERM" in proc.stdout.read()
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no engine process outlives it
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server["port"])) != 0
