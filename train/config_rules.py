"""The config rules a key's declared type and range can't say (train/config_schema.py declares those):
values that depend on another module (the task names), special values, and rules between keys.
`config_loader.load_config` applies them, so a bad value stops the run with one line naming the key
before anything is loaded or written.
"""


def value_problem(key: str, value) -> str | None:
    """Why `value` is not allowed for `key` beyond its declaration, or None."""
    if value is None:
        return None
    if key == "max_steps" and (value == 0 or value < -1):
        return f"must be a positive number of steps or -1 (use num_epochs), got {value!r}"
    if key == "lora_layers" and not (value and all(isinstance(i, int) and i >= 0 for i in value)):
        return f"must be a non-empty list of layer indexes (0 = the first layer) or None, got {value!r}"
    if key == "task":
        from prompts import TASKS
        if value not in TASKS:
            return f"must be one of {', '.join(sorted(TASKS))}; got {value!r}"
    if key == "device" and not (value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:")):
        return f"must be auto, cpu, cuda or cuda:N, got {value!r}"
    return None


def cross_key_problems(config: dict) -> list[str]:
    """Rules between keys that would otherwise fail deep inside the Trainer, after the model loaded."""
    problems = []
    if config.get("eval_data") and config.get("load_best_model_at_end") and config["save_steps"] % config["eval_steps"]:
        problems.append(f"load_best_model_at_end needs save_steps ({config['save_steps']}) to be a multiple of "
                        f"eval_steps ({config['eval_steps']}): set --save_steps {config['eval_steps']}")
    if config.get("fsdp_cpu_offload") and config.get("fsdp") == "none":
        problems.append("fsdp_cpu_offload offloads FSDP shards: set --fsdp full_shard (or shard_grad_op) too")
    if config.get("fsdp") != "none":
        # these evaluations run on rank 0 alone, but a sharded model's forward needs every rank
        for key, on in (("gen_eval_examples", config.get("gen_eval_examples", 0) > 0),
                        ("confidence_eval_data", bool(config.get("confidence_eval_data")))):
            if on:
                problems.append(f"{key} generates on rank 0 alone, which a model sharded by fsdp = "
                                f"'{config['fsdp']}' can't do: set --{key} {0 if key == 'gen_eval_examples' else '[]'}"
                                " and evaluate the saved output with evaluate/sample_model.py")
    return problems
