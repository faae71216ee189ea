"""What scripts/serve.py and run_serve.sh hand to vLLM and Docker, checked without vLLM (tests/test_serve.py
runs the server itself in .venv-vllm)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from nli_finetune.vllm_lora import LoraRankError, adapter_max_lora_rank
from prompts import FALLBACK_CHAT_TEMPLATE, TASKS, encode_prompt, render_prompt
from scripts.serve import client_url, plan_server
from tests.conftest import REPO_ROOT

MESSAGES = [TASKS[task].messages({"premise": "A man plays a guitar.", "hypothesis": "Someone makes music."})
            for task in ("nli", "nli_label")]


def test_an_adapter_is_served_on_its_base_with_its_name_rank_and_training_template(trained_adapter, tmp_path):
    template = tmp_path / "chat_template.jinja"
    plan = plan_server(str(trained_adapter), "127.0.0.1", 8011, template)
    command = plan.command
    base = json.loads((trained_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert command[command.index("--model") + 1] == base and command[command.index("--tokenizer") + 1] == str(trained_adapter)
    assert command[command.index("--lora-modules") + 1] == f"{trained_adapter.name}={trained_adapter}"
    assert "--enable-lora" in command and command[command.index("--max-lora-rank") + 1] == str(adapter_max_lora_rank(trained_adapter))
    assert command[command.index("--generation-config") + 1] == "vllm"  # not the model's sampling defaults
    assert command[command.index("--dtype") + 1] == "float32"  # what sample_model uses on a CPU
    assert plan.model_name == trained_adapter.name and plan.base_url == "http://127.0.0.1:8011/v1"
    from nli_finetune.modeling import load_tokenizer
    assert template.read_text() == load_tokenizer(str(trained_adapter)).chat_template


def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts(tmp_path):
    for rank, expected in ((4, 8), (8, 8), (12, 16), (24, 32), (64, 64), (300, 320), (512, 512)):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
        assert adapter_max_lora_rank(tmp_path) == expected
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 24}}))
    assert adapter_max_lora_rank(tmp_path) == 32  # the largest per-module rank decides
    for config, message in (({"r": 1024}, "above 512, the largest vLLM can serve"), ({"r": 0}, "whole number"),
                            ({"alpha": 8}, "no LoRA rank 'r'")):
        (tmp_path / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(LoraRankError, match=message):
            adapter_max_lora_rank(tmp_path)


def fake_vllm(monkeypatch):
    """vLLM is not installed in .venv: a stand-in module records what VllmGenerator asks of vllm.LLM."""
    import types
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls.update(kwargs)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *args: args
    modules = {"vllm": types.ModuleType("vllm"), "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}
    modules["vllm"].LLM = LLM
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.mark.parametrize("rank,expected", [(4, 8), (12, 16), (24, 32), (1024, None)])
def test_the_vllm_backend_passes_the_rank_serve_passes(trained_adapter, tmp_path, monkeypatch, rank, expected):
    import shutil

    from evaluate.vllm_backend import VllmGenerator
    from nli_finetune.modeling import ModelLoadError
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": rank}))
    calls = fake_vllm(monkeypatch)
    if expected is None:
        with pytest.raises(ModelLoadError, match="above 512"):
            VllmGenerator(str(adapter))
        return
    VllmGenerator(str(adapter))
    command = plan_server(str(adapter), "127.0.0.1", 8000, tmp_path / "t.jinja").command
    assert calls["max_lora_rank"] == expected == int(command[command.index("--max-lora-rank") + 1])


def test_the_fallback_template_renders_through_transformers_as_prompts_render_it(tiny_mistral):
    from nli_finetune.modeling import load_tokenizer
    tokenizer = load_tokenizer(str(tiny_mistral))
    tokenizer.chat_template = None  # a tokenizer without a template: the server gets FALLBACK_CHAT_TEMPLATE
    for messages in MESSAGES:
        served = tokenizer.apply_chat_template(messages, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False,
                                               add_generation_prompt=True)
        assert served == render_prompt(tokenizer, messages) and served.startswith(f"{tokenizer.bos_token}[INST] ")
        assert tokenizer(served, add_special_tokens=False)["input_ids"] == encode_prompt(tokenizer, messages)


@pytest.fixture()
def serve_dry_run(capsys, monkeypatch):
    """scripts/serve.py's main([... --dry-run]) in this process from the checkout's root, SERVE_API_KEY set to
    `key` or unset: (exit code, stdout, stderr). A real process: the port test below."""
    from scripts import serve
    monkeypatch.chdir(REPO_ROOT)

    def run(*args, key=None):
        if key is None:
            monkeypatch.delenv("SERVE_API_KEY", raising=False)
        else:
            monkeypatch.setenv("SERVE_API_KEY", key)
        capsys.readouterr()
        code = serve.main([*map(str, args), "--dry-run"])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_the_key_never_reaches_a_command_line_and_other_hosts_get_a_warning(trained_adapter, serve_dry_run):
    code, out, err = serve_dry_run("--model", trained_adapter, key="s3cret-key")
    assert code == 0 and "--host 127.0.0.1" in out and "s3cret" not in out + err
    _, _, err = serve_dry_run("--model", trained_adapter, "--host", "0.0.0.0")
    assert "without SERVE_API_KEY" in err
    code, _, err = serve_dry_run("--model", "models/none")
    assert code == 2 and "models/none" in err


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_low_the_dry_run_refuses_a_tokenizer_that_no_longer_matches_the_contract_as_serving_does(
        trained_adapter, tmp_path, capsys, monkeypatch, dry_run):
    from nli_finetune.model_contract import CONTRACT_FILE, template_sha256
    from scripts import serve
    folder = tmp_path / "adapter"
    shutil.copytree(trained_adapter, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    other = "{{ messages[0]['content'] }}"  # the contract now names a template the tokenizer does not have
    contract = json.loads((folder / CONTRACT_FILE).read_text())
    (folder / CONTRACT_FILE).write_text(json.dumps(contract | {"chat_template": other,
                                                              "chat_template_sha256": template_sha256(other)}))
    monkeypatch.setattr(serve, "serve", lambda *a, **k: pytest.fail("a refused model must not be served"))
    monkeypatch.setattr(serve, "port_taken", lambda host, port: None)
    assert serve.main(["--model", str(folder), *dry_run]) == 2
    err = capsys.readouterr().err
    assert "chat template other than the one it was trained with" in err and len(err.strip().splitlines()) == 1
    assert serve.main(["--model", str(trained_adapter), "--dry-run"]) == 0  # the untouched adapter: would serve
    assert "would serve" in capsys.readouterr().out


def test_urls_put_ipv6_in_brackets_and_name_loopback_for_all_interfaces(trained_adapter, serve_dry_run):
    assert client_url("::1", 8000) == "http://[::1]:8000/v1" and client_url("[::1]", 8000) == "http://[::1]:8000/v1"
    assert client_url("0.0.0.0", 8001) == "http://127.0.0.1:8001/v1" and client_url("::", 80) == "http://[::1]:80/v1"
    assert client_url("10.1.2.3", 8000) == "http://10.1.2.3:8000/v1"
    _, out, err = serve_dry_run("--model", trained_adapter, "--host", "::1")
    assert "at http://[::1]:8000/v1" in out and "warning" not in err
    # in Docker: vLLM binds 0.0.0.0 inside the container, the port is published on the host's 127.0.0.1 only
    _, out, err = serve_dry_run("--model", trained_adapter, "--host", "0.0.0.0", "--url_host", "127.0.0.1")
    assert "at http://127.0.0.1:8000/v1" in out and "warning" not in err
    _, out, err = serve_dry_run("--model", trained_adapter, "--host", "0.0.0.0", "--url_host", "10.1.2.3")
    assert "at http://10.1.2.3:8000/v1" in out and "serving on 10.1.2.3 without SERVE_API_KEY" in err


@pytest.mark.parametrize("gpu_args,gpus_flag,count", [(["--gpu", "1"], "--gpus device=1", "1"),
                                                      (["--gpus", "0,1"], '--gpus \'"device=0,1"\'', "2")])
def test_the_serve_wrapper_publishes_the_port_on_the_host_only_and_passes_the_key_by_name(gpu_args, gpus_flag, count):
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    env = {**os.environ, "HF_HOME": "/hf-cache", "SERVE_API_KEY": "s3cret-key"}
    proc = subprocess.run(["bash", "run_serve.sh", "--dry-run", "--docker", "--model", "models/X", *gpu_args,
                           "--max-model-len", "4096"], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"docker run --rm --ipc=host --user {os.getuid()}:{os.getgid()} -e HOME=/tmp "
        "-e HF_HOME=/home/app/.cache/huggingface "  # issue 41: the calling user, whose HOME any uid can write
        f"-p 127.0.0.1:8000:8000 -e SERVE_API_KEY {gpus_flag} -v {REPO_ROOT}/data:/app/data "
        f"-v {REPO_ROOT}/models:/app/models -v {REPO_ROOT}/results:/app/results "
        f"-v {REPO_ROOT}/train/configs:/app/train/configs:ro -v /hf-cache:/home/app/.cache/huggingface "
        f"nli-finetune:latest /opt/vllm-venv/bin/python scripts/serve.py --model models/X --host 0.0.0.0 --port 8000 "
        f"--url_host 127.0.0.1 --gpus {count} --max-model-len 4096")
    assert "s3cret" not in proc.stdout
    missing = subprocess.run(["bash", "run_serve.sh", "--dry-run", "--docker"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "--model is required" in missing.stderr


# serve.py's process handling, with a stand-in for vLLM's API server (a few lines of http.server: it lists
# a model name, writes its pid, and ignores SIGTERM on request); vLLM itself runs in tests/test_serve.py.
STAND_IN = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, name, mode, pid_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignores_sigterm" else (lambda *_: sys.exit(0)))
open(pid_file, "w").write(str(os.getpid()))

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": name}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp_path, listed: str, mode: str = "ok", ready_timeout: float = 60, grace: float = 2):
    """scripts/serve.py's serve() on a plan whose server is the stand-in; (process, port, pid file)."""
    script, pid_file, port = tmp_path / "stand_in.py", tmp_path / "server.pid", free_port()
    script.write_text(STAND_IN)
    plan = [sys.executable, str(script), str(port), listed, mode, str(pid_file)]
    code = (f"import sys; from scripts.serve import ServePlan, serve; sys.exit(serve(ServePlan({plan!r}, 'm', "
            f"'http://127.0.0.1:{port}/v1'), {ready_timeout}, {grace}))")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    return process, port, pid_file


def wait_ready(process):
    line = process.stdout.readline()
    assert "serve: serving 'm'" in line, (line, process.stderr.read() if process.poll() is not None else "")


def gone(pid: int, seconds: float = 15) -> bool:
    import time
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def port_is_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_another_process_holds_is_refused_before_anything_starts(trained_adapter):
    import socket
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = subprocess.run([sys.executable, "scripts/serve.py", "--model", str(trained_adapter), "--port", str(port)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1 port {port}" in proc.stderr
    assert "serving" not in proc.stdout


def test_a_server_that_does_not_list_the_served_name_is_not_reported_as_serving(tmp_path):
    process, port, _ = start_serve(tmp_path, listed="someone-else", ready_timeout=4)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "serving" not in out
    assert "did not list 'm'" in err


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period_and_frees_the_port(tmp_path):
    process, port, pid_file = start_serve(tmp_path, listed="m", mode="ignores_sigterm", grace=2)
    wait_ready(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "stopped by SIGTERM" in out and "sending SIGKILL" in err
    assert gone(int(pid_file.read_text())) and port_is_free(port)


def test_kill_9_of_serve_py_does_not_orphan_the_server(tmp_path):
    process, port, pid_file = start_serve(tmp_path, listed="m", grace=2)
    wait_ready(process)
    process.kill()  # SIGKILL: serve.py runs no handler; its watchdog stops the server's group
    process.wait()
    assert gone(int(pid_file.read_text())), "the server outlived serve.py"
    assert port_is_free(port)
