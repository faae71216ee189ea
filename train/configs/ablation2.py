# Ablation 2: correct teacher thoughts + reflections that reach the true label (the best recipe).
#   python scripts/prepare_ft_data.py --ablation 2 --output-file data/finetune/ablation2_train.jsonl
#   ./run_training.sh --config ablation2.py

train_data = "data/finetune/ablation2_train.jsonl"
eval_data = "data/finetune/ablation2_eval.jsonl"
output_dir = "models/mistral-7b-nli-cot-ablation2"
num_epochs = 3
learning_rate = 1e-4
warmup_ratio = 0.10
max_grad_norm = 1.0
lora_r = 32
lora_alpha = 64
wandb_run_name = "ablation2"
