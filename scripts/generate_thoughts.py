"""Chain-of-thought generation: a teacher model writes step-by-step reasoning and a label per example.

    python scripts/generate_thoughts.py --input-csv data/sample/sample.csv \
        --output-json data/generated/thoughts.jsonl --api mistral --workers 8
    python scripts/generate_thoughts.py --input-csv data/dev.csv --output-json data/generated/dev_thoughts.jsonl \
        --api local --api-base http://127.0.0.1:8000/v1 --model-name my-model --start-index 0 --end-index 500

Writes one JSONL record per example as it completes: {id, premise, hypothesis, thought_process,
predicted_label, true_label, correct, reprompt_counts, model}. Rerunning the same command skips ids
already written; examples that exhaust their attempts go to `<output>.failures.jsonl` and are retried on
the next run (--skip-failed to not). The key comes from the environment or .env and is never written.
"""

import argparse
import sys
from pathlib import Path

from cli import ArgumentParser
from data_io import DataError, read_records
from llm_api import (
    ValidationError,
    add_api_arguments,
    ask_validated,
    client_from_args,
    run_job_script,
    run_jobs,
)
from prompts import (
    SYSTEM_PROMPTS,
    TASKS,
    THOUGHT_USER_TEMPLATE,
)

NLI = TASKS["nli"]


def validate_thought(answer: dict) -> dict:
    thought = answer.get("thought_process")
    if not isinstance(thought, str) or not thought.strip():
        raise ValidationError("'thought_process' must be a non-empty string")
    label = NLI.normalize_label(answer.get("predicted_label"))
    if label is None:
        raise ValidationError(f"'predicted_label' must be 0 or 1, got {answer.get('predicted_label')!r}")
    return {"thought_process": thought, "predicted_label": label}  # reasoning kept exactly as written


def load_items(path, start: int, end: int | None) -> list[dict]:
    """Rows with premise, hypothesis and optional label / id (the row number when absent)."""
    items = []
    for record in read_records(path)[start:end]:
        where = f"{path}: row {record['_line']}"
        for name in ("premise", "hypothesis"):
            if not str(record.get(name) or "").strip():
                raise DataError(f"{where}: missing field '{name}'")
        label = None
        if str(record.get("label", "")).strip():
            label = NLI.normalize_label(record["label"])
            if label is None:
                raise DataError(f"{where}: field 'label': {record['label']!r} is not 0 or 1")
        raw_id = record.get("id")  # an id of 0 is an id; without one, the 1-based row number as everywhere
        items.append({"id": str(raw_id) if raw_id not in (None, "") else str(record["_line"]),
                      "premise": record["premise"], "hypothesis": record["hypothesis"], "true_label": label,
                      "_where": f"row {record['_line']}"})
    return items


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-csv", required=True, help="CSV/JSONL with premise, hypothesis, optional label and id")
    p.add_argument("--output-json", required=True, help="output JSONL (appended; rerun to resume)")
    p.add_argument("--start-index", type=int, default=0)
    p.add_argument("--end-index", type=int, default=None)
    p.add_argument("--system-prompt", default="initial_generation", choices=sorted(SYSTEM_PROMPTS))
    add_api_arguments(p)
    args = p.parse_args(argv)
    return run_job_script("generate_thoughts", lambda: run(args))


def run(args) -> int:
    client = client_from_args(args)
    items = load_items(args.input_csv, args.start_index, args.end_index)
    system = SYSTEM_PROMPTS[args.system_prompt]

    def work(item):
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": THOUGHT_USER_TEMPLATE.format(**item)}]
        answer, usage = ask_validated(client, messages, validate_thought, args.max_retries)
        truth = item["true_label"]
        record = {"id": item["id"], "premise": item["premise"], "hypothesis": item["hypothesis"], **answer,
                  "true_label": truth, "correct": None if truth is None else answer["predicted_label"] == truth,
                  "reprompt_counts": usage["reprompts"], "model": client.model}
        return record, usage

    summary = run_jobs(items, work, Path(args.output_json), source=args.input_csv, workers=args.workers,
                       skip_failed=args.skip_failed, desc="thoughts")
    print(f"generate_thoughts: {summary.line(args.price_in, args.price_out)} -> {args.output_json}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
