"""The plan of a training run, checked before a GPU is spent on it (`--dry_run`): no weight is loaded.

    python -m train.train_sft --config ablation2.py --dry_run
    python -m train.train_sft --config ablation2.py --dry_run --model_params_b 7.25 --gpu_memory_gb 24
    ./run_training.sh --dry-run --config ablation2.py --gpu 1     # the container command, then this plan

It resolves the config, checks that the data files exist and parse (tokenized with the model's own
tokenizer when it is on disk, else estimated at 4 characters a token), reads the model's shape
(model_shape.py), and prints examples kept and dropped, steps, the effective batch and the memory
estimate (train/memory_estimate.py). A plan with a problem, or one that does not fit the GPU
(`--gpu_memory_gb`, else nvidia-smi's smallest GPU), says so and exits 1.
"""

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from data_io import DataError, read_records
from model_shape import ShapeError, read_model_shape
from sft_formats import detect_format
from train.memory_estimate import FITS, GIB, advice, estimate_training_memory, gpus_needed
from train.sft_data import LoadReport, load_sft_examples

REPO_ROOT = Path(__file__).resolve().parent.parent
CONVERTED_DIR = REPO_ROOT / "models" / "converted"
CHARS_PER_TOKEN = 4  # English prose under BPE tokenizers: a rough but common rule
# flags of the dry run itself, not config keys: name -> type
PREFLIGHT_FLAGS = {"dry_run": None, "model_params_b": float, "gpu_memory_gb": float}


def report_line(report: LoadReport, problem: str) -> str:
    if problem:
        return f"{report.path}: {problem}"
    how = "estimated lengths, no tokenizer on disk" if report.estimated else "tokenized"
    return (f"{report.path}: {report.kept} examples kept, {report.dropped_too_long} dropped as too long, "
            f"{report.skipped_invalid} invalid skipped; longest kept {report.longest} tokens ({how})")


@dataclass
class Plan:
    lines: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def split_preflight_flags(argv: list[str]) -> tuple[list[str], dict]:
    """(the argv for the config loader, the dry run's own flags)."""
    rest, flags, i = [], {}, 0
    while i < len(argv):
        name, _, inline = argv[i].removeprefix("--").partition("=")
        if argv[i].startswith("--") and name in PREFLIGHT_FLAGS:
            kind = PREFLIGHT_FLAGS[name]
            if kind is None:
                flags[name] = True
            else:
                raw = inline or (argv[i + 1] if i + 1 < len(argv) else "")
                i += 0 if inline else 1
                try:
                    flags[name] = kind(raw)
                except ValueError:
                    raise DataError(f"--{name} needs a number, got '{raw}'") from None
                if flags[name] <= 0:
                    raise DataError(f"--{name} must be above 0, got {raw}")
        else:
            rest.append(argv[i])
        i += 1
    return rest, flags


def local_tokenizer(config: dict):
    """The run's tokenizer when it is on disk (a folder or a converted GGUF); None for a hub id."""
    source = config["tokenizer_id"] or config["model_id"]
    if source.lower().endswith(".gguf"):
        source = str(CONVERTED_DIR / Path(source).stem)
    if not (Path(source) / "tokenizer_config.json").is_file() and not (Path(source) / "tokenizer.json").is_file():
        return None
    from modeling import load_tokenizer
    return load_tokenizer(source)


def check_data(path: str, config: dict, tokenizer, limit) -> tuple[LoadReport, str]:
    """(what loading `path` keeps and drops, the problem that stops it or "")."""
    if not Path(path).is_file():
        return LoadReport(path=path), "file not found (the config's first lines give the command that builds it)"
    try:
        if tokenizer is None:
            return estimate_lengths(path, config, limit), ""
        return load_sft_examples(path, tokenizer, data_format=config["data_format"], task=config["task"],
                                 max_seq_length=config["max_seq_length"], overlong=config["overlong"],
                                 limit=limit, invalid=config["invalid_examples"])[1], ""
    except DataError as exc:
        return LoadReport(path=path), str(exc)


def estimate_lengths(path: str, config: dict, limit) -> LoadReport:
    records = read_records(path)[:limit or None]
    if not records:
        raise DataError(f"{path}: no examples")
    report = LoadReport(path=path, read=len(records), estimated=True)
    for record in records:
        if (config["data_format"] if config["data_format"] != "auto" else detect_format(record, config["task"])) is None:
            raise DataError(f"{path}: line {record['_line']}: unrecognised example (see sft_formats.py)")
        length = math.ceil(len(str({k: v for k, v in record.items() if k != "_line"})) / CHARS_PER_TOKEN)
        if length > config["max_seq_length"]:
            report.dropped_too_long += 1
        else:
            report.kept += 1
            report.longest = max(report.longest, length)
    return report


def gpu_memory_bytes(flag_gb: float | None) -> tuple[int | None, str]:
    if flag_gb:
        return int(flag_gb * GIB), f"{flag_gb:g} GiB (--gpu_memory_gb)"
    if shutil.which("nvidia-smi"):
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True)
        gpus = [line.rsplit(",", 1) for line in result.stdout.strip().splitlines() if "," in line]
        if result.returncode == 0 and gpus:
            name, mib = min(gpus, key=lambda gpu: float(gpu[1]))
            return int(float(mib) * 1024 ** 2), f"{float(mib) / 1024:.1f} GiB ({name.strip()}, nvidia-smi)"
    return None, "unknown (no nvidia-smi; pass --gpu_memory_gb)"


def schedule_lines(config: dict, kept: int | None) -> list[str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    effective = config["batch_size"] * config["grad_accumulation_steps"] * world
    lines = [f"effective batch: {effective} = batch_size {config['batch_size']} x grad_accumulation_steps "
             f"{config['grad_accumulation_steps']} x {world} process(es)"]
    if config["max_steps"] > 0:
        return lines + [f"optimizer steps: {config['max_steps']} (max_steps)"]
    if kept is None:
        return lines + ["optimizer steps: unknown until the training data can be read"]
    per_epoch = math.ceil(kept / effective)
    return lines + [f"optimizer steps: {per_epoch * config['num_epochs']} ({per_epoch} per epoch x "
                    f"{config['num_epochs']} epochs)"]


def memory_lines(config: dict, flags: dict, longest: int, plan: Plan) -> None:
    try:
        shape = read_model_shape(config["model_id"], flags.get("model_params_b"), CONVERTED_DIR)
    except ShapeError as exc:
        plan.problems.append(str(exc))
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    estimate = estimate_training_memory(shape, config, tokens_per_sequence=longest or None, world_size=world)
    quant = "4-bit NF4" if config["use_lora"] and config["load_in_4bit"] else config["torch_dtype"]
    plan.lines.append(f"model: {shape.params / 1e9:.2f}B parameters, {shape.layers} layers x {shape.hidden} hidden, "
                      f"vocab {shape.vocab}, base in {quant}; from {shape.source}")
    plan.lines.append(f"trainable parameters: {estimate.trainable_params / 1e6:.1f}M")
    plan.lines.append(f"GPU memory estimate per process of {world} (batch {config['batch_size']} x "
                      f"{longest or config['max_seq_length']} tokens):")
    plan.lines += [f"  {name:<32} {size / GIB:6.2f} GiB" for name, size in estimate.parts.items()]
    plan.lines.append(f"  {'total':<32} {estimate.total / GIB:6.2f} GiB")
    plan.lines += [f"  note: {note}" for note in estimate.notes]
    plan.lines.append("  note: logits counted over every token (an upper bound: the answer-window collator "
                      "computes them on the answer only)")
    gpu, where = gpu_memory_bytes(flags.get("gpu_memory_gb"))
    plan.lines.append(f"GPU: {where}")
    if not gpu:
        return
    needed = gpus_needed(shape, config, gpu, longest or None)
    if config["fsdp"] != "none":
        plan.lines.append(f"GPUs needed with fsdp = full_shard: {needed or 'more than 512'} of {gpu / GIB:.1f} GiB "
                          "(activations and logits don't shard)")
    if estimate.total > FITS * gpu:
        tips = advice(estimate, config, gpu)
        if needed and needed > world:
            tips.append(f"--fsdp full_shard over {needed} GPUs (./run_training.sh --gpus 0,...,{needed - 1})")
        plan.problems.append(f"the estimate ({estimate.total / GIB:.1f} GiB) does not fit {gpu / GIB:.1f} GiB; "
                             "lower: " + "; ".join(tips))


def make_plan(config: dict, flags: dict) -> Plan:
    plan = Plan(lines=[f"config: {config.get('config_file', 'defaults')}", f"output_dir: {config['output_dir']}"])
    try:
        tokenizer = local_tokenizer(config)
    except Exception as exc:  # a broken tokenizer folder: the run would fail at the same place
        plan.problems.append(f"tokenizer: {exc}")
        tokenizer = None
    checks = [check_data(config["train_data"], config, tokenizer, config["max_train_examples"])]
    if config["eval_data"]:
        checks.append(check_data(config["eval_data"], config, tokenizer, config["max_eval_examples"]))
    plan.lines += [f"data: {report_line(report, problem)}" for report, problem in checks]
    plan.problems += [f"data: {report_line(report, problem)}" for report, problem in checks if problem]
    train_report, train_problem = checks[0]
    if not train_problem and train_report.kept == 0:
        plan.problems.append(f"data: {train_report.path}: no example fits max_seq_length={config['max_seq_length']}")
    plan.lines += schedule_lines(config, None if train_problem else train_report.kept)
    memory_lines(config, flags, max(report.longest for report, _ in checks), plan)
    return plan


def print_plan(plan: Plan) -> int:
    print("preflight (nothing loaded, nothing written):")
    for line in plan.lines:
        print(f"  {line}")
    for problem in plan.problems:
        print(f"  PROBLEM: {problem}")
    print(f"preflight: {'ready' if not plan.problems else f'{len(plan.problems)} problem(s)'}")
    return 1 if plan.problems else 0
