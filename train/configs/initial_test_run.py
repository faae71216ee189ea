# A quick end-to-end check of a GPU setup before a long run: 50 steps of the original recipe.
#   ./run_training.sh --config initial_test_run.py --gpu 0
#   python -m train.train_sft --config initial_test_run.py

train_data = "data/finetune/ablation2_train.jsonl"
eval_data = "data/finetune/ablation2_eval.jsonl"
output_dir = "models/mistral-7b-nli-cot-test-run"
max_steps = 50                 # enough to see the loss fall and a checkpoint save
max_eval_examples = 64         # a quick eval
eval_steps = 25
save_steps = 25
gen_eval_examples = 16         # and a look at generated answers (parse rate, accuracy)
wandb_run_name = "initial-test-run"
