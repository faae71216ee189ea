# make study's controlled comparison (study/nli_smollm2_two_stage.py: label-only at 400 steps against the
# teacher's rationales then label-only's own run, each with the control the runner adds) on the second real
# model, Gemma 3 270M, with its own training recipe (train/configs/gemma3_cpu.py; docs/models.md). Issue #42
# asks whether the two-stage result on SmolLM2 (no gain beyond the extra steps) holds on another model.
#   make gemma && python scripts/study.py --config study/nli_gemma3_two_stage.py               (tune file)
#   python scripts/study.py --config study/nli_gemma3_two_stage.py --report_on test             (once, at the end)
# Cost, measured 2026-12-07 (seed 42, 2 idle cores): 83 min on the tune file (4,400 s of training: label
# steps at 2.1-2.3 s, rationale steps at 10.3 s; seven evaluations of ~75 s), then 25 min for --report_on test
# (1,000 pairs, ~4 min an evaluation). Every arm trains with "device": "auto" (a GPU where there is one).
# Result (docs/study.md): label_only at 400 steps stays at the majority label, as at 200; the control (142
# label steps, then 400) leaves it (0.718 on the test file) and the two stages with rationales do not (0.551).

from study.nli_arms import (
    TEST_FILE,
    TUNE_FILE,
    label_after_rationales,
    label_only_400,
    label_only_scored,
    on_any_device,
    rationales_half,
    untrained,
)

name = "nli_gemma3_two_stage"
model = "models/gemma-3-270m-q4_k_m.gguf"  # `make gemma` joins the packaged chunks into this file
tune_file, test_file = TUNE_FILE, TEST_FILE
train_config = "gemma3_cpu.py"
baseline = "label_only"
seeds = [42]
arms = [on_any_device(arm) for arm in [
    untrained,               # the model as shipped, labels scored (it answers in prose untrained)
    label_only_400,          # 400 steps x 8 of {"predicted_label": N}: the baseline
    label_only_scored,       # label_only's model, labels scored: probabilities, ECE
    rationales_half,         # stage 1: the teacher's correct rationales alone, one epoch
    label_after_rationales,  # stage 2: label_only's run from stage 1's adapter
]]
