"""Reflection: a (stronger) model explains where the teacher went wrong and writes improved reasoning.

    python scripts/generate_thoughts_reflected.py --input-thoughts-json data/generated/thoughts.jsonl \
        --output-reflection-json data/generated/reflections.jsonl --api openai --model-name gpt-4o --workers 8
    python scripts/generate_thoughts_reflected.py --input-thoughts-json ../shared/data/nli/dev_teacher_cot.csv \
        --output-reflection-json data/generated/teacher_reflections.jsonl \
        --api local --api-base http://127.0.0.1:8000/v1 --model-name <served model name>

The input is generate_thoughts.py's JSONL or the teacher-CoT CSV (id, premise, hypothesis, label,
prediction, correct_prediction, thoughts), read by nli_finetune/teacher_data.py as prepare_ft_data.py
reads it. Takes its incorrect examples (predicted label != true label) and writes {id, premise,
hypothesis, thought_process, predicted_label (the original, kept), true_label, error_analysis,
improved_thought_process, reflection_label, reflection_agrees}. The id is the original row's id as
written (`<file name>:<row>` for a row without one, as prepare_ft_data.py names it), so prepare_ft_data.py
--ablation 2 puts each reflection in place of its wrong thought. A reflection whose own conclusion
disagrees with the true label is flagged (reflection_agrees = false) and counted, and prepare_ft_data.py
leaves it out. Resumable like generate_thoughts.py.
"""

import sys

from nli_finetune.data_io import read_jsonl
from nli_finetune.job_runner import api_job_parser, ask_teacher, finish_line, run_job_script
from nli_finetune.llm_api import required_label, required_text
from nli_finetune.teacher_data import NLI, load_originals
from prompts import (
    REFLECTION_USER_TEMPLATE,
    SYSTEM_PROMPTS,
)


def validate_reflection(answer: dict) -> dict:
    return {"error_analysis": required_text(answer, "error_analysis"),
            "improved_thought_process": required_text(answer, "improved_thought_process"),
            "reflection_label": required_label(answer, NLI)}


def main(argv=None) -> int:
    parser = api_job_parser(__doc__, "--input-thoughts-json",
                            "JSONL from generate_thoughts.py, or the teacher-CoT CSV (id, premise, hypothesis, "
                            "label, prediction, thoughts); its wrong thoughts are reflected on",
                            "--output-reflection-json", "output JSONL (appended; rerun to resume)")
    return run_job_script("generate_thoughts_reflected", lambda: run(parser.parse_args(argv)))


def run(args) -> int:
    thoughts = load_originals(args.input_thoughts_json)  # either layout; bad rows are a DataError (exit 2)
    items = [{**row, "_where": f"row {row['_line']}"} for row in thoughts
             if row["predicted_label"] != row["true_label"]]
    if not items and thoughts:
        print(f"generate_thoughts_reflected: all {len(thoughts)} thoughts are correct; nothing to reflect on")
        return 0

    def to_record(item, answer, usage):
        # the id as the input wrote it: prepare_ft_data reads it back as the id of the original thought
        record = {"id": item["_id_as_written"], **{key: item[key] for key in (
            "premise", "hypothesis", "thought_process", "predicted_label", "true_label")}}
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
