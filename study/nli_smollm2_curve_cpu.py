# The part of the compute curve (issue #42 part 4, study/nli_smollm2_compute.py) that fits an afternoon on 2 CPU
# cores, one seed: make study's arms (study/nli_smollm2_two_stage.py) plus label-only at 200, 542 and 800 steps, each
# its own cosine schedule, and the two stages at label-only's own 400 steps (142 rationale steps, then 258 label
# steps) with their control. Two questions the two-stage study leaves open: does label-only for the two stages'
# 542 steps in ONE schedule match the two stages' control (is it the steps, or the second warm-up and cosine
# cycle?), and do the rationales help at an equal budget (label_after_rationales_258 against label_only, both
# 400 steps)?
#   python scripts/study.py --config study/nli_smollm2_curve_cpu.py                   (tune file)
#   python scripts/study.py --config study/nli_smollm2_curve_cpu.py --report_on test  (once, at the end)
# Cost at the rate measured on 2 free cores (2.1 s a label step, 4.8 s a rationale step; docs/study.md):
# make study's ~70 min of training, then ~80 min more (200 + 542 + 800 + 258 steps, and the 258-step arm's control:
# 142 + 258 label steps), plus ~1 min of evaluation a run on the 288-pair tune file. A make study folder can
# be copied to --output_dir first: its runs have the same fingerprints here and are not trained again.
# Still left for a GPU (study/nli_smollm2_compute.py): seeds 2 and 3, the pairs axis.

from study.nli_arms import (
    SMOLLM2,
    TEST_FILE,
    TUNE_FILE,
    label_after_rationales,
    label_after_rationales_258,
    label_only_200,
    label_only_400,
    label_only_542,
    label_only_800,
    label_only_scored,
    rationales_half,
    untrained,
)

name = "nli_smollm2_curve_cpu"
model = SMOLLM2
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"
baseline = "label_only"
seeds = [42]  # the training config's own seed, as in make study: its runs keep the arms' names and can be reused
arms = [
    untrained,                                                   # the curves' zero
    {**label_only_400, "curve": "label_only"},                   # the baseline, 400 steps
    label_only_scored,                                           # its labels scored: probabilities, ECE
    label_only_200, label_only_542, label_only_800,              # label_only's curve, one schedule each
    rationales_half,                                             # stage 1: the teacher's correct rationales
    {**label_after_rationales_258, "curve": "two_stage"},        # 142 + 258 = label_only's 400 steps
    {**label_after_rationales, "curve": "two_stage"},            # 142 + 400 = label_only_542's steps
]
