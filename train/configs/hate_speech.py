# Chat-format hate-speech classifier with JSON answers (classification / confidence / reasoning / group).
#   python scripts/prepare_finetuning_data.py --unified_dir data/processed/unified --data_output_dir data/hate/prepared
#   ./run_training.sh --config hate_speech.py --gpu 0
#   python -m evaluate.sample_model --model_id models/hate-speech-classifier --test_file data/hate/prepared/validation.jsonl --task hate_speech

model_id = "mistralai/Mistral-7B-Instruct-v0.3"
task = "hate_speech"                   # label field 'classification', labels hate_speech / not_hate
train_data = "data/hate/prepared/train.jsonl"
eval_data = "data/hate/prepared/validation.jsonl"
output_dir = "models/hate-speech-classifier"
max_seq_length = 512
num_epochs = 3
batch_size = 8
grad_accumulation_steps = 2
learning_rate = 2e-4
gen_eval_examples = 64                 # accuracy / macro-F1 / parse rate of generated answers at each eval
gen_eval_max_new_tokens = 128
wandb_project = "hate-speech"
wandb_run_name = "hate-speech-classifier"
