"""Fit a model's calibration on a tuning split and store it with the model (calibration.json).

    python -m evaluate.calibrate --model models/X --calib_file data/sample/dev_300.csv
    python -m evaluate.calibrate --model models/X --calib_file tune.csv --target_accuracy 0.95   # + a threshold

The tuning file is scored by `python -m evaluate.sample_model --scoring logprob --no_calibration` (run as
it is: the same code, resumable, its results in --scores_file), then temperature scaling is fitted by
negative log-likelihood (calibration.fit_calibration: one temperature; with more than two labels also a
per-label bias), each kept only when a cross-validation on the tuning split says it beats the raw
probabilities by more than one standard error (else `method: "none"`, T = 1). `calibration.json` is written
into the model folder atomically: method and parameters, the tuning file's fingerprint and size, NLL and
ECE before and after on the tuning split, and with --target_accuracy the lowest confidence threshold whose
answered tuning examples reach it, with the exact one-sided 95% lower bound on their accuracy (a warning when
that bound is below the target: too few tuning answers to trust it). Fit on a split you do not evaluate on.
Bad input: one line, exit 2.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from evaluate.calibrate_options import build_parser
from nli_finetune import REPO_ROOT
from nli_finetune.calibration import (
    adaptive_ece,
    brier_score,
    calibrated_probs,
    expected_calibration_error,
    fit_calibration,
    log_prob_rows,
    negative_log_likelihood,
    risk_coverage,
    selective_report,
    threshold_for_accuracy,
)
from nli_finetune.calibration_file import calibration_path, write_calibration
from nli_finetune.data_io import DataError, check_outputs, path_fingerprint
from nli_finetune.eval_inputs import load_eval_items
from nli_finetune.metrics import binomial_lower_bound
from nli_finetune.model_contract import read_contract, resolve_setting
from nli_finetune.modeling import model_fingerprint
from prompts import Task, get_task


def check_inputs(args) -> tuple[Task, list]:
    """(the task, its labels as strings): refuse before any model loads what cannot be calibrated."""
    model = Path(args.model).expanduser()
    if not model.is_dir():
        raise DataError(f"--model {args.model}: not a local model folder (calibration.json is written into it)")
    task = get_task(resolve_setting(read_contract(model), "task", args.task, "nli", "--task"))
    if task.free_text:
        raise DataError(f"--task {task.name}: a free-text task has no labels to calibrate")
    check_outputs({"--calib_file": args.calib_file, "--model": model},
                  {"calibration file": calibration_path(model), "--scores_file": args.scores_file})
    items, labelled = load_eval_items(args.calib_file, None, task)
    if not labelled:
        raise DataError(f"{args.calib_file}: no gold labels: calibration is fitted on labelled examples")
    seen = {item.true_label for item in items}
    if len(seen) < 2:
        raise DataError(f"{args.calib_file}: every row has label {next(iter(seen))!r}: a tuning file needs at "
                        "least two labels")
    return task, [str(label) for label in task.labels]


def scores_path(args) -> Path:
    if args.scores_file:
        return Path(args.scores_file)
    return REPO_ROOT / "results" / f"{Path(args.model).resolve().name}-{Path(args.calib_file).stem}.calibration-scores.json"


def score_tuning_file(args, task: Task, scores: Path) -> None:
    """sample_model --scoring logprob on the tuning file, without any existing calibration (raw probabilities)."""
    command = [sys.executable, "-m", "evaluate.sample_model", "--model_id", str(Path(args.model).resolve()),
               "--test_file", str(Path(args.calib_file).resolve()), "--task", task.name, "--scoring", "logprob",
               "--no_calibration", "--output_file", str(scores.resolve()), "--batch_size", str(args.batch_size),
               "--device", args.device, "--dtype", args.dtype]
    command += ["--max_prompt_tokens", str(args.max_prompt_tokens)] if args.max_prompt_tokens else []
    command += [flag for flag, on in (("--restart", args.restart), ("--quiet", args.quiet)) if on]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    code = subprocess.call(command, cwd=REPO_ROOT, env=env)
    if code:  # sample_model has said why on stderr
        raise SystemExit(code)


def quality(log_probs, gold, temperature: float = 1.0, bias=None) -> dict:
    """NLL, ECE (equal-width and equal-mass), Brier, accuracy and AURC of (calibrated) probabilities."""
    probs = calibrated_probs(log_probs, temperature, bias)
    confidence = probs.max(axis=1).tolist()
    correct = (probs.argmax(axis=1) == gold).tolist()
    return {"nll": negative_log_likelihood(probs, gold), "ece": expected_calibration_error(confidence, correct),
            "adaptive_ece": adaptive_ece(confidence, correct), "brier": brier_score(confidence, correct),
            "accuracy": float(np.mean(correct)), "aurc": selective_report(confidence, correct)["aurc"]}


BOUND_CONFIDENCE = 0.95  # the one-sided confidence of the stored lower bound on the threshold's accuracy


def chosen_threshold(log_probs, gold, fit: dict, target: float) -> dict:
    """The lowest calibrated confidence whose answered tuning examples reach `target` accuracy."""
    probs = calibrated_probs(log_probs, fit["temperature"], fit["bias"])
    found = threshold_for_accuracy(risk_coverage(probs.max(axis=1).tolist(), (probs.argmax(axis=1) == gold).tolist()),
                                   target)
    if found is None:
        return {"target_accuracy": target, "threshold": None, "reached": False}
    # what the tuning answers prove: with a few dozen, the accuracy at the threshold may lie well below target
    bound = binomial_lower_bound(round(found["accuracy"] * found["answered"]), found["answered"], BOUND_CONFIDENCE)
    return {"target_accuracy": target, **found, "reached": True, "accuracy_lower_bound": bound,
            "bound_confidence": BOUND_CONFIDENCE}


def fit_scores(scores: Path, labels: list, folds: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(the fit, log-probs, gold indices) from sample_model's scored records."""
    # a record without label_probs was not scored (a prompt past the model's context): nothing to fit on
    records = [r for r in json.loads(scores.read_text(encoding="utf-8"))["records"] if r.get("label_probs")]
    if len({str(r["true_label"]) for r in records}) < 2:
        raise DataError(f"{scores}: the scored tuning examples hold one label: calibration needs at least two")
    log_probs = log_prob_rows([r["label_probs"] for r in records], labels)
    gold = np.array([labels.index(str(r["true_label"])) for r in records])
    return fit_calibration(log_probs, gold, folds=folds), log_probs, gold


def calibrate(args) -> dict:
    task, labels = check_inputs(args)
    scores = scores_path(args)
    score_tuning_file(args, task, scores)
    fit, log_probs, gold = fit_scores(scores, labels, args.folds)
    calib = Path(args.calib_file)
    data = {"method": fit["method"], "labels": labels, "temperature": fit["temperature"],
            "bias": dict(zip(labels, fit["bias"])) if fit["bias"] else None,
            "fitted_on": {"file": str(calib.resolve()), "fingerprint": path_fingerprint(calib),
                          "size_bytes": calib.stat().st_size, "examples": len(gold), "task": task.name,
                          "scores_file": str(scores.resolve())},
            "model_fingerprint": model_fingerprint(args.model),
            "cross_validation": {"folds": min(args.folds, len(gold)), "nll": fit["cv_nll"],
                                 "nll_se": fit["cv_nll_se"], "rule": "one standard error"} if fit["cv_nll"] else None,
            "tuning": {"before": quality(log_probs, gold), "after": quality(log_probs, gold, fit["temperature"], fit["bias"])},
            "threshold": chosen_threshold(log_probs, gold, fit, args.target_accuracy) if args.target_accuracy else None}
    write_calibration(args.model, data)
    return data


def main(argv=None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    try:
        data = calibrate(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    before, after = data["tuning"]["before"], data["tuning"]["after"]
    line = (f"calibrate: {data['method']}, T {data['temperature']:.3f}; tuning NLL {before['nll']:.3f} -> "
            f"{after['nll']:.3f}, ECE {before['ece']:.3f} -> {after['ece']:.3f}")
    threshold = data["threshold"]
    if threshold and threshold["reached"]:
        line += (f"; accuracy {threshold['target_accuracy']:.2f} at confidence >= {threshold['threshold']:.3f} "
                 f"(coverage {threshold['coverage']:.3f})")
        if threshold["accuracy_lower_bound"] < threshold["target_accuracy"]:
            print(f"warning: the threshold rests on {threshold['answered']} tuning answers: their accuracy "
                  f"{threshold['accuracy']:.3f} proves only >= {threshold['accuracy_lower_bound']:.3f} at "
                  f"{threshold['bound_confidence']:.0%} confidence; it may not hold on new data (a larger tuning "
                  "split narrows this)", file=sys.stderr)
    elif threshold:
        print(f"warning: no confidence threshold reaches accuracy {threshold['target_accuracy']} on the tuning "
              "split; none stored", file=sys.stderr)
    print(line + f" -> {calibration_path(args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
