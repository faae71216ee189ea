# Full fine-tuning of Qwen3-4B on the CAL prompt/response data, sharded with FSDP2 over several GPUs.
#   python scripts/split_dataset.py data/cal/CAL_inference.jsonl --output1 data/cal/DA/train.jsonl --output2 data/cal/DB/train.jsonl
#   ./run_training.sh --dry-run --config distributed_fsdp.py --gpus 0,1,2,3 --model_params_b 4.02   # GPUs it needs
#   ./run_training.sh --config distributed_fsdp.py --gpus 0,1,2,3                                  # one machine
#   ./run_training.sh --config distributed_fsdp.py --gpus 0,1 --nnodes 2 --node_rank R --master_addr 10.1.2.3
# 16 bytes a parameter (float32 master weights, gradients, AdamW) is ~64 GB for 4B: no workstation GPU holds it,
# so every rank keeps 1/N of it. The output is an ordinary model (from_pretrained on one device).

model_id = "Qwen/Qwen3-4B-Instruct-2507"
task = "free_text"                     # {prompt, response} rows; scored by exact match and ROUGE-L
train_data = "data/cal/DA/train.jsonl"
output_dir = "models/qwen3-4b-cal-full-fsdp"
use_lora = False                       # full fine-tuning, as the CAL recipe's authors did
load_in_4bit = False                   # (implied by use_lora = False)
torch_dtype = "bfloat16"               # loaded in bf16 on the CPU, then each rank takes its shard to its GPU
fsdp = "full_shard"                    # weights, gradients and AdamW state split over every rank of every node
max_seq_length = 1024
num_epochs = 3
batch_size = 2                         # per GPU
grad_accumulation_steps = 4            # effective batch 2 x 4 x GPUs (32 on 4 GPUs, as cal_sft.py)
learning_rate = 1e-5                   # full fine-tuning moves every weight: ~10x below the LoRA rate
lr_scheduler = "cosine"
warmup_ratio = 0.03
optimizer = "adamw_torch"              # 8-bit/paged optimizers don't shard under FSDP
gradient_checkpointing = True          # FSDP's own activation checkpointing, one layer at a time
save_steps = 200                       # sharded checkpoints: each rank writes its own part
wandb_project = "cal-sft"
wandb_run_name = "qwen3-4b-cal-full-fsdp"
