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

import sys

from nli_finetune.data_io import is_blank, read_records, row_id, row_label, row_text
from nli_finetune.job_runner import api_job_parser, ask_teacher, finish_line, run_job_script
from nli_finetune.llm_api import required_label, required_text
from prompts import (
    SYSTEM_PROMPTS,
    TASKS,
    THOUGHT_USER_TEMPLATE,
)

NLI = TASKS["nli"]


def validate_thought(answer: dict) -> dict:
    return {"thought_process": required_text(answer, "thought_process"),  # reasoning kept exactly as written
            "predicted_label": required_label(answer, NLI)}


def load_items(path, start: int, end: int | None) -> list[dict]:
    """Rows with premise, hypothesis and optional label / id (the row number when absent)."""
    items = []
    for record in read_records(path)[start:end]:
        where = f"{path}: row {record['_line']}"
        label = None if is_blank(record.get("label")) else row_label(record, "label", NLI, where)
        items.append({"id": row_id(record), "premise": row_text(record, "premise", where),
                      "hypothesis": row_text(record, "hypothesis", where), "true_label": label,
                      "_where": f"row {record['_line']}"})
    return items


def main(argv=None) -> int:
    p = api_job_parser(__doc__, "--input-csv", "CSV/JSONL with premise, hypothesis, optional label and id",
                       "--output-json", "output JSONL (appended; rerun to resume)")
    p.add_argument("--start-index", type=int, default=0)
    p.add_argument("--end-index", type=int, default=None)
    p.add_argument("--system-prompt", default="initial_generation", choices=sorted(SYSTEM_PROMPTS))
    return run_job_script("generate_thoughts", lambda: run(p.parse_args(argv)))


def run(args) -> int:
    items = load_items(args.input_csv, args.start_index, args.end_index)

    def to_record(item, answer, usage):
        truth = item["true_label"]
        return {"id": item["id"], "premise": item["premise"], "hypothesis": item["hypothesis"], **answer,
                "true_label": truth, "correct": None if truth is None else answer["predicted_label"] == truth,
                "reprompt_counts": usage["reprompts"]}

    summary = ask_teacher(args, items, system=SYSTEM_PROMPTS[args.system_prompt],
                          user_template=THOUGHT_USER_TEMPLATE, validate=validate_thought, to_record=to_record,
                          output=args.output_json, source=args.input_csv, desc="thoughts")
    return finish_line("generate_thoughts", summary, args, args.output_json)


if __name__ == "__main__":
    sys.exit(main())
