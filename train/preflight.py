"""The plan of a training run, checked before a GPU is spent on it (`--dry_run`): no weight is loaded.

    python -m train.train_sft --config ablation2.py --dry_run
    python -m train.train_sft --config ablation2.py --dry_run --model_params_b 7.25 --gpu_memory_gb 24
    ./run_training.sh --dry-run --config ablation2.py --gpu 1     # the container command, then this plan

It resolves the config as training does (train/run_config.py: the same `resolve_training_run`: resolve, launch rules, path
checks and tokenizer setup), checks that the data files exist and parse (tokenized with the model's own
tokenizer when it is on disk, else the fields training reads estimated at 4 characters a token), reads
the model's shape (model_shape.py), and prints examples kept and dropped, steps, the effective batch and
the memory estimate (train/memory_estimate.py). A plan with a problem, or one that does not fit the GPU
(`--gpu_memory_gb`, else nvidia-smi's smallest GPU), says so and exits 1.
"""

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nli_finetune.data_io import DataError
from nli_finetune.job_runner import output_locked
from nli_finetune.model_shape import ShapeError, read_model_shape
from nli_finetune.modeling import ModelLoadError
from prompts import Task, get_task
from train.config_rules import shape_problems
from train.memory_estimate import FITS, GIB, advice, estimate_training_memory, gpus_needed
from train.run_config import (
    TrainConfig,
    batching,
    init_adapter_problems,
    resolve_training_run,
    resolved_output_dir,
    setup_tokenizer,
    tokenizer_source,
)
from train.sft_data import LoadReport, load_sft_examples

CHARS_PER_TOKEN = 4  # English prose under BPE tokenizers: a rough but common rule
# flags of the dry run itself, not config keys: name -> type
PREFLIGHT_FLAGS = {"dry_run": None, "model_params_b": float, "gpu_memory_gb": float}


def report_line(report: LoadReport, problem: str) -> str:
    if problem:  # most messages start with the file already
        return problem if problem.startswith(str(report.path)) else f"{report.path}: {problem}"
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
                if not math.isfinite(flags[name]) or flags[name] <= 0:
                    raise DataError(f"--{name} must be a finite number above 0, got {raw}")
        else:
            rest.append(argv[i])
        i += 1
    return rest, flags


class EstimateTokenizer:
    """Stands in for a tokenizer that is not on disk: CHARS_PER_TOKEN characters a token, so the
    preflight measures exactly the text training would tokenize (the same fields, prompts and template)."""
    chat_template = None
    bos_token = bos_token_id = unk_token_id = None
    eos_token, eos_token_id = "</s>", 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [0] * math.ceil(len(text) / CHARS_PER_TOKEN)}

    def convert_tokens_to_ids(self, token):
        return 1  # every configured token becomes one token once registered


def local_tokenizer(config: TrainConfig):
    """The run's tokenizer, set up as training sets it up (special and confidence tokens registered),
    when it is on disk (a folder or a converted GGUF); None for a hub id or an unconverted GGUF."""
    from nli_finetune.gguf_convert import converted_dir_for, is_gguf
    source = tokenizer_source(config)
    if is_gguf(source):
        source = str(converted_dir_for(Path(source)))
    if not (Path(source) / "tokenizer_config.json").is_file() and not (Path(source) / "tokenizer.json").is_file():
        return None
    from nli_finetune.modeling import load_tokenizer
    return setup_tokenizer(config, load_tokenizer(source))[0]


def check_data(path: str, config: TrainConfig, task: Task, tokenizer, limit) -> tuple[LoadReport, str]:
    """(what loading `path` keeps and drops, the problem that stops it or "")."""
    if not Path(path).is_file():
        return LoadReport(path=path), "file not found (the config's first lines give the command that builds it)"
    try:
        report = load_sft_examples(path, tokenizer or EstimateTokenizer(), data_format=config.data_format,
                                   task=task, max_seq_length=config.max_seq_length,
                                   overlong=config.overlong, limit=limit, invalid=config.invalid_examples)[1]
    except DataError as exc:
        return LoadReport(path=path), str(exc)
    report.estimated = tokenizer is None
    return report, ""


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


def world_size(environ=None) -> int:
    """Processes of the planned run (WORLD_SIZE, which run_training.sh sets from --gpus)."""
    raw = (os.environ if environ is None else environ).get("WORLD_SIZE", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise DataError(f"WORLD_SIZE must be a whole number of processes >= 1, got '{raw}' (check --gpus)")
    return int(raw)


def schedule_lines(config: TrainConfig, kept: int | None, world: int) -> list[str]:
    effective = config.batch_size * config.grad_accumulation_steps * world
    lines = [f"effective batch: {effective} = batch_size {config.batch_size} x grad_accumulation_steps "
             f"{config.grad_accumulation_steps} x {world} process(es)"]
    if config.max_steps > 0:
        return lines + [f"optimizer steps: {config.max_steps} (max_steps)"]
    if kept is None:
        return lines + ["optimizer steps: unknown until the training data can be read"]
    per_epoch = math.ceil(kept / effective)
    return lines + [f"optimizer steps: {per_epoch * config.num_epochs} ({per_epoch} per epoch x "
                    f"{config.num_epochs} epochs)"]


def batching_lines(config: TrainConfig, device: str, here: bool, plan: Plan) -> bool:
    """The attention and collator the run will use (run_config.batching, as training decides them);
    whether its batches are padding-free."""
    try:
        decided = batching(config, device, device_here=here)
    except ModelLoadError as exc:  # flash_attention_2 asked where it can't run: the load would stop here
        plan.problems.append(f"attn_implementation: {exc}")
        return False
    plan.lines.append(f"attention: {decided.attention} ({decided.source}); batches: {decided.collator} collator"
                      + (" (use_packing needs flash attention)" if config.use_packing and not decided.padding_free
                         else ""))
    return decided.padding_free


def memory_lines(config: TrainConfig, flags: dict, longest: int, longest_answer: int, plan: Plan,
                 world: int, padding_free: bool) -> None:
    try:
        shape = read_model_shape(config.model_id, flags.get("model_params_b"))
    except ShapeError as exc:
        plan.problems.append(str(exc))
        return
    problems = shape_problems(config, shape.layers)
    if problems:  # the estimate of a run that can't start would be meaningless (even negative)
        plan.problems += problems
        return
    # padding-free batches compute logits on every token; the answer-window collator on the widest answer only
    logit_columns = None if padding_free else (longest_answer or None)
    estimate = estimate_training_memory(shape, config, tokens_per_sequence=longest or None,
                                        logit_columns=logit_columns, world_size=world)
    quant = "4-bit NF4" if config.load_in_4bit else config.torch_dtype
    plan.lines.append(f"model: {shape.params / 1e9:.2f}B parameters, {shape.layers} layers x {shape.hidden} hidden, "
                      f"vocab {shape.vocab}, base in {quant}; from {shape.source}")
    plan.lines.append(f"trainable parameters: {estimate.trainable_params / 1e6:.1f}M")
    plan.lines.append(f"GPU memory estimate per process of {world} (batch {config.batch_size} x "
                      f"{longest or config.max_seq_length} tokens):")
    plan.lines += [f"  {name:<32} {size / GIB:6.2f} GiB" for name, size in estimate.parts.items()]
    plan.lines.append(f"  {'total':<32} {estimate.total / GIB:6.2f} GiB")
    plan.lines += [f"  note: {note}" for note in estimate.notes]
    plan.lines.append(f"  note: logits counted over {logit_columns} answer columns (the answer-window collator)"
                      if logit_columns else "  note: logits counted over every token")
    gpu, where = gpu_memory_bytes(flags.get("gpu_memory_gb"))
    plan.lines.append(f"GPU: {where}")
    if not gpu:
        return
    needed = gpus_needed(shape, config, gpu, longest or None, logit_columns)
    if config.fsdp != "none":
        plan.lines.append(f"GPUs needed with fsdp = full_shard: {needed or 'more than 512'} of {gpu / GIB:.1f} GiB "
                          "(activations and logits don't shard)")
    if estimate.total > FITS * gpu:
        tips = advice(estimate, config, gpu)
        if needed and needed > world:
            tips.append(f"--fsdp full_shard over {needed} GPUs (./run_training.sh --gpus 0,...,{needed - 1})")
        plan.problems.append(f"the estimate ({estimate.total / GIB:.1f} GiB) does not fit {gpu / GIB:.1f} GiB; "
                             "lower: " + "; ".join(tips))


def planned_device(config: TrainConfig) -> tuple[str, bool]:
    """(the device the run will use, whether this machine has it): "auto" without a GPU here plans for a
    CUDA GPU, since a GPU memory plan is what the dry run is for."""
    import torch
    if config.device == "cpu":
        return "cpu", True
    device = "cuda" if config.device == "auto" else config.device
    return device, torch.cuda.is_available()


def resolved_for_plan(config: TrainConfig, plan: Plan) -> tuple[TrainConfig, str, bool]:
    """(the config as training resolves it (run_config.resolve_training_run), the device, whether this machine has
    it), with every launch and path problem the run would stop at in the plan."""
    from nli_finetune.modeling import can_load_4bit
    device, here = planned_device(config)
    plan.lines.append(f"device: {device}" + ("" if here else " (planned; this machine has none)"))
    problems = []
    config, notes, _ = resolve_training_run(config, device, probe_4bit=can_load_4bit if here else None, planned=True,
                                   problem=problems.append)
    plan.lines += [f"note: {note}" for note in notes]
    plan.problems += [str(problem) for problem in problems]
    if output_locked(resolved_output_dir(config)):  # the run would be refused at once
        plan.problems.append(f"output_dir {config.output_dir}: another run is writing it now; wait for it to end "
                             "or choose another --output_dir")
    return config, device, here


def make_plan(config: TrainConfig, flags: dict) -> Plan:
    plan = Plan(lines=[f"config: {config.config_file or 'defaults'}", f"output_dir: {config.output_dir}"])
    world = world_size()
    config, device, here = resolved_for_plan(config, plan)
    padding_free = batching_lines(config, device, here, plan)
    try:
        tokenizer = local_tokenizer(config)
    except Exception as exc:  # a broken tokenizer folder: the run would fail at the same place
        plan.problems.append(f"tokenizer: {exc}")
        tokenizer = None
    plan.problems += init_adapter_problems(config, tokenizer)  # training asks the same before it loads
    task = get_task(config.task)  # the config names the task (its loader has checked the name)
    checks = [check_data(config.train_data, config, task, tokenizer, config.max_train_examples)]
    if config.eval_data:
        checks.append(check_data(config.eval_data, config, task, tokenizer, config.max_eval_examples))
    plan.lines += [f"data: {report_line(report, problem)}" for report, problem in checks]
    plan.problems += [f"data: {report_line(report, problem)}" for report, problem in checks if problem]
    train_report, train_problem = checks[0]
    plan.lines += schedule_lines(config, None if train_problem else train_report.kept, world)
    memory_lines(config, flags, max(report.longest for report, _ in checks),
                 max(report.longest_answer for report, _ in checks), plan, world, padding_free)
    return plan


def print_plan(plan: Plan) -> int:
    print("preflight (nothing loaded, nothing written):")
    for line in plan.lines:
        print(f"  {line}")
    for problem in plan.problems:
        print(f"  PROBLEM: {problem}")
    print(f"preflight: {'ready' if not plan.problems else f'{len(plan.problems)} problem(s)'}")
    return 1 if plan.problems else 0
