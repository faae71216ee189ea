# The full NLI study (issue #23): does training SmolLM2-135M on a teacher's reasoning beat training it on
# labels alone, on the same pairs? Every arm, the chain-of-thought answer arms included (hours on 2 CPU cores;
# `make study` runs study/nli_smollm2_two_stage.py, the question's answer in about an hour).
#   make study STUDY=study/nli_smollm2.py               (= python scripts/study.py --config study/nli_smollm2.py)
#   python scripts/study.py --config study/nli_smollm2.py --arms untrained,label_only --max_steps 20 --eval_limit 100
# Read by scripts/study.py (its docstring says what every key means). The arms, their data and the evaluation
# files are study/nli_arms.py's (what each one is and why: its comments); every trained arm here sees the same
# number of examples (max_steps x batch_size of smollm2_cpu.py: 200 x 8). study/nli_smollm2_400.py runs the
# label and distillation arms at 400 x 8, where label_only learns on every seed tried (docs/study.md).

from pathlib import Path

from study.nli_arms import (
    REFLECTIONS,
    SMOLLM2,
    TEST_FILE,
    TUNE_FILE,
    ablation1,
    ablation2,
    ablation3,
    distill,
    distill_half,
    label_only,
    label_only_scored,
    untrained,
)

name = "nli_smollm2"
model = SMOLLM2  # --model picks another
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"   # every arm starts from the demo's CPU recipe (LoRA, bf16 autocast, lr 1e-3)
baseline = "label_only"

arms = [untrained, label_only, distill, distill_half, label_only_scored, ablation1, ablation3]
# ablation 2 needs the teacher's reflections (docs/study.md says how to make them), in the repo this config is in
if (Path(__file__).resolve().parent.parent / REFLECTIONS).is_file():
    arms.append(ablation2)
