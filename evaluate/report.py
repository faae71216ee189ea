"""Write the results page: one self-contained HTML file comparing evaluation runs (no network needed to open it).

    python -m evaluate.report results/demo/untrained.json results/demo/fine_tuned.json --output report.html
    python -m evaluate.report results/teacher.json results/ablation1.json results/ablation2.json \\
        --output results/report.html --title "ablations on dev"
    python -m evaluate.report results/conf.json --output conf.html      # an evaluate.confidence file

Inputs: sample_model results (merged shards and the API backend's too) or evaluate.confidence files.
Runs are aligned by example id; the page shows accuracy and macro-F1 with 95% bootstrap intervals, parse
and stop rates, samples/s, a confusion matrix per run, a reliability diagram and ECE where records carry
probabilities (`label_probs`, `confidence`, p(confident)), and every example with filters kept in the URL.
What the page shows and how it was measured: docs/report.md. Bad input: one line, exit 2.
"""

import argparse
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser, at_least
from nli_finetune.data_io import DataError
from nli_finetune.redaction import redact
from nli_finetune.report_page import write_report


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m evaluate.report", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results JSON files (one run each; a confidence file: one per set)")
    parser.add_argument("--output", required=True, help="the HTML page to write")
    parser.add_argument("--title", default=None, help="the page's title (default: the runs' names)")
    parser.add_argument("--bootstrap", type=at_least(1), default=1000,
                        help="bootstrap resamples for the 95%% intervals (fewer: faster on large runs)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    try:
        data = write_report(args.results, output, args.title, bootstrap=args.bootstrap, output_name="--output")
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    if data["note"]:
        print(f"report: {data['note']}", file=sys.stderr)
    print(f"report: {len(data['runs'])} run(s), {len(data['examples']['id'])} examples, "
          f"{output.stat().st_size / 1e6:.2f} MB -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
