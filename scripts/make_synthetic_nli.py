"""A learnable synthetic NLI task: the hypothesis repeats the premise (label 1) or negates it (label 0).

    python scripts/make_synthetic_nli.py --out-dir data/synthetic --train 400 --eval 60

A tiny model cannot learn real NLI, but it can learn this rule; training on it through the same
scripts proves that labels (not only the answer format) are learned. Writes train.jsonl and eval.jsonl
in the prompt/completion format of prepare_ft_data.py (with premise, hypothesis and label fields).
"""

import argparse
import random
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import atomic_write_jsonl
from prompts import TASKS

NLI = TASKS["nli"]  # the chain-of-thought prompt and answer its rows are written in
SUBJECTS = ["the man", "the woman", "a child", "the dog", "the teacher", "a farmer", "the pilot", "my sister",
            "the doctor", "a student", "the cat", "the old king"]
VERBS = [("reads", "read"), ("paints", "paint"), ("sells", "sell"), ("carries", "carry"), ("builds", "build"),
         ("cleans", "clean"), ("watches", "watch"), ("buys", "buy"), ("opens", "open"), ("finds", "find")]
OBJECTS = ["a book", "the house", "a red car", "the old boat", "a letter", "the window", "some bread",
           "the garden", "a small box", "the map"]


def make_example(rng: random.Random, index: int) -> dict:
    subject, (verb, base), obj = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
    premise = f"{subject.capitalize()} {verb} {obj}."
    label = rng.randint(0, 1)
    if label:
        hypothesis, thought = premise, "The hypothesis repeats the premise, so it is entailed."
    else:
        hypothesis = f"{subject.capitalize()} does not {base} {obj}."
        thought = "The hypothesis negates the premise, so it is not entailed."
    return {"id": f"syn-{index}", "premise": premise, "hypothesis": hypothesis, "label": label, "source": "synthetic",
            "prompt": NLI.messages({"premise": premise, "hypothesis": hypothesis}),
            "completion": [{"role": "assistant", "content": NLI.answer(label, thought)}]}


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="data/synthetic")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--eval", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    examples = [make_example(rng, i) for i in range(args.train + args.eval)]
    out = Path(args.out_dir)
    atomic_write_jsonl(out / "train.jsonl", examples[:args.train])
    atomic_write_jsonl(out / "eval.jsonl", examples[args.train:])
    ones = sum(e["label"] for e in examples[args.train:])
    print(f"make_synthetic_nli: {args.train} train, {args.eval} eval ({ones} entailed) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
