# Prompt/response SFT as in the CAL project: Qwen3-4B-Instruct, QLoRA r8 on all linear layers.
#   python scripts/split_dataset.py data/cal/CAL_inference.jsonl --output1 data/cal/DA/train.jsonl --output2 data/cal/DB/train.jsonl
#   ./run_training.sh --config cal_sft.py --gpu 0
#   python -m evaluate.sample_model --model_id models/qwen3-4b-cal --test_file data/cal/DB/train.jsonl --task free_text

model_id = "Qwen/Qwen3-4B-Instruct-2507"
task = "free_text"                     # {prompt, response} rows; scored by exact match and ROUGE-L
train_data = "data/cal/DA/train.jsonl"
eval_data = None
output_dir = "models/qwen3-4b-cal"
max_seq_length = 1024
num_epochs = 3
batch_size = 4
grad_accumulation_steps = 8            # effective batch 32
learning_rate = 1e-4
lr_scheduler = "cosine"
warmup_ratio = 0.03
optimizer = "paged_adamw_32bit"
lora_r = 8
lora_alpha = 16
lora_dropout = 0.05
lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all linear
merge_adapter = True                   # also save a 16-bit merged model (output_dir/merged)
wandb_project = "cal-sft"
wandb_run_name = "qwen3-4b-cal"
