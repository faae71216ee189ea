"""The config rules a key's declared type and range can't say (train/config_schema.py declares those):
values that depend on another module (the task names), special values, rules between keys, and the
rules of the launch (the device, torchrun). Pure functions of their arguments: `config_loader` applies
the value and cross-key rules while loading, and train_sft and the preflight both apply `launch_problems`
to the resolved config (train/run_config.py), so `--dry_run` refuses what the run would refuse.
"""

CUDA_ONLY_OPTIMIZERS = ("paged_", "8bit")


def _strings(value, *, allow_empty_list: bool) -> bool:
    return isinstance(value, list) and (allow_empty_list or bool(value)) and all(
        isinstance(item, str) and item.strip() for item in value)


def _list_problem(key: str, value) -> str | None:
    if key == "lora_layers" and not (value and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                   for i in value)):
        return f"must be a non-empty list of layer indexes (0 = the first layer) or None, got {value!r}"
    if key == "lora_target_modules" and value != "all-linear" and not _strings(value, allow_empty_list=False):
        return f"must be a non-empty list of module names (e.g. ['q_proj', 'v_proj']) or 'all-linear', got {value!r}"
    if key in ("special_tokens", "confidence_eval_data") and not _strings(value, allow_empty_list=True):
        return f"must be a list of strings, got {value!r}"
    if key == "confidence_tokens":
        for domain, pair in value.items():
            if not (isinstance(pair, list) and len(pair) == 2 and _strings(pair, allow_empty_list=False)):
                return f"['{domain}'] must be [confident token, unconfident token] (two strings), got {pair!r}"
    return None


def value_problem(key: str, value) -> str | None:
    """Why `value` is not allowed for `key` beyond its declaration, or None."""
    if value is None:
        return None
    if key == "max_steps" and (value == 0 or value < -1):
        return f"must be a positive number of steps or -1 (use num_epochs), got {value!r}"
    if key == "task":
        from prompts import TASKS
        if value not in TASKS:
            return f"must be one of {', '.join(sorted(TASKS))}; got {value!r}"
    if key == "device" and not (value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:")):
        return f"must be auto, cpu, cuda or cuda:N, got {value!r}"
    return _list_problem(key, value)


def cross_key_problems(config) -> list[str]:
    """Rules between keys that would otherwise fail deep inside the Trainer, after the model loaded."""
    problems = []
    if config.eval_data and config.load_best_model_at_end and config.save_steps % config.eval_steps:
        problems.append(f"load_best_model_at_end needs save_steps ({config.save_steps}) to be a multiple of "
                        f"eval_steps ({config.eval_steps}): set --save_steps {config.eval_steps}")
    if not config.shuffle and config.group_by_length:
        problems.append("shuffle = False keeps the file's row order, which group_by_length would undo: "
                        "set --group_by_length False too")
    if config.init_adapter and not config.use_lora:
        problems.append("init_adapter continues a LoRA adapter, which use_lora = False does not train: "
                        "set --use_lora True or drop init_adapter")
    if config.fsdp_cpu_offload and config.fsdp == "none":
        problems.append("fsdp_cpu_offload offloads FSDP shards: set --fsdp full_shard (or shard_grad_op) too")
    if config.confidence_eval_data and not (config.confidence_tokens and config.eval_data):
        problems.append("confidence_eval_data needs confidence_tokens and eval_data (it runs at each evaluation)")
    if config.fsdp != "none":
        if any(tag in config.optimizer for tag in CUDA_ONLY_OPTIMIZERS):
            problems.append(f"optimizer '{config.optimizer}' keeps bitsandbytes state that fsdp = "
                            f"'{config.fsdp}' does not shard: set --optimizer adamw_torch (or adamw_torch_fused)")
        # these evaluations run on rank 0 alone, but a sharded model's forward needs every rank
        for key, on in (("gen_eval_examples", config.gen_eval_examples > 0),
                        ("confidence_eval_data", bool(config.confidence_eval_data))):
            if on:
                problems.append(f"{key} generates on rank 0 alone, which a model sharded by fsdp = "
                                f"'{config.fsdp}' can't do: set --{key} {0 if key == 'gen_eval_examples' else '[]'}"
                                " and evaluate the saved output with evaluate/sample_model.py")
    return problems


def launch_problems(config, device: str, *, under_torchrun: bool, optimizers) -> list[str]:
    """Rules of this launch: the optimizer name (`optimizers`: the names transformers knows), optimizers
    that need CUDA, and FSDP, which needs one process per shard."""
    problems = []
    if config.optimizer not in optimizers:
        import difflib
        close = difflib.get_close_matches(config.optimizer, list(optimizers), n=1, cutoff=0.6)
        problems.append(f"config key 'optimizer': unknown optimizer '{config.optimizer}'"
                        + (f"; did you mean '{close[0]}'?" if close else " (see transformers' OptimizerNames)"))
    elif not device.startswith("cuda") and any(tag in config.optimizer for tag in CUDA_ONLY_OPTIMIZERS):
        problems.append(f"optimizer '{config.optimizer}' needs CUDA; on {device} use --optimizer adamw_torch")
    if config.fsdp != "none" and not under_torchrun:
        problems.append(f"fsdp = '{config.fsdp}' shards the model across processes: launch with torchrun "
                        "(./run_training.sh --gpus 0,1 ..., or torchrun --nproc_per_node N -m train.train_sft ...)")
    return problems


def shape_problems(config, layers: int) -> list[str]:
    """Rules that need the model's layer count (read from its config, no weight loaded)."""
    if config.use_lora and config.lora_layers and max(config.lora_layers) >= layers:
        return [f"config key 'lora_layers' names layer {max(config.lora_layers)}, but the model has {layers} "
                f"layers (0 to {layers - 1})"]
    return []
