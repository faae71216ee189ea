# Accuracy against compute (issue #42 part 4): is the two-stage gain more than the steps it adds? Every recipe at
# several budgets, plotted against optimizer steps and training FLOPs (accuracy_vs_compute.png; the table's
# steps_trained and train_flops), and against the number of labelled pairs, the axis where Distilling step-by-step
# (arXiv 2305.02301) reports its gains. Meant for a GPU (every arm trains with "device": "auto": on the GPU where
# there is one, so its numbers are not the CPU runs' of docs/study.md), or a free machine for several nights:
#   python scripts/study.py --config study/nli_smollm2_compute.py                      (tune file, seeds 42, 2, 3)
#   python scripts/study.py --config study/nli_smollm2_compute.py --report_on test     (once, at the very end)
# Runs: 23 trained runs per seed (the 13 trained arms below and the 10 controls the runner adds), 69 over the three
# seeds, and 70 evaluations (the untrained model once). Per seed that is 5,883 optimizer steps on label rows and 225
# on rationale rows (two controls' first stages are the same 142 label steps: the runner trains them once and
# hard-links the model for the other). At the rates measured on this project's 2 CPU cores when nothing else
# runs (2.1 s a label step: 400 in ~820-900 s; 4.8 s a rationale step: 142 in ~690 s) that is ~13,400 s of training per seed, ~11.2 h for the
# three, plus ~1.2 min for each of the 70 evaluations on the 288-pair tune file: ~13 h on 2 cores (the ~40 h
# given here before was timed while the test suite shared the cores). study/nli_smollm2_curve_cpu.py is the
# part that fits an afternoon: label-only at 200 and 542 steps and the 400-step two stages, seed 42.
# The labelled-pairs arms need ../shared/data/nli/dev_teacher_cot.csv (3,005 pairs): on the bundled 1,000 the
# _pairs1000 arms stop at their data stage, naming the pool's size.
# Left out, for a GPU run to add: the chain-of-thought answer arm (ablation1, study/nli_smollm2.py; 1-2 h a run
# here, with 256-token answers to evaluate).

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
    on_any_device,
    on_pairs,
    rationales_half,
    untrained,
)

name = "nli_smollm2_compute"
model = SMOLLM2
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"
baseline = "label_only"
seeds = [42, 2, 3]
# The two stages at their two budgets: 142 rationale steps, then 258 (label_only's 400 in all) or 400 label steps.
# The runner adds each one's control, label_only's recipe in the same two stages (142 label steps, then 258 or
# 400): on the curve "two_stage__control", label-only on the two-stage schedule.
TWO_STAGE = [{**label_after_rationales_258, "curve": "two_stage"}, {**label_after_rationales, "curve": "two_stage"}]
# The labelled-pairs axis: the two stages on 250, 500 and 1,000 of the pairs (rationales_half's rationale rows of
# those pairs, one epoch: 12, 23 and 48 steps; then label_only's 400 steps on the same pairs). Each one's control
# is label-only on the same pairs at the same steps (the runner passes --max-pairs on): label-only at matched
# compute. All 3,005 pairs: label_after_rationales and its control above. The rationale stage alone gets no control
# (the second stage's __control_stage1 is that run).
PAIRS = (250, 500, 1000)
BY_PAIRS = [arm for pairs in PAIRS for arm in (
    {**on_pairs(rationales_half, pairs), "control": None},
    {**on_pairs(label_after_rationales, pairs), "curve": "two_stage_by_pairs"})]
arms = [on_any_device(arm) for arm in [
    untrained,                                     # no training: the curves' zero
    {**label_only_400, "curve": "label_only"},     # the baseline, 400 steps
    label_only_200, label_only_542, label_only_800,  # label_only's curve, one schedule each
    {**rationales_half, "control": None},          # stage 1 (its control: label_after_rationales__control_stage1)
    *TWO_STAGE,
    *BY_PAIRS,
]]
