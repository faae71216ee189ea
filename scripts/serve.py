"""Serve a base model, a LoRA adapter or a GGUF file behind an OpenAI-compatible API (vLLM's server).

    ./run_serve.sh --model models/my-adapter                       # the wrapper: the image, or .venv-vllm here
    .venv-vllm/bin/python scripts/serve.py --model models/my-adapter --port 8000
    .venv-vllm/bin/python scripts/serve.py --model models/my-adapter --dry-run   # vLLM's command only
    curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
        -d '{"model": "my-adapter", "messages": [{"role": "user", "content": "..."}], "temperature": 0}'

A LoRA adapter is served on its base (adapter_config.json) with LoRA enabled: the adapter's folder name
is the model name, its rank the max LoRA rank. A `.gguf` file is dequantized once (gguf_convert.py).
The server renders prompts with exactly the template offline inference uses (`prompts.chat_template`
of the adapter's tokenizer, passed as --chat-template) and vLLM's own sampling defaults (not the
model's generation_config), so at temperature 0 it answers what `sample_model` answers. A model with a
contract (model_contract.json, written by train_sft) is served with the chat template it was trained with
(a tokenizer that differs is refused), and the server prints the `response_format` that holds answers
to the task's JSON schema (vLLM applies a schema per request).

Safe by default: it binds 127.0.0.1 unless --host says otherwise; with SERVE_API_KEY in the
environment or .env, requests without that bearer key get 401 (the key reaches vLLM through its
environment, never a flag or a log line). It prints the base URL and model name once the server
lists the served model name (a port another server holds is refused before anything starts), and Ctrl-C /
SIGTERM stop vLLM's whole process group: SIGKILL after --stop_grace seconds for a process that ignores
SIGTERM, and a watchdog process does the same when serve.py itself is killed (even with SIGKILL), so the
port is free when it returns. Unknown options pass through to vLLM (e.g. --max-model-len 4096).
"""

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nli_finetune.data_io import load_env_file
from nli_finetune.model_contract import ContractError, check_tokenizer, resolve_model_use
from nli_finetune.modeling import (
    ModelLoadError,
    adapter_base,
    check_local_model,
    load_tokenizer,
    resolve_device,
    resolve_model_dir,
)
from nli_finetune.redaction import redact
from nli_finetune.vllm_lora import LoraRankError, adapter_max_lora_rank, vllm_dtype
from prompts import Task, chat_template

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Stops vLLM's process group once serve.py is gone, however it died: EOF on a pipe only serve.py holds.
WATCHDOG = """import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
sys.stdin.buffer.read()
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False
if alive():
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.time() + grace
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    if alive():
        os.killpg(pgid, signal.SIGKILL)
"""


@dataclass
class ServePlan:
    command: list
    model_name: str
    base_url: str
    task: Task | None = None          # from the model's contract
    answer_schema: dict | None = None  # the task's JSON answer schema, for a model trained to answer in JSON


def served_name(model: str) -> str:
    path = Path(model.rstrip("/"))
    return path.stem if path.suffix == ".gguf" else path.name


def client_url(host: str, port: int) -> str:
    """The base URL a client uses for a server bound to `host` (all interfaces: this machine's loopback);
    an IPv6 address goes in brackets."""
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound now (another server holds it, say), or None when it is free."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def plan_server(model: str, host: str, port: int, template_file: Path, gpus: int = 1,
                dtype: str | None = None, extra: list | None = None, dry_run: bool = False,
                url_host: str | None = None) -> ServePlan:
    """vLLM's command for `model`; writes the chat template offline inference uses to `template_file`
    (a dry run writes nothing and converts no GGUF file). `url_host`: the address clients reach the
    server at, when not `host` (Docker: the host side of the published port)."""
    from nli_finetune.gguf_convert import converted_dir_for, is_gguf
    check_local_model(model)
    # sample_model's resolution: the contract's task; an adapter on another base than it was trained on
    # answers wrongly, so it is refused (no override here)
    use = resolve_model_use(model, other_base_flag=None)
    contract, base = use.contract, adapter_base(model)
    model_dir = str(converted_dir_for(Path(model))) if dry_run and is_gguf(model) else resolve_model_dir(model)
    # The contract's check (sample_model's own) runs in a dry run too: "would serve" only for a model serving
    # accepts. A model with a contract is a folder, so its tokenizer loads without converting any GGUF file.
    tokenizer = None if dry_run and contract is None else load_tokenizer(model)
    check_tokenizer(contract, tokenizer)
    if not dry_run:
        template_file.write_text(contract.chat_template if contract else chat_template(tokenizer))
    dtype = vllm_dtype(dtype)
    name = served_name(model)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port),
               "--dtype", dtype, "--tokenizer", model_dir, "--chat-template", str(template_file),
               "--chat-template-content-format", "string", "--generation-config", "vllm"]
    if base:
        base_dir = str(converted_dir_for(Path(base))) if dry_run and is_gguf(base) else resolve_model_dir(base)
        command += ["--model", base_dir, "--served-model-name", served_name(base_dir), "--enable-lora",
                    "--lora-modules", f"{name}={model_dir}", "--max-lora-rank", str(adapter_max_lora_rank(model_dir))]
    else:
        command += ["--model", model_dir, "--served-model-name", name]
    if gpus > 1:
        command += ["--tensor-parallel-size", str(gpus)]
    return ServePlan(command + list(extra or []), name, client_url(url_host or host, port),
                     use.task, contract.answer_schema() if contract else None)


def schema_line(plan: ServePlan) -> str | None:
    """What a client sends to hold answers to the task's JSON schema (the model's contract)."""
    if not plan.answer_schema:
        return None
    response_format = {"type": "json_schema", "json_schema": {"name": plan.task.name, "schema": plan.answer_schema}}
    return (f"serve: '{plan.model_name}' answers task {plan.task.name}; to constrain answers to its schema send "
            f"\"response_format\": {json.dumps(response_format)}")


def server_env() -> dict:
    env = dict(os.environ)
    if env.get("SERVE_API_KEY"):
        env["VLLM_API_KEY"] = env["SERVE_API_KEY"]  # vLLM reads it here: nothing shows it in `ps`
    if resolve_device("auto") == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default reserves far more
    return env


def answers(base_url: str, key: str | None, model_name: str) -> bool:
    """Whether `/models` answers and lists `model_name` (any other server on the port lists other names)."""
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            listed = json.loads(response.read())["data"]
        return model_name in [model.get("id") for model in listed]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to vLLM's process group (the API server and its engine processes), SIGKILL after `grace`."""
    if not group_alive(process.pid):
        process.poll()
        return
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and (process.poll() is None or group_alive(process.pid)):
        time.sleep(0.2)
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_watchdog(pgid: int, grace: float) -> subprocess.Popen:
    """A process in a session of its own that stops group `pgid` when serve.py's end of its stdin closes:
    at serve.py's exit, or its death by any signal (kill -9 included)."""
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(pgid), str(grace)], stdin=subprocess.PIPE,
                            start_new_session=True)


def wait_for_exit(process: subprocess.Popen, stopping: list, grace: float) -> int:
    """vLLM's exit status. Once a stop signal came, its group gets `grace` seconds, then SIGKILL: a process
    that ignores SIGTERM must not keep the port."""
    killed_at = None
    while process.poll() is None:
        if stopping and killed_at is None:
            killed_at = time.time() + grace
        if killed_at is not None and time.time() > killed_at and group_alive(process.pid):
            print(f"serve: still running {grace:.0f}s after SIGTERM; sending SIGKILL", file=sys.stderr, flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            killed_at = float("inf")
        time.sleep(0.2)
    return process.returncode


def serve(plan: ServePlan, ready_timeout: float, stop_grace: float = 30.0) -> int:
    env = server_env()
    process = subprocess.Popen(plan.command, env=env, start_new_session=True)
    watchdog = start_watchdog(process.pid, stop_grace)
    try:
        return run_server(plan, process, env, ready_timeout, stop_grace)
    finally:
        watchdog.stdin.close()  # the group is gone by now: the watchdog exits without a signal
        watchdog.wait()


def run_server(plan: ServePlan, process: subprocess.Popen, env: dict, ready_timeout: float, stop_grace: float) -> int:
    stopping = []

    def on_signal(signum, _frame):  # only signals: the main flow below waits (a handler must not block)
        stopping.append(signal.Signals(signum).name)
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGTERM if len(stopping) == 1 else signal.SIGKILL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.time() + ready_timeout
    while process.poll() is None and not stopping and not answers(plan.base_url, env.get("VLLM_API_KEY"),
                                                                  plan.model_name):
        if time.time() > deadline:
            print(f"serve: the server did not list '{plan.model_name}' at {plan.base_url}/models within "
                  f"{ready_timeout:.0f}s; stopping it", file=sys.stderr)
            stop_group(process, stop_grace)
            return 1
        time.sleep(0.5)
    if process.poll() is None and not stopping:
        print(redact(f"serve: serving '{plan.model_name}' at {plan.base_url} (Ctrl-C or SIGTERM stops it)"), flush=True)
        if schema_line(plan):
            print(schema_line(plan), flush=True)
    code = wait_for_exit(process, stopping, stop_grace)
    stop_group(process, stop_grace)  # engine processes the server left behind get their grace period, then SIGKILL
    if stopping:
        print(f"serve: stopped by {stopping[0]}; the port is free", flush=True)
        return 0
    print(f"serve: vLLM's server exited with status {code}", file=sys.stderr)
    return code or 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model dir, LoRA adapter dir or .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--gpus", type=int, default=1, help="tensor-parallel over this many GPUs")
    p.add_argument("--dtype", default=None, help="default: float32 on a CPU, bfloat16/float16 on a GPU")
    p.add_argument("--ready_timeout", type=float, default=900.0, help="seconds to wait for the first answer")
    p.add_argument("--stop_grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL when stopping")
    p.add_argument("--url_host", default=None, help="the address clients reach the server at, when not --host "
                   "(run_serve.sh in Docker: the host side of the published port)")
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="print vLLM's command and exit")
    args, extra = p.parse_known_args(argv)
    load_env_file()
    reachable_at = (args.url_host or args.host).strip("[]")
    if reachable_at not in LOOPBACK and not os.environ.get("SERVE_API_KEY"):
        print(f"warning: serving on {reachable_at} without SERVE_API_KEY: anyone who reaches this port can use the "
              "model", file=sys.stderr)
    taken = None if args.dry_run else port_taken(args.host, args.port)
    if taken:
        print(f"error: cannot listen on {args.host} port {args.port} ({taken}): another server holds the port? "
              "Stop it or pick another --port", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="serve-") as tmp:
        try:
            plan = plan_server(args.model, args.host, args.port, Path(tmp) / "chat_template.jinja", args.gpus,
                               args.dtype, extra, dry_run=args.dry_run, url_host=args.url_host)
        except (ModelLoadError, ContractError, LoraRankError, OSError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {args.model}: {redact(exc)}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(redact(shlex.join(plan.command)))  # extra vLLM flags may carry a key
            print(redact(f"serve: would serve '{plan.model_name}' at {plan.base_url}"))
            if schema_line(plan):
                print(schema_line(plan))
            return 0
        return serve(plan, args.ready_timeout, args.stop_grace)


if __name__ == "__main__":
    sys.exit(main())
