"""Training throughput: train_sft.py (length-grouped batches; padding-free under flash-attention) vs TRL SFTTrainer
(defaults: pad to the longest in the batch, no packing, random order), same model, data, LoRA and steps.

    python bench/train_throughput.py                      # one run each, prints a table and the ratio
    python bench/train_throughput.py --examples 640 --hidden-size 256

Data: real chain-of-thought completions (../shared/data/nli/dev_teacher_cot.csv, else the bundled
1,000-row slice) through prepare_ft_data.py. Each side runs in its own process so peak memory (max
RSS) is its own. Useful tokens = the real (non-pad) tokens of the examples seen; both sides see every
example exactly once (one epoch). Gradient checkpointing is off on both (it trades speed for memory
the same way on each). A benchmark, not a test: it measures and never fails on a number.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

COT = [REPO_ROOT.parent / "shared/data/nli/dev_teacher_cot.csv", REPO_ROOT / "data/sample/teacher_cot_1000.csv"]


def run_ours(args, model, data, out) -> dict:
    from train.train_sft import main
    code = main(["tiny_cpu.py", "--model_id", str(model), "--train_data", str(data), "--output_dir", str(out),
                 "--num_epochs", "1", "--max_steps", "-1", "--batch_size", str(args.batch_size),
                 "--learning_rate", "2e-4", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.05",
                 "--max_seq_length", "1024", "--logging_steps", "1000", "--save_steps", "100000",
                 "--use_packing", "true", "--group_by_length", "true"])
    assert code == 0
    return {"seconds": json.loads((Path(out) / "train_results.json").read_text())["train_runtime_s"]}


def run_trl(args, model, data, out) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from data_io import read_jsonl
    from modeling import load_tokenizer
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(data)]
    tokenizer = load_tokenizer(str(model))
    config = SFTConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                       learning_rate=2e-4, max_length=1024, report_to=[], use_cpu=True, bf16=False,
                       gradient_checkpointing=False, logging_steps=1000, save_strategy="no", seed=42)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = SFTTrainer(model=str(model), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    started = time.time()
    trainer.train()
    return {"seconds": time.time() - started}


def child(args) -> int:
    result = (run_ours if args.child == "ours" else run_trl)(args, args.model, args.data, args.out)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))
    return 0


def useful_tokens(model, data) -> int:
    from modeling import load_tokenizer
    from train.sft_data import load_sft_examples
    examples, _ = load_sft_examples(data, load_tokenizer(str(model)), max_seq_length=1024)
    return sum(len(e["input_ids"]) for e in examples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from evaluate.metrics import format_table
    from scripts.make_tiny_model import make_tiny_model
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    model = make_tiny_model("mistral", work / "model", hidden_size=args.hidden_size, layers=args.layers)
    source = next(p for p in COT if p.exists())
    subprocess.run([sys.executable, "scripts/prepare_ft_data.py", "--ablation", "1", "--original-thoughts",
                    str(source), "--output-file", str(work / "all.jsonl")], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    lines = (work / "all.jsonl").read_text().splitlines()[:args.examples]
    data = work / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    tokens = useful_tokens(model, data)

    rows = []
    for side in ("trl", "ours"):
        proc = subprocess.run([sys.executable, __file__, "--child", side, "--model", str(model), "--data", str(data),
                               "--out", str(work / side), "--batch-size", str(args.batch_size)],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
        rows.append({"trainer": "TRL SFTTrainer (defaults)" if side == "trl" else "train_sft.py",
                     "seconds": result["seconds"], "tokens_per_s": tokens / result["seconds"],
                     "peak_rss_mb": result["max_rss_mb"]})
    print(f"\n{len(lines)} real CoT examples ({tokens} tokens), batch {args.batch_size}, one epoch, tiny mistral "
          f"hidden {args.hidden_size} x {args.layers} layers, LoRA r16 on all linear layers, CPU ({os.cpu_count()} cores)")
    print(format_table(rows, ["trainer", "seconds", "tokens_per_s", "peak_rss_mb"]))
    ratio = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    print(f"train_throughput: train_sft.py is {ratio:.2f}x TRL's useful-token throughput "
          f"(goal >= 1.5x), peak RSS {rows[1]['peak_rss_mb']:.0f} vs {rows[0]['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
