"""LLM-as-judge: score each chain of thought from 1 to 5 and propose an improved one.

    python scripts/score_thoughts.py --input-thoughts-json data/generated/thoughts.jsonl \
        --output-json data/generated/scored.jsonl --api openai --model-name gpt-4o --workers 8

Writes {id, premise, hypothesis, thought_process, predicted_label, true_label, score, judge_reasoning,
improved_thought_process}; prints the score histogram. Resumable like generate_thoughts.py.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

from cli import ArgumentParser
from data_io import read_jsonl, require_fields, strip_private
from llm_api import (
    ValidationError,
    add_api_arguments,
    ask_validated,
    client_from_args,
    run_job_script,
    run_jobs,
)
from prompts import SCORING_USER_TEMPLATE, SYSTEM_PROMPTS


def validate_score(answer: dict) -> dict:
    score = answer.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score)
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ValidationError(f"'score' must be an integer from 1 to 5, got {answer.get('score')!r}")
    improved = answer.get("improved_thought_process")
    if not isinstance(improved, str) or not improved.strip():
        raise ValidationError("'improved_thought_process' must be a non-empty string")
    return {"score": score, "judge_reasoning": str(answer.get("judge_reasoning") or ""),
            "improved_thought_process": improved}


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-thoughts-json", required=True)
    p.add_argument("--output-json", required=True)
    add_api_arguments(p)
    args = p.parse_args(argv)
    return run_job_script("score_thoughts", lambda: run(args))


def run(args) -> int:
    client = client_from_args(args)
    rows = read_jsonl(args.input_thoughts_json)
    require_fields(rows, ["id", "premise", "hypothesis", "thought_process", "predicted_label"],
                   args.input_thoughts_json)
    items = [{**strip_private(r), "_where": f"line {r['_line']}"} for r in rows]

    def work(item):
        messages = [{"role": "system", "content": SYSTEM_PROMPTS["scoring"]},
                    {"role": "user", "content": SCORING_USER_TEMPLATE.format(**item)}]
        answer, usage = ask_validated(client, messages, validate_score, args.max_retries)
        record = {key: item.get(key) for key in ("id", "premise", "hypothesis", "thought_process", "predicted_label",
                                                 "true_label")}
        record.update(answer, model=client.model)
        return record, usage

    summary = run_jobs(items, work, Path(args.output_json), source=args.input_thoughts_json, workers=args.workers,
                       skip_failed=args.skip_failed, desc="scores")
    scores = Counter(r["score"] for r in read_jsonl(args.output_json, tolerate_torn_tail=True))
    print("scores: " + ", ".join(f"{s}: {scores.get(s, 0)}" for s in range(1, 6)))
    print(f"score_thoughts: {summary.line(args.price_in, args.price_out)} -> {args.output_json}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
