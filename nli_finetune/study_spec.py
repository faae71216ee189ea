"""An ablation study as scripts/study.py reads it: a `Study` of `Arm`s, typed and frozen at load.

A study config (study/*.py) writes each arm as a plain dict; `arm_from_config` turns one into an `Arm`,
refusing a key it does not know (with the closest one) and a field of the wrong kind. The runner then
adds runs of its own, each an `Arm` too (dataclasses.replace): an arm's run per seed, and the
compute-matched controls (`<arm>__control`, `<arm>__control_stage1`).

    from nli_finetune.study_spec import arm_from_config
    arm_from_config({"name": "label_only", "data": [...], "train": {...}, "eval": {"task": "nli_label"}}, where)
"""

import difflib
from dataclasses import dataclass
from pathlib import Path

from nli_finetune.data_io import DataError

# Where each split's evaluation goes: the tune file's in eval.json (stage "eval"), the test file's in
# eval_test.json (stage "eval_test"), each with its own table.
SPLIT_STAGE = {"tune": "eval", "test": "eval_test"}
CONTROL_MATCHES = ("steps", "tokens")


@dataclass(frozen=True)
class Arm:
    """One run of a study: a config's arm at one seed, or a control the runner added for one."""
    name: str                         # the run's name: its folder arms/<name>/ and its row in the tables
    arm_name: str                     # the arm it is a run of (the name it has over seeds; a control is its own arm)
    eval: dict                        # sample_model options, --key value (at least a "task")
    data: tuple | None = None         # prepare_ft_data.py options; None: no data of its own (untrained, model_of)
    train: dict | None = None         # --key value overrides of the study's train_config; None: not trained
    model_of: str | None = None       # the earlier run whose model it evaluates, without training one
    init_from: str | None = None      # the earlier run whose adapter its training starts from (a second stage)
    control: str | None = None        # the run it is compared with as its compute-matched control
    automatic_control: bool = True    # whether the runner may add that control (False: the config named one, or None)
    control_match: str = "steps"      # what its automatic control matches: optimizer "steps" or answer "tokens"
    curve: str | None = None          # a name the arms of one recipe at several budgets share: accuracy_vs_compute.png
                                      # joins their runs (of one seed) by a line; None: a point of its own
    calibrate: dict | None = None     # a model_of arm: evaluate.calibrate options (target_accuracy, folds); its
                                      # model_of's model with a calibration fitted on the tune file; None: raw
    seed: int | None = None           # the seed it trains with (None: untrained, or not yet a run)
    control_for: str | None = None    # a control: the arm it is the control of
    steps_of: str | None = None       # a control: the run whose optimizer steps it trains for
    tokens_per_step_of: str | None = None  # a token-matched control: the baseline run whose rows it trains on

    @property
    def trained(self) -> bool:
        return self.train is not None


@dataclass(frozen=True)
class Study:
    """A study config, checked, with the command line's options applied."""
    name: str                   # the study's name (its default folder: results/study/<name>/)
    config_path: str            # the study config it was read from
    model: str                  # the model every run starts from (--model, else the config's)
    train_config: str           # the train/configs/ file (or a path) every run's training starts from
    baseline: str               # the arm every other one is compared with
    tune_file: str              # where recipes are compared (the config's tune_file, or eval_file, its old name)
    test_file: str | None       # where the chosen ones are reported (--report_on test); None: the config has none
    split: str                  # the file this run evaluates on: "tune" or "test" (--report_on)
    runs: tuple[Arm, ...]       # what runs, in order: each selected arm per seed, followed by its controls
    output_dir: Path            # where it all goes (--output_dir, else results/study/<name>/), absolute
    keep_trained: bool = False  # --keep_trained: keep finished stages whose only change is the project code

    @property
    def eval_file(self) -> str:
        """The file this run evaluates every run on."""
        return self.tune_file if self.split == "tune" else self.test_file

    @property
    def eval_stage(self) -> str:
        """The evaluation stage of that file: "eval" (eval.json) or "eval_test" (eval_test.json)."""
        return SPLIT_STAGE[self.split]

    @property
    def suffix(self) -> str:
        """The end of the name of that file's outputs: table.md, or table_test.md for the test file."""
        return "" if self.split == "tune" else "_test"


# The keys an arm of a study config may set (the others are the runner's own).
CONFIG_KEYS = ("name", "data", "train", "eval", "model_of", "init_from", "control", "control_match", "curve",
               "calibrate")


def arm_from_config(arm, where: str) -> Arm:
    """A config's arm (a dict) as an Arm, checked for what it alone can tell: its keys, their kinds, and
    that a trained arm has data, a model_of arm neither data nor training. `where` names it in errors."""
    if not isinstance(arm, dict) or not isinstance(arm.get("name"), str) or not arm["name"].isidentifier():
        raise DataError(f"{where}: an arm is a dict with a 'name' (letters, digits, _)")
    for key in arm:
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1, cutoff=0.5)
            raise DataError(f"{where}: unknown field {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" (an arm's fields: {', '.join(CONFIG_KEYS)})")
    if not isinstance(arm.get("eval"), dict) or "task" not in arm["eval"]:
        raise DataError(f"{where}: field 'eval' must be a dict with at least a 'task'")
    if arm.get("train") is not None and not isinstance(arm["train"], dict):
        raise DataError(f"{where}: field 'train' must be a dict of training options, or None (untrained)")
    if "curve" in arm and (not isinstance(arm["curve"], str) or not arm["curve"]):
        raise DataError(f"{where}: field 'curve' must be a name (the arms of one curve share it), got {arm['curve']!r}")
    for key in ("model_of", "init_from", "control"):  # control alone may be None: no control
        if key in arm and not isinstance(arm[key], str) and not (key == "control" and arm[key] is None):
            raise DataError(f"{where}: field {key!r} must be an arm's name, got {arm[key]!r}")
    if "model_of" in arm:
        if "data" in arm or "train" in arm:
            raise DataError(f"{where}: an arm with 'model_of' has no 'data' or 'train' of its own")
    elif arm.get("train") is not None and not isinstance(arm.get("data"), list):
        raise DataError(f"{where}: a trained arm needs 'data', a list of prepare_ft_data.py options")
    if "calibrate" in arm:
        if not isinstance(arm["calibrate"], dict) or "model_of" not in arm:
            raise DataError(f"{where}: field 'calibrate' is a dict of evaluate.calibrate options (e.g. "
                            "{\"target_accuracy\": 0.9}) on an arm with 'model_of' (the model it calibrates)")
        if arm["eval"].get("scoring") != "logprob":
            raise DataError(f"{where}: an arm with 'calibrate' scores its labels: set \"scoring\": \"logprob\" in 'eval'")
    if "init_from" in arm and arm.get("train") is None:
        raise DataError(f"{where}: an arm with 'init_from' trains ('data' and 'train') from that arm's adapter")
    if arm.get("control_match", "steps") not in CONTROL_MATCHES:
        raise DataError(f"{where}: field 'control_match' must be \"steps\" or \"tokens\", got {arm['control_match']!r}")
    return Arm(name=arm["name"], arm_name=arm["name"], eval=dict(arm["eval"]),
               data=tuple(arm["data"]) if isinstance(arm.get("data"), list) else None,
               train=dict(arm["train"]) if arm.get("train") is not None else None,
               model_of=arm.get("model_of"), init_from=arm.get("init_from"), control=arm.get("control"),
               automatic_control="control" not in arm, control_match=arm.get("control_match", "steps"),
               curve=arm.get("curve"), calibrate=dict(arm["calibrate"]) if "calibrate" in arm else None)
