"""Split a JSONL data set in two at random (reproducible by seed).

    python scripts/split_dataset.py CAL_inference.jsonl
    python scripts/split_dataset.py CAL_inference.jsonl --output1 DA/train.jsonl --output2 DB/train.jsonl \
        --ratio 0.5 --seed 42

Defaults: `<input>_part1.jsonl` and `<input>_part2.jsonl` beside the input. The ratio is the share that
goes to the first file (strictly between 0 and 1). Lines are copied byte for byte (UTF-8, CRLF endings and
U+2028 inside strings kept; an input's UTF-8 BOM starts each output, never a shuffled line), the input is never touched, missing output
folders are created, and both outputs are written atomically: a malformed JSON line is an error naming
its line number, and then nothing is written.
"""

import argparse
import json
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import DataError, atomic_write_bytes, check_outputs, seeded_split
from nli_finetune.redaction import redact


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("--output1", default=None)
    p.add_argument("--output2", default=None)
    p.add_argument("--ratio", type=float, default=0.5, help="share of lines for output1, in (0, 1)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    source = Path(args.input)
    if not 0 < args.ratio < 1:
        print(f"error: --ratio must be strictly between 0 and 1, got {args.ratio}", file=sys.stderr)
        return 2
    try:
        data = source.read_bytes()
    except OSError as exc:
        print(f"error: {source}: cannot read: {exc}", file=sys.stderr)
        return 2
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    data = data[len(bom):]  # it marks the file, not its first line: each output starts with it instead
    records = []  # raw lines, each with its own line ending, exactly as in the file
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            print(f"error: {source}: line {number}: not UTF-8: {exc}", file=sys.stderr)
            return 2
        if not text.strip():
            continue
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            print(f"error: {source}: line {number}: invalid JSON: {exc.msg}", file=sys.stderr)
            return 2
        records.append(line if line.endswith(b"\n") else line + b"\n")
    if not records:
        print(f"error: {source}: no lines to split", file=sys.stderr)
        return 2
    stem = source.with_suffix("")
    out1 = Path(args.output1 or f"{stem}_part1.jsonl")
    out2 = Path(args.output2 or f"{stem}_part2.jsonl")
    try:
        check_outputs({"input": source}, {"--output1": out1, "--output2": out2})
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    first, second = seeded_split(records, args.ratio, args.seed)
    atomic_write_bytes(out1, bom + b"".join(first))
    atomic_write_bytes(out2, bom + b"".join(second))
    total = len(records) or 1
    print(f"total lines: {len(records)}")
    print(f"{out1}: {len(first)} lines ({100 * len(first) / total:.1f}%)")
    print(f"{out2}: {len(second)} lines ({100 * len(second) / total:.1f}%)")
    print(f"split_dataset: {len(records)} -> {len(first)} + {len(second)} (ratio {args.ratio}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
