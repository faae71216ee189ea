# The rationale stage's two untried variants (issue #42 part 4), on the tune file only: make study's two stages
# (a seeded half of the teacher's correct thoughts, one epoch, then label_only's 400 steps) against the same two
# stages with every correct thought (weight 1.0) and with every thought as written (wrong ones left in), each with
# the control the runner adds (label-only in the same two stages, at the same steps).
#   python scripts/study.py --config study/nli_smollm2_rationale_variants.py
# Copy make study's folder to --output_dir first (cp -al results/study/nli_smollm2_two_stage <dir>): its runs
# have the same fingerprints here and are not trained again.
# Cost on 2 free cores (2.1 s a label step, 4.8 s a rationale step): ~284 rationale steps, 400 label steps and the
# control's 284 + 400 for weight 1.0 (~61 min), ~376, 400 and 376 + 400 with the wrong thoughts (~71 min), and
# ~1 min an evaluation of the 288 tune pairs: ~2.3 h beyond make study's runs (measured 2026-12-07: 2.6 h,
# with tests running beside it at times; the results are in docs/study.md).

from study.nli_arms import (
    SMOLLM2,
    TEST_FILE,
    TUNE_FILE,
    label_after_rationales,
    label_after_rationales_all,
    label_after_rationales_all_wrong,
    label_only_400,
    rationales_all,
    rationales_all_wrong,
    rationales_half,
)

name = "nli_smollm2_rationale_variants"
model = SMOLLM2
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "smollm2_cpu.py"
baseline = "label_only"
seeds = [42]  # the training config's own seed, as in make study: its runs keep their names and are reused
arms = [
    label_only_400,                                          # the baseline, 400 steps
    rationales_half, label_after_rationales,                 # make study's two stages: half the correct thoughts
    rationales_all, label_after_rationales_all,              # every correct thought
    rationales_all_wrong, label_after_rationales_all_wrong,  # every thought, wrong ones included
]
