"""The main job on the embedded default: the whole NLI pipeline on a tiny local model, CPU only.

    make demo               (creates .venv, installs, runs this; ~5 minutes on 2 cores)
    python scripts/demo.py

1. build the tiny model (random weights, locally trained tokenizer) -> models/tiny-mistral
2. assemble the ablation-2 training set from the bundled real thoughts and reflections, holding out
   40 examples for evaluation (scripts/prepare_ft_data.py) -> data/finetune/demo_{train,eval}.jsonl
3. train with train/configs/tiny_cpu.py through `run_training.sh --local`
4. run `evaluate/run_inference.sh --local` on the held-out examples with the trained adapter and with
   the untrained model (no early JSON stop, so the stop rate measures eos)
5. print and save the comparison under results/demo/: summary.json, summary.txt, loss_curve.png,
   confusion_matrix.png
A tiny model cannot learn real NLI: the point is that it learns the answer format and to stop; its
accuracy is reported as measured.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from data_io import atomic_write_json, atomic_write_text  # noqa: E402
from evaluate.metrics import format_table  # noqa: E402

MODEL_DIR = "models/tiny-mistral"
ADAPTER_DIR = "models/tiny-mistral-nli-demo"
TRAIN, EVAL = "data/finetune/demo_train.jsonl", "data/finetune/demo_eval.jsonl"
OUT = REPO_ROOT / "results" / "demo"
COLUMNS = ["model", "parse_rate", "single_json_rate", "stop_rate", "accuracy", "f1", "samples_per_s"]


def step(title: str, cmd: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    started = time.time()
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    print(f"--- {title}: {time.time() - started:.0f}s", flush=True)


def summary_row(path: Path) -> dict:
    result = json.loads(path.read_text())
    m = result["metrics"]
    return {"parse_rate": m["parse_rate"], "single_json_rate": m["single_json_rate"],
            "stop_rate": m["eos_rate"], "accuracy": m["accuracy"], "f1": m["f1_macro"],
            "samples_per_s": result["timing"]["samples_per_s"], "n": m["n"],
            "mean_generated_tokens": m["mean_generated_tokens"], "confusion_matrix": m["confusion_matrix"]}


def plot(log_history: list[dict], confusion: dict) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in log_history if "loss" in h]
    losses = [h["loss"] for h in log_history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses)
    ax.set(xlabel="step", ylabel="training loss (answer tokens)", title="tiny model, ablation 2 sample")
    fig.tight_layout()
    fig.savefig(OUT / "loss_curve.png", dpi=100)
    plt.close(fig)

    rows = list(confusion)
    cols = list(next(iter(confusion.values())))
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    values = [[confusion[r][c] for c in cols] for r in rows]
    ax.imshow(values, cmap="Blues")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set_xticks(range(len(cols)), [f"pred {c}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"true {r}" for r in rows])
    ax.set_title("fine-tuned, held-out examples")
    fig.tight_layout()
    fig.savefig(OUT / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    return [OUT / "loss_curve.png", OUT / "confusion_matrix.png"]


def main() -> int:
    import argparse
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    started = time.time()
    python = sys.executable
    step("1. build the tiny model", [python, "scripts/make_tiny_model.py", "--arch", "mistral", "--hidden-size", "192",
                                     "--out", MODEL_DIR])
    step("2. assemble ablation-2 data", [
        python, "scripts/prepare_ft_data.py", "--ablation", "2",
        "--original-thoughts", "data/sample/sample_thoughts.jsonl", "data/sample/teacher_cot_1000.csv",
        "--reflected-thoughts", "data/sample/sample_reflections.jsonl",
        "--output-file", TRAIN, "--holdout", "40", "--holdout-file", EVAL])
    step("3. train (tiny_cpu.py)", ["bash", "run_training.sh", "--local", "--config", "tiny_cpu.py"])
    inference = ["--data", EVAL, "--max_new_tokens", "512", "--stop_at_json", "false", "--restart", "--quiet"]
    step("4a. inference, fine-tuned", ["bash", "evaluate/run_inference.sh", "--local", "--model", ADAPTER_DIR,
                                       "--output", str(OUT / "fine_tuned.json"), *inference])
    step("4b. inference, untrained", ["bash", "evaluate/run_inference.sh", "--local", "--model", MODEL_DIR,
                                      "--output", str(OUT / "untrained.json"), *inference])

    summary = {"untrained": summary_row(OUT / "untrained.json"), "fine_tuned": summary_row(OUT / "fine_tuned.json")}
    table = format_table([{"model": name, **row} for name, row in summary.items()], COLUMNS)
    atomic_write_json(OUT / "summary.json", summary)
    atomic_write_text(OUT / "summary.txt", table + "\n")
    log_history = json.loads((REPO_ROOT / ADAPTER_DIR / "log_history.json").read_text())
    pictures = plot(log_history, summary["fine_tuned"]["confusion_matrix"])
    print("\n" + table)
    print("(stop_rate = share of answers ending with eos before max_new_tokens; single_json_rate = exactly one "
          "JSON object with a valid label; accuracy on 40 held-out real NLI pairs is not expected to be high)")
    print(f"demo: done in {time.time() - started:.0f}s -> {OUT.relative_to(REPO_ROOT)}/summary.json, "
          f"{', '.join(p.name for p in pictures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
