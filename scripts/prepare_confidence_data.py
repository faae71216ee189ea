"""Confidence-token training data: answers tagged C (the base model was right) or U (it was wrong).

    python scripts/prepare_confidence_data.py --tagged ../shared/data/confidence/qwen_tagged_1k.jsonl \
        --incorrect ../shared/data/confidence/mistral_boolq_incorrect.json --out-dir data/confidence

--tagged: JSONL rows {question, tagged_response, dataset} already ending in a confidence token.
--incorrect: a JSON object (or array) of {response, question, correct_answer, correct} judged answers;
each becomes a row tagged with the domain's C or U token by its `correct` field.
Writes train.jsonl and eval.jsonl (tagged rows, for the loss) and val.jsonl ({question,
correct_answer, dataset}, for `python -m evaluate.confidence` and the training callback).
"""

import argparse
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_io import DataError, atomic_write_jsonl, read_records, require_fields  # noqa: E402
from evaluate.confidence import DEFAULT_DATASETS, DEFAULT_TOKENS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tagged", default=None)
    p.add_argument("--incorrect", default=None, help="judged answers (tagged C or U by their 'correct' field)")
    p.add_argument("--dataset", default="boolq", help="dataset name of the --incorrect rows")
    p.add_argument("--out-dir", default="data/confidence")
    p.add_argument("--eval-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    rows, val = [], []
    try:
        if args.tagged:
            tagged = read_records(args.tagged)
            require_fields(tagged, ["question", "tagged_response"], args.tagged)
            rows += [{"question": r["question"], "tagged_response": r["tagged_response"],
                      "dataset": r.get("dataset", args.dataset)} for r in tagged]
        if args.incorrect:
            judged = read_records(args.incorrect)
            require_fields(judged, ["question", "response", "correct_answer"], args.incorrect)
            confident, unconfident = DEFAULT_TOKENS[DEFAULT_DATASETS[args.dataset]]
            for r in judged:
                right = str(r.get("correct")).strip().lower() == "true"
                rows.append({"question": r["question"], "dataset": args.dataset,
                             "tagged_response": f"{r['response'].rstrip()} {confident if right else unconfident}"})
                val.append({"question": r["question"], "correct_answer": r["correct_answer"], "dataset": args.dataset})
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    n_eval = round(len(rows) * args.eval_share)
    out = Path(args.out_dir)
    atomic_write_jsonl(out / "train.jsonl", rows[n_eval:])
    atomic_write_jsonl(out / "eval.jsonl", rows[:n_eval])
    atomic_write_jsonl(out / "val.jsonl", val)
    u = sum("<U_" in r["tagged_response"] for r in rows)
    print(f"prepare_confidence_data: {len(rows)} tagged rows ({len(rows) - u} C, {u} U): {len(rows) - n_eval} train, "
          f"{n_eval} eval; {len(val)} validation questions -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
