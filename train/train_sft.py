"""Supervised fine-tuning (4-bit QLoRA by default) driven by a plain-Python config.

    python -m train.train_sft --config ablation2.py                  # the original recipe, on a GPU
    python -m train.train_sft --config tiny_cpu.py --max_steps 20    # the tiny local model, on CPU
    python -m train.train_sft --config ablation2.py --dry_run        # the plan and memory estimate only
    ./run_training.sh --config ablation2.py --gpu 1                  # the same inside the CUDA container
    torchrun --nproc_per_node 2 -m train.train_sft --config distributed.py   # DDP (the wrapper does this)

What it guarantees: loss only on the answer (prompt tokens are -100, the answer and its eos are
trained); pad != eos; prompts encoded by the same function inference uses; no example cut inside its
answer; 4-bit gradients that stay right on AVX512-BF16 CPUs; every failure exits non-zero with a clear
message. Outputs in `output_dir`: the adapter + tokenizer, `training_config.json`, `train_results.json`,
`log_history.json`, checkpoints, and `merged/` on request; the output, each checkpoint and `merged/` carry
`model_contract.json` (task, answer format, tokens, chat template: model_contract.py).
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

from nli_finetune.cli import on_terminal
from nli_finetune.data_io import DataError, atomic_write_json, load_env_file
from nli_finetune.gguf_convert import is_gguf
from nli_finetune.job_runner import output_lock
from nli_finetune.model_contract import build_contract, checkpoint_writer, read_contract, write_contract
from nli_finetune.modeling import (
    BASE_SOURCE_FILE,
    ModelLoadError,
    can_load_4bit,
    load_model,
    resolve_device,
)
from nli_finetune.redaction import redact, redact_data, redact_logging
from prompts import Task, get_task
from train.config_loader import ConfigError, config_to_json
from train.config_rules import shape_problems
from train.preflight import make_plan, print_plan, split_preflight_flags
from train.run_config import (
    TrainConfig,
    all_special_tokens,
    batching,
    fingerprint_writer,
    init_adapter_problems,
    load_run_config,
    register_special_tokens,  # noqa: F401  (tests and older callers import it from here)
    resolve_training_run,
    resolved_output_dir,
    run_fingerprint,
    setup_tokenizer,
    write_fingerprint,
)
from train.sft_data import AnswerWindowCollator, PaddingFreeCollator, load_sft_examples
from train.sharding import fsdp_arguments, save_final_model, sharding_trainer

log = logging.getLogger("train_sft")
PUSH_IGNORED = ["checkpoint-*", "checkpoint-*/**", "merged/**", "runs/**", "training_args.bin"]


class TrainError(RuntimeError):
    """A problem found before or after training; the message says what to change."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def grow_embeddings(model, tokenizer, new_ids: list[int]) -> None:
    """Rows for every token id (an added pad, special tokens), and new special tokens started at the mean
    of the existing rows: random rows would dominate the softmax at first. Models with spare rows (Qwen)
    are not resized, but their rows for the new tokens are initialised all the same."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if not new_ids:
        return
    with torch.no_grad():
        for matrix in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                       if m is not None}.values():
            matrix.weight[new_ids] = matrix.weight[:min(new_ids)].mean(dim=0, keepdim=True)


def build_model(config: TrainConfig, tokenizer, device: str, new_token_ids: list[int]):
    model = load_model(config.model_id, device=device, load_in_4bit=config.load_in_4bit,
                       dtype=config.torch_dtype, attn_implementation=config.attn_implementation,
                       quant_type=config.bnb_4bit_quant_type, double_quant=config.bnb_4bit_use_double_quant,
                       compute_dtype=config.bnb_4bit_compute_dtype, for_sharding=config.fsdp != "none")
    problems = shape_problems(config, model.config.get_text_config().num_hidden_layers)
    if problems:
        raise ConfigError(problems[0])
    grow_embeddings(model, tokenizer, new_token_ids)
    special_ids = tokenizer.convert_tokens_to_ids(all_special_tokens(config))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # no KV cache while training (generation turns it on for itself)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if not config.use_lora:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    token_rows = None
    if special_ids:  # the new rows train on the input side and, unless tied to it, the output side
        token_rows = {"embed_tokens": special_ids}
        if not model.config.tie_word_embeddings:
            token_rows["lm_head"] = special_ids
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
                      trainable_token_indices=token_rows, layers_to_transform=config.lora_layers)
    if config.init_adapter:
        return continued_adapter(model, config.init_adapter)
    return get_peft_model(model, lora)


def continued_adapter(model, adapter_dir: str):
    """The model with the adapter in `adapter_dir` loaded to go on training. Its settings and shape were
    checked before anything loaded (run_config.init_adapter_problems); a misfit that check could not see
    (a hub base not in the cache) is one line here too, never peft's size-mismatch traceback."""
    from peft import PeftModel
    log.info("starting from the adapter in %s", adapter_dir)
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise ConfigError(f"init_adapter {adapter_dir} does not fit model_id (an adapter of another base "
                          f"model?): {first}") from None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them CPU bfloat16 matmuls are emulated, ~40x slower than float32 (measured
    on a 2-core AVX2 machine: 1.28 s vs 0.03 s for one 800x576x1536 forward and backward)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast_pays_off(config: TrainConfig, device: str) -> bool:
    """mixed_precision = auto: bf16 autocast on CUDA when the compute dtype is bf16; on a CPU when it has native
    bf16 (then ~3x faster steps than float32, smollm2_cpu.py), never where it would be emulated."""
    if device.startswith("cuda"):
        return config.load_in_4bit and config.bnb_4bit_compute_dtype == "bfloat16" or config.torch_dtype == "bfloat16"
    return device == "cpu" and cpu_has_native_bf16()


def sampling_strategy(config: TrainConfig) -> str:
    """The Trainer's train sampler: the file's order (a curriculum), length-grouped, or shuffled."""
    return "sequential" if not config.shuffle else "group_by_length" if config.group_by_length else "random"


def training_arguments(config: TrainConfig, device: str, n_train: int, has_eval: bool):
    from transformers import TrainingArguments
    bf16 = config.mixed_precision == "bf16" or config.mixed_precision == "auto" and autocast_pays_off(config, device)
    steps_per_epoch = math.ceil(n_train / (config.batch_size * config.grad_accumulation_steps
                                           * int(os.environ.get("WORLD_SIZE", "1"))))
    eval_kwargs = {}
    if has_eval:
        eval_kwargs = dict(eval_strategy="steps", eval_steps=config.eval_steps,
                           load_best_model_at_end=config.load_best_model_at_end,
                           metric_for_best_model="eval_loss", greater_is_better=False)
    return TrainingArguments(
        output_dir=config.output_dir, seed=config.seed, data_seed=config.seed,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation_steps, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=int(config.warmup_ratio * (
            config.max_steps if config.max_steps > 0 else steps_per_epoch * config.num_epochs)),
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, optim=config.optimizer,
        activation_checkpointing=config.gradient_checkpointing and config.fsdp == "none",
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, report_to=[] if config.report_to == "none" else [config.report_to],
        run_name=config.wandb_run_name or Path(config.output_dir).name, bf16=bf16,
        use_cpu=device == "cpu", remove_unused_columns=False, prediction_loss_only=True,
        train_sampling_strategy=sampling_strategy(config),
        dataloader_num_workers=0, ddp_find_unused_parameters=False if config.use_lora else None,
        # off a terminal the Trainer prints one log line per logging_steps instead of a bar per step
        disable_tqdm=not is_main_process() or not on_terminal(), **eval_kwargs, **fsdp_arguments(config))


def trainable_checksum(model) -> float:
    """A float summarising the trainable weights this rank holds: equal on every rank after DDP; under
    FSDP each rank's own shards, which add up to the single-process value."""
    local = (p.to_local() if hasattr(p, "to_local") else p for p in model.parameters() if p.requires_grad)
    return float(sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(local)))


def leave_process_group() -> None:
    """Without this, gloo's worker threads outlive the interpreter and a rank may abort at exit
    ("terminate called without an active exception"), failing a run that had succeeded. The barrier
    first, so no rank tears its connections down while another still saves: without it, rank 1 still
    aborted once in a CI run, right after the save. Called on success only: after an error another rank
    may be inside a collective, and a barrier or destroy would hang (torchrun stops the other ranks when
    one exits non-zero)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_across_ranks(value):
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def merge_and_save(config: TrainConfig, adapter_dir: Path, device: str) -> Path:
    """A 16-bit merged model made from a non-quantized copy of the base (never from 4-bit weights)."""
    from nli_finetune.modeling import load_for_inference
    dtype = "float16" if config.torch_dtype == "float16" else "bfloat16"
    merged, tokenizer, info = load_for_inference(str(adapter_dir), device=device, load_in_4bit=False, dtype=dtype)
    if not info["merged"]:
        raise TrainError(f"{adapter_dir} did not load as a LoRA adapter; nothing to merge")
    out = adapter_dir / "merged"
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if (contract := read_contract(adapter_dir)) is not None:  # the merged model answers as the adapter did
        write_contract(out, contract)
    return out


def push_to_hub(output_dir: Path, repo_id: str) -> None:
    """The saved output as it is on disk (adapter or model, tokenizer, configs, results): the same files
    whether one process, DDP or FSDP trained them. Checkpoints, merged/ and logs stay local."""
    from huggingface_hub import HfApi
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, private=True, exist_ok=True)
        api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, ignore_patterns=PUSH_IGNORED)
    except Exception as exc:  # network, auth or hub errors: all end the same way for the user
        raise TrainError(f"push to the hub ({repo_id}) failed: {type(exc).__name__}: "
                         f"{redact(exc)[:300]}. The local outputs are kept.") from exc


def _refuse(problem: Exception):
    raise problem


def prepare(config: TrainConfig) -> tuple[TrainConfig, str, str | None]:
    """(the config resolved for this machine, the device, the checkpoint to resume from or None): secrets
    redacted, the launch and the paths checked (run_config.resolve_training_run, as the preflight), the seed set."""
    from transformers import set_seed
    device = resolve_device(config.device)
    redacted = redact_data(dataclasses.asdict(config))
    if redacted != dataclasses.asdict(config):  # a credential pasted into a config value: never let it reach any file
        log.warning("a config value contained a secret from the environment; it is replaced by ***")
        config = dataclasses.replace(config, **redacted)
    config, notes, resume = resolve_training_run(config, device, probe_4bit=can_load_4bit, planned=False, problem=_refuse)
    for note in notes:
        log.warning(note)
    if config.mixed_precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
        log.warning("mixed_precision = bf16 on a CPU without AVX512-BF16/AMX: emulated, ~40x slower matmuls than "
                    "float32; mixed_precision = auto uses bf16 only where the CPU has it")
    set_seed(config.seed)
    if config.report_to == "wandb":
        os.environ.setdefault("WANDB_PROJECT", config.wandb_project)
    return config, device, resume


def load_data(config: TrainConfig, tokenizer, task: Task) -> tuple[tuple[list, object], tuple[list, object]]:
    """((train examples, report), (eval examples, report or None)), tokenized as training needs them."""
    kwargs = dict(data_format=config.data_format, task=task, max_seq_length=config.max_seq_length,
                  overlong=config.overlong, invalid=config.invalid_examples)
    train_set = load_sft_examples(config.train_data, tokenizer, limit=config.max_train_examples, **kwargs)
    log.info(train_set[1].line())
    eval_set = ([], None)
    if config.eval_data:
        eval_set = load_sft_examples(config.eval_data, tokenizer, limit=config.max_eval_examples, **kwargs)
        log.info(eval_set[1].line())
    return train_set, eval_set


def pick_collator(config: TrainConfig, model, tokenizer):
    """The collator run_config.batching decides for the attention the loaded model really runs."""
    plan = batching(config, loaded_attention=model.config._attn_implementation)
    if config.use_packing and not plan.padding_free:
        grouped = "length-grouped " if sampling_strategy(config) == "group_by_length" else ""
        log.info("use_packing: padding-free batches need flash-attention; with %s, using %spadded batches "
                 "(faster there)", plan.attention, grouped)
    return PaddingFreeCollator() if plan.padding_free else AnswerWindowCollator(tokenizer.pad_token_id)


def make_callbacks(config: TrainConfig, tokenizer, task: Task, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback
    callbacks = []
    if has_eval and config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    if has_eval and config.gen_eval_examples > 0:
        from train.gen_eval import GenerationEvalCallback
        callbacks.append(GenerationEvalCallback(tokenizer, config.eval_data, task,
                                                config.gen_eval_examples, config.gen_eval_max_new_tokens,
                                                config.batch_size))
    if config.confidence_eval_data:
        from train.confidence_eval import ConfidenceEvalCallback
        callbacks.append(ConfidenceEvalCallback(tokenizer, config))
    return callbacks


def make_trainer(config: TrainConfig, model, tokenizer, device: str, task: Task, train_examples: list,
                 eval_examples: list):
    callbacks = make_callbacks(config, tokenizer, task, bool(eval_examples))
    trainer = sharding_trainer(
        model=model, args=training_arguments(config, device, len(train_examples), bool(eval_examples)),
        train_dataset=train_examples, eval_dataset=eval_examples or None,
        data_collator=pick_collator(config, model, tokenizer), processing_class=tokenizer, callbacks=callbacks)
    for callback in callbacks:
        if hasattr(callback, "trainer"):
            callback.trainer = trainer
    return trainer


def write_run_files(config: TrainConfig) -> None:
    """Only now, on rank 0: a run that fails before training leaves nothing in output_dir."""
    if not is_main_process():
        return
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "training_config.json", json.loads(config_to_json(config)))
    write_fingerprint(output_dir, run_fingerprint(config))  # checkpoints of this run carry it too
    if is_gguf(config.model_id):  # the adapter's base was converted from this file
        atomic_write_json(output_dir / BASE_SOURCE_FILE, {"gguf_file": str(Path(config.model_id).resolve())})


def fit(trainer, model, config: TrainConfig, device: str, train_set, eval_set, resume: str | None) -> dict:
    """Train (resuming when asked), evaluate, and gather what train_results.json records."""
    (train_examples, train_report), (eval_examples, eval_report) = train_set, eval_set
    write_run_files(config)
    trained_tokens = sum(sum(label != -100 for label in ex["labels"]) for ex in train_examples)
    example_tokens = sum(len(ex["input_ids"]) for ex in train_examples)  # prompt and answer, as truncated
    parameters = parameter_count(model)  # before train() wraps (or shards) the model
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - started
    final_eval = trainer.evaluate() if eval_examples else {}
    checksums = gather_across_ranks(trainable_checksum(model))
    examples_seen = examples_consumed(trainer.args, result.global_step)
    tokens_seen = round(examples_seen * example_tokens / max(1, len(train_examples)))
    return {
        "train_loss": result.training_loss, "global_step": result.global_step,
        "train_runtime_s": seconds, "train_samples": len(train_examples),
        "eval_samples": len(eval_examples), "dropped_too_long": {
            "train": train_report.dropped_too_long, "eval": eval_report.dropped_too_long if eval_report else 0},
        "eval_loss": final_eval.get("eval_loss"), "best_checkpoint": trainer.state.best_model_checkpoint,
        "trained_tokens_per_epoch": trained_tokens, "examples_seen": examples_seen,
        # the answer tokens the loss saw: that many examples at the training data's answer tokens per example
        "answer_tokens_seen": round(examples_seen * trained_tokens / max(1, len(train_examples))),
        # every token those examples hold (prompt and answer, no padding): what the model processed
        "tokens_seen": tokens_seen, "model_parameters": parameters,
        # The usual 6·N·D estimate of training compute: a forward (2·N) and a backward (4·N) per token processed.
        # An approximation: under LoRA the frozen base gets no weight gradients (about 2·N of the 6·N is not
        # spent), and attention's own FLOPs are left out.
        "train_flops": 6 * parameters * tokens_seen,
        "load_in_4bit": config.load_in_4bit,
        "device": device, "world_size": len(checksums), "rank_param_checksums": checksums,
        "resumed_from": resume, "attn_implementation": model.config._attn_implementation,
        "optimizer_state": optimizer_state_summary(trainer.optimizer),
    }


def examples_consumed(args, steps: int) -> int:
    """The training examples `steps` optimizer steps consumed, over every process: each step takes
    grad_accumulation_steps batches of per_device_train_batch_size on each of world_size processes (an
    epoch's short last batch is counted as a full one)."""
    return steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def parameter_count(model) -> int:
    """Every parameter of the model, the frozen base and the adapter, in elements: a 4-bit weight
    (bitsandbytes' Params4bit) packs two elements a byte, and its quant_state keeps the weight's real shape."""
    return sum(math.prod(p.quant_state.shape) if getattr(p, "quant_state", None) is not None else p.numel()
               for p in model.parameters())


def optimizer_state_summary(optimizer) -> dict:
    """What the optimizer really keeps per parameter: its state tensors' dtypes (uint8 for an 8-bit optimizer)
    and how many of them bitsandbytes paged (it pages only tensors of >= 100k elements), so a check can tell a
    requested 8-bit paged optimizer from a silent 32-bit one."""
    import torch
    tensors = [value for state in (optimizer.state.values() if optimizer is not None else [])
               for value in state.values() if isinstance(value, torch.Tensor) and value.dim() > 0]
    return {"class": type(getattr(optimizer, "optimizer", optimizer)).__name__, "state_tensors": len(tensors),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors}),
            "paged": sum(bool(getattr(t, "is_paged", False)) for t in tensors),
            "largest_param": max((p.numel() for group in (optimizer.param_groups if optimizer is not None else [])
                                  for p in group["params"]), default=0)}


def save_outputs(trainer, tokenizer, config: TrainConfig, results: dict, device: str) -> None:
    """Rank 0, after save_final_model: the tokenizer, logs and results; merged and pushed on request."""
    output_dir = Path(config.output_dir)
    tokenizer.save_pretrained(str(output_dir))
    atomic_write_json(output_dir / "log_history.json", redact_data(trainer.state.log_history))
    atomic_write_json(output_dir / "train_results.json", redact_data(results))
    if config.merge_adapter and config.use_lora:
        results["merged_dir"] = str(merge_and_save(config, output_dir, device))
        atomic_write_json(output_dir / "train_results.json", redact_data(results))
    if config.hub_model_id:
        push_to_hub(output_dir, config.hub_model_id)


def log_trainable(model, config: TrainConfig) -> None:
    if config.use_lora and is_main_process():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)


def training_contract(config: TrainConfig, tokenizer, task: Task):
    """What this run trains the model for (model_contract.py), from the tokenizer its prompts are encoded with."""
    return build_contract(tokenizer, task=task, data_format=config.data_format,
                          special_tokens=config.special_tokens, confidence_tokens=config.confidence_tokens,
                          confidence_datasets=config.confidence_datasets, max_seq_length=config.max_seq_length,
                          model_id=config.model_id)


def output_dir_lock(config: TrainConfig):
    """Held by rank 0 for the whole run: a second run into the same output_dir is refused at once
    (DataError) instead of mixing its files with this one's. The lock file sits beside the folder (a
    refused run leaves nothing in it) and dies with the process, even on SIGKILL."""
    if not is_main_process():  # the other ranks of this launch write nothing themselves
        return contextlib.nullcontext()
    return output_lock(resolved_output_dir(config))


def train(config: TrainConfig) -> dict:
    config, device, resume = prepare(config)
    task = get_task(config.task)  # the config names the task; data, evaluation and contract are handed the Task
    tokenizer, new_token_ids = setup_tokenizer(config)  # before any tokenizing
    problems = init_adapter_problems(config, tokenizer)  # the preflight's check, before any weight loads
    if problems:
        raise ConfigError(problems[0])
    train_set, eval_set = load_data(config, tokenizer, task)
    model = build_model(config, tokenizer, device, new_token_ids)
    log_trainable(model, config)
    trainer = make_trainer(config, model, tokenizer, device, task, train_set[0], eval_set[0])
    contract = training_contract(config, tokenizer, task)
    trainer.add_callback(checkpoint_writer(contract))
    trainer.add_callback(fingerprint_writer(run_fingerprint(config)))
    results = fit(trainer, model, config, device, train_set, eval_set, resume)
    save_final_model(trainer, config.output_dir)
    if trainer.is_world_process_zero():
        write_contract(config.output_dir, contract)  # before merged/ and the hub push, which carry it
        save_outputs(trainer, tokenizer, config, results, device)
    return results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m train.train_sft [--config] CONFIG [--key value ...] "
              "[--dry_run [--model_params_b N] [--gpu_memory_gb N]]   (keys: train/config_schema.py; "
              "--dry_run: train/preflight.py)")
        return 0
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    redact_logging()
    load_env_file()  # HF_TOKEN, WANDB_API_KEY
    sys.argv[:] = redact_data(sys.argv)  # W&B stores the command line in its run files
    config = None
    try:
        argv, preflight_flags = split_preflight_flags(argv)
        config = load_run_config(argv)
        if preflight_flags.get("dry_run"):
            return print_plan(make_plan(config, preflight_flags))
        with output_dir_lock(config):
            results = train(config)
        leave_process_group()
    except (ConfigError, DataError, ModelLoadError, TrainError) as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2 if not isinstance(exc, TrainError) or "push to the hub" not in str(exc) else 1
    except OSError as exc:  # disk full while saving: the last complete checkpoint is still there
        print(f"error: cannot write: {redact(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"train_sft: interrupted; complete checkpoints in {config.output_dir} are kept (resume with "
              "--resume_from_checkpoint latest)" if config else "train_sft: interrupted", file=sys.stderr)
        return 130
    except torch.OutOfMemoryError:
        print("error: out of memory. Lower --batch_size (raise --grad_accumulation_steps to keep the effective "
              "batch), lower --max_seq_length, or set --gradient_checkpointing true", file=sys.stderr)
        return 1
    if is_main_process():
        eval_loss = results["eval_loss"]
        print(f"train_sft: {results['global_step']} steps in {results['train_runtime_s']:.0f}s, "
              f"train loss {results['train_loss']:.4f}"
              + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else "")
              + f", {results['train_samples']} examples ({results['dropped_too_long']['train']} dropped as too long)"
              + f" -> {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
