# Confidence tokens: teach a model to append <C_READ> / <U_READ> (and <C_MED> / <U_MED>) after its answer.
#   python scripts/prepare_confidence_data.py --tagged ../shared/data/confidence/qwen_tagged_1k.jsonl \
#       --incorrect ../shared/data/confidence/mistral_boolq_incorrect.json --out-dir data/confidence
#   ./run_training.sh --config confidence.py --gpu 0
#   python -m evaluate.confidence --model_id models/qwen-confidence --eval_data data/confidence/val.jsonl

model_id = "Qwen/Qwen2.5-7B-Instruct"
train_data = "data/confidence/train.jsonl"   # {question, tagged_response, dataset}: loss on the token only
eval_data = "data/confidence/eval.jsonl"     # the same kind, for the eval loss
output_dir = "models/qwen-confidence"
confidence_tokens = {"READ": ["<C_READ>", "<U_READ>"], "MED": ["<C_MED>", "<U_MED>"]}
confidence_datasets = {"boolq": "READ", "medqa": "MED"}
confidence_eval_data = ["data/confidence/val.jsonl"]  # generation + calibration at every eval
confidence_eval_examples = 200
max_seq_length = 1024
num_epochs = 2
learning_rate = 1e-4
eval_steps = 50
save_steps = 50
early_stopping_patience = 0
wandb_project = "confidence-tokens"
wandb_run_name = "qwen-confidence"
