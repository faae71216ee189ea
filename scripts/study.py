"""An ablation study as one command: every arm's data assembled, trained and evaluated the way a user
would run them, then one table comparing each arm with the baseline arm on the same pairs.

    make study                                # python scripts/study.py --config study/nli_smollm2_two_stage.py
    python scripts/study.py --config study/nli_smollm2.py
    python scripts/study.py --config study/nli_smollm2.py --arms label_only,ablation1 --max_steps 20 --eval_limit 100
    python scripts/study.py --config study/nli_smollm2.py --model path/to/other-model.gguf
    python scripts/study.py --config study/nli_smollm2.py --arms untrained,label_only,distill --seeds 42,2,3

A study config is plain Python (study/*.py) setting `name`, `model`, `tune_file` (where recipes are
compared; `eval_file` is its old name), optionally `test_file` (where they are reported: --report_on test),
`train_config` (a train/configs/ file every arm starts from), `baseline` (an arm name) and `arms`, a list of
dicts:

    {"name": "label_only",
     "data": ["--answer", "label", "--pairs", "data/sample/teacher_cot_1000.csv"],  # prepare_ft_data.py options
     "train": {"task": "nli_label", "max_steps": 200},      # --key value overrides of train_config
     "eval": {"task": "nli_label", "scoring": "generate", "max_new_tokens": 12}}   # sample_model options

A config that shares arms with others imports them by name from a module of the study/ package, e.g.
`from study.nli_arms import label_only, rationales_half` (the runner imports that package before it runs a
config, wherever the config lies). Each arm is read into a frozen Arm (nli_finetune/study_spec.py), the config
into a Study; an unknown field is refused with the closest one.

An arm with "train": None is the model itself, untrained (its zero-shot baseline). An arm with
"model_of": "<arm>" (and no data or train) evaluates that earlier, trained arm's model with its own eval
settings, without retraining: {"name": "label_only_scored", "model_of": "label_only", "eval": {...,
"scoring": "logprob"}}; its evaluation is redone whenever that arm's training is. A model_of arm with
"calibrate": {"target_accuracy": 0.9} (evaluate.calibrate options) evaluates that model with a calibration
fitted on the tune file (`python -m evaluate.calibrate --model <arm>/model --calib_file <tune_file> ...` on
a hard-linked copy of the model, so the trained arm's folder stays raw): its rows, with raw -> calibrated
ECE and the stored threshold's abstention, are in the test file's tables only. A trained arm with
"init_from": "<arm>" starts its training from that earlier trained arm's adapter (train_sft's
init_adapter: a second stage), is retrained whenever that arm is, and reports both stages' seconds,
tokens, steps and FLOPs. Arms that set the same "curve": "<name>" are one recipe at several budgets:
accuracy_vs_compute.png joins their runs of each seed by a line. Each stage is a subprocess:
`scripts/prepare_ft_data.py ... --output-file <arm>/train.jsonl --eval-file <tune_file>
<test_file>` (pairs that also occur in either file are dropped), `python -m train.train_sft --config
<train_config> --model_id <model> --train_data <arm>/train.jsonl --output_dir <arm>/model ...`, and `python -m
evaluate.sample_model --model_id <arm>/model --test_file <tune_file> --output_file <arm>/eval.json ...`, the
same file for every arm. `--report_on test` evaluates on the test file instead (<arm>/eval_test.json,
table_test.*, seeds_test.*, report_test.html), retraining nothing, and appends each such look to
<output_dir>/test_ledger.json; the test tables say how many times the test file has been consulted.

Seeds: `seeds = [42, 2, 3]` in the config (or --seeds 42,2,3) trains every trained arm once per seed. The
run at the arm's own seed (its "train" seed, else its train_config's) keeps the arm's name, so its finished
results stay valid; the others are arms/<arm>_seed<N>/, trained with --seed N (an arm trained in file
order, "shuffle": False, also has its data written with --seed N: its sampler shuffles nothing). An
untrained arm runs once; a model_of arm evaluates the model of the same seed, and an init_from arm
starts from it. Each run is compared with the baseline's run of the same seed, and seeds.md / seeds.json
give per arm the mean over seeds of accuracy, macro-F1 and the paired difference, with a 95% t interval
over seeds (the spread between seeds, which at 200 steps on 2 CPU cores is larger than the spread between
pairs).

Controls: a trained arm that differs from the baseline in more than its data (other steps or epochs, another
learning rate, scheduler or warm-up, an init_from stage) is followed by `<arm>__control`, the baseline's data
and recipe for as many optimizer steps as the arm took (its finished train_results.json), in the same stage
structure (init_from: `<arm>__control_stage1` for the first stage's steps, then the control from it);
`controls = False` turns them off, an arm's "control": "<arm>" names its own (None: none), its
"control_match": "tokens" matches answer tokens instead of steps (for longer rows). Every run is
compared with the baseline and with its control, each p Holm-adjusted beside the raw one (a comparison of the
same two evaluations, as two arms' identical first-stage controls make, counted once), and table.md opens with
a one-line verdict that uses the control where there is one and leaves out the baseline's own recipe at other
budgets (its "curve"). Its section "At equal optimizer steps" compares every other trained run with the run of
the baseline's curve of as many steps and the same seed. A run whose training inputs (data, recipe, steps,
seed) equal an earlier run's is not trained again: it takes that model as hard links (`shared_from` in its
stages.json); an evaluation whose inputs (that model, the file, the settings) equal an earlier run's is not run
again either: it takes that run's <stage>.json and .csv as hard links. `--plan --effect 0.03` prints the
evaluation pairs and seeds needed for 80% power, from a finished study or --discordant / --seed_sd.

--arms runs the arms it names (and what they need); the tables stay the whole study's: they add every other
run that finished on that file from its current inputs, and name the rest ("Not in this table").

Resumable: a stage whose inputs (its options, the files it reads, the resolved training config, the
project's code it runs, what the stage before it made) are unchanged since it finished is skipped; a
changed stage is redone, and the log says what changed. A study killed at any point and rerun redoes
only what had not finished (an evaluation resumes from its progress file); its
stages die with it (even by SIGKILL, on Linux), and a second study on the same --output_dir is refused.

Output in results/study/<name>/ (or --output_dir): report.html (the results page), table.md / table.csv /
table.json (per arm: n, accuracy
and macro-F1 with 95% bootstrap intervals, parse and stop rates, ECE when scored, training seconds,
answer tokens trained, optimizer steps and training FLOPs (an init_from arm: both stages'; a model_of arm: its
model's), evaluation seconds; for every other arm the paired difference from the baseline with its paired
bootstrap interval and McNemar's p), accuracy.png, accuracy_vs_compute.png (accuracy against optimizer steps
and against training FLOPs; the arms that share a "curve" name, one recipe at several budgets, joined by a
line per seed), study.log, and per arm arms/<arm>/ (train.jsonl, model/, eval.json, one log per stage). Bad options or
config: exit 2; a failed stage: exit 1, with the end of its log.
"""

import argparse
import csv
import dataclasses
import importlib.util
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, at_least, format_table
from nli_finetune.cli import progress as progress_bar
from nli_finetune.data_io import (
    DataError,
    atomic_write_json,
    atomic_write_text,
    content_fingerprint,
    linked_tree,
    overlap,
    path_fingerprint,
)
from nli_finetune.job_runner import output_lock
from nli_finetune.metrics import (
    bootstrap_intervals,
    holm_adjust,
    mean_over_seeds,
    paired_difference,
    pairs_needed,
    pooled_paired_difference,
    seeds_needed,
)
from nli_finetune.modeling import model_locations
from nli_finetune.redaction import redact, redact_data, redact_file
from nli_finetune.report_page import write_report
from nli_finetune.resume import changes, file_fingerprints
from nli_finetune.study_spec import SPLIT_STAGE, Arm, Study, arm_from_config
from prompts import get_task

STAGES = ("data", "train", "eval")
REQUIRED = ("name", "model", "train_config", "baseline", "arms")


class StageFailed(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python scripts/study.py", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a study config (plain Python), e.g. study/nli_smollm2.py")
    p.add_argument("--arms", default=None, help="comma-separated arm names: run only these")
    p.add_argument("--max_steps", type=at_least(1), default=None, help="cap every arm's training steps")
    p.add_argument("--eval_limit", type=at_least(1), default=None, help="evaluate only the first N pairs")
    p.add_argument("--model", default=None, help="the model every arm starts from (default: the config's)")
    p.add_argument("--seeds", type=seed_list, default=None,
                   help="comma-separated training seeds, e.g. 42,2,3: every trained arm runs once per seed "
                        "(default: the config's `seeds`, else each arm's own seed)")
    p.add_argument("--output_dir", default=None, help="default results/study/<name>/")
    p.add_argument("--keep_trained", action="store_true",
                   help="keep finished data and training stages whose only change is the project code (an upgrade "
                        "of the toolkit); the log and the table name each stage kept")
    p.add_argument("--report_on", choices=("tune", "test"), default="tune",
                   help="evaluate every arm on the config's tune_file (default: where recipes are compared) or on "
                        "its test_file (each such look is counted in <output_dir>/test_ledger.json)")
    plan = p.add_argument_group("a power plan (--plan: runs nothing)")
    plan.add_argument("--plan", action="store_true",
                      help="print the evaluation pairs and seeds needed to detect --effect with 80%% power, from "
                           "a finished study's table (--config) or from --discordant and --seed_sd")
    plan.add_argument("--effect", type=float, default=None, help="--plan: the accuracy difference to detect, e.g. 0.03")
    plan.add_argument("--discordant", type=float, default=None,
                      help="--plan: the assumed share of pairs only one of the two runs gets right, e.g. 0.12")
    plan.add_argument("--seed_sd", type=float, default=None,
                      help="--plan: the assumed seed-to-seed standard deviation of the difference, e.g. 0.02")
    return p


MAX_SEED = 2**32 - 1  # train_sft's range (numpy takes 32 bits)


def good_seeds(seeds) -> bool:
    """A non-empty list of distinct ints (not bools) that train_sft accepts."""
    return isinstance(seeds, list) and bool(seeds) and len(set(seeds)) == len(seeds) and all(
        type(seed) is int and 0 <= seed <= MAX_SEED for seed in seeds)


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not good_seeds(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds from 0 to {MAX_SEED}, e.g. 42,2,3")
    return seeds


# --- the study config ------------------------------------------------------------------------------------

def load_study(path: str, args) -> Study:
    """The config's settings as a Study, checked, with the command-line options applied."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such study config")
    values = config_values(path)
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise DataError(f"{path}: the study config must set {', '.join(missing)}")
    if not isinstance(values["arms"], list):
        raise DataError(f"{path}: field 'arms' must be a list of arms (dicts)")
    # a caller building its own args (tests, scripts) may leave report_on out: the tune file
    tune_file, test_file, split = split_files(path, values, getattr(args, "report_on", "tune"))
    arms = config_arms(path, values["arms"])
    names = [arm.name for arm in arms]
    if values.get("controls", True) not in (True, False):
        raise DataError(f"{path}: field 'controls' must be True or False")
    if values["baseline"] not in names:
        raise DataError(f"{path}: baseline '{values['baseline']}' is not an arm ({', '.join(names)})")
    baseline = next(arm for arm in arms if arm.name == values["baseline"])  # its recipe, even unselected
    if args.arms:
        arms = selected_arms(path, arms, args.arms)
    seeds = args.seeds or values.get("seeds")
    if seeds is not None and not good_seeds(seeds):
        raise DataError(f"{path}: field 'seeds' must be a list of distinct non-negative integers up to {MAX_SEED}, "
                        "e.g. [42, 2, 3]")
    train_config = values["train_config"]
    # the seed an arm trains with when it sets none (read only where an arm trains: an untrained study needs no recipe)
    default_seed = train_config_seed(path, train_config) if any(arm.trained for arm in arms) else None
    runs = runs_per_seed(path, with_controls(path, arms, values.get("controls", True), baseline, default_seed),
                         seeds, default_seed)
    for run in runs:
        if run.trained:
            check_train_options(path, train_config, run)
    for key, file in (("tune_file", tune_file), ("test_file", test_file)):
        if file is not None and not in_repo(file).is_file():
            raise DataError(f"{path}: {key} {file} does not exist")
    return Study(name=values["name"], config_path=path, model=args.model or values["model"],
                 train_config=train_config, baseline=values["baseline"], tune_file=tune_file, test_file=test_file,
                 split=split, runs=tuple(runs), keep_trained=getattr(args, "keep_trained", False),
                 output_dir=Path(args.output_dir or REPO_ROOT / "results" / "study" / values["name"]).resolve())


def config_values(path: str) -> dict:
    """The names a study config sets. A config takes shared arms from the repo's study/ package by name
    (`from study.nli_arms import label_only`), which is imported here by its location: `python
    scripts/study.py` puts scripts/ first on the import path, where `study` is this script. It is imported
    anew for each config, so an edited arm file is read as it is now, and no config that changes a shared
    arm's dict changes it for the next config loaded."""
    for name in [name for name in sys.modules if name.split(".")[0] == "study"]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("study", REPO_ROOT / "study" / "__init__.py")
    sys.modules["study"] = package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    return runpy.run_path(path)


def config_arms(path: str, arms: list) -> list[Arm]:
    """The config's arms as Arms, each checked on its own (its fields, its evaluation options, what the
    runner sets itself) and against the arms listed before it (model_of, init_from) and all (control)."""
    checked = []
    for index, raw in enumerate(arms):
        where = f"{path}: arms[{index}]"
        arm = arm_from_config(raw, where)
        if arm.name in [earlier.name for earlier in checked]:
            raise DataError(f"{where}: duplicate arm name '{arm.name}'")
        try:
            get_task(arm.eval["task"])
        except ValueError as exc:
            raise DataError(f"{where}: field 'eval': {exc}") from None
        check_runner_keys(arm, where)
        check_eval_options(arm, where)
        for field in ("model_of", "init_from"):
            if getattr(arm, field):
                check_earlier_trained(arm, field, checked, where)
        checked.append(arm)
    names = [arm.name for arm in checked]
    for index, arm in enumerate(checked):
        if arm.control is not None and (arm.control not in names or arm.control == arm.name):
            raise DataError(f"{path}: arms[{index}]: field 'control': {arm.control!r} is not another arm "
                            f"({', '.join(names)})")
    return checked


def selected_arms(path: str, arms: list[Arm], wanted_text: str) -> list[Arm]:
    """The arms --arms names, in the config's order, with every arm one of them needs."""
    wanted = [a.strip() for a in wanted_text.split(",") if a.strip()]
    unknown = [a for a in wanted if a not in [arm.name for arm in arms]]
    if unknown:
        raise DataError(f"--arms: no arm named {', '.join(unknown)} in {path} (arms: "
                        f"{', '.join(arm.name for arm in arms)})")
    selected = [arm for arm in arms if arm.name in wanted]
    for arm in selected:
        if arm.model_of and arm.model_of not in wanted:
            raise DataError(f"--arms: arm {arm.name} evaluates {arm.model_of}'s model; select that arm too")
        if arm.control and arm.control not in wanted:
            raise DataError(f"--arms: arm {arm.name} is compared with its control {arm.control}; select that arm too")
        if arm.init_from and arm.init_from not in wanted:
            raise DataError(f"--arms: arm {arm.name} starts from {arm.init_from}'s adapter; select that arm too")
    return selected


# The training keys that set how much and how an arm trains, beyond its data: an arm that changes one of them
# (or trains from another arm's adapter) is compared with a control that changes only them.
SCHEDULE_KEYS = ("max_steps", "num_epochs", "lr_scheduler", "warmup_ratio", "warmup_steps", "learning_rate")


def with_controls(path: str, arms: list[Arm], automatic: bool, base: Arm, default_seed: int | None) -> list[Arm]:
    """The arms, each followed by the compute-matched control the runner adds for it (unless the config sets
    `controls = False` or the arm names its own "control", None for none): for an arm that trains more or
    fewer steps, or on another schedule, than the baseline, `<arm>__control` is the baseline's data and
    recipe trained for as many optimizer steps as the arm really took (`steps_of`: read from its finished
    train_results.json, as it may train by epochs); for an init_from arm, `<arm>__control_stage1` (the
    baseline's recipe for the steps the first stage took), then `<arm>__control` from its adapter, for the
    steps the arm's own stage took. So the control differs from the arm in its data alone. An arm with
    "control_match": "tokens" (rows longer than the baseline's) gets a control trained on as many answer
    tokens as it, stage by stage, instead: the steps the baseline's rows need for them. An arm trained on a
    subset of the pairs (prepare_ft_data.py --max-pairs) has its control trained on the same pairs, and an
    arm on a "curve" has its control on "<curve>__control" (the baseline's recipe at the curve's budgets)."""
    with_them, by_name = [], {arm.name: arm for arm in arms}
    for arm in arms:
        if not automatic or not arm.automatic_control or not base.trained or not needs_control(arm, base):
            with_them.append(arm)
            continue
        seed = arm.train.get("seed", default_seed)  # seeded like its arm: runs of the same seed share a name suffix
        control = dataclasses.replace(base, name=f"{arm.name}__control", arm_name=f"{arm.name}__control",
                                      data=(*base.data, *pair_options(arm.data)), train={**base.train, "seed": seed},
                                      control=None, control_match="steps",
                                      curve=f"{arm.curve}__control" if arm.curve else None, control_for=arm.name,
                                      steps_of=arm.name)
        if arm.control_match == "tokens":  # as many answer tokens as the arm, at the baseline's per step
            control = dataclasses.replace(control, tokens_per_step_of=base.name)
        stage1 = None
        if arm.init_from:
            stage1 = dataclasses.replace(control, name=f"{arm.name}__control_stage1",
                                         arm_name=f"{arm.name}__control_stage1", steps_of=arm.init_from, curve=None,
                                         data=(*base.data, *pair_options(by_name[arm.init_from].data)))
            control = dataclasses.replace(control, init_from=stage1.name)
        with_them += [dataclasses.replace(arm, control=control.name), *([stage1] if stage1 else []), control]
    names = [arm.name for arm in with_them]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise DataError(f"{path}: an arm is named like the control the study adds ({', '.join(clash)}); rename it "
                        "or set its own \"control\"")
    return with_them


def pair_options(data: tuple) -> list[str]:
    """The prepare_ft_data.py options of `data` that pick which labelled pairs it trains on: --max-pairs N and
    the --seed that draws them, as given (--key value or --key=value); none when it trains on every pair."""
    options = [str(option) for option in data]
    keys = [option.split("=", 1)[0] for option in options]
    if "--max-pairs" not in keys:
        return []
    picked = []
    for index, (option, key) in enumerate(zip(options, keys)):
        if key in ("--max-pairs", "--seed"):
            picked += [option] if "=" in option else options[index:index + 2]
    return picked


def needs_control(arm: Arm, base: Arm) -> bool:
    """A trained arm other than the baseline that trains from another adapter or on another schedule."""
    if arm.name == base.name or not arm.trained or arm.model_of:
        return False
    return bool(arm.init_from) or any(arm.train.get(key) != base.train.get(key) for key in SCHEDULE_KEYS)


def split_files(path: str, values: dict, report_on: str) -> tuple[str, str | None, str]:
    """(tune_file, test_file, the split this run evaluates on): the config's tune_file (where recipes are
    compared; `eval_file` is its old name) and test_file (where the chosen ones are reported)."""
    tune, old, test = values.get("tune_file"), values.get("eval_file"), values.get("test_file")
    if tune is None and old is None:
        raise DataError(f"{path}: the study config must set tune_file (or its old name, eval_file)")
    if tune is not None and old is not None and tune != old:
        raise DataError(f"{path}: tune_file {tune} and eval_file {old} differ: eval_file is tune_file's old name; "
                        "keep one")
    if report_on == "test" and test is None:
        raise DataError(f"{path}: --report_on test needs a test_file in the study config")
    return tune or old, test, report_on


def check_train_options(path: str, train_config: str, run: Arm) -> None:
    """The run's training options as train_sft will resolve them (unknown keys, types and ranges, its
    seed included), checked at load: a bad one exits 2 before any stage runs."""
    from train.config_loader import ConfigError, load_config
    options = command_options(run.train)
    try:
        load_config(["--config", str(train_config_path(train_config)), *options])
    except ConfigError as exc:
        raise DataError(f"{path}: run {run.name}: field 'train': {exc}") from None


def train_config_seed(path: str, train_config: str) -> int:
    """The seed of the study's train_config: an arm's when its "train" sets none."""
    from train.config_loader import ConfigError, load_config
    try:
        return load_config(["--config", str(train_config_path(train_config))]).seed
    except ConfigError as exc:
        raise DataError(f"{path}: train_config: {exc}") from exc


def runs_per_seed(path: str, arms: list[Arm], seeds: list[int] | None, default_seed: int | None) -> list[Arm]:
    """The arms as runs: one per seed for a trained arm (and for a model_of arm, one per seed of its model),
    one for an untrained arm. The run at the arm's own seed (its "train" seed, else `default_seed`, the
    train_config's) keeps the arm's name; the others are `<arm>_seed<N>`."""
    runs, run_name = [], {}  # run_name[(arm, seed)]
    by_name = {arm.name: arm for arm in arms}
    for arm in arms:
        trained = by_name.get(arm.model_of, arm)
        if not trained.trained:
            runs.append(arm)
            continue
        own = trained.train.get("seed", default_seed)
        for seed in seeds or [own]:
            run = dataclasses.replace(arm, name=arm.name if seed == own else f"{arm.name}_seed{seed}", seed=seed)
            if arm.model_of:
                run = dataclasses.replace(run, model_of=run_name[(arm.model_of, seed)])
            if arm.init_from:
                if (arm.init_from, seed) not in run_name:
                    raise DataError(f"{path}: arm {arm.name} trains with seed {seed}, which arm {arm.init_from} (its "
                                    "init_from) has no run of: give both the same seed")
                run = dataclasses.replace(run, init_from=run_name[(arm.init_from, seed)])
            if arm.steps_of:  # a control matches the steps of that arm's run of the same seed
                run = dataclasses.replace(run, steps_of=run_name[(arm.steps_of, seed)])
            if arm.tokens_per_step_of:  # ... or its tokens, at the baseline run's tokens per step
                if (arm.tokens_per_step_of, seed) not in run_name:
                    raise DataError(f"{path}: {arm.control_for}'s \"control_match\": \"tokens\" needs the baseline "
                                    f"{arm.tokens_per_step_of} run before it, with seed {seed}")
                run = dataclasses.replace(run, tokens_per_step_of=run_name[(arm.tokens_per_step_of, seed)])
            if not arm.model_of and seed != own:
                run = dataclasses.replace(run, train={**arm.train, "seed": seed})
                if arm.train.get("shuffle") is False:  # trained in file order: the seed shuffles the file
                    run = dataclasses.replace(run, data=(*arm.data, "--seed", str(seed)))
            run_name[(arm.name, seed)] = run.name
            runs.append(run)
    for index, run in enumerate(runs):  # compared with its control's run of the same seed
        if run.control:
            control = run_name.get((run.control, run.seed),
                                   next((r.name for r in runs if r.arm_name == run.control and r.seed is None), None))
            if control is None:
                raise DataError(f"{path}: arm {run.arm_name} runs with seed {run.seed}, which its control "
                                f"{run.control} has no run of: give both the same seed")
            runs[index] = dataclasses.replace(run, control=control)
    names = [run.name for run in runs]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise DataError(f"{path}: with seeds {seeds}, more than one run is named {', '.join(clash)}; rename the arm")
    return runs


# What the study passes each stage itself: an arm setting one too would make the command name two (the
# last wins), e.g. evaluate another file than the other arms and pair ids of two different files.
RUNNER_KEYS = {"data": ("--output-file", "--eval-file"), "train": ("model_id", "train_data", "output_dir", "eval_data"),
               "eval": ("test_file", "output_file", "output_csv", "model_id", "limit", "restart"),
               "calibrate": ("model", "calib_file", "task", "scores_file", "restart")}


def command_options(options: dict) -> list[str]:
    """{key: value} as a stage's command line takes them: --key value, in order."""
    return [part for key, value in options.items() for part in (f"--{key}", str(value))]


def check_eval_options(arm: Arm, where: str) -> None:
    """The arm's evaluation options as sample_model's own parser reads them, and a calibrated arm's
    calibration options as evaluate.calibrate's does, at load: an unknown option (named with the closest
    one) or a bad value exits 2 before any stage runs, not when the arm's evaluation starts an hour into
    the study."""
    from evaluate.calibrate_options import build_parser as calibrate_parser
    from evaluate.inference_run import build_parser
    check_tool_options(arm.eval, build_parser(), ["--model_id", "model", "--test_file", "pairs.csv"], "eval",
                       "sample_model", where)
    if arm.calibrate is not None:
        check_tool_options(arm.calibrate, calibrate_parser(), ["--model", "model", "--calib_file", "pairs.csv"],
                           "calibrate", "evaluate.calibrate", where)


def check_tool_options(given: dict, parser, runner_options: list[str], field: str, tool: str, where: str) -> None:
    """`given` ({key: value}, passed as --key value) as `parser` reads them, beside the options the runner
    sets itself at run time (`runner_options`, stand-ins)."""
    import contextlib
    import difflib
    import io
    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    for key in given:
        if f"--{key}" not in flags:
            close = difflib.get_close_matches(f"--{key}", flags, n=1, cutoff=0.5)
            raise DataError(f"{where}: field '{field}': unknown {tool} option '{key}'"
                            + (f"; did you mean '{close[0][2:]}'?" if close else ""))
    options = command_options(given)
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint):
            parser.parse_args([*runner_options, *options])
    except SystemExit:
        raise DataError(f"{where}: field '{field}': {complaint.getvalue().strip().splitlines()[-1]}") from None


def check_runner_keys(arm: Arm, where: str) -> None:
    """Refuse an arm option the runner sets itself (any spelling: --key=value, - for _)."""
    owned = dict(RUNNER_KEYS, train=RUNNER_KEYS["train"] + (("init_adapter",) if arm.init_from else ()))
    for field, keys in owned.items():
        given = getattr(arm, field) or []
        if field == "data":
            names = [o.split("=", 1)[0].replace("_", "-") for o in given if isinstance(o, str) and o.startswith("--")]
        else:
            names = [str(key).lstrip("-").replace("-", "_") for key in given]
        for key in (k for k in keys if k in names):
            raise DataError(f"{where}: field '{field}' sets '{key}', which the study sets itself; remove it")


def check_earlier_trained(arm: Arm, field: str, earlier: list[Arm], where: str) -> None:
    """arm.<field> (model_of, init_from) names a trained arm listed before this one."""
    trained = [a.name for a in earlier if a.trained]
    if getattr(arm, field) not in trained:
        raise DataError(f"{where}: field '{field}': {getattr(arm, field)!r} is not a trained arm listed before it "
                        f"({', '.join(trained) or 'none'})")


def in_repo(path) -> Path:
    """A path of a study config: relative ones are relative to the repo root, where every stage runs."""
    return REPO_ROOT / path


def train_config_path(name: str) -> Path:
    return in_repo(name) if in_repo(name).is_file() else REPO_ROOT / "train" / "configs" / name


def option_paths(options) -> list[str]:
    """The existing files and folders an option list (or a settings dict's values) names, as a bare value
    or as --key=PATH (the repo root itself, as "." or "", is no input)."""
    values = options.values() if isinstance(options, dict) else options
    found = []
    for option in (o for o in values if isinstance(o, str)):
        for value in (option, option.split("=", 1)[1] if option.startswith("-") and "=" in option else None):
            if value and in_repo(value).exists() and in_repo(value).resolve() != REPO_ROOT.resolve():
                found.append(value)
    return found


def files_in(options) -> dict:
    """Fingerprints of the files and folders options name (an edited data file redoes the stage)."""
    return file_fingerprints({path: in_repo(path) for path in option_paths(options)})


def study_inputs(study: Study) -> list[tuple[str, Path]]:
    """(what, path) of everything the study reads that exists on disk: the model (and its base or
    converted folder), the evaluation file, the training config, and every path an arm's options name."""
    locations = model_locations(str(in_repo(study.model)))
    inputs = [("model" if i == 0 else "folder the model is read from", p) for i, p in enumerate(locations)]
    inputs += [(what, in_repo(file)) for what, file in (("tune file", study.tune_file), ("test file", study.test_file))
               if file]
    inputs += [("training config", train_config_path(study.train_config))]
    for run in study.runs:
        for options, what in ((run.data, "data file"), (run.train, "training input"), (run.eval, "evaluation input")):
            inputs += [(what, in_repo(path)) for path in option_paths(options or [])]
    return inputs


def check_writes_clear_of_inputs(study: Study) -> None:
    """Refuse, before any work, an --output_dir or arm folder that is, holds or lies inside an input: a
    stage replaces its arm's files (train clears <arm>/model), which would destroy the input."""
    out = study.output_dir
    arm_dirs = [(f"arm {run.name}'s folder", out / "arms" / run.name) for run in study.runs]
    for what, path in study_inputs(study):
        how = overlap(out, path)
        if how is None:
            continue
        culprit = ("--output_dir", out, how)
        if how == "contains":  # name the arm whose stages would write over it, where one does
            culprit = next(((name, folder, overlap(folder, path)) for name, folder in arm_dirs
                            if overlap(folder, path)), culprit)
        raise DataError(f"{culprit[0]} {culprit[1]} {culprit[2]} the {what} {path}: the study writes there and "
                        "would change or delete it; choose another --output_dir")


# The project's own code each stage runs (with COMMON_SOURCES): an edit redoes the stages that run it.
# Training configs are not here: the resolved config is fingerprinted instead (an edit to one that no
# arm uses redoes nothing).
COMMON_SOURCES = ("prompts.py", "nli_finetune", "data/prompt_templates")
STAGE_SOURCES = {"data": ("scripts/prepare_ft_data.py",), "train": ("train",), "eval": ("evaluate",)}


def source_fingerprint(stage: str) -> str:
    """A hash of the .py files (and prompt templates) a stage runs."""
    def is_source(relative: Path) -> bool:
        return relative.suffix in (".py", ".json") and "__pycache__" not in relative.parts \
            and relative.parts[0] != "configs"
    return content_fingerprint({source: path_fingerprint(in_repo(source), include=is_source)
                                for source in (*COMMON_SOURCES, *STAGE_SOURCES[stage])})


def resolved_config_fingerprint(study: Study) -> str:
    """A hash of the training config as train_sft resolves it (defaults < the file < whatever it imports),
    so an edit to a config it imports retrains, as an edit to the file itself does."""
    from train.config_loader import ConfigError, load_config
    try:
        config = load_config(["--config", str(train_config_path(study.train_config))])
    except ConfigError as exc:
        raise DataError(f"{study.config_path}: train_config: {exc}") from exc
    return content_fingerprint(dataclasses.asdict(config))  # the loaded keys, as when it was a dict


def train_overrides(arm: Arm, args) -> dict:
    """The arm's "train" options, with --max_steps capping its steps."""
    overrides = dict(arm.train)
    if args.max_steps:
        steps = overrides.get("max_steps", args.max_steps)  # -1 (= num_epochs) is capped too
        overrides["max_steps"] = args.max_steps if steps < 1 else min(steps, args.max_steps)
    return overrides


def stage_inputs(study: Study, arm: Arm, args, states: dict) -> dict:
    """What each stage is computed from; a stage is redone when its inputs differ from when it finished.
    Training depends on the content of the train.jsonl the data stage wrote (computed again after that
    stage ran), not on the data stage's options: an evaluation file's changed gold label redoes the data
    stage (it filters pairs against that file) and the evaluations, and no training when train.jsonl is
    unchanged. An arm with model_of depends on that arm's finished training (its inputs and its run), from
    `states`."""
    eval_file, eval_stage = str(study.eval_file), study.eval_stage
    arm_dir = study.output_dir / "arms" / arm.name
    inputs = {}
    if arm.trained:
        overrides = train_overrides(arm, args)
        if arm.steps_of:  # a control: as many optimizer steps as that run really took
            overrides["max_steps"] = steps_taken(study, arm.steps_of)
        if arm.tokens_per_step_of:  # or as many answer tokens
            overrides["max_steps"] = steps_for_tokens(study, arm.steps_of, arm.tokens_per_step_of)
        inputs["data"] = {"options": [str(o) for o in arm.data], "files": files_in(arm.data),
                          "eval_file": path_fingerprint(in_repo(study.tune_file)), "code": source_fingerprint("data")}
        if study.test_file:  # the data stage drops the pairs of both files, whichever split is evaluated
            inputs["data"]["test_file"] = path_fingerprint(in_repo(study.test_file))
        inputs["train"] = {"data": path_fingerprint(arm_dir / "train.jsonl"), "model": study.model,
                           "model_files": path_fingerprint(in_repo(study.model)), "config": study.train_config,
                           "resolved_config": resolved_config_fingerprint(study), "overrides": overrides,
                           "files": files_in(overrides), "code": source_fingerprint("train")}
        if arm.init_from:  # that arm's finished training: retrained, it redoes this one
            inputs["train"]["init_from"] = content_fingerprint(states[arm.init_from]["train"])
        for key, run in (("steps_of", arm.steps_of), ("tokens_per_step_of", arm.tokens_per_step_of)):
            if run:  # likewise the runs whose steps a control matches
                inputs["train"][key] = content_fingerprint(states[run]["train"])
    untrained = {"model": study.model, "model_files": path_fingerprint(in_repo(study.model))}
    model = states[arm.model_of]["train"] if arm.model_of else inputs.get("train", untrained)
    if arm.calibrate is not None:  # fitted on the tune file, whichever file is evaluated
        inputs["calibrate"] = {"model": content_fingerprint(model), "calib_file": str(study.tune_file),
                               "calib_file_content": path_fingerprint(in_repo(study.tune_file)),
                               "settings": arm.calibrate, "code": source_fingerprint("eval")}
        model = {"calibrated": inputs["calibrate"]}
    inputs[eval_stage] = {"model": content_fingerprint(model),
                      "eval_file": eval_file, "eval_file_content": path_fingerprint(in_repo(eval_file)),
                      "settings": arm.eval, "files": files_in(arm.eval), "limit": args.eval_limit,
                      "code": source_fingerprint("eval")}
    return inputs


def steps_taken(study: Study, run: str) -> int:
    """The optimizer steps a finished run took (its train_results.json's global_step)."""
    results = study.output_dir / "arms" / run / "model" / "train_results.json"
    try:
        return int(json.loads(results.read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{results}: no finished training of run {run} to match its steps ({exc!r}); rerun the "
                        "study") from None


def steps_for_tokens(study: Study, run: str, per_step_of: str) -> int:
    """The steps the baseline's recipe needs to train as many answer tokens as run's own stage did: that
    run's tokens over the tokens per step of the baseline run `per_step_of` (the control's rows are its),
    both as tokens_trained reads them from the runs' train_results.json."""
    arms = study.output_dir / "arms"
    _, tokens = tokens_trained(arms / run / "model")
    _, base_tokens = tokens_trained(arms / per_step_of / "model")
    if not tokens or not base_tokens:
        raise DataError(f"runs {run} and {per_step_of}: no finished training to count their tokens; rerun the study")
    return max(1, round(tokens / (base_tokens / steps_taken(study, per_step_of))))


# --- running the stages ----------------------------------------------------------------------------------

def stage_command(stage: str, study: Study, arm: Arm, inputs: dict, arm_dir: Path) -> list[str]:
    python = sys.executable
    if stage == "data":
        return [python, "scripts/prepare_ft_data.py", *map(str, arm.data),
                "--output-file", str(arm_dir / "train.jsonl"), "--eval-file", str(study.tune_file),
                *([str(study.test_file)] if study.test_file else [])]
    if stage == "train":
        overrides = command_options(inputs["train"]["overrides"])
        if arm.init_from:
            overrides += ["--init_adapter", str(arm_dir.parent / arm.init_from / "model")]
        return [python, "-m", "train.train_sft", "--config", study.train_config, "--model_id", study.model,
                "--train_data", str(arm_dir / "train.jsonl"), "--output_dir", str(arm_dir / "model"),
                "--eval_data", "None", *overrides]
    if stage == "calibrate":
        options = command_options(arm.calibrate)
        return [python, "-m", "evaluate.calibrate", "--model", str(arm_dir / "model"), "--calib_file",
                str(study.tune_file), "--task", arm.eval["task"], "--scores_file", str(arm_dir / "calibrate_scores.json"),
                "--quiet", *options]
    model = str(arm_dir / "model") if "train" in inputs else study.model
    if arm.model_of:  # a calibrated one: its own linked copy, which holds the calibration
        model = str(arm_dir / "model") if arm.calibrate is not None else str(arm_dir.parent / arm.model_of / "model")
    options = command_options(arm.eval)
    limit = ["--limit", str(inputs[stage]["limit"])] if inputs[stage]["limit"] else []
    return [python, "-m", "evaluate.sample_model", "--model_id", model, "--test_file", str(study.eval_file),
            "--output_file", str(arm_dir / f"{stage}.json"), "--quiet", *options, *limit]


def unchanged(saved: dict | None, now: dict) -> bool:
    """Whether a stage's recorded inputs (None: none recorded) are what it would be computed from now."""
    return saved is not None and not changes(saved, now)


def same_stage(study: Study, states: dict, stage: str, inputs: dict) -> str | None:
    """An earlier run of this study whose train or evaluation stage finished from exactly these inputs, its
    output still there (two arms' identical first-stage controls: the same data, recipe, steps and seed, and
    then the same model, file and settings), or None. Data and calibration stages are never shared."""
    if stage != "train" and stage not in SPLIT_STAGE.values():
        return None
    output = Path("model", "train_results.json") if stage == "train" else Path(f"{stage}.json")
    return next((name for name, state in states.items() if state and unchanged(state.get(stage, {}).get("inputs"),
                                                                                 inputs)
                 and (study.output_dir / "arms" / name / output).is_file()), None)


def take_twins_output(stage: str, arm_dir: Path, twin_dir: Path) -> None:
    """A shared stage's output (same_stage) as hard links to its twin's: the model folder, or the evaluation's
    .json and .csv (not its progress file, which a redone evaluation of other inputs would truncate)."""
    if stage == "train":
        linked_tree(twin_dir / "model", arm_dir / "model")
        return
    for output in (f"{stage}.json", f"{stage}.csv"):
        (arm_dir / output).unlink(missing_ok=True)
        if (twin_dir / output).is_file():
            try:
                os.link(twin_dir / output, arm_dir / output)
            except OSError:
                shutil.copy2(twin_dir / output, arm_dir / output)


def run_stage(stage: str, study: Study, arm: Arm, inputs: dict, state: dict, arm_dir: Path, log,
              twin: str | None = None) -> str:
    """Run one stage unless it finished from the same inputs; record it in <arm>/stages.json when done.
    A train or evaluation stage with a `twin` (same_stage) takes that run's output as hard links instead.
    Returns what it did: "skipped", "kept" (--keep_trained) or "done"."""
    name = arm.name
    if unchanged(state.get(stage, {}).get("inputs"), inputs[stage]):
        log(f"arm {name}: {stage} skipped (finished, inputs unchanged)")
        return "skipped"
    if kept_under_earlier_code(study, stage, state, inputs[stage]):
        log(f"arm {name}: {stage} kept (finished under earlier project code; --keep_trained)")
        return "kept"
    stale = state.setdefault("stale", {})  # stages this one invalidates, kept to say later what changed
    previous = state.get(stage) or stale.get(stage)
    evaluation = stage in SPLIT_STAGE.values()  # its resume keys: eval_started, eval_test_started, ...
    resumed = evaluation and unchanged(state.get(f"{stage}_started"), inputs[stage])
    earlier = earlier_eval_seconds(state, arm_dir / f"{stage}.log", stage) if resumed else 0.0
    if resumed:  # an evaluation of these inputs was stopped: sample_model resumes its progress file
        log(f"arm {name}: eval resumed from its progress file ({earlier:.0f} s spent before)")
    else:  # what changed, by nested key (overrides.learning_rate, files.<path>)
        changed = ", ".join(changes(previous["inputs"], inputs[stage]) or ["nothing"]) if previous else "not run before"
        log(f"arm {name}: {stage} {'redone' if previous else 'started'} ({changed})")
    # a new model invalidates its evaluation; new training data is seen by the train stage's inputs
    for later in ("train", *SPLIT_STAGE.values()) if stage == "train" else (stage,):
        if later in state:
            stale[later] = state.pop(later)
    if stage == "train":  # a new model: its evaluation starts over
        for key in (f"{split}{end}" for split in SPLIT_STAGE.values()
                    for end in ("_started", "_seconds_before", "_part_started")):
            state.pop(key, None)
    if twin:
        take_twins_output(stage, arm_dir, arm_dir.parent / twin)
        what = "model" if stage == "train" else "evaluation"
        atomic_write_text(arm_dir / f"{stage}.log", f"shared: the {what} of run {twin}, made from the same inputs\n")
        # an evaluation's seconds are what it cost (the table's eval s), as a shared model's train_results say
        seconds = 0.0 if stage == "train" else json.loads((arm_dir.parent / twin / "stages.json").read_text())[
            stage].get("seconds", 0.0)
        state[stage] = {"inputs": inputs[stage], "seconds": seconds, "shared_from": twin}
        stale.pop(stage, None)
        atomic_write_json(arm_dir / "stages.json", state)
        inputs_named = "data, recipe, steps and seed" if stage == "train" else "model, file and settings"
        log(f"arm {name}: {stage} shared with {twin} (the same {inputs_named}: its {what}, hard-linked)")
        return "done"
    command = stage_command(stage, study, arm, inputs, arm_dir)
    if stage == "train":
        shutil.rmtree(arm_dir / "model", ignore_errors=True)  # no checkpoint of another recipe is resumed
    if stage == "calibrate":  # model_of's model as hard links: calibration.json is written into this copy only
        linked_tree(arm_dir.parent / arm.model_of / "model", arm_dir / "model")
    if evaluation and not unchanged(state.get(f"{stage}_started"), inputs[stage]):
        command.append("--restart")  # progress of other inputs is discarded; the same inputs resume
    if evaluation:
        state[f"{stage}_started"] = inputs[stage]
    started = time.time()
    if evaluation:  # what a stopped part spent is counted when it resumes
        state |= {f"{stage}_seconds_before": earlier, f"{stage}_part_started": started}
    atomic_write_json(arm_dir / "stages.json", state)
    with open(arm_dir / f"{stage}.log", "w", encoding="utf-8") as out:
        out.write(redact(" ".join(command)) + "\n")
        out.flush()
        # unbuffered: the stage's progress lines reach its log as they happen, not at exit
        code = subprocess.call(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent(os.getpid()))
    redact_file(arm_dir / f"{stage}.log")  # the stage's own lines too (they went straight to the file)
    seconds = time.time() - started + earlier
    if code != 0:
        tail = "".join((arm_dir / f"{stage}.log").read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        raise StageFailed(f"arm {name}: {stage} failed (exit {code}); the end of {arm_dir / f'{stage}.log'}:\n{tail}")
    state[stage] = {"inputs": inputs[stage], "seconds": seconds}
    stale.pop(stage, None)
    atomic_write_json(arm_dir / "stages.json", state)
    log(f"arm {name}: {stage} done in {seconds:.0f} s")
    return "done"


def kept_under_earlier_code(study: Study, stage: str, state: dict, now: dict) -> bool:
    """With --keep_trained: a finished data or training stage whose inputs differ only in the project code.
    Its record stays as it is, so the stages computed from it are judged against what really ran."""
    saved = state.get(stage, {}).get("inputs")
    return (study.keep_trained and stage in ("data", "train") and saved is not None
            and set(changes(saved, now)) <= {"code"})


def earlier_eval_seconds(state: dict, log_path: Path, stage: str = "eval") -> float:
    """The seconds the stopped parts of an evaluation spent: each part's until its log's last write (a part
    killed with the study recorded no end of its own)."""
    try:
        last_write = log_path.stat().st_mtime
    except OSError:
        return state.get(f"{stage}_seconds_before", 0.0)
    return state.get(f"{stage}_seconds_before", 0.0) + max(0.0, last_write - state.get(f"{stage}_part_started",
                                                                                      last_write))


def die_with_parent(parent: int):
    """A preexec_fn (None off Linux): the stage is killed when the study dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so a rerun never finds the last study's training still writing beside its own.
    prctl is looked up here, in the study: the forked child only calls it (no import after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm_death_signal() -> None:
        prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the study died before prctl took effect
            os._exit(1)
    return arm_death_signal


def evaluated_here(study: Study, arm: Arm) -> bool:
    """Whether the run is evaluated on the file this study run evaluates: not a calibrated run on the tune
    file, where its calibration was fitted (sample_model refuses that file)."""
    return arm.calibrate is None or study.split != "tune"


def run_arm(study: Study, arm: Arm, args, log, states: dict, kept: list[str], dry: bool = False) -> dict | None:
    """Run the run's stages that are not done; return its stages.json record. `states` holds the runs' before
    it (a model_of or init_from run reads its model's), `kept` gets "<run> <stage>" for each stage kept.
    dry: run nothing; the record if every stage is finished from the inputs it would have now, else None
    (a run that --arms left out is in the table only then)."""
    arm_dir = study.output_dir / "arms" / arm.name
    if not dry:
        arm_dir.mkdir(parents=True, exist_ok=True)
    try:
        state = json.loads((arm_dir / "stages.json").read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    for stage in ("data", "train", "calibrate", study.eval_stage):
        if stage == study.eval_stage and not evaluated_here(study, arm):
            if not dry:
                log(f"arm {arm.name}: {stage} left out (calibrated on this file: reported with --report_on test)")
            continue
        # after the stage before it ran (its output is an input); stages.json records the inputs redacted (an
        # eval api_base's user:pass), so they are compared redacted too
        try:
            inputs = redact_data(stage_inputs(study, arm, args, states))
        except (OSError, KeyError, DataError):  # dry: a run it depends on is unfinished
            if dry:
                return None
            raise
        if f"{arm.name} train" in kept and stage in inputs:  # judged by the model that really ran
            inputs[stage]["model"] = content_fingerprint(state["train"]["inputs"])
        if stage not in inputs:
            continue
        if dry:
            outcome = "skipped" if unchanged(state.get(stage, {}).get("inputs"), inputs[stage]) else \
                "kept" if kept_under_earlier_code(study, stage, state, inputs[stage]) else None
            if outcome is None:
                return None
        else:
            twin = same_stage(study, states, stage, inputs[stage])
            outcome = run_stage(stage, study, arm, inputs, state, arm_dir, log, twin)
        if outcome == "kept":
            kept.append(f"{arm.name} {stage}")
    return state


# --- the table -------------------------------------------------------------------------------------------

def tokens_trained(model_dir: Path) -> tuple[float | None, int | None]:
    """(training seconds, answer tokens trained) of a finished run: its train_results.json's train_runtime_s
    and answer_tokens_seen (what train_sft counted its steps to have consumed); (None, None) when unfinished."""
    try:
        results = json.loads((model_dir / "train_results.json").read_text())
        if "answer_tokens_seen" in results:
            return results["train_runtime_s"], results["answer_tokens_seen"]
        # A run trained before train_sft wrote answer_tokens_seen (studies finished before issue 44): the same
        # count derived from its steps, its saved batch settings and one epoch's answer tokens.
        trained = json.loads((model_dir / "training_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    seen = results["global_step"] * trained["batch_size"] * trained.get("grad_accumulation_steps", 1) * \
        results.get("world_size", 1)
    per_example = results["trained_tokens_per_epoch"] / max(1, results["train_samples"])
    return results["train_runtime_s"], round(per_example * seen)


# What a run's training cost, as each row reports it: seconds, answer tokens, optimizer steps, FLOPs (6·N·D).
COST_KEYS = ("train_seconds", "tokens_trained", "steps_trained", "train_flops")


def training_cost(model_dir: Path) -> dict:
    """COST_KEYS of a finished run, from its train_results.json: tokens_trained as tokens_trained() reads it,
    steps_trained its global_step, train_flops train_sft's 6·N·D estimate (None for a run trained before
    train_sft recorded it: not derived here, as its parameter count was not recorded). None when unfinished."""
    seconds, tokens = tokens_trained(model_dir)
    try:
        results = json.loads((model_dir / "train_results.json").read_text())
    except (OSError, json.JSONDecodeError):
        results = {}
    return {"train_seconds": seconds, "tokens_trained": tokens, "steps_trained": results.get("global_step"),
            "train_flops": results.get("train_flops")}


def labelled_pairs(train_file: Path) -> int | None:
    """How many distinct labelled pairs (premise, hypothesis) a run's own train.jsonl holds, whatever rows
    each became (a label row, a rationale row, both); None without the file (a run trained elsewhere)."""
    try:
        with open(train_file, encoding="utf-8") as rows:
            return len({(row.get("premise"), row.get("hypothesis")) for row in map(json.loads, rows)})
    except (OSError, json.JSONDecodeError):
        return None


def with_model_cost(row: dict, arm: Arm, rows: list[dict]) -> dict:
    """The row with what its model cost to train, from the rows before it: a model_of run's model's (both
    stages when that is a second stage), an init_from run's own stage plus its first stage's (None where
    either is unknown)."""
    model_of = next((earlier for earlier in rows if earlier["arm"] == arm.model_of), None)
    start = next((earlier for earlier in rows if earlier["arm"] == arm.init_from), None)
    if model_of:
        return row | {key: model_of.get(key) for key in (*COST_KEYS, "labelled_pairs")}
    if start:
        return row | {key: None if None in (row[key], start[key]) else row[key] + start[key] for key in COST_KEYS}
    return row


def arm_row(study: Study, arm: Arm, state: dict) -> tuple[dict, dict]:
    """(table row, {id: correct}) of one evaluated arm."""
    arm_dir = study.output_dir / "arms" / arm.name
    result = json.loads((arm_dir / f"{study.eval_stage}.json").read_text())
    records, metrics = result["records"], result["metrics"]
    labels = list(get_task(arm.eval["task"]).labels)
    intervals = bootstrap_intervals([r["true_label"] for r in records], [r["predicted_label"] for r in records],
                                    labels)
    model_dir = arm_dir.parent / (arm.model_of or arm.name) / "model"  # model_of: the model evaluated
    untrained = {"train_seconds": 0.0, "tokens_trained": 0, "steps_trained": 0, "train_flops": 0}
    cost = training_cost(model_dir) if "train" in state or arm.model_of else untrained
    # a second stage: the pairs of its own stage (its first stage's are a subset of the same draw)
    cost["labelled_pairs"] = labelled_pairs(arm_dir / "train.jsonl") if arm.trained else 0
    row = {"arm": arm.name, "arm_name": arm.arm_name, "seed": arm.seed, "trained": arm.trained,
           "n": metrics["n"], "accuracy": metrics["accuracy"],
           "accuracy_ci": intervals["accuracy"], "f1_macro": metrics["f1_macro"], "f1_macro_ci": intervals["f1_macro"],
           "parse_rate": metrics["parse_rate"], "stop_rate": metrics["stop_rate"], "ece": metrics.get("ece"),
           "calibrated_ece": metrics.get("calibrated_ece"),  # a calibrated run's, beside its raw ece
           "scoring": result["settings"].get("scoring", "generate"), "model_of": arm.model_of,
           "init_from": arm.init_from, "curve": arm.curve,
           **cost, "eval_seconds": state[study.eval_stage]["seconds"]}
    evaluated = {"test_file": result["settings"].get("test_file"),
                 "content": result["settings"].get("fingerprints", {}).get("test_file"),
                 "correct": {r["id"]: bool(r["correct"]) for r in records},
                 # what was evaluated: the same for two runs of one model (shared or identical training), scored alike
                 "evaluation": content_fingerprint(state[study.eval_stage]["inputs"])}
    return row, evaluated


def add_paired_differences(rows: list[dict], runs: list[Arm], correct: dict, baseline: str) -> None:
    """Each run against the baseline's run of the same seed (an untrained run: the baseline's first) and,
    where it has one, against its control's run of the same seed (`vs_control`, `vs_control_p`); then Holm's
    correction over every comparison with the same baseline run (`holm_p` beside the raw `mcnemar_p`,
    `vs_control_holm_p`): with several arms tried, the best one's raw p alone overstates the evidence."""
    baseline_runs = {run.seed: run.name for run in runs if run.arm_name == baseline}
    for row, run in zip(rows, runs):
        if run.arm_name != baseline and baseline_runs:
            base_name = baseline_runs.get(run.seed, next(iter(baseline_runs.values())))
            paired = compare(correct, base_name, row["arm"])
            row |= {"vs_baseline": paired["difference"], "vs_baseline_ci": paired["interval"],
                    "mcnemar_p": paired["mcnemar_p"], "baseline_run": base_name,
                    "discordant": (paired["only_baseline_right"] + paired["only_arm_right"]) / row["n"]}
        if run.control in correct:  # (a control --arms left out of the table: none)
            paired = compare(correct, run.control, row["arm"])
            row |= {"control": run.control, "vs_control": paired["difference"], "vs_control_ci": paired["interval"],
                    "vs_control_p": paired["mcnemar_p"]}
        if run.control_for:
            row["control_for"] = run.control_for
    add_holm(rows, correct)
    add_equal_steps(rows, correct, baseline)


def baseline_curve(rows: list[dict], baseline: str) -> set[str]:
    """The runs of the baseline's own recipe at its budgets: the baseline's "curve" (label_only at 200, 400,
    542 and 800 steps), or the baseline's runs alone where it lies on none; never a model scored again."""
    curve = next((row.get("curve") for row in rows if row["arm_name"] == baseline), None)
    return {row["arm"] for row in rows if row["trained"] and not row.get("model_of")
            and (row["arm_name"] == baseline or (curve is not None and row.get("curve") == curve))}


def add_equal_steps(rows: list[dict], correct: dict, baseline: str) -> None:
    """Each trained run off the baseline's curve (a recipe, a control) against the run of that curve with as
    many optimizer steps and the same seed, where there is one (`equal_steps_run`, `vs_equal_steps`,
    `vs_equal_steps_p`, `vs_equal_steps_holm_p`: Holm over a seed's): at equal compute, is the recipe
    above the baseline's curve? A second stage counts both stages' steps."""
    curve = baseline_curve(rows, baseline)
    at_steps = {(row["seed"], row["steps_trained"]): row["arm"] for row in rows
                if row["arm"] in curve and row["steps_trained"] is not None}
    matched = []
    for row in rows:
        match = at_steps.get((row["seed"], row["steps_trained"])) if row["steps_trained"] is not None else None
        if row["arm"] in curve or not row["trained"] or row.get("model_of") or match is None:
            continue
        paired = compare(correct, match, row["arm"])
        row |= {"equal_steps_run": match, "vs_equal_steps": paired["difference"],
                "vs_equal_steps_ci": paired["interval"], "vs_equal_steps_p": paired["mcnemar_p"]}
        matched.append(row)
    for seed in dict.fromkeys(row["seed"] for row in matched):  # a family per seed, as add_holm's
        family = [row for row in matched if row["seed"] == seed]
        for row, value in zip(family, holm_once([((correct[row["equal_steps_run"]]["evaluation"],
                                                    correct[row["arm"]]["evaluation"]), row["vs_equal_steps_p"])
                                                  for row in family])):
            row["vs_equal_steps_holm_p"] = value


def equal_steps_markdown(rows: list[dict], baseline: str) -> str:
    """The section of table.md that compares the runs at equal optimizer steps (add_equal_steps), or ""."""
    matched = [row for row in rows if row.get("equal_steps_run")]
    if not matched:
        return ""
    lines = ["\n## At equal optimizer steps\n",
             f"Each trained run against {baseline}'s recipe trained for as many optimizer steps (same seed); Holm "
             "over each seed's comparisons.\n", "| run | steps | accuracy | "
             f"{baseline}'s run | its accuracy | difference [paired 95% CI] | McNemar p | Holm p |", "|" + "---|" * 8]
    accuracy = {row["arm"]: row["accuracy"] for row in rows}
    for row in matched:
        lines.append(f"| {row['arm']} | {row['steps_trained']} | {row['accuracy']:.3f} | {row['equal_steps_run']} | "
                     f"{accuracy[row['equal_steps_run']]:.3f} | {interval(row['vs_equal_steps'], row['vs_equal_steps_ci'])} | "
                     f"{p_text(row['vs_equal_steps_p'])} | {p_text(row['vs_equal_steps_holm_p'])} |")
    return "\n".join(lines) + "\n"


def compare(correct: dict, base_name: str, name: str) -> dict:
    """paired_difference of run `name` against run `base_name`, both evaluated on the same file."""
    base, mine = correct[base_name], correct[name]
    if (base["test_file"], base["content"]) != (mine["test_file"], mine["content"]):
        raise DataError(f"arm {name} was evaluated on {mine['test_file']}, arm {base_name} on "
                        f"{base['test_file']}: no paired difference (content {mine['content']} vs "
                        f"{base['content']}); rerun the study")
    try:
        return paired_difference(base["correct"], mine["correct"])
    except ValueError as exc:
        raise DataError(f"arm {name} vs {base_name}: {exc}") from None


# (p key, Holm key) of each comparison a row can hold: one family per baseline run holds them all.
TESTS = (("mcnemar_p", "holm_p"), ("vs_control_p", "vs_control_holm_p"))


def add_holm(rows: list[dict], correct: dict) -> None:
    """Holm-adjust, per baseline run, every p of the rows compared with it (vs the baseline and vs a control).
    A comparison of the same two evaluations as another (two arms' identical first-stage controls, each against
    the baseline) is one hypothesis: counted once in the family, its adjusted p given to both rows."""
    against = {"mcnemar_p": "baseline_run", "vs_control_p": "control"}
    for base in dict.fromkeys(row.get("baseline_run") for row in rows):
        family = [(row, p, holm) for row in rows if row.get("baseline_run") == base
                  for p, holm in TESTS if row.get(p) is not None]
        adjusted = holm_once([((correct[row[against[p]]]["evaluation"], correct[row["arm"]]["evaluation"]), row[p])
                              for row, p, _ in family])
        for (row, _, holm), value in zip(family, adjusted):
            row[holm] = value


def holm_once(tests: list[tuple[tuple, float]]) -> list[float]:
    """The Holm-adjusted p of each (the two evaluations compared, raw p) of one family. Members that compare
    the same two evaluations (two arms' identical controls, each against the baseline) are one hypothesis,
    counted once with the larger of their p (a repeat that came out otherwise: a GPU's nondeterminism)."""
    worst = {}
    for compared, p in tests:
        worst[compared] = max(p, worst.get(compared, p))
    adjusted = dict(zip(worst, holm_adjust(list(worst.values()))))
    return [adjusted[compared] for compared, _ in tests]


def interval(value, ci) -> str:
    return "-" if value is None else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def p_text(p) -> str:
    return "-" if p is None else f"{p:.3g}"


def ece_text(row: dict) -> str:
    """The row's ECE; a calibrated run's as raw -> calibrated."""
    if row["ece"] is None:
        return "-"
    return f"{row['ece']:.3f}" if row.get("calibrated_ece") is None else f"{row['ece']:.3f} → {row['calibrated_ece']:.3f}"


def markdown_table(rows: list[dict], baseline: str) -> str:
    header = ["arm", "seed", "n", "accuracy [95% CI]", "macro-F1 [95% CI]", "parse", "stop", "ECE",
              f"accuracy - {baseline} [paired 95% CI]", "McNemar p", "Holm p",
              "accuracy - its control [paired 95% CI]", "Holm p (control)", "train s", "tokens trained", "steps",
              "train FLOPs", "eval s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        control = f"{interval(r['vs_control'], r['vs_control_ci'])} ({r['control']})" if r.get("control") else "-"
        cells = [r["arm"], "-" if r["seed"] is None else str(r["seed"]), str(r["n"]), interval(r["accuracy"], r["accuracy_ci"]), interval(r["f1_macro"], r["f1_macro_ci"]),
                 f"{r['parse_rate']:.3f}", f"{r['stop_rate']:.3f}", ece_text(r),
                 interval(r.get("vs_baseline"), r.get("vs_baseline_ci")),
                 p_text(r.get("mcnemar_p")), p_text(r.get("holm_p")), control, p_text(r.get("vs_control_holm_p")),
                 f"{r['train_seconds']:.0f}" if r["train_seconds"] is not None else "-",
                 str(r["tokens_trained"]) if r["tokens_trained"] is not None else "-",
                 str(r["steps_trained"]) if r["steps_trained"] is not None else "-",
                 f"{r['train_flops']:.3g}" if r["train_flops"] is not None else "-", f"{r['eval_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(comparisons: list[tuple[str, tuple, tuple | None]], baseline: str) -> str:
    """One line on the arm that gained most over the baseline, judged against its compute-matched control
    where it has one (the gain over the baseline alone cannot tell the recipe from the extra training).
    comparisons: (arm, (difference, interval, Holm p) vs the baseline, the same vs its control or None)."""
    if not comparisons:
        return ""
    arm, vs_baseline, vs_control = max(comparisons, key=lambda c: c[1][0])
    diff, ci, p = vs_control or vs_baseline
    if vs_control:
        against = "its compute-matched control"
        meaning = "no gain beyond the extra training" if p >= 0.05 else \
            "a gain beyond the extra training" if diff > 0 else "worse than the extra training alone"
    else:
        against = baseline
        meaning = f"no difference from {baseline} shown" if p >= 0.05 else \
            f"better than {baseline}" if diff > 0 else f"worse than {baseline}"
    return f"**Verdict:** {arm} vs {against}: {diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}], Holm p {p:.2g}: {meaning}.\n\n"


def row_comparisons(rows: list[dict], baseline: str) -> list[tuple]:
    """verdict()'s comparisons of the table's trained runs that are no control and not the baseline's own
    recipe at another budget (its curve: that it gains with more steps is no recipe's gain)."""
    curve = baseline_curve(rows, baseline)
    return [(r["arm"], (r["vs_baseline"], r["vs_baseline_ci"], r["holm_p"]),
             (r["vs_control"], r["vs_control_ci"], r["vs_control_holm_p"]) if r.get("control") else None)
            for r in rows if r.get("vs_baseline") is not None and r["trained"] and not r.get("control_for")
            and r["arm"] not in curve]


def seed_summary(rows: list[dict], runs: list[Arm], correct: dict | None = None) -> list[dict]:
    """Per arm, its runs' scores over seeds: mean, standard deviation and 95% t interval, on how many
    seeds it beat the baseline's run of the same seed, and the pooled paired comparison over every seed's
    pairs at once (`vs_baseline_pooled`: the examples resampled alike in every seed, a stratified McNemar p),
    which with three seeds says far more than a t interval with two degrees of freedom."""
    summary, families = [], {}
    for arm in dict.fromkeys(run.arm_name for run in runs):
        mine = [row for row, run in zip(rows, runs) if run.arm_name == arm]
        entry = {"arm": arm, "seeds": [row["seed"] for row in mine]}
        for key, bounds in (("accuracy", (0, 1)), ("f1_macro", (0, 1)), ("ece", (0, 1)), ("vs_baseline", (-1, 1)),
                            ("vs_control", (-1, 1)), ("vs_equal_steps", (-1, 1))):
            values = [row[key] for row in mine if row.get(key) is not None]
            if values:
                stats = mean_over_seeds(values, bounds)
                entry |= {key: stats["mean"], f"{key}_sd": stats["sd"], f"{key}_ci": stats["interval"]}
        if "vs_baseline" in entry:
            entry["seeds_better"] = sum(row["vs_baseline"] > 0 for row in mine)
        entry |= {"trained": mine[0].get("trained"), "control_for": mine[0].get("control_for")}
        for key, against in (("vs_baseline", "baseline_run"), ("vs_control", "control"),
                             ("vs_equal_steps", "equal_steps_run")):
            if correct and key in entry:
                pairs = [(row[against], row["arm"]) for row in mine if row.get(against)]
                entry[f"{key}_pooled"] = pooled(correct, pairs)
                # the evaluations compared: the same for two arms' identical controls (holm_once)
                compared = tuple((correct[base]["evaluation"], correct[name]["evaluation"]) for base, name in pairs)
                families.setdefault(key == "vs_equal_steps", []).append((compared, entry[f"{key}_pooled"]))
        summary.append(entry)
    # Holm over every pooled comparison with the baseline or a control, and over those at equal steps (as in
    # table.md: two families)
    for family in families.values():
        for (_, result), value in zip(family, holm_once([(compared, result["mcnemar_p"])
                                                         for compared, result in family])):
            result["holm_p"] = value
    return summary


def pooled_comparisons(summary: list[dict], rows: list[dict], baseline: str) -> list[tuple]:
    """verdict()'s comparisons over seeds (pooled) of the trained arms that are no control and not on the
    baseline's curve (row_comparisons)."""
    def of(result):
        return result and (result["difference"], result["interval"], result["holm_p"])
    curve = {row["arm_name"] for row in rows if row["arm"] in baseline_curve(rows, baseline)}
    return [(e["arm"], of(e["vs_baseline_pooled"]), of(e.get("vs_control_pooled"))) for e in summary
            if "vs_baseline_pooled" in e and e["trained"] and not e["control_for"] and e["arm"] not in curve]


def pooled(correct: dict, pairs: list[tuple[str, str]]) -> dict:
    """pooled_paired_difference over (baseline run, run) pairs, the examples aligned by id on the first
    baseline run's order (every run was evaluated on the same file: add_paired_differences checked it)."""
    ids = list(correct[pairs[0][0]]["correct"])
    try:
        return pooled_paired_difference([([correct[base]["correct"][i] for i in ids],
                                          [correct[name]["correct"][i] for i in ids]) for base, name in pairs])
    except (KeyError, ValueError) as exc:
        raise DataError(f"runs {', '.join(name for _, name in pairs)}: no pooled comparison over seeds (the "
                        f"runs were evaluated on other examples: {exc}); rerun the study") from None


def seeds_markdown(summary: list[dict], baseline: str) -> str:
    header = ["arm", "seeds", "accuracy mean [95% t CI]", "sd", "macro-F1 mean", "ECE mean",
              f"accuracy - {baseline}: mean [95% t CI]", "pooled over seeds [paired 95% CI], stratified McNemar p",
              "seeds better", "accuracy - its control: mean [95% t CI]", "pooled vs its control",
              f"pooled vs {baseline}'s curve at equal steps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        seeds = ", ".join("-" if seed is None else str(seed) for seed in e["seeds"])
        better = f"{e['seeds_better']} of {len(e['seeds'])}" if "seeds_better" in e else "-"
        cells = [e["arm"], seeds, interval(e["accuracy"], e["accuracy_ci"]),
                 "-" if e["accuracy_sd"] is None else f"{e['accuracy_sd']:.3f}", f"{e['f1_macro']:.3f}",
                 f"{e['ece']:.3f}" if "ece" in e else "-", interval(e.get("vs_baseline"), e.get("vs_baseline_ci")),
                 pooled_text(e.get("vs_baseline_pooled")), better,
                 interval(e.get("vs_control"), e.get("vs_control_ci")), pooled_text(e.get("vs_control_pooled")),
                 pooled_text(e.get("vs_equal_steps_pooled"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pooled_text(result: dict | None) -> str:
    if result is None:
        return "-"
    holm = f", Holm p {p_text(result['holm_p'])}" if "holm_p" in result else ""
    return f"{interval(result['difference'], result['interval'])}, p {p_text(result['mcnemar_p'])}{holm}"


def csv_text(rows: list[dict]) -> str:
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if not k.endswith("_ci")}
        for key in ("accuracy", "f1_macro", "vs_baseline", "vs_control", "vs_equal_steps"):
            ci = r.get(f"{key}_ci")
            row[f"{key}_low"], row[f"{key}_high"] = (ci[0], ci[1]) if ci else (None, None)
        flat.append(row)
    columns = list(dict.fromkeys(k for row in flat for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def plot(rows: list[dict], out_dir: Path, title: str, suffix: str = "") -> None:
    """accuracy.png (each run's accuracy with its interval) and accuracy_vs_compute.png (compute_figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    for i, r in enumerate(rows):
        ax.errorbar([i], [r["accuracy"]], yerr=accuracy_errors(r), fmt="o", capsize=4)
    ax.set(xticks=range(len(rows)), xticklabels=[r["arm"] for r in rows], ylabel="accuracy (95% CI)", title=title)
    fig.tight_layout()
    save_figure(fig, out_dir / f"accuracy{suffix}.png")
    save_figure(compute_figure(plt, rows, title), out_dir / f"accuracy_vs_compute{suffix}.png")
    plt.close("all")


def accuracy_errors(row: dict) -> list[list[float]]:
    """The row's 95% interval as matplotlib's yerr: [[below], [above]]."""
    return [[row["accuracy"] - row["accuracy_ci"][0]], [row["accuracy_ci"][1] - row["accuracy"]]]


# The panels of accuracy_vs_compute.png: (the row's key, the axis's label).
COMPUTE_AXES = (("steps_trained", "optimizer steps (a second stage: both stages)"),
                ("train_flops", "training FLOPs (6 x parameters x tokens processed)"),
                ("labelled_pairs", "labelled pairs trained on (prepare_ft_data.py --max-pairs)"))


def compute_figure(plt, rows: list[dict], title: str):
    """Accuracy (95% CI) against optimizer steps, training FLOPs and the labelled pairs trained on (the axis of
    Distilling step-by-step, arXiv 2305.02301), one labelled point per run; the runs of one curve (the arms
    that share a "curve") joined by a line per seed, in budget order, where they differ on that axis, so a
    recipe's curve can be compared with another's at equal compute or data. A run with no value on an axis
    (the FLOPs of a run trained before train_sft recorded them) is left out of that panel."""
    fig, axes = plt.subplots(1, len(COMPUTE_AXES), figsize=(19, 5.5))
    groups = list(dict.fromkeys(r.get("curve") or r["arm_name"] for r in rows))  # a curve's runs share a colour
    colour = {group: f"C{i % 10}" for i, group in enumerate(groups)}
    for ax, (key, label) in zip(axes, COMPUTE_AXES):
        shown = [r for r in rows if r.get(key) is not None]
        for r in shown:
            ax.errorbar([r[key]], [r["accuracy"]], yerr=accuracy_errors(r), fmt="o", capsize=3, markersize=4,
                        color=colour[r.get("curve") or r["arm_name"]])
        at_point = {}  # runs on the same point (a model scored again, identical first stages): one label
        for r in shown:
            at_point.setdefault((r[key], r["accuracy"]), []).append(r["arm"])
        for (x, y), names in at_point.items():
            ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
        curves = {}
        for r in shown:
            if r.get("curve"):
                curves.setdefault((r["curve"], r["seed"]), []).append(r)
        for (curve, seed), members in list(curves.items()):
            if len({r[key] for r in members}) < 2:  # all at one value on this axis (the pairs of a steps curve)
                del curves[(curve, seed)]
        seeds = list(dict.fromkeys(seed for _, seed in curves))
        for (curve, seed), members in curves.items():
            members.sort(key=lambda r: r[key])
            ax.plot([r[key] for r in members], [r["accuracy"] for r in members], color=colour[curve],
                    linestyle=("-", "--", ":", "-.")[seeds.index(seed) % 4], label=f"{curve}, seed {seed}")
        ax.set(xlabel=label, ylabel="accuracy (95% CI)", title=title)
        if curves:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    partial = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(partial, dpi=100)
    partial.replace(path)


def write_table(study: Study, states: dict, note: str = "") -> tuple[list[dict], list[dict] | None]:
    """table.* (one row per run), seeds.* when an arm ran on several seeds, the plots and the results page;
    `note` (markdown) opens the tables under their title."""
    left_out = [run.name for run in study.runs if not evaluated_here(study, run)]
    if left_out:  # the calibrated runs, on the file their calibration was fitted on
        note += (f"**Not evaluated on this file:** {', '.join(left_out)} (calibrated on it; their rows are in the "
                 "test file's table).\n\n")
    study = dataclasses.replace(study, runs=tuple(run for run in study.runs if evaluated_here(study, run)))
    rows, correct = [], {}
    for arm in study.runs:
        row, correct[arm.name] = arm_row(study, arm, states[arm.name])
        rows.append(with_model_cost(row, arm, rows))
    add_paired_differences(rows, study.runs, correct, study.baseline)
    out = study.output_dir
    partial = out / ".table.partial"  # every file written here first, then all renamed: a failed report
    shutil.rmtree(partial, ignore_errors=True)  # leaves the last complete tables, never a mix
    partial.mkdir()
    try:
        summary = write_table_files(study, rows, correct, partial, note)
        for file in partial.iterdir():
            file.replace(out / file.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    # the plot accuracy_vs_compute replaced (issue 42), and, on a rerun with one seed, an older summary: neither
    # describes the table now
    stale = [f"accuracy_vs_tokens{study.suffix}.png"] + [f"seeds{study.suffix}.{end}" for end in ("json", "md")
                                                         if summary is None]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    return rows, summary


def write_table_files(study: Study, rows: list[dict], correct: dict, folder: Path, note: str) -> list[dict] | None:
    """table.*, seeds.* (when an arm ran on several seeds, returning their summary), the plots and the
    results page, into `folder`; the test file's are table_test.* and so on. `note` opens the tables."""
    sfx, where = study.suffix, f"{study.model} on {study.eval_file} (the {study.split} file)"
    atomic_write_json(folder / f"table{sfx}.json", rows)
    atomic_write_text(folder / f"table{sfx}.csv", csv_text(rows))
    atomic_write_text(folder / f"table{sfx}.md", f"# Study {study.name}: {where}\n\n{note}"
                      + verdict(row_comparisons(rows, study.baseline), study.baseline)
                      + markdown_table(rows, study.baseline) + equal_steps_markdown(rows, study.baseline))
    summary = None
    if len(study.runs) > len({run.arm_name for run in study.runs}):  # some arm ran on several seeds
        summary = seed_summary(rows, study.runs, correct)
        atomic_write_json(folder / f"seeds{sfx}.json", summary)
        atomic_write_text(folder / f"seeds{sfx}.md", f"# Study {study.name} over seeds: {where}\n\n{note}"
                          + verdict(pooled_comparisons(summary, rows, study.baseline), study.baseline)
                          + seeds_markdown(summary, study.baseline))
    plot(rows, folder, study.name, sfx)
    arms = study.output_dir / "arms"
    write_report([arms / arm.name / f"{study.eval_stage}.json" for arm in study.runs],
                 folder / f"report{sfx}.html",
                 title=f"Study {study.name}: {study.model} on {Path(study.eval_file).name}")
    return summary


# --- the test ledger ---------------------------------------------------------------------------------------

def record_test_look(study: Study) -> str:
    """Append this report on the test file, before it evaluates anything, to <output_dir>/test_ledger.json (time, runs, the fingerprints
    of the code and configs) and return the tables' line saying how often, and for which arms, the test
    file has been consulted: a reader sees how many looks the reported numbers took."""
    ledger = study.output_dir / "test_ledger.json"
    try:
        looks = json.loads(ledger.read_text()) if ledger.exists() else []
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{ledger}: not a readable ledger ({exc}); restore it (it counts the looks at the test "
                        "file) before reporting on the test file again") from None
    if not isinstance(looks, list):
        raise DataError(f"{ledger}: not a list of looks; restore it before reporting on the test file again")
    looks.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "test_file": study.test_file,
                  "test_file_content": path_fingerprint(in_repo(study.test_file)),
                  "arms": [run.name for run in study.runs],
                  "code": {stage: source_fingerprint(stage) for stage in STAGE_SOURCES},
                  "config": study.config_path, "config_content": path_fingerprint(Path(study.config_path)),
                  # the runs as loaded: a config's arms may come from study/nli_arms.py, which config_content misses
                  "runs_content": content_fingerprint([dataclasses.asdict(run) for run in study.runs]),
                  "train_config": resolved_config_fingerprint(study)})
    atomic_write_json(ledger, looks)
    counts = {}
    for look in looks:
        for arm in look["arms"]:
            counts[arm] = counts.get(arm, 0) + 1
    arms = ", ".join(f"{arm} {count}x" for arm, count in counts.items())
    return (f"**The test file has been consulted {len(looks)} time{'s' * (len(looks) != 1)}** "
            f"(`test_ledger.json`, this report included): {arms}.\n\n")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.plan:
            return print_plan(args)
        if args.config is None:
            raise DataError("--config is required (a study config, e.g. study/nli_smollm2.py)")
        study = load_study(args.config, args)
        check_writes_clear_of_inputs(study)
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    try:
        with output_lock(study.output_dir):  # one study writes a folder at a time
            return run_study(study, args)
    except DataError as exc:  # the lock is held
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2


# --- the power plan (--plan) ---------------------------------------------------------------------------

def print_plan(args) -> int:
    """Print, per arm compared with the baseline, the evaluation pairs (McNemar, nli_finetune.metrics.pairs_needed)
    and seeds (t test over per-seed differences, seeds_needed) needed to detect --effect with 80% power: from the
    assumed --discordant / --seed_sd, else from the finished study's table (its discordant-pair rate against
    the baseline, and the seed-to-seed sd of the paired difference). Runs nothing; returns 0."""
    if args.effect is None or not 0 < abs(args.effect) < 1:
        raise DataError("--plan needs --effect, an accuracy difference between 0 and 1 (e.g. 0.03)")
    for flag, value in (("--discordant", args.discordant), ("--seed_sd", args.seed_sd)):
        if value is not None and not 0 <= value <= 1:
            raise DataError(f"{flag} must be between 0 and 1, got {value}")
    if args.discordant is not None or args.seed_sd is not None:
        rates = [{"arm": "(assumed)", "discordant": args.discordant, "seed_sd": args.seed_sd}]
    elif args.config is None:
        raise DataError("--plan needs --config (a finished study) or --discordant and/or --seed_sd")
    else:
        rates = observed_rates(load_study(args.config, args))
    plans = [plan_row(rate, args.effect) for rate in rates]
    print(f"to detect an accuracy difference of {args.effect:+.3f} with 80% power (two-sided, alpha 0.05):")
    print(format_table(plans, ["arm", "discordant", "pairs_needed", "seed_sd", "seeds_needed"]))
    return 0


def observed_rates(study: Study) -> list[dict]:
    """Per arm of a finished study: the mean discordant-pair rate against the baseline over its runs, and the
    sample sd over seeds of its paired difference (None with one seed)."""
    table = study.output_dir / f"table{study.suffix}.json"  # --report_on test: the test file's table
    try:
        rows = json.loads(table.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{table}: no finished study to plan from ({exc}); run it first or give --discordant "
                        "and --seed_sd") from None
    rates = []
    for arm in dict.fromkeys(row.get("arm_name", row["arm"]) for row in rows if row.get("discordant") is not None):
        mine = [row for row in rows if row.get("arm_name", row["arm"]) == arm]
        sd = mean_over_seeds([row["vs_baseline"] for row in mine])["sd"]
        rates.append({"arm": arm, "discordant": sum(row["discordant"] for row in mine) / len(mine), "seed_sd": sd})
    if not rates:
        raise DataError(f"{table}: no arm compared with the baseline pair by pair (rerun the study to record "
                        "its discordant pairs)")
    return rates


def plan_row(rate: dict, effect: float) -> dict:
    row = dict(rate)
    if rate["discordant"] is not None:
        row["pairs_needed"] = pairs_needed(effect, rate["discordant"]) if abs(effect) <= rate["discordant"] \
            else "none (effect > discordant rate)"
    if rate["seed_sd"] is not None:
        row["seeds_needed"] = seeds_needed(effect, rate["seed_sd"]) or "over 1000"
    return row


def with_finished_runs(study: Study, args, states: dict, kept: list[str]) -> tuple[Study, list[str]]:
    """After an --arms run: the study with every run of its config, in the config's order, that this run ran or
    that finished every stage from the inputs it would have now (their records added to `states`), and the
    names of the others. So a report on some arms adds their rows to the study's tables instead of replacing
    them with those arms alone."""
    every_run = load_study(study.config_path, argparse.Namespace(**{**vars(args), "arms": None})).runs
    finished, missing = [], []
    for run in every_run:
        if run.name not in states:
            state = run_arm(study, run, args, None, states, kept, dry=True)
            if state is None:
                missing.append(run.name)
                continue
            states[run.name] = state
        finished.append(run)
    return dataclasses.replace(study, runs=tuple(finished)), missing


def run_study(study: Study, args) -> int:
    study.output_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(study.output_dir / "study.log", "a", encoding="utf-8")

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {redact(message)}"
        print(line, file=sys.stderr, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    arm_count = len({run.arm_name for run in study.runs})
    log(f"study {study.name}: {arm_count} arms in {len(study.runs)} runs, model {study.model}, eval on the {study.split} file {study.eval_file}")
    states, kept = {}, []  # per run its stages.json record; "<run> <stage>" of each stage --keep_trained kept
    try:
        # every report on the test file is a look, counted before its first evaluation (one that is stopped
        # has still been seen), tune ones are not; the tables say how many
        note = record_test_look(study) if study.split == "test" else ""
        for arm in progress_bar(study.runs, total=len(study.runs), desc="arms", unit="arm"):
            states[arm.name] = run_arm(study, arm, args, log, states, kept)
        if args.arms:  # the tables stay the whole study's: the other runs finished from their current inputs
            study, missing = with_finished_runs(study, args, states, kept)
            if missing:
                note += (f"**Not in this table:** {', '.join(missing)} (not finished on this file from their current "
                         "inputs; a run without --arms runs them).\n\n")
        if kept:  # a reader must know which models the current code did not produce
            note += f"**Kept from earlier project code (--keep_trained):** {', '.join(kept)}.\n\n"
        rows, summary = write_table(study, states, note)
    except StageFailed as exc:
        log(str(exc))
        return 1
    except DataError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        log_file.close()
    columns = ["arm", "seed", "n", "accuracy", "f1_macro", "parse_rate", "ece", "vs_baseline", "mcnemar_p", "train_seconds",
               "tokens_trained", "steps_trained", "eval_seconds"]
    print(format_table(rows, columns))
    if summary:
        print("\nover seeds (mean; sd; difference from the baseline's run of the same seed):")
        print(format_table([{**e, "seeds": len(e["seeds"])} for e in summary],
                           ["arm", "seeds", "accuracy", "accuracy_sd", "f1_macro", "vs_baseline", "seeds_better"]))
    table = f"{'seeds' if summary else 'table'}{study.suffix}.md"
    print(f"study: {arm_count} arms, {len(rows)} runs -> {study.output_dir / table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
