"""LLM-as-judge: score each chain of thought from 1 to 5 and propose an improved one.

    python scripts/score_thoughts.py --input-thoughts-json data/generated/thoughts.jsonl \
        --output-json data/generated/scored.jsonl --api openai --model-name gpt-4o --workers 8

Writes {id, premise, hypothesis, thought_process, predicted_label, true_label, score, judge_reasoning,
improved_thought_process}; prints the score histogram. Resumable like generate_thoughts.py.
"""

import sys
from collections import Counter

from nli_finetune.data_io import read_jsonl, require_fields, strip_private
from nli_finetune.job_runner import api_job_parser, ask_teacher, finish_line, run_job_script
from nli_finetune.llm_api import ValidationError, required_text
from prompts import SCORING_USER_TEMPLATE, SYSTEM_PROMPTS


def validate_score(answer: dict) -> dict:
    score = answer.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score)
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ValidationError(f"'score' must be an integer from 1 to 5, got {answer.get('score')!r}")
    return {"score": score, "judge_reasoning": str(answer.get("judge_reasoning") or ""),
            "improved_thought_process": required_text(answer, "improved_thought_process")}


def main(argv=None) -> int:
    parser = api_job_parser(__doc__, "--input-thoughts-json", "JSONL from generate_thoughts.py",
                            "--output-json", "output JSONL (appended; rerun to resume)")
    return run_job_script("score_thoughts", lambda: run(parser.parse_args(argv)))


def run(args) -> int:
    rows = read_jsonl(args.input_thoughts_json)
    require_fields(rows, ["id", "premise", "hypothesis", "thought_process", "predicted_label"],
                   args.input_thoughts_json)
    items = [{**strip_private(r), "_where": f"line {r['_line']}"} for r in rows]

    def to_record(item, answer, usage):
        return {**{key: item.get(key) for key in ("id", "premise", "hypothesis", "thought_process", "predicted_label",
                                                   "true_label")}, **answer}

    summary = ask_teacher(args, items, system=SYSTEM_PROMPTS["scoring"], user_template=SCORING_USER_TEMPLATE,
                          validate=validate_score, to_record=to_record, output=args.output_json,
                          source=args.input_thoughts_json, desc="scores")
    scores = Counter(r["score"] for r in read_jsonl(args.output_json, tolerate_torn_tail=True))
    print("scores: " + ", ".join(f"{s}: {scores.get(s, 0)}" for s in range(1, 6)))
    return finish_line("score_thoughts", summary, args, args.output_json)


if __name__ == "__main__":
    sys.exit(main())
