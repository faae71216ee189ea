# Yes/no questions as a plain classifier: LoRA SFT of SmolLM2-135M-Instruct on the confidence data's BoolQ rows.
#   mkdir -p data/boolq && cp ../shared/data/confidence/mistral_boolq_incorrect.json data/boolq/
#   python -m train.train_sft --config boolq.py                 (the first 912 rows; make demo installs the model)
#   python -m evaluate.sample_model --model_id models/smollm2-135m-boolq --task boolq --max_new_tokens 8 \
#       --test_file data/boolq/mistral_boolq_incorrect.json --shard 4/5     (the last 227 rows: never trained on)
# The rows are questions another model got wrong (no passage): a hard set, where always answering "yes"
# scores 0.54. The prompt, labels, answer and scoring all come from the "boolq" Task in prompts.py.

model_id = "models/SmolLM2-135M-Instruct.Q4_1.gguf"  # the demo's model (scripts/demo.py links the packaged file)
task = "boolq"                             # {"answer": "yes" | "no"}; gold label: correct_answer (true / false)
train_data = "data/boolq/mistral_boolq_incorrect.json"  # a JSON object of 1,139 raw rows
max_train_examples = 912                   # the first 4/5: sample_model's --shard 4/5 is the rest
eval_data = None                           # evaluate the held-out fifth with sample_model.py (above)
output_dir = "models/smollm2-135m-boolq"
load_in_4bit = False                       # 135M parameters fit in float32
torch_dtype = "float32"
mixed_precision = "bf16"                   # CPU bfloat16 autocast, as smollm2_cpu.py measured
attn_implementation = "eager"              # faster than SDPA for CPU training (smollm2_cpu.py)
device = "cpu"
max_seq_length = 128                       # a question and an 8-token answer
max_steps = 114                            # one epoch of 912 rows at batch 8
batch_size = 8
grad_accumulation_steps = 1
learning_rate = 1e-3                       # smollm2_cpu.py's LoRA rate for this model
lr_scheduler = "cosine"
warmup_ratio = 0.05
max_grad_norm = 1.0
optimizer = "adamw_torch"                  # paged/8-bit optimizers need CUDA
gradient_checkpointing = False
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
lora_layers = list(range(10, 30))          # the top 20 of 30 layers, as smollm2_cpu.py
logging_steps = 10
save_steps = 1000
save_total_limit = 1
early_stopping_patience = 0
