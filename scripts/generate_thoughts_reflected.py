"""Reflection: a (stronger) model explains where the teacher went wrong and writes improved reasoning.

    python scripts/generate_thoughts_reflected.py --input-thoughts-json data/generated/thoughts.jsonl \
        --output-reflection-json data/generated/reflections.jsonl --api openai --model-name gpt-4o --workers 8

Takes the incorrect examples of generate_thoughts.py's output and writes {id, premise, hypothesis,
thought_process, predicted_label (the original, kept), true_label, error_analysis,
improved_thought_process, reflection_label, reflection_agrees}. A reflection whose own conclusion
disagrees with the true label is flagged (reflection_agrees = false) and counted, and
prepare_ft_data.py leaves it out. Resumable like generate_thoughts.py.
"""

import sys

from nli_finetune.data_io import DataError, read_jsonl, require_fields
from nli_finetune.job_runner import api_job_parser, ask_teacher, finish_line, run_job_script
from nli_finetune.llm_api import required_label, required_text
from prompts import (
    REFLECTION_USER_TEMPLATE,
    SYSTEM_PROMPTS,
    TASKS,
)

NLI = TASKS["nli"]


def validate_reflection(answer: dict) -> dict:
    return {"error_analysis": required_text(answer, "error_analysis"),
            "improved_thought_process": required_text(answer, "improved_thought_process"),
            "reflection_label": required_label(answer)}


def main(argv=None) -> int:
    parser = api_job_parser(__doc__, "--input-thoughts-json", "JSONL from generate_thoughts.py",
                            "--output-reflection-json", "output JSONL (appended; rerun to resume)")
    return run_job_script("generate_thoughts_reflected", lambda: run(parser.parse_args(argv)))


def run(args) -> int:
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

    def to_record(item, answer, usage):
        record = {key: item[key] for key in ("id", "premise", "hypothesis", "thought_process", "predicted_label",
                                             "true_label")}
        return {**record, **answer, "reflection_agrees": answer["reflection_label"] == item["true_label"],
                "reprompt_counts": usage["reprompts"]}

    summary = ask_teacher(args, items, system=SYSTEM_PROMPTS["reflection"],
                          user_template=REFLECTION_USER_TEMPLATE, validate=validate_reflection, to_record=to_record,
                          output=args.output_reflection_json, source=args.input_thoughts_json, desc="reflections")
    written = read_jsonl(args.output_reflection_json, tolerate_torn_tail=True)
    disagreeing = [str(r["id"]) for r in written if r.get("reflection_agrees") is False]
    print(f"{len(items)} incorrect of {len(thoughts)} thoughts; {len(disagreeing)} reflections disagree with the "
          f"true label" + (f" (ids {', '.join(disagreeing[:20])}{' ...' if len(disagreeing) > 20 else ''})"
                           if disagreeing else ""))
    return finish_line("generate_thoughts_reflected", summary, args, args.output_reflection_json)


if __name__ == "__main__":
    sys.exit(main())
