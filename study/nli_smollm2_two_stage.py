# The study's question answered in about an hour on 2 CPU cores: SmolLM2-135M trained on labels alone
# against the same run preceded by a stage on the teacher's rationales (the recipe that beat label-only on
# three seeds of study/nli_smollm2_400.py, docs/study.md), next to the untrained model's scored labels.
# Caution (issue #42): that gain is matched by the same two stages on label rows alone (a compute-matched
# control, docs/study.md), so it measures the extra 142 steps, not the teacher's reasoning. The runner adds
# those controls itself (rationales_half__control, label_after_rationales__control_stage1 and __control:
# ~26 min more training) and the verdict at the top of table.md compares the two stages with them. On the
# 288-pair tune file the whole study is ~80 min on 2 cores (estimated); `--report_on test` then evaluates
# every arm on dev_eval_1000.csv (~30 min, no training).
#   make study                                     (= python scripts/study.py --config study/nli_smollm2_two_stage.py)
#   python scripts/study.py --config study/nli_smollm2_two_stage.py --seeds 42,2,3      (three seeds, ~3 h)
# The arms are study/nli_smollm2_400.py's own (same data, steps, evaluation file), so a result here is a
# result there; the chain-of-thought answer arms (ablation 1/3, hours each here) are in study/nli_smollm2.py.

import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_full_arms = runpy.run_path(str(_here / "nli_smollm2.py"))["arms"]
_study_400 = runpy.run_path(str(_here / "nli_smollm2_400.py"))
_arms_400 = {arm["name"]: arm for arm in _study_400["arms"]}

name = "nli_smollm2_two_stage"
model, tune_file, test_file, train_config, baseline = (_study_400[key] for key in ("model", "tune_file", "test_file",
                                                                                   "train_config", "baseline"))
seeds = [42]  # one seed fits the hour; seed 42 is the training config's own, so its runs keep the arms' names
arms = [
    next(arm for arm in _full_arms if arm["name"] == "untrained"),  # the model as shipped, labels scored
    _arms_400["label_only"],              # 400 steps x 8 of {"predicted_label": N}: the baseline
    _arms_400["label_only_scored"],       # label_only's model, labels scored: probabilities, ECE
    _arms_400["rationales_half"],         # stage 1: the teacher's correct rationales alone, one epoch
    _arms_400["label_after_rationales"],  # stage 2: label_only's run from stage 1's adapter
]
