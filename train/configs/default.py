# The original recipe: 4-bit QLoRA SFT of Mistral-7B-v0.3 on NLI chain-of-thought.
#   ./run_training.sh --config default.py            (GPU workstation, inside the CUDA container)
#   python -m train.train_sft --config default.py     (any machine with the requirements installed)
# Every key, its type, range and default is declared once in train/config_schema.py; the schema's
# defaults are this recipe, so this file only names what makes it a recipe. No config builds on it:
# editing it changes this recipe alone. `python -m train.show_config default.py` prints the result.
model_id = "mistralai/Mistral-7B-v0.3"           # the base model
train_data = "data/finetune/ablation2_train.jsonl"  # scripts/prepare_ft_data.py --ablation 2 writes it
output_dir = "models/mistral-7b-nli-cot"
load_in_4bit = True                               # NF4 + double quantization, bf16 compute
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
optimizer = "paged_adamw_8bit"
max_seq_length = 512
