"""Result records and their metrics, shared by inference and the offline tools (merge_shards,
parse_predictions), which use them without loading torch.

    from nli_finetune.results import results_task, summarize
    summarize(records, results_task(path, data["settings"]), has_labels=True)

Every function here takes the `prompts.Task` itself; a results file stores the task's name, which
`results_task` turns into the Task once, where the file is read.
"""

from pathlib import Path

import numpy as np

from nli_finetune.data_io import DataError, atomic_write_csv, atomic_write_json
from nli_finetune.extraction import count_json_objects, extract_label
from nli_finetune.metrics import classification_metrics, probability_metrics, text_metrics, wilson_interval
from nli_finetune.redaction import redact_data
from prompts import Task, get_task

CSV_FIELDS = ["id", "predicted_label", "true_label", "correct", "extraction_method", "stop_reason",
              "generated_tokens"]


STOPPED = ("eos", "json", "scored")  # an answer that ended by itself (or was scored, not generated); "length" ran
# out, "error" was refused by an API


def results_task(path, settings: dict) -> Task:
    """The task a results file's settings name (it stores the name): a missing or unknown one is an error
    naming the file, never a default."""
    name = settings.get("task")
    if not isinstance(name, str):
        raise DataError(f"{path}: field 'settings.task': {name!r} is not a task name")
    try:
        return get_task(name)
    except ValueError as exc:
        raise DataError(f"{path}: field 'settings.task': {exc}") from None


def answer_label(text: str, task: Task):
    """(label, method) of a generated answer; free-text tasks have no label to extract."""
    return (None, "free_text") if task.free_text else extract_label(text, task)


def best_label(task: Task, label_probs: dict):
    """The most probable label of scored labels (`label_scoring.py`); a tie goes to the first in label order."""
    return max(task.labels, key=lambda label: label_probs[str(label)])


def score_record(item, result: dict, task: Task) -> dict:
    """One result record; a result with `label_probs` (`--scoring logprob`) predicts its most probable label."""
    scored = "label_probs" in result
    if scored:
        label, method = best_label(task, result["label_probs"]), "logprob"
    elif "over_context" in result:  # a scoring that did not fit the context (label_scoring): no label, no guess
        label, method = None, "over_context"
    else:
        label, method = answer_label(result["text"], task)
    return {"id": item.id, **item.inputs, "raw_output": result["text"], "predicted_label": label,
            "extraction_method": method, "json_objects": count_json_objects(result["text"]),
            "stop_reason": result["stop_reason"], "generated_tokens": result["generated_tokens"],
            "prompt_tokens_trimmed": result.get("prompt_tokens_trimmed", 0), "true_label": item.true_label,
            "correct": None if item.true_label is None or method == "free_text" else label == item.true_label,
            **({"label_probs": result["label_probs"]} if scored else {}),
            **({"error": result["error"]} if "error" in result else {}),
            **({"over_context": result["over_context"]} if "over_context" in result else {})}


def summarize(records: list[dict], task: Task, has_labels: bool) -> dict:
    """Parse, stop and (with labels) classification metrics over result records; for free-text tasks
    exact match and ROUGE-L against the references instead."""
    errors = sum(r["stop_reason"] == "error" for r in records)
    over = sum("over_context" in r for r in records)
    metrics = summarize_answers(records, task, has_labels) | scored_metrics(records, task, has_labels)
    return metrics | ({"api_errors": errors} if errors else {}) | ({"over_context": over} if over else {})


def summarize_answers(records: list[dict], task: Task, has_labels: bool) -> dict:
    n = len(records)
    if task.free_text:
        metrics = {"n": n, "stop_rate": sum(r["stop_reason"] in STOPPED for r in records) / n,
                   "eos_rate": sum(r["stop_reason"] == "eos" for r in records) / n,
                   "mean_generated_tokens": sum(r["generated_tokens"] for r in records) / n}
        if has_labels:
            metrics.update(text_metrics([r["raw_output"] for r in records], [r["true_label"] for r in records]))
        return metrics
    metrics = {"n": n,
               "parse_rate": sum(r["predicted_label"] is not None for r in records) / n,
               "single_json_rate": sum(r["json_objects"] == 1 and r["predicted_label"] is not None
                                       for r in records) / n,
               "stop_rate": sum(r["stop_reason"] in STOPPED for r in records) / n,
               "eos_rate": sum(r["stop_reason"] == "eos" for r in records) / n,
               "mean_generated_tokens": sum(r["generated_tokens"] for r in records) / n}
    if has_labels:
        metrics.update(classification_metrics([r["true_label"] for r in records],
                                               [r["predicted_label"] for r in records], list(task.labels)))
        # calibration over the scored examples (one not scored, over the context, has no probabilities)
        scored = [r for r in records if "label_probs" in r]
        if scored:
            metrics.update(probability_metrics([r["true_label"] for r in scored], [r["label_probs"] for r in scored],
                                               list(task.labels)))
    return metrics


def answer_confidence(record: dict) -> float | None:
    """The probability a scored record gives its predicted label: the calibrated one where the model has a
    calibration (`calibrated_label_probs`), else the raw; None for a record that was not scored."""
    probs = record.get("calibrated_label_probs") or record.get("label_probs")
    return None if not probs or record["predicted_label"] is None else probs[str(record["predicted_label"])]


def scored_metrics(records: list[dict], task: Task, has_labels: bool) -> dict:
    """What scored labels add (issue #43): the raw NLL; ECE / Brier / NLL after calibration (calibrated_*)
    where records carry calibrated probabilities; the risk-coverage curve, AURC and coverage at 90/95/99%
    accuracy; 95% bootstrap intervals of NLL, ECE, Brier and AURC, raw and calibrated (`*_ci`); and with
    abstention (records marked `abstained`) the coverage and the accuracy of the answered examples, with 95%
    Wilson intervals, beside the full-set numbers."""
    from nli_finetune.calibration import log_prob_rows, negative_log_likelihood, probability_intervals, selective_report
    labels = [str(label) for label in task.labels]
    scored = [r for r in records if r.get("label_probs") and r["predicted_label"] is not None]
    if not has_labels or not scored:
        return {}
    gold = [labels.index(str(r["true_label"])) for r in scored]
    metrics = {"nll": negative_log_likelihood(np.exp(log_prob_rows([r["label_probs"] for r in scored], labels)), gold)}
    if all(r.get("calibrated_label_probs") for r in scored):
        calibrated = [r["calibrated_label_probs"] for r in scored]
        metrics |= {f"calibrated_{k}": v for k, v in probability_metrics([r["true_label"] for r in scored], calibrated,
                                                                          list(task.labels)).items()}
        metrics["calibrated_nll"] = negative_log_likelihood(np.exp(log_prob_rows(calibrated, labels)), gold)
    for prefix, field in (("", "label_probs"), ("calibrated_", "calibrated_label_probs")):
        if all(r.get(field) for r in scored):
            probs = np.exp(log_prob_rows([r[field] for r in scored], labels))
            metrics |= {f"{prefix}{k}_ci": v for k, v in probability_intervals(probs, gold).items()}
    report = selective_report([answer_confidence(r) for r in scored], [bool(r["correct"]) for r in scored])
    metrics |= {k: report[k] for k in ("aurc", "coverage_at_accuracy", "risk_coverage")}
    if any("abstained" in r for r in records):
        answered = [r for r in records if not r.get("abstained")]
        right = sum(bool(r["correct"]) for r in answered)
        metrics |= {"abstained": len(records) - len(answered), "coverage": len(answered) / len(records),
                    "coverage_ci": wilson_interval(len(answered), len(records)),
                    "answered_accuracy": right / len(answered) if answered else None,
                    "answered_accuracy_ci": wilson_interval(right, len(answered))}
    return metrics


def write_outputs(output: Path, output_csv: Path, settings: dict, metrics: dict, timing: dict, records: list):
    # one redaction for both files: an error message or a setting never carries a credential to disk
    settings, records = redact_data(settings), redact_data(records)
    atomic_write_json(output, {"settings": settings, "metrics": metrics, "timing": timing, "records": records})
    atomic_write_csv(output_csv, records, CSV_FIELDS)
