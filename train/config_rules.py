"""What each config value may be, beyond the type of its default: ranges, allowed words, the type of keys
whose default is None, and rules between keys. `config_loader.load_config` applies them, so a bad value
stops the run with one line naming the key before anything is loaded or written.
"""

ANY_CHOICE = None
DTYPES = ["auto", "bfloat16", "float16", "float32"]
LR_SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay"]

# key: (lowest allowed, highest allowed, whether the bounds themselves are allowed)
RANGES = {
    "max_seq_length": (16, None, True), "num_epochs": (0, None, False), "batch_size": (1, None, True),
    "grad_accumulation_steps": (1, None, True), "learning_rate": (0, None, False), "warmup_ratio": (0, 1, True),
    "weight_decay": (0, None, True), "max_grad_norm": (0, None, True), "lora_r": (1, None, True),
    "lora_alpha": (0, None, False), "lora_dropout": (0, 1, True), "logging_steps": (1, None, True),
    "eval_steps": (1, None, True), "save_steps": (1, None, True), "save_total_limit": (1, None, True),
    "early_stopping_patience": (0, None, True), "gen_eval_examples": (0, None, True),
    "gen_eval_max_new_tokens": (1, None, True), "seed": (0, None, True), "confidence_eval_examples": (1, None, True),
    "confidence_beta": (1, None, True), "max_train_examples": (1, None, True), "max_eval_examples": (1, None, True),
}
CHOICES = {
    "torch_dtype": DTYPES, "bnb_4bit_compute_dtype": DTYPES, "bnb_4bit_quant_type": ["nf4", "fp4"],
    "mixed_precision": ["auto", "bf16", "no"], "attn_implementation": ["auto", "eager", "sdpa", "flash_attention_2", "kernels-community/flash-attn2"],
    "data_format": ["auto", "prompt_completion", "prompt_response", "messages", "text", "record", "nli", "confidence"],
    "overlong": ["drop", "trim_prompt"], "invalid_examples": ["error", "skip"], "lr_scheduler": LR_SCHEDULERS,
    "report_to": ["none", "tensorboard", "wandb"], "fsdp": ["none", "full_shard", "shard_grad_op"],
}
# keys whose default is None: the type a value must have when it is not None
NONE_DEFAULT_TYPES = {
    "tokenizer_id": str, "eval_data": str, "max_train_examples": int, "max_eval_examples": int,
    "resume_from_checkpoint": str, "hub_model_id": str, "wandb_run_name": str, "lora_layers": list,
}


def value_problem(key: str, value) -> str | None:
    """Why `value` is not allowed for `key`, or None."""
    if value is None:
        return None
    expected = NONE_DEFAULT_TYPES.get(key)
    if expected and not (isinstance(value, expected) and not isinstance(value, bool)):
        return f"must be {expected.__name__} or None, got {type(value).__name__} {value!r}"
    if key in CHOICES and value not in CHOICES[key]:
        return f"must be one of {', '.join(map(str, CHOICES[key]))}; got {value!r}"
    if key in RANGES and isinstance(value, (int, float)):
        low, high, inclusive = RANGES[key]
        below = low is not None and (value < low if inclusive else value <= low)
        above = high is not None and (value > high if inclusive else value >= high)
        if below or above:
            bounds = " and ".join(([f"{'>=' if inclusive else '>'} {low}"] if low is not None else [])
                                  + ([f"{'<=' if inclusive else '<'} {high}"] if high is not None else []))
            return f"must be {bounds}, got {value!r}"
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
