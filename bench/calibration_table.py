"""Raw against calibrated probabilities of several models: fit on a tuning split, measure on a test split.

    python bench/calibration_table.py --work /tmp/calib \
        --model untrained=models/converted/SmolLM2-135M-Instruct.Q4_1 \
        --model label_only=results/study/nli_smollm2_two_stage/arms/label_only/model \
        --model two_stage=results/study/nli_smollm2_two_stage/arms/label_after_rationales/model

Each model folder is linked into --work (hard links: the study's own folders get no calibration.json, so
its scored arms keep evaluating raw), then `python -m evaluate.calibrate --target_accuracy 0.90` fits a
temperature on --tune and picks the confidence threshold that reaches 90% accuracy there, and
`python -m evaluate.sample_model --scoring logprob` scores --test with that calibration and threshold.
Both are the commands a user runs, resumable. The table gives, on the test split, raw and calibrated ECE,
NLL, Brier, AURC and the coverage at 90% accuracy (95% bootstrap intervals from the summary), and whether
the threshold chosen on the tuning split held: the coverage and the accuracy of the answered examples on
the test split (95% Wilson intervals). A measurement, not a test: the numbers are in docs/inference.md.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import linked_tree

TUNE = REPO_ROOT / "data/sample/dev_300_tune.csv"
TEST = REPO_ROOT.parent / "shared/data/nli/dev_eval_1000.csv"


def named_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL_FOLDER with an existing folder, got {text!r}")
    return name, Path(path).resolve()


def linked_copy(model: Path, into: Path) -> Path:
    """The model folder as hard links (a copy where the file system refuses): calibration.json goes there."""
    if not into.exists():
        linked_tree(model, into)
    return into


def run(command: list[str]) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if subprocess.call(command, cwd=REPO_ROOT, env=env):
        raise SystemExit(f"failed: {' '.join(command)}")


def measure(name: str, model: Path, args) -> dict:
    folder = linked_copy(model, args.work / name)
    python = sys.executable
    run([python, "-m", "evaluate.calibrate", "--model", str(folder), "--calib_file", str(args.tune), "--task",
         args.task, "--target_accuracy", str(args.target_accuracy), "--scores_file",
         str(args.work / f"{name}.tune-scores.json"), "--batch_size", str(args.batch_size), "--quiet"])
    output = args.work / f"{name}.test.json"
    run([python, "-m", "evaluate.sample_model", "--model_id", str(folder), "--test_file", str(args.test), "--task",
         args.task, "--scoring", "logprob", "--output_file", str(output), "--batch_size", str(args.batch_size),
         "--quiet", "--restart"])  # a refitted calibration.json invalidates the saved progress of the last run
    result = json.loads(output.read_text())
    return {"calibration": json.loads((folder / "calibration.json").read_text()), **result}


def with_interval(metrics: dict, key: str) -> str:
    value, ci = metrics.get(key), metrics.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def table_row(name: str, measured: dict, target: float) -> str:
    m, calibration = measured["metrics"], measured["calibration"]
    at_target = m["coverage_at_accuracy"].get(f"{target:.2f}")
    threshold = calibration["threshold"] or {}
    held = "no threshold reaches it on tuning" if not threshold.get("reached") else (
        f"{threshold['threshold']:.3f} ({threshold['answered']} tuning answers, accuracy >= "
        f"{threshold['accuracy_lower_bound']:.2f} at 95%): coverage {with_interval(m, 'coverage')}, "
        f"accuracy {with_interval(m, 'answered_accuracy')}")
    fit = "none" if calibration["method"] == "none" else f"T {calibration['temperature']:.2f}"
    cells = [name, f"{m['accuracy']:.3f}", fit,
             *(f"{with_interval(m, key)} → {with_interval(m, 'calibrated_' + key)}" for key in ("ece", "nll", "brier")),
             with_interval(m, "aurc"), "unreachable" if at_target is None else f"{at_target:.3f}", held]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=named_model, action="append", required=True, help="NAME=MODEL_FOLDER, repeated")
    p.add_argument("--work", type=Path, required=True, help="a folder for the linked models and the results")
    p.add_argument("--tune", type=Path, default=TUNE, help="the tuning split (calibration is fitted here)")
    p.add_argument("--test", type=Path, default=TEST, help="the test split (reported)")
    p.add_argument("--task", default="nli_label")
    p.add_argument("--target_accuracy", type=float, default=0.90)
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [table_row(name, measure(name, model, args), args.target_accuracy) for name, model in args.model]
    print(f"Fitted on {args.tune}, measured on {args.test}; raw → calibrated, 95% intervals:\n")
    print(f"| model | accuracy | fit kept | ECE | NLL | Brier | AURC | coverage at {args.target_accuracy:.0%} accuracy | "
          f"threshold from tuning, on test |")
    print("|---" * 9 + "|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
