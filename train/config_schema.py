"""Every training config key, declared once as a field of `TrainConfig`: its type, allowed words or
range, default, meaning, and whether a resumed run may change it.

    python -m train.show_config ablation2.py        # a config resolved against this class

A config file (train/configs/*.py) is plain Python assignments of the keys it changes; the loader
(config_loader.py) starts from the defaults here, applies the file, then the command line, checks every
value against its field below before anything loads, and returns a `TrainConfig`: `choices` lists the
allowed words, `AtLeast` / `Above` / `Between` the range, `X | None` a key that may be unset. Rules
between keys are in config_rules.py. The defaults are the original project's recipe (4-bit QLoRA SFT of
Mistral-7B-v0.3 on NLI chain-of-thought); `configs/default.py` names that recipe as a config of its own.

`resume_neutral` keys don't change what a resumed run computes: where it writes, what it logs and
evaluates, and its length (max_steps, num_epochs), which must instead equal the checkpoint run's
(run_config.schedule_problem). Every other key is part of the checkpoint's fingerprint
(run_config.run_fingerprint): resuming with another value is refused.
"""

import copy
import functools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AtLeast:
    low: float


@dataclass(frozen=True)
class Above:
    low: float


@dataclass(frozen=True)
class Between:
    low: float
    high: float


DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTIONS = ("auto", "eager", "sdpa", "flash_attention_2", "kernels-community/flash-attn2")
DATA_FORMATS = ("auto", "prompt_completion", "prompt_response", "messages", "text", "question_answer", "record",
                "nli", "confidence")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay")


def setting(default, doc: str, *, choices: tuple | None = None, bounds=None, resume_neutral: bool = False):
    """One config key's declaration. A list or dict default is copied for each config (a shared one could
    be changed through one config and seen in the next)."""
    metadata = {"doc": doc, "choices": choices, "range": bounds, "resume_neutral": resume_neutral}
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings, checked and frozen (config_loader.load_config builds it)."""

    # --- model ---------------------------------------------------------------------------------
    model_id: str = setting("mistralai/Mistral-7B-v0.3", "hub id or local dir of the base model")
    tokenizer_id: str | None = setting(None, "tokenizer source when it differs from model_id")
    load_in_4bit: bool = setting(True, "QLoRA: NF4 4-bit base weights through bitsandbytes")
    bnb_4bit_quant_type: str = setting("nf4", '"nf4" or "fp4"', choices=("nf4", "fp4"))
    bnb_4bit_use_double_quant: bool = setting(True, "also quantize the quantization constants (saves ~0.4 GB)")
    bnb_4bit_compute_dtype: str = setting("bfloat16", "dtype of the 4-bit matmuls", choices=DTYPES)
    allow_4bit_fallback: bool = setting(False, "when 4-bit is impossible here, train unquantized instead of failing")
    torch_dtype: str = setting("bfloat16", "dtype of non-quantized weights: bfloat16, float16, float32, auto",
                               choices=DTYPES)
    mixed_precision: str = setting(
        "auto", "autocast: auto = bf16 on CUDA when the compute dtype is bf16, and on CPUs with AMX / AVX512-BF16 "
        '(elsewhere a CPU emulates bf16, ~40x slower); "bf16"; "no"', choices=("auto", "bf16", "no"))
    attn_implementation: str = setting(
        "auto", "auto, on CUDA: the flash-attn package, else the hub's prebuilt kernel (kernels-community/flash-attn2, "
        "`kernels` in the image), else sdpa; also eager, sdpa, flash_attention_2. The log says which one runs",
        choices=ATTENTIONS, resume_neutral=True)
    device: str = setting("auto", "auto = cuda if available, else cpu", resume_neutral=True)

    # --- data ----------------------------------------------------------------------------------
    task: str = setting("nli", "label task for prompts and generation eval (see prompts.py)")
    train_data: str = setting("data/finetune/ablation2_train.jsonl",
                              "JSONL (or CSV/JSON): prompt/completion, messages, text, or raw rows of the task")
    eval_data: str | None = setting(None, "JSONL of the same kinds; None = no evaluation", resume_neutral=True)
    data_format: str = setting(
        "auto", "auto, prompt_completion, prompt_response, messages, text, confidence, record (a raw row of the "
        "task: its input fields and label; nli = old name)", choices=DATA_FORMATS)
    max_seq_length: int = setting(512, "longer examples are never cut inside the answer (see overlong)",
                                  bounds=AtLeast(16))
    overlong: str = setting("drop", '"drop" the example or "trim_prompt" (cut the prompt\'s start)',
                            choices=("drop", "trim_prompt"))
    invalid_examples: str = setting("error", '"error": stop at an invalid example (file, line, field); "skip": count it',
                                    choices=("error", "skip"))
    max_train_examples: int | None = setting(None, "use only the first N training examples (quick tests)",
                                             bounds=AtLeast(1))
    max_eval_examples: int | None = setting(None, "use only the first N eval examples", bounds=AtLeast(1),
                                            resume_neutral=True)
    output_dir: str = setting("models/mistral-7b-nli-cot", "adapter, tokenizer, config.json, train_results.json, "
                              "checkpoints", resume_neutral=True)
    seed: int = setting(42, "one seed for data order, LoRA init and dropout (numpy takes 32 bits)",
                        bounds=Between(0, 2**32 - 1))

    # --- optimisation --------------------------------------------------------------------------
    num_epochs: int = setting(2, "passes over the training data (ignored when max_steps > 0)", bounds=Above(0),
                              resume_neutral=True)
    max_steps: int = setting(-1, "stop after this many optimizer steps; -1 = use num_epochs", resume_neutral=True)
    batch_size: int = setting(8, "examples per device per micro-batch", bounds=AtLeast(1))
    grad_accumulation_steps: int = setting(2, "micro-batches per optimizer step", bounds=AtLeast(1))
    learning_rate: float = setting(2e-4, "peak learning rate", bounds=Above(0))
    lr_scheduler: str = setting("cosine", "any transformers scheduler: cosine, linear, constant, ...",
                                choices=SCHEDULERS)
    warmup_ratio: float = setting(0.03, "share of steps spent warming up", bounds=Between(0, 1))
    weight_decay: float = setting(0.01, "AdamW weight decay", bounds=AtLeast(0))
    max_grad_norm: float = setting(0.3, "gradient clipping", bounds=AtLeast(0))
    optimizer: str = setting("paged_adamw_8bit", "transformers optim name; paged/8-bit ones need CUDA + bitsandbytes")
    gradient_checkpointing: bool = setting(True, "trade compute for memory")
    use_packing: bool = setting(True, "padding-free batches (no cross-example attention) with flash-attention; "
                                "under SDPA length-grouped padded batches are faster and used instead")
    group_by_length: bool = setting(True, "batch examples of similar length (less padding, faster)")
    shuffle: bool = setting(True, "False: batches in the training file's row order, one after another (a curriculum, "
                            "e.g. prepare_ft_data.py --rationales-first); needs group_by_length False, which would "
                            "reorder them")

    # --- several GPUs (torchrun: ./run_training.sh --gpus 0,1, or several nodes) -----------------
    fsdp: str = setting("none", '"none" = DDP (a whole copy per GPU); "full_shard" = FSDP2 shards weights, gradients '
                        'and optimizer state (ZeRO-3); "shard_grad_op" = gradients and optimizer state only (ZeRO-2, '
                        "faster, more memory)", choices=("none", "full_shard", "shard_grad_op"))
    fsdp_cpu_offload: bool = setting(False, "FSDP: keep the shards in CPU memory between uses (slow, least GPU memory)")

    # --- LoRA ----------------------------------------------------------------------------------
    use_lora: bool = setting(True, "False = full fine-tuning in torch_dtype (no 4-bit)")
    lora_r: int = setting(16, "adapter rank", bounds=AtLeast(1))
    lora_alpha: int = setting(32, "adapter scale (alpha / r multiplies the update)", bounds=Above(0))
    lora_dropout: float = setting(0.05, "dropout on the adapter input", bounds=Between(0, 1))
    lora_target_modules: list | str = setting(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        'the projections that get adapters, or the word "all-linear" (every linear layer but the head)')
    lora_layers: list | None = setting(None, "indexes of the transformer layers that get adapters; None = all. Only "
                                       "the top layers: backpropagation stops below them (faster)")
    init_adapter: str | None = setting(
        None, "a LoRA adapter (an earlier train_sft output_dir) to start from instead of a fresh one: its weights go "
        "on training here, e.g. a label stage after a rationale stage (study/nli_smollm2_400.py); its rank, alpha, "
        "targets and layers must equal this config's")
    special_tokens: list = setting([], "extra tokens to add; their input and output embedding rows train")
    confidence_tokens: dict = setting({}, 'domain -> [confident, unconfident] tokens, e.g. '
                                      '{"READ": ["<C_READ>", "<U_READ>"]}')
    confidence_datasets: dict = setting({}, 'dataset name -> domain, e.g. {"boolq": "READ", "medqa": "MED"}')
    confidence_eval_data: list = setting([], "local JSONL validation sets for the confidence callback",
                                         resume_neutral=True)
    confidence_eval_examples: int = setting(64, "examples per validation set at each eval", bounds=AtLeast(1),
                                            resume_neutral=True)
    confidence_beta: int = setting(100, "points per adaptive calibration bin", bounds=AtLeast(1), resume_neutral=True)

    # --- evaluation, checkpoints, logging ------------------------------------------------------
    logging_steps: int = setting(10, "log the training loss every N steps", bounds=AtLeast(1), resume_neutral=True)
    eval_steps: int = setting(50, "eval loss (and generation eval) every N steps", bounds=AtLeast(1),
                              resume_neutral=True)
    save_steps: int = setting(50, "checkpoint every N steps (kept in step with eval_steps)", bounds=AtLeast(1),
                              resume_neutral=True)
    save_total_limit: int = setting(3, "checkpoints kept on disk (the best is always kept)", bounds=AtLeast(1),
                                    resume_neutral=True)
    early_stopping_patience: int = setting(3, "evals without eval-loss improvement before stopping; 0 = off",
                                           bounds=AtLeast(0), resume_neutral=True)
    load_best_model_at_end: bool = setting(True, "reload the best checkpoint (lowest eval loss) at the end",
                                           resume_neutral=True)
    gen_eval_examples: int = setting(0, "also generate on N eval examples and log accuracy / F1 / parse rate",
                                     bounds=AtLeast(0), resume_neutral=True)
    gen_eval_max_new_tokens: int = setting(256, "generation budget for that eval", bounds=AtLeast(1),
                                           resume_neutral=True)
    resume_from_checkpoint: str | None = setting(
        None, 'a checkpoint dir, or "latest" to continue the last run in output_dir', resume_neutral=True)
    merge_adapter: bool = setting(False, "also save a 16-bit merged model under output_dir/merged", resume_neutral=True)
    hub_model_id: str | None = setting(None, "push the adapter to this hub repo at the end (token from HF_TOKEN)",
                                       resume_neutral=True)
    report_to: str = setting("none", "none, tensorboard or wandb", choices=("none", "tensorboard", "wandb"),
                             resume_neutral=True)
    use_wandb: bool = setting(False, 'shorthand for report_to = "wandb" (the original\'s flag)', resume_neutral=True)
    wandb_project: str = setting("nli-finetuning", "W&B project (WANDB_MODE=offline works without network)",
                                 resume_neutral=True)
    wandb_run_name: str | None = setting(None, "W&B run name; None = output_dir's name", resume_neutral=True)

    # --- set by the loader, not a key a config or the command line sets --------------------------
    config_file: str | None = setting(None, "the config file this run was loaded from (None: defaults only)",
                                      resume_neutral=True)
