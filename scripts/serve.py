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
model's generation_config), so at temperature 0 it answers what `sample_model` answers.

Safe by default: it binds 127.0.0.1 unless --host says otherwise; with SERVE_API_KEY in the
environment or .env, requests without that bearer key get 401 (the key reaches vLLM through its
environment, never a flag or a log line). It prints the base URL and model name once the server
answers, and Ctrl-C / SIGTERM stop vLLM's whole process group (the port is free when it returns).
Unknown options pass through to vLLM (e.g. --max-model-len 4096).
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from data_io import load_env_file
from modeling import (
    ModelLoadError,
    adapter_base,
    check_local_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_dir,
)
from prompts import chat_template

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServePlan:
    command: list
    model_name: str
    base_url: str


def served_name(model: str) -> str:
    path = Path(model.rstrip("/"))
    return path.stem if path.suffix == ".gguf" else path.name


def lora_rank(adapter_dir: str) -> int:
    rank = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"]
    return next(allowed for allowed in MAX_LORA_RANKS if allowed >= rank)


def plan_server(model: str, host: str, port: int, template_file: Path, gpus: int = 1,
                dtype: str | None = None, extra: list | None = None, dry_run: bool = False) -> ServePlan:
    """vLLM's command for `model`; writes the chat template offline inference uses to `template_file`
    (a dry run writes nothing and converts no GGUF file)."""
    from gguf_convert import converted_dir_for, is_gguf
    check_local_model(model)
    base = adapter_base(model)
    model_dir = str(converted_dir_for(Path(model))) if dry_run and is_gguf(model) else resolve_model_dir(model)
    if not dry_run:
        template_file.write_text(chat_template(load_tokenizer(model)))
    dtype = dtype or str(resolve_dtype("auto", resolve_device("auto"))).replace("torch.", "")
    name = served_name(model)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port),
               "--dtype", dtype, "--tokenizer", model_dir, "--chat-template", str(template_file),
               "--chat-template-content-format", "string", "--generation-config", "vllm"]
    if base:
        base_dir = str(converted_dir_for(Path(base))) if dry_run and is_gguf(base) else resolve_model_dir(base)
        command += ["--model", base_dir, "--served-model-name", served_name(base_dir), "--enable-lora",
                    "--lora-modules", f"{name}={model_dir}", "--max-lora-rank", str(lora_rank(model_dir))]
    else:
        command += ["--model", model_dir, "--served-model-name", name]
    if gpus > 1:
        command += ["--tensor-parallel-size", str(gpus)]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return ServePlan(command + list(extra or []), name, f"http://{shown_host}:{port}/v1")


def server_env() -> dict:
    env = dict(os.environ)
    if env.get("SERVE_API_KEY"):
        env["VLLM_API_KEY"] = env["SERVE_API_KEY"]  # vLLM reads it here: nothing shows it in `ps`
    if resolve_device("auto") == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default reserves far more
    return env


def answers(base_url: str, key: str | None) -> bool:
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
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


def serve(plan: ServePlan, ready_timeout: float) -> int:
    env = server_env()
    process = subprocess.Popen(plan.command, env=env, start_new_session=True)
    stopping = []

    def on_signal(signum, _frame):  # only signals: the main flow below waits (a handler must not block)
        stopping.append(signal.Signals(signum).name)
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGTERM if len(stopping) == 1 else signal.SIGKILL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.time() + ready_timeout
    while process.poll() is None and not stopping and not answers(plan.base_url, env.get("VLLM_API_KEY")):
        if time.time() > deadline:
            print(f"serve: the server did not answer within {ready_timeout:.0f}s; stopping it", file=sys.stderr)
            stop_group(process)
            return 1
        time.sleep(0.5)
    if process.poll() is None and not stopping:
        print(f"serve: serving '{plan.model_name}' at {plan.base_url} (Ctrl-C or SIGTERM stops it)", flush=True)
    code = process.wait()
    stop_group(process)  # engine processes the server left behind get their grace period, then SIGKILL
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
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="print vLLM's command and exit")
    args, extra = p.parse_known_args(argv)
    load_env_file()
    if args.host not in LOOPBACK and not os.environ.get("SERVE_API_KEY"):
        print(f"warning: serving on {args.host} without SERVE_API_KEY: anyone who reaches this port can use the "
              "model", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="serve-") as tmp:
        try:
            plan = plan_server(args.model, args.host, args.port, Path(tmp) / "chat_template.jinja", args.gpus,
                               args.dtype, extra, dry_run=args.dry_run)
        except (ModelLoadError, OSError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {args.model}: {exc}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(shlex.join(plan.command))
            print(f"serve: would serve '{plan.model_name}' at {plan.base_url}")
            return 0
        return serve(plan, args.ready_timeout)


if __name__ == "__main__":
    sys.exit(main())
