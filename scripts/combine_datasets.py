"""Combine several sources into one shuffled chat (`messages`) data set, each row tagged with its source.

    python scripts/combine_datasets.py --input cal=data/cal/train_A.jsonl --input stats=data/qa.jsonl:question_answer \
        --output data/combined/train.jsonl --holdout 0.1 --seed 42

Each `--input NAME=PATH[:FORMAT]`: FORMAT is messages, prompt_response (prompt + response or completion
strings), question_answer (question + answer), or auto (the default: detected per row). `--system` adds
a system turn to rows that have none. With `--holdout F` a share F of the rows goes to
`<output>_holdout.jsonl` (or `--holdout-file`). Prints a table of sources, counts and shares.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.data_io import DataError, atomic_write_jsonl, check_outputs, read_jsonl, seeded_split
from nli_finetune.redaction import redact
from nli_finetune.sft_formats import detect_format, question_answer_messages
from prompts import TASKS

FORMATS = ("auto", "messages", "prompt_response", "question_answer")
FREE_TEXT = TASKS["free_text"]  # no input fields: detect_format never reads a row as a raw task row


def to_messages(record: dict, fmt: str, where: str, system: str | None) -> list[dict]:
    fmt = detect_format(record, FREE_TEXT) if fmt == "auto" else fmt
    fmt = "prompt_response" if fmt == "prompt_completion" else fmt  # both: a prompt string and its answer
    if fmt == "messages":
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in messages):
            raise DataError(f"{where}: field 'messages' must be a list of {{role, content}} with a system, user "
                            "or assistant role and text content")
    elif fmt == "prompt_response":
        answer = record.get("response", record.get("completion"))
        if not isinstance(record.get("prompt"), str) or not isinstance(answer, str):
            raise DataError(f"{where}: fields 'prompt' and 'response' must be strings")
        messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": answer}]
    elif fmt == "question_answer":
        messages = question_answer_messages(record, where)
    else:
        raise DataError(f"{where}: cannot tell the format (messages, prompt/response or question/answer)")
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    return messages


def parse_input(spec: str) -> tuple[str, Path, str]:
    name, eq, rest = spec.partition("=")
    if not eq or not name:
        raise DataError(f"--input {spec}: expected NAME=PATH[:FORMAT]")
    path, fmt = rest, "auto"
    head, colon, tail = rest.rpartition(":")
    if colon and tail in FORMATS:
        path, fmt = head, tail
    return name, Path(path), fmt


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", action="append", required=True, help="NAME=PATH[:FORMAT], repeatable")
    p.add_argument("--output", required=True)
    p.add_argument("--holdout", type=float, default=0.0, help="share of rows held out, in [0, 1)")
    p.add_argument("--holdout-file", default=None)
    p.add_argument("--system", default=None, help="system prompt for rows without one")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if not 0 <= args.holdout < 1:
        print(f"error: --holdout must be in [0, 1), got {args.holdout}", file=sys.stderr)
        return 2
    rows = []
    output = Path(args.output)
    holdout_file = Path(args.holdout_file or output.with_name(output.stem + "_holdout.jsonl"))
    try:
        check_outputs({f"--input {spec}": parse_input(spec)[1] for spec in args.input},
                      {"--output": output, "--holdout-file": holdout_file if args.holdout else None})
        for spec in args.input:
            name, path, fmt = parse_input(spec)
            for record in read_jsonl(path):
                where = f"{path}: line {record['_line']}"
                rows.append({"messages": to_messages(record, fmt, where, args.system), "source": name})
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    if not rows:
        print("error: the inputs hold no rows; nothing written", file=sys.stderr)
        return 2
    held, train = seeded_split(rows, args.holdout, args.seed)
    atomic_write_jsonl(output, train)
    if held:
        atomic_write_jsonl(holdout_file, held)
    counts = Counter(r["source"] for r in rows)
    table = [{"source": name, "rows": n, "share": n / len(rows)} for name, n in counts.most_common()]
    print(format_table(table, ["source", "rows", "share"]))
    print(f"combine_datasets: {len(rows)} rows from {len(counts)} sources -> {output} ({len(train)})"
          + (f" + holdout ({len(held)})" if held else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
