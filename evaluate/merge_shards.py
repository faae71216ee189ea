"""Join the outputs of `sample_model.py --shard i/n` runs into the outputs one run would give.

    python -m evaluate.merge_shards results/X-dev.shard-*-of-4.json --output results/X-dev.json

Shards are ordered by their index (contiguous slices of the input), metrics are recomputed over all
records, and duplicate or missing shards, or shards of models with different contracts
(model_contract.py), shards of different runs (another setting than the shard, another test file or
model content) and an id in two shards are errors (exit 2).
"""

import argparse
import json
import re
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import check_outputs
from nli_finetune.model_contract import check_same_contract
from nli_finetune.redaction import redact
from nli_finetune.results import results_task, summarize, write_outputs

# Free to differ between the shards of one run: the shard itself and how each was loaded and decoded.
PER_SHARD_SETTINGS = ("shard", "loaded", "decoder", "model_contract")


def check_same_run(shards: list) -> None:
    """Shards of one run share every setting but the shard, and the fingerprints of the test file and
    the model files (sample_model's settings.fingerprints): shards of two runs don't make one result."""
    first_path, first = shards[0][0], shards[0][1]["settings"]
    for path, data in shards[1:]:
        settings = data["settings"]
        differ = sorted(k for k in set(first) | set(settings) if k not in PER_SHARD_SETTINGS
                        and k != "fingerprints" and first.get(k) != settings.get(k))
        prints = first.get("fingerprints") or {}
        other = settings.get("fingerprints") or {}
        differ += [f"fingerprint of the {k.replace('_', ' ')}" for k in sorted(set(prints) | set(other))
                   if prints.get(k) != other.get(k)]
        if differ:
            raise ValueError(f"{path} and {first_path} are shards of different runs (they differ in "
                             f"{', '.join(differ)}); merge the shards of one run")


def check_unique_ids(records: list) -> None:
    seen = set()
    for record in records:
        if record.get("id") in seen:
            raise ValueError(f"id {record.get('id')} is in more than one shard (overlapping shards); merge the "
                             "shards of one run")
        seen.add(record.get("id"))


def merge(paths: list[Path]) -> dict:
    shards = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ValueError(f"{path}: not a sample_model results file (expected an object with 'settings')")
        shard = data["settings"].get("shard")
        if not shard:
            raise ValueError(f"{path}: not a shard output (no settings.shard)")
        shards.append((tuple(shard), data, path))  # the path travels with its shard through the sort below
    check_same_contract({str(path): data["settings"].get("model_contract") for _, data, path in shards})
    shards.sort(key=lambda s: s[0][0])
    count = shards[0][0][1]
    indices = [s[0][0] for s in shards]
    if any(s[0][1] != count for s in shards) or indices != list(range(count)):
        raise ValueError(f"need shards 0..{count - 1} of {count} exactly once, got {sorted(indices)}")
    check_same_run([(path, data) for _, data, path in shards])
    settings = dict(shards[0][1]["settings"], shard=None)
    records = [r for _, data, _ in shards for r in data["records"]]
    check_unique_ids(records)
    seconds = max(data["timing"]["seconds_this_run"] for _, data, _ in shards)  # shards run side by side
    generated = sum(data["timing"]["generated_this_run"] for _, data, _ in shards)
    timing = {"seconds_this_run": seconds, "generated_this_run": generated,
              "samples_per_s": generated / seconds if seconds else None, "shards": count}
    task = results_task(paths[0], settings)
    return {"settings": settings, "metrics": summarize(records, task, settings["has_labels"]),
            "timing": timing, "records": records}


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m evaluate.merge_shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", nargs="+", help="the shard result JSON files")
    parser.add_argument("--output", default=None, help="merged JSON (default: the shard name without .shard-i-of-n)")
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else Path(re.sub(r"\.shard-\d+-of-\d+", "", args.shards[0]))
    try:
        check_outputs({f"shard {p}": p for p in args.shards}, {"--output": output, "CSV output": output.with_suffix(".csv")})
        merged = merge([Path(p) for p in args.shards])
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    write_outputs(output, output.with_suffix(".csv"), merged["settings"], merged["metrics"], merged["timing"],
                  merged["records"])
    print(f"merge_shards: {len(args.shards)} shards, {merged['metrics']['n']} records -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
