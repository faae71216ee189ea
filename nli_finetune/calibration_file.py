"""A model's fitted calibration: `calibration.json` in the model folder, written by `evaluate.calibrate`.

    python -m evaluate.calibrate --model models/X --calib_file data/sample/dev_300.csv --target_accuracy 0.95
    from nli_finetune.calibration_file import read_calibration
    read_calibration("models/X")      # None, or the checked contents

It holds the method and parameters (calibration.py: softmax(log p / T + b) over the scored labels), what it
was fitted on (the tuning file's fingerprint, size and rows, the model files' fingerprint), NLL / ECE before
and after on the tuning split, and the confidence threshold chosen for a target accuracy when asked. Like
model_contract.json it travels with the model: `sample_model --scoring logprob` fingerprints it, so saved
progress computed under another calibration is refused.
"""

import json
import math
from pathlib import Path

from nli_finetune.data_io import DataError, atomic_write_json, content_fingerprint

CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
METHODS = ("none", "temperature", "temperature+bias")  # none: cross-validation kept the raw


def calibration_path(model) -> Path | None:
    """Where a model's calibration lives (None: the model is not a local folder: a hub id, a .gguf file)."""
    if model is None or not Path(model).expanduser().is_dir():
        return None
    return Path(model).expanduser() / CALIBRATION_FILE


def write_calibration(model, data: dict) -> Path:
    return atomic_write_json(calibration_path(model), {"format_version": FORMAT_VERSION, **data})


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _checked(data, where: str) -> dict:
    """The fields a reader relies on, each of the right type; a DataError naming the field otherwise."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object")
    if not isinstance(data.get("format_version"), int) or data["format_version"] > FORMAT_VERSION:
        raise DataError(f"{where}: field 'format_version': {data.get('format_version')!r} is not one this code "
                        f"reads (<= {FORMAT_VERSION})")
    if data.get("method") not in METHODS:
        raise DataError(f"{where}: field 'method': {data.get('method')!r} is not one of {', '.join(METHODS)}")
    labels = data.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{where}: field 'labels' must list at least two labels as strings")
    if not _number(data.get("temperature")) or data["temperature"] <= 0:
        raise DataError(f"{where}: field 'temperature': {data.get('temperature')!r} is not a positive number")
    bias = data.get("bias")
    if (data["method"] != "temperature+bias") != (bias is None) or bias is not None and (
            not isinstance(bias, dict) or set(bias) != set(labels) or not all(map(_number, bias.values()))):
        raise DataError(f"{where}: field 'bias': {bias!r} does not fit method {data['method']!r} and the labels")
    threshold = data.get("threshold")
    if threshold is not None and not (isinstance(threshold, dict) and (
            threshold.get("threshold") is None or _number(threshold["threshold"]))):
        raise DataError(f"{where}: field 'threshold': {threshold!r} is not a threshold")
    return data


def read_calibration(model) -> dict | None:
    """A model folder's checked calibration (with "source": its path), or None when it has none."""
    path = calibration_path(model)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    return _checked(data, str(path)) | {"source": str(path)}


def calibration_fingerprint(model) -> str | None:
    """A short hash of the model's calibration (None without one): a changed calibration changes it."""
    calibration = read_calibration(model)
    return None if calibration is None else content_fingerprint({k: v for k, v in calibration.items()
                                                                 if k != "source"})


def calibrated_label_probs(calibration: dict, label_probs: dict) -> dict:
    """A record's scored `label_probs` ({label as str: p}) after the calibration: they sum to 1."""
    from nli_finetune.calibration import calibrated_probs, log_prob_rows
    labels = calibration["labels"]
    bias = [calibration["bias"][label] for label in labels] if calibration["bias"] else None
    row = calibrated_probs(log_prob_rows([label_probs], labels), calibration["temperature"], bias)[0]
    return {label: float(p) for label, p in zip(labels, row)}


def check_calibration_use(calibration: dict, labels: list, test_file) -> None:
    """Refuse a calibration fitted for other labels, or on the very file being evaluated (its numbers
    would be measured on the data the calibration was fitted to)."""
    from nli_finetune.data_io import path_fingerprint
    if calibration["labels"] != [str(label) for label in labels]:
        raise DataError(f"{calibration['source']}: fitted for labels {', '.join(calibration['labels'])}, but the task "
                        f"has {', '.join(map(str, labels))}; refit it (evaluate.calibrate) or add --no_calibration")
    fitted_on = calibration.get("fitted_on") or {}
    if fitted_on.get("fingerprint") == path_fingerprint(test_file):
        raise DataError(f"--test_file {test_file}: {calibration['source']} was fitted on this very file "
                        f"({fitted_on.get('file')}); evaluate on another split, or add --no_calibration")
