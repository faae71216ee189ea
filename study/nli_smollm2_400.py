# The full NLI study (study/nli_smollm2.py: the same data, evaluation file and recipe) with every trained
# arm at 400 steps x 8 examples instead of 200, on three seeds:
#   make study STUDY=study/nli_smollm2_400.py
#   python scripts/study.py --config study/nli_smollm2_400.py --seeds 42        (one seed, ~3 h on 2 cores)
#   python scripts/study.py --config study/nli_smollm2_400.py --seeds 42 --arms label_only,distill_half_curriculum
#   python scripts/study.py --config study/nli_smollm2_400.py --seeds 42 --arms label_only,rationales_half,label_after_rationales
# The arms are study/nli_arms.py's 400-step ones (why 400 steps, and what each arm is: its comments).
# The chain-of-thought answer arms (ablation1/3) are left out: at 400 steps they take 2-4 h a run here.

from study.nli_arms import (
    SMOLLM2,
    TEST_FILE,
    TUNE_FILE,
    distill_400,
    distill_half_400,
    distill_half_curriculum,
    distill_half_epoch,
    label_after_rationales,
    label_only_400,
    label_only_scored,
    rationales_half,
)

name = "nli_smollm2_400"
model = SMOLLM2
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"
baseline = "label_only"
seeds = [42, 2, 3]
# label_only and its scored evaluation first, then the distillation arms (the half-weight one did better at
# 200), the same rows once each, as a curriculum, and as two runs (rationales, then label_only's run).
arms = [label_only_400, label_only_scored, distill_half_400, distill_400, distill_half_epoch, distill_half_curriculum,
        rationales_half, label_after_rationales]
