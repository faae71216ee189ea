"""GGUF export per output type: time, file size, and parity of the file read back by transformers' GGUF
loader against the merged Hugging Face model (identical greedy answers, largest |logit difference|, accuracy).

    python bench/export_gguf.py                                      # the demo's adapter, 300 dev pairs
    python bench/export_gguf.py --adapter /tmp/run --rows 50 --types f16 q8_0
    python bench/export_gguf.py --rows 0                             # export time and size only
    python bench/export_gguf.py --types same same:q5_1 same:q4_1      # `same`, changed tensors in another type

The adapter defaults to the demo's (models/smollm2-135m-nli-demo, from `make demo`). Each export runs in
its own process (scripts/export_gguf.py, as a user runs it), so its time includes loading and merging.
A benchmark, not a test: it measures and never fails on a number.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nli_finetune import REPO_ROOT

DEMO_ADAPTER = REPO_ROOT / "models/smollm2-135m-nli-demo"


def export(adapter: Path, out: Path, outtype: str) -> float:
    """`same:q5_1` is `--outtype same --changed-type q5_1` (how the default for changed tensors was chosen)."""
    outtype, _, changed = outtype.partition(":")
    started = time.time()
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts/export_gguf.py"), "--model", str(adapter),
                    "--outfile", str(out), "--outtype", outtype, *(["--changed-type", changed] if changed else [])],
                   check=True)
    return time.time() - started


def parity(gguf_file: Path, rows: int, reference) -> dict:
    from nli_finetune.data_io import read_csv
    from nli_finetune.extraction import extract_label
    from nli_finetune.gguf_export import compare_answers, load_exported
    from prompts import get_task
    task = get_task("nli_label")
    data = read_csv(REPO_ROOT / "data/sample/dev_300.csv")[:rows]
    model, tokenizer, outputs = reference
    exported, exported_tokenizer = load_exported(gguf_file)
    result = compare_answers(model, tokenizer, exported, exported_tokenizer, [task.messages(r) for r in data],
                             batch_size=16, reference_outputs=outputs)
    gold = [task.normalize_label(r["label"]) for r in data]
    for side in ("reference", "exported"):
        labels = [extract_label(a, task)[0] for a in result[f"{side}_answers"]]
        result[f"{side}_accuracy"] = sum(p == g for p, g in zip(labels, gold)) / len(gold)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", default=str(DEMO_ADAPTER))
    p.add_argument("--types", nargs="+", default=["f16", "q8_0", "same"])
    p.add_argument("--rows", type=int, default=300, help="dev_300 pairs for parity (0: none)")
    args = p.parse_args()
    adapter = Path(args.adapter)
    if not (adapter / "adapter_config.json").is_file():
        sys.exit(f"error: {adapter}: no adapter there (run `make demo`, or pass --adapter)")
    from nli_finetune.cli import format_table
    reference = None
    if args.rows:  # the merged HF model's answers, once for every file
        from nli_finetune.data_io import read_csv
        from nli_finetune.gguf_export import model_outputs
        from nli_finetune.modeling import load_for_inference
        from prompts import get_task
        model, tokenizer, _ = load_for_inference(str(adapter), device="cpu", load_in_4bit=False, dtype="float32")
        task = get_task("nli_label")
        data = read_csv(REPO_ROOT / "data/sample/dev_300.csv")[:args.rows]
        reference = (model, tokenizer, model_outputs(model, tokenizer, [task.messages(r) for r in data],
                                                     batch_size=16))
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for outtype in args.types:
            out = Path(tmp) / f"{outtype.replace(':', '-')}.gguf"
            seconds = export(adapter, out, outtype)
            row = {"type": outtype, "export s": seconds, "size MB": out.stat().st_size / 1e6}
            if reference is not None:
                r = parity(out, args.rows, reference)
                row.update({"identical answers": f"{r['identical_answers']}/{r['examples']}",
                            "max |logit diff|": r["max_abs_logit_diff"], "accuracy HF": r["reference_accuracy"],
                            "accuracy GGUF": r["exported_accuracy"]})
            table.append(row)
            print(row, flush=True)
            out.unlink()  # one file at a time on disk
    print(format_table(table, list(table[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
