"""Every training config key, declared once: its type, allowed values or range, default and meaning.

    python -m train.show_config ablation2.py        # a config resolved against this schema

A config file (train/configs/*.py) is plain Python assignments of the keys it changes; the loader
(config_loader.py) starts from the defaults here, applies the file, then the command line, and checks
every value against its declaration below before anything loads: `Literal[...]` lists the allowed
words, `AtLeast` / `Above` / `Between` the range, `X | None` a key that may be unset. Rules between keys
are in config_rules.py. The defaults are the original project's recipe (4-bit QLoRA SFT of
Mistral-7B-v0.3 on NLI chain-of-thought); `configs/default.py` names that recipe as a config of its own.
"""

from dataclasses import dataclass
from typing import Annotated, Literal


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


Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Attention = Literal["auto", "eager", "sdpa", "flash_attention_2", "kernels-community/flash-attn2"]
DataFormat = Literal["auto", "prompt_completion", "prompt_response", "messages", "text", "question_answer", "record",
                     "nli", "confidence"]
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay"]


# --- model -------------------------------------------------------------------------------------
# hub id or local dir of the base model
model_id: str = "mistralai/Mistral-7B-v0.3"
# tokenizer source when it differs from model_id
tokenizer_id: str | None = None
# QLoRA: NF4 4-bit base weights through bitsandbytes
load_in_4bit: bool = True
# "nf4" or "fp4"
bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
# also quantize the quantization constants (saves ~0.4 GB)
bnb_4bit_use_double_quant: bool = True
# dtype of the 4-bit matmuls
bnb_4bit_compute_dtype: Dtype = "bfloat16"
# when 4-bit is impossible here, train unquantized instead of failing
allow_4bit_fallback: bool = False
# dtype of non-quantized weights: bfloat16, float16, float32, auto
torch_dtype: Dtype = "bfloat16"
# autocast: auto = bf16 on CUDA when the compute dtype is bf16, and on CPUs with
# AMX / AVX512-BF16 (elsewhere a CPU emulates bf16, ~40x slower); "bf16"; "no"
mixed_precision: Literal["auto", "bf16", "no"] = "auto"
# auto, on CUDA: the flash-attn package, else the hub's prebuilt kernel
# (kernels-community/flash-attn2, `kernels` in the image), else sdpa;
# also eager, sdpa, flash_attention_2. The log says which one runs
attn_implementation: Attention = "auto"
# auto = cuda if available, else cpu
device: str = "auto"

# --- data --------------------------------------------------------------------------------------
# label task for prompts and generation eval (see prompts.py)
task: str = "nli"
# JSONL (or CSV/JSON): prompt/completion, messages, text,
# or raw rows of the task
train_data: str = "data/finetune/ablation2_train.jsonl"
# JSONL of the same kinds; None = no evaluation
eval_data: str | None = None
# auto, prompt_completion, prompt_response, messages, text, confidence,
# record (a raw row of the task: its input fields and label; nli = old name)
data_format: DataFormat = "auto"
# longer examples are never cut inside the answer (see overlong)
max_seq_length: Annotated[int, AtLeast(16)] = 512
# "drop" the example or "trim_prompt" (cut the prompt's start)
overlong: Literal["drop", "trim_prompt"] = "drop"
# "error": stop at an invalid example (file, line, field); "skip": count it
invalid_examples: Literal["error", "skip"] = "error"
# use only the first N training examples (quick tests)
max_train_examples: Annotated[int, AtLeast(1)] | None = None
# use only the first N eval examples
max_eval_examples: Annotated[int, AtLeast(1)] | None = None
# adapter, tokenizer, config.json, train_results.json, checkpoints
output_dir: str = "models/mistral-7b-nli-cot"
# one seed for data order, LoRA init and dropout (numpy takes 32 bits)
seed: Annotated[int, Between(0, 2**32 - 1)] = 42

# --- optimisation ------------------------------------------------------------------------------
# passes over the training data (ignored when max_steps > 0)
num_epochs: Annotated[int, Above(0)] = 2
# stop after this many optimizer steps; -1 = use num_epochs
max_steps: int = -1
# examples per device per micro-batch
batch_size: Annotated[int, AtLeast(1)] = 8
# micro-batches per optimizer step
grad_accumulation_steps: Annotated[int, AtLeast(1)] = 2
# peak learning rate
learning_rate: Annotated[float, Above(0)] = 2e-4
# any transformers scheduler: cosine, linear, constant, ...
lr_scheduler: Scheduler = "cosine"
# share of steps spent warming up
warmup_ratio: Annotated[float, Between(0, 1)] = 0.03
# AdamW weight decay
weight_decay: Annotated[float, AtLeast(0)] = 0.01
# gradient clipping
max_grad_norm: Annotated[float, AtLeast(0)] = 0.3
# transformers optim name; paged/8-bit ones need CUDA + bitsandbytes
optimizer: str = "paged_adamw_8bit"
# trade compute for memory
gradient_checkpointing: bool = True
# padding-free batches (no cross-example attention) with flash-attention;
# under SDPA length-grouped padded batches are faster and used instead
use_packing: bool = True
# batch examples of similar length (less padding, faster)
group_by_length: bool = True
# False: batches in the training file's row order, one after another (a curriculum, e.g.
# prepare_ft_data.py --rationales-first); needs group_by_length False, which would reorder them
shuffle: bool = True

# --- several GPUs (torchrun: ./run_training.sh --gpus 0,1, or several nodes) ---------------------
# "none" = DDP (a whole copy per GPU); "full_shard" = FSDP2 shards weights,
# gradients and optimizer state (ZeRO-3); "shard_grad_op" = gradients
# and optimizer state only (ZeRO-2, faster, more memory)
fsdp: Literal["none", "full_shard", "shard_grad_op"] = "none"
# FSDP: keep the shards in CPU memory between uses (slow, least GPU memory)
fsdp_cpu_offload: bool = False

# --- LoRA --------------------------------------------------------------------------------------
# False = full fine-tuning in torch_dtype (no 4-bit)
use_lora: bool = True
# adapter rank
lora_r: Annotated[int, AtLeast(1)] = 16
# adapter scale (alpha / r multiplies the update)
lora_alpha: Annotated[int, Above(0)] = 32
# dropout on the adapter input
lora_dropout: Annotated[float, Between(0, 1)] = 0.05
# the projections that get adapters, or the word "all-linear" (every linear
# layer but the head)
lora_target_modules: list | str = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# indexes of the transformer layers that get adapters; None = all.
# Only the top layers: backpropagation stops below them (faster)
lora_layers: list | None = None
# a LoRA adapter (an earlier train_sft output_dir) to start from instead of a fresh one: its
# weights go on training here, e.g. a label stage after a rationale stage (study/nli_smollm2_400.py);
# its rank, alpha, targets and layers must equal this config's
init_adapter: str | None = None
# extra tokens to add; their input and output embedding rows train
special_tokens: list = []
# domain -> [confident, unconfident] tokens, e.g. {"READ": ["<C_READ>", "<U_READ>"]}
confidence_tokens: dict = {}
# dataset name -> domain, e.g. {"boolq": "READ", "medqa": "MED"}
confidence_datasets: dict = {}
# local JSONL validation sets for the confidence callback
confidence_eval_data: list = []
# examples per validation set at each eval
confidence_eval_examples: Annotated[int, AtLeast(1)] = 64
# points per adaptive calibration bin
confidence_beta: Annotated[int, AtLeast(1)] = 100

# --- evaluation, checkpoints, logging ----------------------------------------------------------
# log the training loss every N steps
logging_steps: Annotated[int, AtLeast(1)] = 10
# eval loss (and generation eval) every N steps
eval_steps: Annotated[int, AtLeast(1)] = 50
# checkpoint every N steps (kept in step with eval_steps)
save_steps: Annotated[int, AtLeast(1)] = 50
# checkpoints kept on disk (the best is always kept)
save_total_limit: Annotated[int, AtLeast(1)] = 3
# evals without eval-loss improvement before stopping; 0 = off
early_stopping_patience: Annotated[int, AtLeast(0)] = 3
# reload the best checkpoint (lowest eval loss) at the end
load_best_model_at_end: bool = True
# also generate on N eval examples and log accuracy / F1 / parse rate
gen_eval_examples: Annotated[int, AtLeast(0)] = 0
# generation budget for that eval
gen_eval_max_new_tokens: Annotated[int, AtLeast(1)] = 256
# a checkpoint dir, or "latest" to continue the last run in output_dir
resume_from_checkpoint: str | None = None
# also save a 16-bit merged model under output_dir/merged
merge_adapter: bool = False
# push the adapter to this hub repo at the end (token from HF_TOKEN)
hub_model_id: str | None = None
# none, tensorboard or wandb
report_to: Literal["none", "tensorboard", "wandb"] = "none"
# shorthand for report_to = "wandb" (the original's flag)
use_wandb: bool = False
# W&B project (WANDB_MODE=offline works without network)
wandb_project: str = "nli-finetuning"
# W&B run name; None = output_dir's name
wandb_run_name: str | None = None
