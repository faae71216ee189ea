# A tiny random-weight model on the bundled teacher thoughts: quick CPU checks, and the tests' base config.
#   python scripts/make_tiny_model.py --arch mistral --hidden-size 192        (builds models/tiny-mistral)
#   ./run_training.sh --local --config tiny_cpu.py
#   python -m train.train_sft --config tiny_cpu.py --max_steps 20              (a quicker smoke run)
# It learns the answer format and to stop, not NLI: the real-model demo is smollm2_cpu.py (make demo).

model_id = "models/tiny-mistral"           # random weights, tokenizer trained on data/sample/
load_in_4bit = False                       # float32 on CPU; 4-bit on CPU is covered by tests/test_4bit.py
torch_dtype = "float32"                    # CPUs have no fast bf16 training path
device = "cpu"
train_data = "data/sample/sample_thoughts.jsonl"  # 100 real teacher thoughts (NLI records)
eval_data = None                           # the demo evaluates the held-out split with sample_model.py
output_dir = "models/tiny-mistral-nli-demo"
max_seq_length = 1024                      # the tiny tokenizer needs ~2x the tokens of a real one
num_epochs = 8                             # ~800 steps: enough for the format, eos and one JSON object
batch_size = 8
grad_accumulation_steps = 1
learning_rate = 4e-3                       # random tiny weights need a large rate to move in minutes
lr_scheduler = "cosine"
warmup_ratio = 0.05
max_grad_norm = 1.0
optimizer = "adamw_torch"                  # paged/8-bit optimizers need CUDA
gradient_checkpointing = False             # nothing to save on an 8 MB model
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
logging_steps = 10
eval_steps = 100
save_steps = 200
save_total_limit = 2
early_stopping_patience = 0
