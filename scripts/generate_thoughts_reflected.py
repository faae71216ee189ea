"""Reflection: a (stronger) model explains where the teacher went wrong and writes improved reasoning.

    python scripts/generate_thoughts_reflected.py --input-thoughts-json data/generated/thoughts.jsonl \
        --output-reflection-json data/generated/reflections.jsonl --api openai --model-name gpt-4o --workers 8

Takes the incorrect examples of generate_thoughts.py's output and writes {id, premise, hypothesis,
thought_process, predicted_label (the original, kept), true_label, error_analysis,
improved_thought_process, reflection_label, reflection_agrees}. A reflection whose own conclusion
disagrees with the true label is flagged (reflection_agrees = false) and counted, and
prepare_ft_data.py leaves it out. Resumable like generate_thoughts.py.
"""

import argparse
import sys
from pathlib import Path

from cli import ArgumentParser
from data_io import DataError, read_jsonl, require_fields
from llm_api import (
    ValidationError,
    add_api_arguments,
    ask_validated,
    client_from_args,
    run_job_script,
    run_jobs,
)
from prompts import (
    REFLECTION_USER_TEMPLATE,
    SYSTEM_PROMPTS,
    TASKS,
)

NLI = TASKS["nli"]


def validate_reflection(answer: dict) -> dict:
    for name in ("error_analysis", "improved_thought_process"):
        if not isinstance(answer.get(name), str) or not answer[name].strip():
            raise ValidationError(f"'{name}' must be a non-empty string")
    label = NLI.normalize_label(answer.get("predicted_label"))
    if label is None:
        raise ValidationError(f"'predicted_label' must be 0 or 1, got {answer.get('predicted_label')!r}")
    return {"error_analysis": answer["error_analysis"], "improved_thought_process": answer["improved_thought_process"],
            "reflection_label": label}


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-thoughts-json", required=True, help="JSONL from generate_thoughts.py")
    p.add_argument("--output-reflection-json", required=True, help="output JSONL (appended; rerun to resume)")
    add_api_arguments(p)
    args = p.parse_args(argv)
    return run_job_script("generate_thoughts_reflected", lambda: run(args))


def run(args) -> int:
    client = client_from_args(args)
    thoughts = read_jsonl(args.input_thoughts_json)
    require_fields(thoughts, ["id", "premise", "hypothesis", "thought_process"], args.input_thoughts_json)
    items = []
    for row in thoughts:
        predicted, truth = NLI.normalize_label(row.get("predicted_label")), NLI.normalize_label(row.get("true_label"))
        if predicted is None or truth is None:
            raise DataError(f"{args.input_thoughts_json}: line {row['_line']}: fields 'predicted_label' and "
                            "'true_label' must be 0 or 1")
        if predicted != truth:
            items.append({**{k: v for k, v in row.items() if not k.startswith("_")},
                          "predicted_label": predicted, "true_label": truth, "_where": f"line {row['_line']}"})
    if not items and thoughts:
        print(f"generate_thoughts_reflected: all {len(thoughts)} thoughts are correct; nothing to reflect on")
        return 0

    def work(item):
        messages = [{"role": "system", "content": SYSTEM_PROMPTS["reflection"]},
                    {"role": "user", "content": REFLECTION_USER_TEMPLATE.format(**item)}]
        answer, usage = ask_validated(client, messages, validate_reflection, args.max_retries)
        record = {key: item[key] for key in ("id", "premise", "hypothesis", "thought_process", "predicted_label",
                                             "true_label")}
        record.update(answer, reflection_agrees=answer["reflection_label"] == item["true_label"],
                      reprompt_counts=usage["reprompts"], model=client.model)
        return record, usage

    summary = run_jobs(items, work, Path(args.output_reflection_json), source=args.input_thoughts_json,
                       workers=args.workers, skip_failed=args.skip_failed, desc="reflections")
    written = read_jsonl(args.output_reflection_json, tolerate_torn_tail=True)
    disagreeing = [str(r["id"]) for r in written if r.get("reflection_agrees") is False]
    print(f"{len(items)} incorrect of {len(thoughts)} thoughts; {len(disagreeing)} reflections disagree with the "
          f"true label" + (f" (ids {', '.join(disagreeing[:20])}{' ...' if len(disagreeing) > 20 else ''})"
                           if disagreeing else ""))
    print(f"generate_thoughts_reflected: {summary.line(args.price_in, args.price_out)} -> {args.output_reflection_json}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
