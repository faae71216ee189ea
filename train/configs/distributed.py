# Ablation 2 on several GPUs with DDP (torchrun, one process per GPU; only rank 0 writes).
#   ./run_training.sh --config distributed.py --gpus 0,1        (or --all-gpus)
#   torchrun --nproc_per_node 2 -m train.train_sft --config distributed.py
# Each 4-bit model copy sits on its own GPU; the effective batch is batch_size x accumulation x GPUs.
from train.configs.ablation2 import *  # noqa: F401,F403

output_dir = "models/mistral-7b-nli-cot-ablation2-ddp"
grad_accumulation_steps = 1    # 2 GPUs x 8 x 1 = the single-GPU recipe's 8 x 2
gradient_checkpointing = True
wandb_run_name = "ablation2-ddp"
