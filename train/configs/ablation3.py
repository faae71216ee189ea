# Ablation 3: all original teacher thoughts unmodified, wrong labels included (the baseline).
#   python scripts/prepare_ft_data.py --ablation 3 --original-thoughts data/generated/thoughts.jsonl \
#       --output-file data/finetune/ablation3_train.jsonl --holdout 0.05 --holdout-file data/finetune/ablation3_eval.jsonl
#   ./run_training.sh --config ablation3.py

train_data = "data/finetune/ablation3_train.jsonl"
eval_data = "data/finetune/ablation3_eval.jsonl"
output_dir = "models/mistral-7b-nli-cot-ablation3"
wandb_run_name = "ablation3"
