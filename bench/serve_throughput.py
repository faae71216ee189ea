"""The served model under load: requests/s and p50/p95 latency at 1, 8 and 32 concurrent clients, next
to sample_model's offline samples/s on the same prompts. Loopback only; every loop is bounded.

    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python bench/serve_throughput.py               # tiny Mistral + LoRA
    .venv-vllm/bin/python bench/serve_throughput.py --model models/my-adapter --requests 64

Needs the vLLM environment (`make test-vllm` builds .venv-vllm). Prints a table and one summary line.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nli_finetune.data_io import read_records
from prompts import TASKS

REPO = Path(__file__).resolve().parent.parent

SAMPLE = REPO / "data/sample/dev_300.csv"


def tiny_adapter(root: Path) -> Path:
    from nli_finetune.testing.lora import random_lora
    from scripts.make_tiny_model import make_tiny_model
    base = make_tiny_model("mistral", root / "mistral", hidden_size=128, head_dim=32)
    return random_lora(base, root / "bench-adapter")


def start_server(model: Path, port: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "scripts/serve.py", "--model", str(model), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "serve: serving" in line:
            return proc, line.split("'")[1]
        if not line and proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit("serve_throughput: the server did not start")


def ask(url: str, model: str, messages: list, max_tokens: int) -> float:
    body = json.dumps({"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}).encode()
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


def load_level(url: str, model: str, prompts: list, clients: int, max_tokens: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = sorted(pool.map(lambda m: ask(url, model, m, max_tokens), prompts))
    seconds = time.perf_counter() - started
    return {"clients": clients, "requests_per_s": len(prompts) / seconds,
            "p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))]}


def offline_samples_per_s(model: Path, n: int, max_tokens: int, out_dir: Path) -> float:
    out = out_dir / "offline.json"
    subprocess.run([sys.executable, "-m", "evaluate.sample_model", "--model_id", str(model), "--test_file",
                    str(SAMPLE), "--limit", str(n), "--max_new_tokens", str(max_tokens), "--batch_size", "32",
                    "--stop_at_json", "false", "--output_file", str(out), "--quiet"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["timing"]["samples_per_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model or adapter dir (default: a tiny Mistral + random LoRA)")
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    p.add_argument("--max_tokens", type=int, default=48)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else tiny_adapter(Path(tmp))
        prompts = [TASKS["nli"].messages(r) for r in read_records(SAMPLE)[:args.requests]]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc, name = start_server(model, port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            ask(url, name, prompts[0], args.max_tokens)  # warm-up
            rows = [load_level(url, name, prompts, clients, args.max_tokens) for clients in (1, 8, 32)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
        offline = offline_samples_per_s(model, args.requests, args.max_tokens, Path(tmp))
    print(f"\n{args.requests} NLI prompts, {args.max_tokens} new tokens, {model.name}\n")
    print("| clients | requests/s | p50 latency (s) | p95 latency (s) |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['clients']} | {row['requests_per_s']:.2f} | {row['p50_s']:.3f} | {row['p95_s']:.3f} |")
    print(f"| offline sample_model (HF, batch 32) | {offline:.2f} samples/s | | |")
    best = max(rows, key=lambda r: r["requests_per_s"])
    print(f"serve_throughput: best {best['requests_per_s']:.2f} requests/s at {best['clients']} clients; "
          f"offline {offline:.2f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
