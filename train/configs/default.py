# The schema and the original recipe: 4-bit QLoRA SFT of Mistral-7B-v0.3 on NLI chain-of-thought.
#   ./run_training.sh --config default.py            (GPU workstation, inside the CUDA container)
#   python -m train.train_sft --config default.py     (any machine with the requirements installed)
# Every key lives here with its default; other configs set only what differs (or start with
# `from train.configs.default import *`). `python -m train.config_loader CONFIG` prints the result.

# --- model -------------------------------------------------------------------------------------
model_id = "mistralai/Mistral-7B-v0.3"  # hub id or local dir of the base model
tokenizer_id = None                      # tokenizer source when it differs from model_id
load_in_4bit = True                      # QLoRA: NF4 4-bit base weights through bitsandbytes
bnb_4bit_quant_type = "nf4"              # "nf4" or "fp4"
bnb_4bit_use_double_quant = True         # also quantize the quantization constants (saves ~0.4 GB)
bnb_4bit_compute_dtype = "bfloat16"      # dtype of the 4-bit matmuls
allow_4bit_fallback = False              # when 4-bit is impossible here, train unquantized instead of failing
torch_dtype = "bfloat16"                 # dtype of non-quantized weights: bfloat16, float16, float32, auto
mixed_precision = "auto"                 # autocast: auto = bf16 on CUDA when the compute dtype is bf16, else off;
                                         # "bf16" also on CPUs with AMX / AVX512-BF16 (see smollm2_cpu.py); "no"
attn_implementation = "auto"             # auto, on CUDA: the flash-attn package, else the hub's prebuilt kernel
                                         # (kernels-community/flash-attn2, `kernels` in the image), else sdpa;
                                         # also eager, sdpa, flash_attention_2. The log says which one runs
device = "auto"                          # auto = cuda if available, else cpu

# --- data --------------------------------------------------------------------------------------
task = "nli"                             # label task for prompts and generation eval (see prompts.py)
train_data = "data/finetune/ablation2_train.jsonl"  # JSONL (or CSV/JSON): prompt/completion, messages, text,
                                         # or raw rows of the task
eval_data = None                         # JSONL of the same kinds; None = no evaluation
data_format = "auto"                     # auto, prompt_completion, prompt_response, messages, text, confidence,
                                         # record (a raw row of the task: its input fields and label; nli = old name)
max_seq_length = 512                     # longer examples are never cut inside the answer (see overlong)
overlong = "drop"                        # "drop" the example or "trim_prompt" (cut the prompt's start)
invalid_examples = "error"               # "error": stop at an invalid example (file, line, field); "skip": count it
max_train_examples = None                # use only the first N training examples (quick tests)
max_eval_examples = None                 # use only the first N eval examples
output_dir = "models/mistral-7b-nli-cot" # adapter, tokenizer, config.json, train_results.json, checkpoints
seed = 42                                # one seed for data order, LoRA init and dropout

# --- optimisation ------------------------------------------------------------------------------
num_epochs = 2                           # passes over the training data (ignored when max_steps > 0)
max_steps = -1                           # stop after this many optimizer steps; -1 = use num_epochs
batch_size = 8                           # examples per device per micro-batch
grad_accumulation_steps = 2              # micro-batches per optimizer step
learning_rate = 2e-4                     # peak learning rate
lr_scheduler = "cosine"                  # any transformers scheduler: cosine, linear, constant, ...
warmup_ratio = 0.03                      # share of steps spent warming up
weight_decay = 0.01                      # AdamW weight decay
max_grad_norm = 0.3                      # gradient clipping
optimizer = "paged_adamw_8bit"           # transformers optim name; paged/8-bit ones need CUDA + bitsandbytes
gradient_checkpointing = True            # trade compute for memory
use_packing = True                       # padding-free batches (no cross-example attention) with flash-attention;
                                         # under SDPA length-grouped padded batches are faster and used instead
group_by_length = True                   # batch examples of similar length (less padding, faster)

# --- several GPUs (torchrun: ./run_training.sh --gpus 0,1, or several nodes) ---------------------
fsdp = "none"                            # "none" = DDP (a whole copy per GPU); "full_shard" = FSDP2 shards weights,
                                         # gradients and optimizer state (ZeRO-3); "shard_grad_op" = gradients
                                         # and optimizer state only (ZeRO-2, faster, more memory)
fsdp_cpu_offload = False                 # FSDP: keep the shards in CPU memory between uses (slow, least GPU memory)

# --- LoRA --------------------------------------------------------------------------------------
use_lora = True                          # False = full fine-tuning in torch_dtype (no 4-bit)
lora_r = 16                              # adapter rank
lora_alpha = 32                          # adapter scale (alpha / r multiplies the update)
lora_dropout = 0.05                      # dropout on the adapter input
lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
lora_layers = None                       # indexes of the transformer layers that get adapters; None = all.
                                         # Only the top layers: backpropagation stops below them (faster)
special_tokens = []                      # extra tokens to add; their input and output embedding rows train
confidence_tokens = {}                   # domain -> [confident, unconfident] tokens, e.g. {"READ": ["<C_READ>", "<U_READ>"]}
confidence_datasets = {}                 # dataset name -> domain, e.g. {"boolq": "READ", "medqa": "MED"}
confidence_eval_data = []                # local JSONL validation sets for the confidence callback
confidence_eval_examples = 64            # examples per validation set at each eval
confidence_beta = 100                    # points per adaptive calibration bin

# --- evaluation, checkpoints, logging ----------------------------------------------------------
logging_steps = 10                       # log the training loss every N steps
eval_steps = 50                          # eval loss (and generation eval) every N steps
save_steps = 50                          # checkpoint every N steps (kept in step with eval_steps)
save_total_limit = 3                     # checkpoints kept on disk (the best is always kept)
early_stopping_patience = 3              # evals without eval-loss improvement before stopping; 0 = off
load_best_model_at_end = True            # reload the best checkpoint (lowest eval loss) at the end
gen_eval_examples = 0                    # also generate on N eval examples and log accuracy / F1 / parse rate
gen_eval_max_new_tokens = 256            # generation budget for that eval
resume_from_checkpoint = None            # a checkpoint dir, or "latest" to continue the last run in output_dir
merge_adapter = False                    # also save a 16-bit merged model under output_dir/merged
hub_model_id = None                      # push the adapter to this hub repo at the end (token from HF_TOKEN)
report_to = "none"                       # none, tensorboard or wandb
use_wandb = False                        # shorthand for report_to = "wandb" (the original's flag)
wandb_project = "nli-finetuning"         # W&B project (WANDB_MODE=offline works without network)
wandb_run_name = None                    # W&B run name; None = output_dir's name
