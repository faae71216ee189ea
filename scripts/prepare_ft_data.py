"""Assemble the ablation training sets from teacher thoughts and reflections.

    python scripts/prepare_ft_data.py --ablation 2 \
        --original-thoughts data/sample/sample_thoughts.jsonl \
        --reflected-thoughts data/sample/sample_reflections.jsonl \
        --output-file data/finetune/ablation2_train.jsonl --holdout 20 --holdout-file data/finetune/ablation2_eval.jsonl
    python scripts/prepare_ft_data.py --ablation 1 --original-thoughts ../shared/data/nli/dev_teacher_cot.csv \
        --output-file data/finetune/ablation1_train.jsonl --eval-file data/sample/sample.csv
    python scripts/prepare_ft_data.py --answer label --pairs data/sample/dev_train_3000.csv --balance \
        --eval-file data/sample/dev_300.csv --output-file data/finetune/demo_train.jsonl     # what make demo runs

Ablations: 1 = correct originals only; 2 = correct originals + reflections whose own label agrees with
the true label; 3 = all originals unmodified (wrong labels included). Output is prompt/completion JSONL
in the conversational format train_sft.py reads (`--format text` writes the legacy `<s>[INST]` lines),
deduplicated by id, shuffled with --seed. `--eval-file` (one or more files) drops training rows whose own pair also occurs
in an eval set (leakage), compared as nli_finetune/teacher_data.py's `pair_key` does: case, Unicode form
(NFC/NFD/NFKC), runs of whitespace and a space before punctuation do not hide a pair; the training text
is written as read. Originals may be the JSONL of generate_thoughts.py or the teacher-CoT CSV
(id, premise, hypothesis, label, prediction, correct_prediction, thoughts); nli_finetune/teacher_data.py
reads both, as generate_thoughts_reflected.py does, so a reflection keeps its original thought's id.

`--answer label` writes short answers instead, `{"predicted_label": N}` with the true label, under the
`nli_label` task's prompt; it takes labelled pairs (`--pairs`: premise, hypothesis, label) and needs no
thoughts. `--balance` keeps as many examples of each label (a seeded sample of the larger class).
Rows without an id get `<file name>:<row>`; an id that two input files share is refused (exit 2, naming
both files), since dedupe by id would otherwise drop one file's row for the other's.

`--answer distill` is step-by-step distillation (Hsieh et al. 2023, arXiv 2305.02301) from teacher rows:

    python scripts/prepare_ft_data.py --answer distill --original-thoughts data/sample/teacher_cot_1000.csv \
        --rationale-weight 1.0 --eval-file data/sample/dev_300.csv --output-file data/finetune/distill_train.jsonl

Per pair it writes the label row `--answer label` writes (the nli_label prompt, the true label) and, as an
auxiliary target, a rationale row: the pair under the `nli_rationale` prompt (its own "[rationale]" prefix
and instruction) answered with the teacher's thought as plain text, id `<id>:rationale`. Train with
`--task nli_label`: the label rows are exactly what inference asks, so inference costs what label-only
costs. `--rationale-weight W` gives a seeded share W (0..1) of the pairs a rationale row; only thoughts
that reached the true label serve, unless `--no-correct-rationales-only`. `--rationales-first` writes every
rationale row before every label row (each part still shuffled): a curriculum, trained in file order with
`--no_shuffle --no_group_by_length` (train_sft's `shuffle` key). `--rationales-only` writes the same
rationale rows (the same seed and weight pick the same ones) without the label rows: a first training stage,
which a label-only run then continues (train_sft's `init_adapter`).

`--max-pairs N` trains on N labelled pairs: a seeded (--seed) random N of the pair ids, drawn from the pairs
that are no duplicate and in no eval file, before any recipe keeps or drops a row (correct thoughts only, a
rationale's weight, --balance), so `--answer label` and `--answer distill` with the same N and seed train on
the same pairs, and a smaller N's pairs are among a larger N's. An N larger than that pool is an error.

    python scripts/prepare_ft_data.py --answer label --pairs ../shared/data/nli/dev_teacher_cot.csv \
        --max-pairs 500 --eval-file data/sample/dev_300_tune.csv --output-file data/finetune/label_500.jsonl
"""

import argparse
import math
import random
import sys
from collections import Counter

from nli_finetune.cli import ArgumentParser, at_least
from nli_finetune.data_io import DataError, atomic_write_jsonl, check_outputs
from nli_finetune.teacher_data import (
    NLI,
    eval_pair_keys,
    load_files,
    load_originals,
    load_pairs,
    load_reflections,
    pair_key,
)
from prompts import TASKS, Task

NLI_LABEL = TASKS["nli_label"]          # --answer label's short answers
NLI_RATIONALE = TASKS["nli_rationale"]  # --answer distill's auxiliary target
RATIONALE_SUFFIX = ":rationale"  # a rationale row's id: the pair's id + this, so dedupe keeps both rows


def to_example(row: dict, label: int, source: str, task: Task) -> dict:
    """A prompt/completion example; it keeps its pair, so leakage is checked on the example's own text."""
    answer = task.answer(label, row.get("thought_process"))
    return {"id": row["id"], "premise": row["premise"], "hypothesis": row["hypothesis"],
            "label": row["true_label"], "source": source, "prompt": task.messages(row),
            "completion": [{"role": "assistant", "content": answer}]}


def as_text_line(example: dict) -> dict:
    """--format text: the legacy `<s>[INST] user message [/INST] answer </s>` line of an example."""
    user, answer = example["prompt"][-1]["content"], example["completion"][0]["content"]
    return {"id": example["id"], "text": f"<s>[INST] {user} [/INST] {answer} </s>"}


def build_label_only(pairs):
    """Short-answer examples: each pair with its true label, under the nli_label prompt."""
    stats = Counter(pairs=len(pairs))
    return [to_example(row, row["true_label"], "pair", NLI_LABEL) for row in pairs], stats, []


def rationale_example(row: dict) -> dict:
    """The auxiliary target: the pair under the nli_rationale prompt, the teacher's thought as the answer."""
    return {"id": row["id"] + RATIONALE_SUFFIX, "premise": row["premise"], "hypothesis": row["hypothesis"],
            "label": row["true_label"], "source": "rationale", "prompt": NLI_RATIONALE.messages(row),
            "completion": [{"role": "assistant", "content": row["thought_process"]}]}


def build_distill(originals, correct_only: bool):
    """Label rows for every pair (as --answer label writes them) and a rationale row per usable thought."""
    examples, stats, _ = build_label_only(originals)
    for row in originals:
        correct = row["predicted_label"] == row["true_label"]
        stats["originals_correct" if correct else "originals_wrong"] += 1
        if correct or not correct_only:
            examples.append(rationale_example(row))
    return examples, stats, []


def sample_rationales(examples: list[dict], weight: float, seed: int) -> list[dict]:
    """All label rows and a seeded share `weight` of the rationale rows (after dedupe and leakage)."""
    rationales = [e for e in examples if e["source"] == "rationale"]
    keep = {id(e) for e in random.Random(seed).sample(rationales, round(weight * len(rationales)))}
    return [e for e in examples if e["source"] != "rationale" or id(e) in keep]


def balance(examples: list[dict], seed: int) -> list[dict]:
    """As many examples of each label as the rarest label has (a seeded sample of the others)."""
    by_label = {}
    for example in examples:
        by_label.setdefault(example["label"], []).append(example)
    size = min(len(group) for group in by_label.values())
    rng = random.Random(seed)
    return [e for label in sorted(by_label) for e in rng.sample(by_label[label], size)]


def subset_of_pairs(rows: list[dict], eval_pairs: set, count: int, seed: int) -> tuple[list[dict], int]:
    """(the rows of a seeded random `count` of the pairs, the pool's size). The pool is every pair id whose
    pair is in no eval file; the draw is a seeded shuffle of its ids in sorted order, cut at `count`, so it
    does not depend on the recipe or the files' order, and a smaller count's pairs are among a larger one's."""
    pool = sorted({row["id"] for row in rows if pair_key(row["premise"], row["hypothesis"]) not in eval_pairs},
                  key=str)
    if count > len(pool):
        raise DataError(f"--max-pairs {count}: the pool holds only {len(pool)} labelled pairs (distinct ids "
                        "in no eval file)")
    random.Random(seed).shuffle(pool)
    chosen = set(pool[:count])
    return [row for row in rows if row["id"] in chosen], len(pool)


def holdout_count(value: float, available: int) -> int:
    """--holdout as a count: a fraction in [0, 1) of the examples, or a whole number of them."""
    if not math.isfinite(value) or value < 0:
        raise DataError(f"--holdout must be a fraction in [0, 1) or a whole number >= 1, got {value}")
    if value >= 1 and not float(value).is_integer():
        raise DataError(f"--holdout {value}: a count must be a whole number (or give a fraction below 1)")
    return int(value) if value >= 1 else round(value * available)


def build(originals, reflections, ablation: int):
    """(examples, stats, ids of reflections that disagree with the true label), before dedup/leakage."""
    stats, disagreeing = Counter(), []
    examples = []
    for row in originals:
        correct = row["predicted_label"] == row["true_label"]
        stats["originals_correct" if correct else "originals_wrong"] += 1
        if ablation == 3:
            examples.append(to_example(row, row["predicted_label"], "original", NLI))
        elif correct:
            examples.append(to_example(row, row["true_label"], "original", NLI))
    if ablation == 2:
        for row in reflections:
            if row["reflection_label"] != row["true_label"]:
                stats["reflections_disagreeing"] += 1
                disagreeing.append(row["id"])
                continue
            stats["reflections_used"] += 1
            examples.append(to_example(row, row["true_label"], "reflection", NLI))
    return examples, stats, disagreeing


def parse_args(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answer", choices=["cot", "label", "distill"], default="cot",
                   help="cot: thought + label (ablations); label: {\"predicted_label\": N} from labelled pairs; "
                        "distill: label rows + rationale rows from --original-thoughts")
    p.add_argument("--original-thoughts", nargs="+", default=[],
                   help="JSONL from generate_thoughts.py and/or teacher-CoT CSVs (an id two files share is refused)")
    p.add_argument("--reflected-thoughts", default=None, help="JSONL from generate_thoughts_reflected.py (ablation 2)")
    p.add_argument("--pairs", nargs="+", default=[],
                   help="--answer label: CSV/JSONL with premise, hypothesis, label (an id two files share is refused)")
    p.add_argument("--output-file", required=True)
    p.add_argument("--ablation", type=int, choices=[1, 2, 3], default=None, help="--answer cot: which ablation")
    p.add_argument("--format", choices=["prompt_completion", "text"], default="prompt_completion")
    p.add_argument("--eval-file", nargs="+", default=[],
                   help="drop training pairs whose premise+hypothesis occur in any of these files (a study's "
                        "tune and test files)")
    p.add_argument("--balance", action="store_true", help="as many examples of each label (seeded)")
    p.add_argument("--holdout", type=float, default=0, help="hold out N examples (or a fraction < 1) for eval")
    p.add_argument("--holdout-file", default=None, help="where the held-out examples go")
    p.add_argument("--rationale-weight", type=float, default=1.0,
                   help="--answer distill: the share (0..1) of pairs with a usable thought that get a rationale row")
    p.add_argument("--correct-rationales-only", action=argparse.BooleanOptionalAction, default=True,
                   help="--answer distill: only thoughts that reached the true label serve as rationales")
    p.add_argument("--rationales-first", action="store_true",
                   help="--answer distill: every rationale row before every label row (a curriculum)")
    p.add_argument("--rationales-only", action="store_true",
                   help="--answer distill: the rationale rows alone (a stage before a label-only run)")
    p.add_argument("--max-pairs", type=at_least(1), default=None,
                   help="train on a seeded random N of the labelled pairs (the same for every recipe with the same "
                        "N and --seed)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.answer == "distill" and not args.original_thoughts:
        p.error("--answer distill needs --original-thoughts (teacher rows with thoughts)")
    if args.answer == "distill" and (args.format == "text" or args.balance):
        p.error("--answer distill writes prompt_completion rows and every label row (no --format text, --balance)")
    for flag in ("rationales_first", "rationales_only"):
        if getattr(args, flag) and args.answer != "distill":
            p.error(f"--{flag.replace('_', '-')} picks --answer distill's rationale rows; it needs --answer distill")
    if args.rationales_first and args.rationales_only:
        p.error("--rationales-first and --rationales-only: with the rationale rows alone there is no order to set")
    if not 0 <= args.rationale_weight <= 1:
        p.error(f"--rationale-weight must be in [0, 1], got {args.rationale_weight}")
    if args.answer == "cot" and (args.ablation is None or not args.original_thoughts):
        p.error("--answer cot needs --ablation and --original-thoughts")
    if args.answer == "label" and not args.pairs:
        p.error("--answer label needs --pairs")
    if args.ablation == 2 and not args.reflected_thoughts:
        p.error("--ablation 2 needs --reflected-thoughts")
    if args.holdout and not args.holdout_file:
        p.error("--holdout needs --holdout-file")
    if args.balance and args.format == "text":
        p.error("--balance needs --format prompt_completion (the legacy text lines carry no label field)")
    return args


def load_and_build(args):
    """(examples, stats, disagreeing reflection ids, eval pair keys); with --max-pairs, of that many pairs."""
    inputs = {f"--original-thoughts {path}": path for path in args.original_thoughts}
    inputs.update({f"--pairs {path}": path for path in args.pairs})
    inputs.update({f"--eval-file {path}": path for path in args.eval_file})
    inputs["--reflected-thoughts"] = args.reflected_thoughts
    check_outputs(inputs, {"--output-file": args.output_file,
                           "--holdout-file": args.holdout_file if args.holdout else None})
    eval_pairs = set().union(*(eval_pair_keys(path) for path in args.eval_file))
    rows = load_files(args.pairs, load_pairs) if args.answer == "label" \
        else load_files(args.original_thoughts, load_originals)
    reflections = load_reflections(args.reflected_thoughts) if args.answer == "cot" and args.ablation == 2 else []
    pool = None
    if args.max_pairs:  # before any recipe keeps or drops a row
        rows, pool = subset_of_pairs(rows, eval_pairs, args.max_pairs, args.seed)
        chosen = {row["id"] for row in rows}
        reflections = [reflection for reflection in reflections if reflection["id"] in chosen]
    if args.answer == "label":
        examples, stats, disagreeing = build_label_only(rows)
    elif args.answer == "distill":
        examples, stats, disagreeing = build_distill(rows, args.correct_rationales_only)
    else:
        examples, stats, disagreeing = build(rows, reflections, args.ablation)
    if pool is not None:
        stats["pool"] = pool
    return examples, stats, disagreeing, eval_pairs


def dedup_and_check_leakage(examples, stats, eval_pairs) -> list[dict]:
    """The examples whose own pair is not in the eval set, the first of each id. Leakage comes first, so
    a leaked row never takes an id from a clean one."""
    seen, kept = set(), []
    for example in examples:
        if pair_key(example["premise"], example["hypothesis"]) in eval_pairs:
            stats["leakage_dropped"] += 1
            continue
        if example["id"] in seen:
            stats["duplicates_dropped"] += 1
            continue
        seen.add(example["id"])
        kept.append(example)
    return kept


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        examples, stats, disagreeing, eval_pairs = load_and_build(args)
        kept = dedup_and_check_leakage(examples, stats, eval_pairs)
        if args.balance:
            kept = balance(kept, args.seed)
        if args.answer == "distill":
            kept = sample_rationales(kept, args.rationale_weight, args.seed)
        if args.rationales_only:
            kept = [e for e in kept if e["source"] == "rationale"]
        if not kept:
            raise DataError("no training examples are left (after dedupe, leakage and --rationale-weight)")
        random.Random(args.seed).shuffle(kept)
        n_holdout = holdout_count(args.holdout, len(kept))
        if n_holdout >= len(kept):
            raise DataError(f"--holdout {args.holdout} leaves no training examples (only {len(kept)})")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    held_out, train = kept[:n_holdout], kept[n_holdout:]
    if args.rationales_first:  # a stable sort: each part keeps its shuffled order
        train.sort(key=lambda e: e.get("source") != "rationale")
    sources = Counter(e["source"] for e in train)
    labels = Counter(e["label"] for e in train)
    if args.format == "text":
        train, held_out = [as_text_line(e) for e in train], [as_text_line(e) for e in held_out]
    atomic_write_jsonl(args.output_file, train)
    if n_holdout:
        atomic_write_jsonl(args.holdout_file, held_out)

    if args.answer == "distill":
        print(f"originals: {stats['originals_correct']} correct, {stats['originals_wrong']} wrong; rationales from "
              f"{'the correct thoughts' if args.correct_rationales_only else 'every thought'}, weight "
              f"{args.rationale_weight}")
    if args.answer == "cot":
        print(f"originals: {stats['originals_correct']} correct, {stats['originals_wrong']} wrong; "
              f"reflections used: {stats['reflections_used']}, disagreeing with the true label (skipped): "
              f"{stats['reflections_disagreeing']}" + (f" (ids {', '.join(disagreeing)})" if disagreeing else ""))
    if args.max_pairs:
        print(f"pairs: {args.max_pairs} of the pool's {stats['pool']} (--max-pairs, seed {args.seed})")
    print(f"dropped: {stats['duplicates_dropped']} duplicate ids, {stats['leakage_dropped']} pairs also in the eval set"
          + (f"; labels {dict(sorted(labels.items()))}" if args.format != "text" else ""))
    what = {"cot": f"ablation {args.ablation}", "label": "label-only answers",
            "distill": "rationale rows (distillation)" if args.rationales_only
            else "label + rationale rows (distillation)"}[args.answer]
    print(f"prepare_ft_data: {what}: {len(train)} training examples "
          f"({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}) -> {args.output_file}"
          + (f"; {len(held_out)} held out -> {args.holdout_file}" if n_holdout else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
