"""Re-score saved inference results offline and compare them in one table.

    python -m evaluate.parse_predictions results/*.json
    python -m evaluate.parse_predictions results/a.json results/b.json --strict

Labels are re-extracted from each record's raw output with the current extraction rules. `--strict`
accepts only answers that are exactly one JSON object with a valid label (no phrase fallback).
"""

import argparse
import json
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.data_io import DataError
from nli_finetune.extraction import count_json_objects
from nli_finetune.redaction import redact
from nli_finetune.results import answer_label, results_task, summarize

COLUMNS = ["file", "n", "parse_rate", "single_json_rate", "stop_rate", "accuracy", "f1_macro", "mean_generated_tokens"]


def read_results(path: Path) -> dict:
    """A sample_model results file, or a DataError saying why it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) or not data["records"] \
            or not isinstance(data.get("settings"), dict):
        raise DataError(f"{path}: not a sample_model results file (expected an object with settings and records)")
    for number, record in enumerate(data["records"], start=1):
        if not isinstance(record, dict) or not isinstance(record.get("raw_output"), str):
            raise DataError(f"{path}: record {number}: field 'raw_output' missing or not a string")
    return data


def rescore(path: Path, strict: bool) -> dict:
    data = read_results(path)
    task = results_task(path, data["settings"])
    records = []
    for record in data["records"]:
        label, method = answer_label(record["raw_output"], task)
        objects = count_json_objects(record["raw_output"])
        if strict and method != "free_text" and (method != "json" or objects != 1):
            label, method = None, "none"
        truth = record.get("true_label")
        records.append(dict(record, predicted_label=label, extraction_method=method, json_objects=objects,
                            correct=None if truth is None else label == truth))
    has_labels = all(r.get("true_label") is not None for r in records)
    return {"file": path.name, **summarize(records, task, has_labels)}


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m evaluate.parse_predictions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--strict", action="store_true", help="only exactly-one-JSON answers count as parsed")
    args = parser.parse_args(argv)
    rows = []
    for name in args.files:
        try:
            rows.append(rescore(Path(name), args.strict))
        except (DataError, KeyError) as exc:
            problem = redact(exc) if isinstance(exc, DataError) else f"{name}: cannot re-score: {redact(exc)}"
            print(f"error: {problem}", file=sys.stderr)
            return 2
    print(format_table(rows, COLUMNS))
    print(f"parse_predictions: re-scored {len(rows)} file(s){' (strict)' if args.strict else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
