# The embedded default: the tiny local model on the bundled sample data, a few minutes on 2 CPU cores.
#   python scripts/make_tiny_model.py --arch mistral --out models/tiny-mistral
#   ./run_training.sh --local --config tiny_cpu.py
#   python -m train.train_sft --config tiny_cpu.py --max_steps 20     (a quicker smoke run)
from train.configs.default import *  # noqa: F401,F403

model_id = "models/tiny-mistral"           # built by scripts/make_tiny_model.py, random weights
load_in_4bit = False                       # the tiny model trains in float32; 4-bit is tested separately
torch_dtype = "float32"                    # CPUs have no fast bf16 training path
device = "cpu"
train_data = "data/finetune/demo_train.jsonl"  # written by scripts/demo.py (ablation 2 of the sample)
eval_data = "data/finetune/demo_eval.jsonl"
output_dir = "models/tiny-mistral-nli-demo"
max_seq_length = 1024                      # the tiny tokenizer needs ~2x a real one's tokens
num_epochs = 30
batch_size = 8
grad_accumulation_steps = 1
learning_rate = 3e-3                       # random tiny weights learn fast only with a large rate
lr_scheduler = "cosine"
warmup_ratio = 0.05
max_grad_norm = 1.0
optimizer = "adamw_torch"                  # paged/8-bit optimizers need CUDA
gradient_checkpointing = False             # nothing to save on a 1 MB model
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
logging_steps = 10
eval_steps = 100
save_steps = 100
save_total_limit = 2
early_stopping_patience = 0
