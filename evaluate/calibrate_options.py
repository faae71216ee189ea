"""The command line of `python -m evaluate.calibrate`, apart from the script so that the study runner checks a
calibrated arm's options with the parser itself at load (scripts/study.py; no script imports another).

    args = build_parser().parse_args(["--model", "models/X", "--calib_file", "tune.csv"])
"""

import argparse

from nli_finetune.cli import ArgumentParser, at_least
from prompts import TASKS


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m evaluate.calibrate", description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model folder (adapter, merged model): calibration.json goes there")
    p.add_argument("--calib_file", required=True, help="the tuning split: CSV or JSONL with the task's inputs and labels")
    p.add_argument("--target_accuracy", type=probability, default=None,
                   help="also choose the confidence threshold whose answered tuning examples reach this accuracy")
    p.add_argument("--task", default=None, choices=sorted(TASKS), help="default: the model contract's task, else nli")
    p.add_argument("--folds", type=at_least(2), default=5, help="cross-validation folds: which calibration is kept")
    p.add_argument("--scores_file", default=None,
                   help="sample_model's results for the tuning file (default results/<model>-<file>.calibration-scores.json)")
    p.add_argument("--batch_size", type=at_least(1), default=8)
    p.add_argument("--max_prompt_tokens", type=at_least(1), default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--restart", action="store_true", help="score the tuning file again from the start")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p
