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
# The labelled-pairs points (BY_PAIRS) add ~1.5 h. Still left for a GPU (study/nli_smollm2_compute.py): seeds 2 and 3.

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
    on_pairs,
    rationales_half,
    untrained,
)

name = "nli_smollm2_curve_cpu"
model = SMOLLM2
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"
baseline = "label_only"
# The labelled-pairs axis (Distilling step-by-step's): the two stages on 1,000, 500 and 250 of the teacher's pairs
# (a rationale epoch of 48, 23 and 12 steps, then 400 label steps on the same pairs), each against its control,
# label-only on those pairs in the same two stages: label-only at matched compute. Largest first, so a run stopped
# early has the points nearest the full pool. ~30 min a point here (two 400-step runs and their evaluations).
BY_PAIRS = [arm for pairs in (1000, 500, 250) for arm in (
    {**on_pairs(rationales_half, pairs), "control": None},
    {**on_pairs(label_after_rationales, pairs), "curve": "two_stage_by_pairs"})]
seeds = [42]  # the training config's own seed, as in make study: its runs keep the arms' names and can be reused
arms = [
    untrained,                                                   # the curves' zero
    {**label_only_400, "curve": "label_only"},                   # the baseline, 400 steps
    label_only_scored,                                           # its labels scored: probabilities, ECE
    label_only_200, label_only_542, label_only_800,              # label_only's curve, one schedule each
    rationales_half,                                             # stage 1: the teacher's correct rationales
    {**label_after_rationales_258, "curve": "two_stage"},        # 142 + 258 = label_only's 400 steps
    {**label_after_rationales, "curve": "two_stage"},            # 142 + 400 = label_only_542's steps
    *BY_PAIRS,
]
