# Ablation 1: only the teacher thoughts whose label was correct.
#   python scripts/prepare_ft_data.py --ablation 1 --original-thoughts data/generated/thoughts.jsonl \
#       --output-file data/finetune/ablation1_train.jsonl --holdout 0.05 --holdout-file data/finetune/ablation1_eval.jsonl
#   ./run_training.sh --config ablation1.py

train_data = "data/finetune/ablation1_train.jsonl"
eval_data = "data/finetune/ablation1_eval.jsonl"
output_dir = "models/mistral-7b-nli-cot-ablation1"
wandb_run_name = "ablation1"
