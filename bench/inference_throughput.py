"""Inference throughput: evaluate/sample_model.py vs the original project's way, same model and prompts.

    make demo && python bench/inference_throughput.py            # the demo's fine-tuned SmolLM2-135M adapter
    python bench/inference_throughput.py --model models/X --task nli --max-new-tokens 512 --n 512 --batch-size 16 64

The original way: fixed batches of 32 in input order, a fixed max_new_tokens, the whole sequence
(prompt included) decoded and the answer cut after the prompt, `empty_cache` after every batch.
Ours: the adapter merged into the (unquantized) weights, prompts sorted by length, each sequence stopped
at eos or a complete JSON answer, only generated tokens decoded, and greedy_decode.py (KV
cache written in place, stopped rows leave the batch, prefill a few rows at a time); one row also runs
ours through transformers' `generate` (--decoder generate) to show what the decoder adds. All run greedy
on the same >= 256 real prompts of dev.csv, one run each; the table gives samples/s, the ratio to the
original way, and how many predictions differ from it. A benchmark, not a test.
"""

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluate.sample_model import main as sample_main
from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.extraction import extract_label
from nli_finetune.modeling import load_for_inference
from prompts import TASKS, Task, get_task, render_prompt

DEV = [REPO_ROOT.parent / "shared/data/nli/dev.csv", REPO_ROOT / "data/sample/dev_300.csv"]


@torch.inference_mode()
def original_way(model_dir: str, rows: list[dict], max_new_tokens: int, task: Task,
                 batch_size: int = 32) -> tuple[list, float]:
    model, tokenizer, _ = load_for_inference(model_dir, device="cpu", merge_lora=False)  # PeftModel, as it did
    started = time.time()
    predictions = []
    for start in range(0, len(rows), batch_size):
        texts = [render_prompt(tokenizer, task.messages(r)) for r in rows[start:start + batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
        for sequence in tokenizer.batch_decode(output, skip_special_tokens=True):
            # the whole sequence decoded, then cut after the prompt ([INST] or ChatML template)
            answer = sequence.split("[/INST]")[-1] if "[/INST]" in sequence else sequence.rsplit("assistant\n", 1)[-1]
            predictions.append(extract_label(answer, task)[0])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return predictions, time.time() - started


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO_ROOT / "models/smollm2-135m-nli-demo"))
    p.add_argument("--task", default="nli_label", choices=sorted(TASKS),
                   help="the task the model was trained on (its prompt)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, nargs="+", default=[32, 128],
                   help="ours, one run each (the original way always uses 32)")
    args = p.parse_args()
    if not Path(args.model).is_dir():
        print(f"error: {args.model} not found: run `make demo` first (it fine-tunes SmolLM2-135M)", file=sys.stderr)
        return 2
    source = next(p for p in DEV if p.exists())
    with open(source, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))[:args.n]
    work = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    data = work / "dev.csv"
    with open(data, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["premise", "hypothesis", "label"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("premise", "hypothesis", "label")} for r in rows)

    baseline, baseline_s = original_way(args.model, rows, args.max_new_tokens, get_task(args.task))
    table = [{"way": "original (batches of 32 in input order, full decode)", "seconds": baseline_s,
              "samples_per_s": len(rows) / baseline_s, "x_original": 1.0, "predictions_differ": 0}]
    runs = [(size, "auto") for size in args.batch_size] + [(max(args.batch_size), "generate")]
    for batch_size, decoder in runs:
        out = work / f"ours-{batch_size}-{decoder}.json"
        assert sample_main(["--model_id", args.model, "--test_file", str(data), "--output_file", str(out),
                            "--batch_size", str(batch_size), "--max_new_tokens", str(args.max_new_tokens),
                            "--decoder", decoder, "--quiet", "--device", "cpu", "--task", args.task]) == 0
        ours = json.loads(out.read_text())
        seconds = ours["timing"]["seconds_this_run"]
        predictions = [r["predicted_label"] for r in ours["records"]]
        table.append({"way": f"sample_model.py --batch_size {batch_size} --decoder {decoder}", "seconds": seconds,
                      "samples_per_s": len(rows) / seconds, "x_original": baseline_s / seconds,
                      "predictions_differ": sum(a != b for a, b in zip(baseline, predictions))})
    print(f"\n{len(rows)} prompts from {source.name}, max_new_tokens {args.max_new_tokens}, model {args.model}, "
          f"mean generated tokens {ours['metrics']['mean_generated_tokens']:.0f}")
    print(format_table(table, ["way", "seconds", "samples_per_s", "x_original", "predictions_differ"]))
    best = max(table[1:], key=lambda row: row["x_original"])
    print(f"inference_throughput: {best['x_original']:.2f}x the original way with {best['way']}; "
          f"{best['predictions_differ']} of {len(rows)} predictions differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
