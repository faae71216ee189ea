# Chat QLoRA as in the statistics Q&A project: Llama-3.2-3B-Instruct on combined chat data.
#   python scripts/combine_datasets.py --input textbook=data/stats/qa.jsonl:question_answer \
#       --input forum=data/stats/forum.jsonl --output data/stats/train.jsonl --holdout 0.1
#   ./run_training.sh --config stats_qa_chat.py --gpu 0

model_id = "meta-llama/Llama-3.2-3B-Instruct"
task = "free_text"                     # free-text answers: exact match and ROUGE-L
train_data = "data/stats/train.jsonl"
eval_data = "data/stats/train_holdout.jsonl"
output_dir = "models/llama-3.2-3b-stats-qa"
max_seq_length = 2048
num_epochs = 3
batch_size = 2
grad_accumulation_steps = 4
learning_rate = 2e-4
lora_r = 16
lora_alpha = 32
wandb_project = "stats-qa"
wandb_run_name = "llama-3.2-3b-stats-qa"
