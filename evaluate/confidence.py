"""Confidence-token evaluation: does the model append the right token, and is p(confident) calibrated?

    python -m evaluate.confidence --model_id models/qwen-confidence --eval_data data/confidence/boolq_val.jsonl
    python -m evaluate.confidence --model_id models/X --eval_data medqa_val.jsonl --domain MED --output results/conf.json

What is measured and how: confidence_tokens.py. The tokens and the dataset -> domain map are the ones the
model was trained with (its model_contract.json); a model without a contract gets the defaults.
Writes the metrics and records per validation set to the output JSON and a reliability plot beside it.
"""

import argparse
import sys
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.calibration import plot_reliability
from nli_finetune.cli import ArgumentParser
from nli_finetune.confidence_tokens import (
    DEFAULT_DATASETS,
    DEFAULT_TOKENS,
    check_confidence_tokens,
    evaluate_confidence,
    load_items,
)
from nli_finetune.data_io import DataError, atomic_write_json, check_outputs
from nli_finetune.model_contract import read_contract
from nli_finetune.redaction import redact


def trained_tokens(model_id: str) -> tuple[dict, dict]:
    """(domain -> [C, U] tokens, dataset -> domain) the model was trained with, else the defaults."""
    contract = read_contract(model_id)
    if contract is None:
        return DEFAULT_TOKENS, DEFAULT_DATASETS
    if not contract.confidence_tokens:
        raise DataError(f"{contract.source}: the model was trained without confidence_tokens (task {contract.task}, "
                        f"{contract.answer_format} answers); train it with train/configs/confidence.py")
    return contract.confidence_tokens, contract.confidence_datasets or DEFAULT_DATASETS


def main(argv=None) -> int:
    from nli_finetune.modeling import ModelLoadError, load_for_inference
    p = ArgumentParser(prog="python -m evaluate.confidence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_id", required=True)
    p.add_argument("--eval_data", required=True, nargs="+")
    p.add_argument("--domain", default=None, help="domain for rows whose dataset is not mapped (READ, MED, ...)")
    p.add_argument("--output", default=None, help="results JSON (default results/<model>-confidence.json)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--beta", type=int, default=100)
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)
    output = Path(args.output or REPO_ROOT / "results" / f"{Path(args.model_id).name}-confidence.json")
    plots = {str(path): output.with_name(f"{output.stem}-{Path(path).stem}.png") for path in args.eval_data}
    try:
        check_outputs({f"--eval_data {path}": path for path in args.eval_data},
                      {"--output": output, **{f"plot for {path}": plot for path, plot in plots.items()}})
        tokens, datasets = trained_tokens(args.model_id)
        model, tokenizer, _ = load_for_inference(args.model_id, device="auto")
        # every file is read and checked before any work, so a bad second file leaves nothing behind
        all_items = {str(path): load_items(path, tokenizer, datasets, args.domain, args.limit)
                     for path in args.eval_data}
        check_confidence_tokens(tokenizer, tokens, args.model_id, all_items)
        results = {}
        for path, items in all_items.items():
            records, metrics = evaluate_confidence(model, tokenizer, items, tokens, batch_size=args.batch_size,
                                                   max_new_tokens=args.max_new_tokens, beta=args.beta)
            results[str(path)] = {"metrics": metrics, "records": records}
            c = metrics["calibration"]
            print(f"{path}: val accuracy {metrics['val_accuracy']:.3f}, answers right {metrics['answer_accuracy']:.3f}, "
                  f"missing tokens {metrics['token_missing']}, l2 {c['l2']:.3f}, ECE {c['ece']:.3f}, Brier {c['brier']:.3f}")
    except (DataError, ModelLoadError) as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no results/ yet
    for path, result in results.items():
        plot_reliability(result["metrics"]["calibration"], plots[path], title=Path(path).stem)
    atomic_write_json(output, results)
    print(f"confidence: {len(results)} validation set(s) -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
