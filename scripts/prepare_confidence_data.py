"""Confidence-token training data: answers tagged C (the base model was right) or U (it was wrong).

    python scripts/prepare_confidence_data.py --tagged ../shared/data/confidence/qwen_tagged_1k.jsonl \
        --incorrect ../shared/data/confidence/mistral_boolq_incorrect.json --out-dir data/confidence

--tagged: JSONL rows {question, tagged_response, dataset} already ending in a confidence token.
--incorrect: a JSON object (or array) of {response, question, correct_answer, correct} judged answers;
each becomes a row tagged with the domain's C or U token by its `correct` field.
Writes train.jsonl and eval.jsonl (tagged rows, for the loss) and val.jsonl ({question,
correct_answer, dataset}, for `python -m evaluate.confidence` and the training callback). A file that
would be empty is not written, and the summary says so: val.jsonl needs --incorrect (tagged rows carry
no correct answer), eval.jsonl an --eval-share that leaves at least one row.
"""

import argparse
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser, bool_word
from nli_finetune.confidence_tokens import DEFAULT_DATASETS, DEFAULT_TOKENS
from nli_finetune.data_io import (
    DataError,
    atomic_write_jsonl,
    check_outputs,
    read_records,
    require_fields,
    seeded_split,
)
from nli_finetune.redaction import redact


def parse_correct(value, where: str) -> bool:
    """The judged answer's `correct` field: true/false, 1/0, yes/no; anything else (or nothing) is an error,
    never silently "wrong"."""
    word = str(value).strip() if value is not None else ""
    truth = bool_word({"1.0": "1", "0.0": "0"}.get(word, word))  # a CSV column of 0/1 may read as floats
    if truth is not None:
        return truth
    raise DataError(f"{where}: field 'correct': {value!r} is not true or false")


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tagged", default=None)
    p.add_argument("--incorrect", default=None, help="judged answers (tagged C or U by their 'correct' field)")
    p.add_argument("--dataset", default="boolq", help="dataset name of the --incorrect rows")
    p.add_argument("--out-dir", default="data/confidence")
    p.add_argument("--eval-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    rows, val = [], []
    out = Path(args.out_dir)
    if not 0 <= args.eval_share < 1:
        print(f"error: --eval-share must be in [0, 1), got {args.eval_share}", file=sys.stderr)
        return 2
    if not (args.tagged or args.incorrect):
        print("error: nothing to prepare: give --tagged and/or --incorrect", file=sys.stderr)
        return 2
    try:
        if args.dataset not in DEFAULT_DATASETS:
            raise DataError(f"--dataset {args.dataset}: unknown; known: {', '.join(sorted(DEFAULT_DATASETS))}")
        check_outputs({"--tagged": args.tagged, "--incorrect": args.incorrect},
                      {name: out / name for name in ("train.jsonl", "eval.jsonl", "val.jsonl")})
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
                where = f"{args.incorrect}: row {r.get('_line', '?')}"
                right = parse_correct(r.get("correct"), where)
                if not isinstance(r["response"], str):
                    raise DataError(f"{where}: field 'response' must be a string, got {r['response']!r}"[:300])
                rows.append({"question": r["question"], "dataset": args.dataset,
                             "tagged_response": f"{r['response'].rstrip()} {confident if right else unconfident}"})
                val.append({"question": r["question"], "correct_answer": r["correct_answer"], "dataset": args.dataset})
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    if not rows:
        print("error: the inputs hold no rows", file=sys.stderr)
        return 2
    held, train = seeded_split(rows, args.eval_share, args.seed)
    if not train:
        print(f"error: --eval-share {args.eval_share} leaves no training row of {len(rows)}", file=sys.stderr)
        return 2
    skipped = write_nonempty(out, {"train.jsonl": train, "eval.jsonl": held, "val.jsonl": val})
    u = sum("<U_" in r["tagged_response"] for r in rows)
    print(f"prepare_confidence_data: {len(rows)} tagged rows ({len(rows) - u} C, {u} U): {len(train)} train, "
          f"{len(held)} eval; {len(val)} validation questions -> {out}"
          + "".join(f"; {name} not written ({why})" for name, why in skipped.items()))
    return 0


EMPTY_BECAUSE = {"eval.jsonl": "--eval-share 0: set eval_data = None in the config",
                 "val.jsonl": "validation questions come from --incorrect: set confidence_eval_data = [] in the config"}


def write_nonempty(out: Path, files: dict) -> dict:
    """Write each file that has rows; {name: why} of those left unwritten (an empty eval file would
    only fail later, at the first evaluation of a training run)."""
    skipped = {}
    for name, rows in files.items():
        if rows:
            atomic_write_jsonl(out / name, rows)
        else:
            skipped[name] = EMPTY_BECAUSE[name]
    return skipped


if __name__ == "__main__":
    sys.exit(main())
