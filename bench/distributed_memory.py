"""Memory per rank, DDP vs FSDP (full_shard), 2 CPU processes over gloo: what sharding saves.

    python bench/distributed_memory.py                         # a 34M-parameter Llama-shaped model, full fine-tune
    python bench/distributed_memory.py --hidden-size 768 --layers 12 --lora

Each mode runs train_sft.py under torchrun for a few steps of the same data. After every step each rank
counts the bytes of the weights, gradients and AdamW state it holds (FSDP: its own shards) and its peak
RSS (all of the process: torch's libraries, the tokenizer, the data). A single-process run is the
reference. A benchmark, not a test: it measures and never fails on a number.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from nli_finetune import REPO_ROOT

MB = 1024 ** 2


def local_bytes(tensor) -> int:
    tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return tensor.numel() * tensor.element_size()


def child(args) -> int:
    """One rank of one mode: train_sft with a callback that records what this rank holds."""
    from transformers import TrainerCallback

    from train import train_sft

    class HeldBytes(TrainerCallback):
        peak = {"weights": 0, "gradients": 0, "optimizer": 0}

        def on_pre_optimizer_step(self, args_, state, control, model=None, optimizer=None, **kwargs):
            grads = sum(local_bytes(p.grad) for p in model.parameters() if p.grad is not None)
            self.peak["gradients"] = max(self.peak["gradients"], grads)

        def on_step_end(self, args_, state, control, model=None, optimizer=None, **kwargs):
            self.peak["weights"] = max(self.peak["weights"], sum(local_bytes(p) for p in model.parameters()))
            moments = sum(local_bytes(t) for s in optimizer.state.values() for t in s.values() if hasattr(t, "numel"))
            self.peak["optimizer"] = max(self.peak["optimizer"], moments)

    recorder = HeldBytes()
    make_callbacks = train_sft.make_callbacks
    train_sft.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [recorder]
    overrides = ["--fsdp", "full_shard"] if args.child == "fsdp" else []
    lora = ["--use_lora", "true"] if args.lora else ["--use_lora", "false"]
    code = train_sft.main(["tiny_cpu.py", "--model_id", args.model, "--output_dir", args.out, "--max_steps", str(args.steps),
                           "--batch_size", "2", "--max_train_examples", "32", "--save_steps", "100000",
                           "--logging_steps", "100", "--group_by_length", "false", *lora, *overrides])
    rank = int(os.environ.get("RANK", "0"))
    seconds = json.loads((Path(args.out) / "train_results.json").read_text())["train_runtime_s"] if rank == 0 else None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.out, f"memory_rank{rank}.json").write_text(json.dumps({**recorder.peak, "rss": peak_rss,
                                                                     "seconds": seconds}))
    return code


def run_mode(mode: str, args, model: Path, work: Path) -> list[dict]:
    out = work / mode
    launcher = [] if mode == "single" else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([sys.executable, *launcher, __file__, "--child", "ddp" if mode == "single" else mode,
                    "--model", str(model), "--out", str(out), "--steps", str(args.steps), *(["--lora"] if args.lora else [])],
                   cwd=REPO_ROOT, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return [json.loads(p.read_text()) for p in sorted(out.glob("memory_rank*.json"))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    p.add_argument("--child", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    from scripts.make_tiny_model import make_tiny_model
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = make_tiny_model("llama", work / "model", hidden_size=args.hidden_size, layers=args.layers)
        from safetensors.torch import load_file
        params = sum(t.numel() for t in load_file(model / "model.safetensors").values())
        print(f"model: Llama-shaped, {args.layers} layers x {args.hidden_size} hidden, ~{params / 1e6:.0f}M parameters, "
              f"float32, {'LoRA' if args.lora else 'full fine-tune'}, AdamW, {args.steps} steps, batch 2 per rank")
        print("| mode | ranks | weights / rank (MB) | gradients / rank (MB) | AdamW state / rank (MB) | "
              "held / rank (MB) | peak RSS / rank (MB) | s / step |")
        print("|---|---|---|---|---|---|---|---|")
        for mode, label in (("single", "one process"), ("ddp", "DDP"), ("fsdp", "FSDP full_shard")):
            ranks = run_mode(mode, args, model, work)
            worst = {k: max(r[k] for r in ranks) for k in ("weights", "gradients", "optimizer", "rss")}
            held = max(r["weights"] + r["gradients"] + r["optimizer"] for r in ranks)
            seconds = next(r["seconds"] for r in ranks if r["seconds"] is not None) / args.steps
            print(f"| {label} | {len(ranks)} | {worst['weights'] / MB:.1f} | {worst['gradients'] / MB:.1f} | "
                  f"{worst['optimizer'] / MB:.1f} | {held / MB:.1f} | {worst['rss'] / MB:.0f} | {seconds:.2f} |")
    print("held = weights + gradients + AdamW state this rank keeps (the largest rank); FSDP also gathers one "
          "layer at a time for the forward and backward, which this does not count. Peak RSS includes the whole "
          "model every rank loads into CPU memory before it is sharded (on GPUs that is host memory: each GPU "
          "receives its shard only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
