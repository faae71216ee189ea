"""The results page: evaluation runs side by side and their examples, in one self-contained HTML file
(inline CSS and JS, no network), so it opens from disk or from a CI artifact.

    python -m evaluate.report results/a.json results/b.json --output report.html     (the command)
    from nli_finetune.report_page import write_report                                               (a study, the tests)
    write_report(["results/a.json", "results/b.json"], "results/report.html", title="a vs b")

A run is one sample_model results file (also merged shards, the API backend's, the study's arms) or one
validation set of an `evaluate.confidence` file. Runs are aligned by example id: the same ids must hold
the same inputs and gold label. The page data is gzip-compressed and base64-encoded inside the HTML: a
base64 string cannot close its <script> element, and the page's script puts every string in the DOM as
text (never as HTML), so a `<script>` in a model's answer shows as text and never runs.
"""

import base64
import gzip
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from nli_finetune.calibration import adaptive_bins, brier_score, expected_calibration_error, selective_report
from nli_finetune.cli import progress
from nli_finetune.data_io import DataError, atomic_write_text, check_outputs
from nli_finetune.metrics import bootstrap_intervals, classification_metrics
from nli_finetune.redaction import redact_data
from nli_finetune.results import STOPPED
from prompts import TASKS

# record fields that are not the example's inputs
RECORD_FIELDS = {"id", "raw_output", "predicted_label", "extraction_method", "json_objects", "stop_reason",
                 "generated_tokens", "prompt_tokens_trimmed", "true_label", "correct", "error", "over_context",
                 "label_probs", "confidence", "calibrated_label_probs", "abstained"}
FREE_TEXT = "free text"  # the "label" of a free-text answer: there is none to parse, so none failed to parse


@dataclass
class Run:
    """One run's examples, each normalized to: id, inputs, gold, pred, correct, conf, raw, stop."""
    name: str
    source: str
    model: str
    labels: list
    samples_per_s: float | None
    folder: str = ""  # the file's folder: tells apart two runs of the same file name
    rows: dict = field(default_factory=dict)  # id -> example
    confusion_rows: list | None = None  # rows of the confusion matrix when they are not the gold labels


def read_runs(path: Path) -> list[Run]:
    """The runs of one results file, or a DataError (one line) saying why it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("settings"), dict) and "records" in data:
        return [with_calibrated(sample_model_run(path, data), path, data["records"])]
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "records" in v and "metrics" in v
                                               for v in data.values()):
        return [confidence_run(path, eval_set, result) for eval_set, result in data.items()]
    raise DataError(f"{path}: not a results file (expected sample_model's settings and records, or "
                    "evaluate.confidence's validation sets)")


def checked_records(path, records, where: str) -> list[dict]:
    if not isinstance(records, list):
        raise DataError(f"{path}: {where}field 'records' is not a list")
    if not records:
        raise DataError(f"{path}: {where}no records (an empty run)")
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "id" not in record:
            raise DataError(f"{path}: {where}record {number}: field 'id' missing")
    return records


def label_text(value) -> str | None:
    return None if value is None else str(value)


# Every value the page reads is checked here: a NaN or a string where the page expects a number would make
# the embedded JSON unreadable (the page then shows nothing), so bad input is refused with one line instead.
def finite_number(where: str, value) -> float | None:
    """A rate such as samples/s: None, or a finite number >= 0 (not a bool, not a string)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {value!r} is not a finite number >= 0")
    return float(value)


def right_or_wrong(where: str, value) -> bool | None:
    """A record's right/wrong: true, false or null (1, "yes" or NaN would be counted as some other answer)."""
    if value is not None and not isinstance(value, bool):
        raise DataError(f"{where}: {value!r} is not true, false or null")
    return value


def optional_text(where: str, value) -> str | None:
    """A label, token or stop reason: null or a string (a list or an object cannot be a label)."""
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: {value!r} is not a string or null")
    return value


def stop_of(where: str, record: dict) -> str | None:
    """The record's stop reason; "context" for a prompt not scored because it ran past the model's context
    (its stop_reason is "length", which the page would show as "cut at max tokens")."""
    stop = optional_text(f"{where} 'stop_reason'", record.get("stop_reason"))
    return "context" if record.get("over_context") else stop


def timing_of(path, data: dict) -> float | None:
    timing = data.get("timing")
    if timing is None:
        return None
    if not isinstance(timing, dict):
        raise DataError(f"{path}: field 'timing': {timing!r} is not an object")
    return finite_number(f"{path}: field 'timing.samples_per_s'", timing.get("samples_per_s"))


def add_row(run: Run, path, number: int, row: dict) -> None:
    if row["id"] in run.rows:
        raise DataError(f"{path}: record {number}: field 'id': {row['id']!r} appears twice")
    run.rows[row["id"]] = row


def sample_model_run(path, data: dict) -> Run:
    settings = data["settings"]
    task_name = settings.get("task")
    if not isinstance(task_name, str):  # a missing task is an error, never a default
        raise DataError(f"{path}: field 'settings.task': {task_name!r} is not a task name")
    task = TASKS.get(task_name)
    records = checked_records(path, data["records"], "")
    run = Run(name=Path(path).stem, source=str(path), model=str(settings.get("model_id") or ""),
              labels=[str(label) for label in task.labels] if task else [],
              samples_per_s=timing_of(path, data), folder=Path(path).parent.name)
    fields = [f for f in task.input_fields if f in records[0]] if task and task.input_fields else \
        [k for k in records[0] if k not in RECORD_FIELDS]
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("raw_output"), str):
            raise DataError(f"{path}: record {number}: field 'raw_output' missing or not a string")
        where = f"{path}: record {number}: field"
        add_row(run, path, number, {
            "id": str(record["id"]), "inputs": {f: str(record.get(f, "")) for f in fields},
            "gold": label_text(record.get("true_label")),
            "pred": FREE_TEXT if task and task.free_text else label_text(record.get("predicted_label")),
            "correct": right_or_wrong(f"{where} 'correct'", record.get("correct")),
            "conf": probability(path, number, record.get("label_probs"), record.get("confidence")),
            "raw": record["raw_output"], "stop": stop_of(where, record)})
    return run


def probability(path, number: int, label_probs, value, name="confidence") -> float | None:
    """The probability of the predicted label (the largest of `label_probs`), else `value`; None if neither."""
    if label_probs is not None:
        if not isinstance(label_probs, dict):
            raise DataError(f"{path}: record {number}: field 'label_probs': {label_probs!r} is not an object")
        # each one checked before max(): a string among numbers would be a TypeError traceback
        probs = [probability(path, number, None, p, "label_probs") for p in label_probs.values()]
        value = max(probs, default=value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:  # NaN fails too
        raise DataError(f"{path}: record {number}: field '{name}': {value!r} is not a probability")
    return float(value)


def with_calibrated(run: Run, path, records: list) -> Run:
    """Records of a calibrated model (`calibrated_label_probs` beside the raw `label_probs`, evaluate.calibrate)
    give each example its calibrated confidence and whether the calibrated prediction is right: the
    reliability diagram after calibration. Records of a run with abstention say whether it `abstained`."""
    for number, record in enumerate(records, start=1):
        if "abstained" in record:
            if not isinstance(record["abstained"], bool):
                raise DataError(f"{path}: record {number}: field 'abstained': {record['abstained']!r} is not true or false")
            run.rows[str(record["id"])]["abstained"] = record["abstained"]
        probs = record.get("calibrated_label_probs")
        if probs is None:
            continue
        if not isinstance(probs, dict) or not probs:
            raise DataError(f"{path}: record {number}: field 'calibrated_label_probs': {probs!r} is not an object")
        row = run.rows[str(record["id"])]
        predicted = max(probs, key=lambda label: probs[label])
        row["calibrated"] = (probability(path, number, probs, None, "calibrated_label_probs"),
                             None if row["gold"] is None else predicted == row["gold"])
    return run


def confidence_run(path, eval_set: str, result: dict) -> Run:
    """A confidence-token validation set: the label is the token the model appended (C confident, U
    unsure, none = a parse failure), right = its answer was right, confidence = p(confident)."""
    where = f"validation set {eval_set}: "
    run = Run(name=f"{Path(path).stem}:{Path(eval_set).stem}", source=f"{path} ({eval_set})", model="",
              labels=["C", "U"], samples_per_s=None, folder=Path(path).parent.name, confusion_rows=["C", "U"])
    for number, record in enumerate(checked_records(path, result["records"], where), start=1):
        place = f"{path}: {where}record {number}: field"
        add_row(run, path, number, {
            "id": str(record["id"]), "inputs": {"domain": str(record.get("domain", ""))}, "gold": None,
            "expected": optional_text(f"{place} 'expected_token'", record.get("expected_token")),
            "pred": optional_text(f"{place} 'predicted_token'", record.get("predicted_token")),
            "correct": right_or_wrong(f"{place} 'answer_correct'", record.get("answer_correct")),
            "conf": probability(path, number, None, record.get("p_confident"), "p_confident"),
            "raw": str(record.get("answer", "")), "stop": None})
    return run


def align(runs: list[Run]) -> tuple[list[str], str]:
    """(the example ids every run has, in the first run's order; a note when some were left out).
    Runs whose common ids hold other inputs or gold labels are runs of different data: refused."""
    common = set(runs[0].rows).intersection(*(run.rows for run in runs[1:]))
    if not common:
        raise DataError(f"{runs[-1].source}: no example id in common with {runs[0].source}: runs of different "
                        "inputs cannot be compared")
    ids = [i for i in runs[0].rows if i in common]
    for run in runs[1:]:
        for i in ids:
            first, other = runs[0].rows[i], run.rows[i]
            for key in ("inputs", "gold"):
                if other[key] and first[key] and other[key] != first[key]:
                    raise DataError(f"{run.source}: example {i}: field '{key}' differs from {runs[0].source}: "
                                    "runs of different inputs cannot be aligned")
    largest = max(len(run.rows) for run in runs)
    note = "" if len(ids) == largest else \
        f"aligned by id: {len(ids)} examples are in every run (runs have {', '.join(str(len(r.rows)) for r in runs)})"
    return ids, note


def run_summary(run: Run, ids: list[str], bootstrap: int) -> dict:
    rows = [run.rows[i] for i in ids]
    n = len(rows)
    summary = {"name": run.name, "source": run.source, "model": run.model, "n": n,
               "parse_rate": None if rows[0]["pred"] == FREE_TEXT else sum(r["pred"] is not None for r in rows) / n,
               "stop_rate": sum(r["stop"] in STOPPED for r in rows) / n if run.confusion_rows is None else None,
               "samples_per_s": run.samples_per_s}
    if run.confusion_rows is not None:  # confidence tokens: expected token (by the answer) vs the token given
        truth = [r["expected"] for r in rows]
        summary["accuracy"] = sum(r["correct"] is True for r in rows) / n
    elif all(r["gold"] is not None for r in rows) and run.labels:
        truth = [r["gold"] for r in rows]
    else:
        truth = None
    if truth is not None:
        preds = [r["pred"] for r in rows]
        metrics = classification_metrics(truth, preds, run.confusion_rows or run.labels)
        intervals = bootstrap_intervals(truth, preds, run.confusion_rows or run.labels, samples=bootstrap)
        if run.confusion_rows is None:
            summary |= {"accuracy": metrics["accuracy"], "accuracy_ci": intervals["accuracy"]}
        summary |= {"f1_macro": metrics["f1_macro"], "f1_ci": intervals["f1_macro"],
                    "confusion": {"rows": list(metrics["confusion_matrix"]),
                                  "cols": list(next(iter(metrics["confusion_matrix"].values()))),
                                  "counts": [list(row.values()) for row in metrics["confusion_matrix"].values()],
                                  "of": "token" if run.confusion_rows else "label"}}
    return summary | calibration_summary(rows) | selective_summary(rows) | calibrated_summary(rows)


def calibration_summary(rows: list[dict]) -> dict:
    """ECE, Brier and reliability bins over the examples that have a confidence and a right/wrong."""
    pairs = [(r["conf"], bool(r["correct"])) for r in rows if r["conf"] is not None and r["correct"] is not None]
    if not pairs:
        return {}
    confidence, correct = zip(*pairs)
    bins = adaptive_bins(confidence, correct, beta=max(1, len(pairs) // 10))
    return {"ece": expected_calibration_error(confidence, correct), "brier": brier_score(confidence, correct),
            "n_confidence": len(pairs),
            "reliability": [{k: b[k] for k in ("size", "confidence", "accuracy")} for b in bins]}


CURVE_POINTS = 200  # the most points of a risk-coverage curve the page draws (the AURC uses them all)


def selective_summary(rows: list[dict]) -> dict:
    """The risk-coverage curve (thinned to CURVE_POINTS for drawing), AURC and coverage at 90/95/99%
    accuracy over the examples that have a confidence and a right/wrong (calibration.selective_report)."""
    pairs = [(r["conf"], bool(r["correct"])) for r in rows if r["conf"] is not None and r["correct"] is not None]
    if not pairs:
        return {}
    report = selective_report(*zip(*pairs))
    curve = report["risk_coverage"]
    answered = [r for r in rows if not r.get("abstained")]
    abstention = {"coverage": len(answered) / len(rows),
                  "answered_accuracy": sum(r["correct"] is True for r in answered) / len(answered) if answered else None} \
        if any("abstained" in r for r in rows) else {}
    step = max(1, -(-len(curve) // CURVE_POINTS))
    kept = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])  # both ends always drawn
    return abstention | {"aurc": report["aurc"], "coverage_at_accuracy": report["coverage_at_accuracy"],
            "risk_coverage": [{k: p[k] for k in ("threshold", "coverage", "accuracy")} for p in kept]}


def calibrated_summary(rows: list[dict]) -> dict:
    """ECE, Brier and reliability bins after calibration, where the records carry calibrated probabilities."""
    pairs = [r["calibrated"] for r in rows if r.get("calibrated") and r["calibrated"][1] is not None]
    if not pairs:
        return {}
    after = calibration_summary([{"conf": conf, "correct": right} for conf, right in pairs])
    return {"ece_calibrated": after["ece"], "brier_calibrated": after["brier"],
            "reliability_calibrated": after["reliability"]}


def unique_names(runs: list[Run]) -> None:
    """Two files of the same name from different folders get their folder in their name."""
    shared = [run for run in runs if sum(other.name == run.name for other in runs) > 1]
    for run in shared:
        run.name = f"{run.folder}/{run.name}"


def page_data(runs: list[Run], title: str = "evaluation results", bootstrap: int = 1000) -> dict:
    """Everything the page shows: run summaries and the examples as columns (one list per run)."""
    unique_names(runs)
    ids, note = align(runs)
    first = runs[0].rows
    fields = list(first[ids[0]]["inputs"])
    golds = [next((run.rows[i]["gold"] for run in runs if run.rows[i]["gold"] is not None), None) for i in ids]
    return {
        "title": title, "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": note,
        "labels": next((run.labels for run in runs if run.labels and run.confusion_rows is None), []),
        "input_fields": fields,
        "runs": [run_summary(run, ids, bootstrap)
                 for run in progress(runs, total=len(runs), desc="report: run metrics", unit="run")],
        "examples": {
            "id": ids, "inputs": [[first[i]["inputs"].get(f, "") for i in ids] for f in fields], "gold": golds,
            "pred": [[run.rows[i]["pred"] for i in ids] for run in runs],
            "correct": [[run.rows[i]["correct"] for i in ids] for run in runs],
            "conf": [[run.rows[i]["conf"] for i in ids] for run in runs],
            "raw": [[run.rows[i]["raw"] for i in ids] for run in runs],
            "stop": [[run.rows[i]["stop"] for i in ids] for run in runs],
            "abstained": [[run.rows[i].get("abstained", False) for i in ids] for run in runs]}}


def write_report(result_files: list, output, title: str | None = None, bootstrap: int = 1000,
                 output_name: str = "report") -> dict:
    """Read result files and write their page to `output` (atomically); the page data. A DataError (one
    line) for bad input, before anything is written."""
    check_outputs({f"result {p}": p for p in result_files}, {output_name: output})
    runs = [run for path in result_files for run in read_runs(Path(path))]
    # the page embeds settings and error messages: one redaction for all of it
    data = redact_data(page_data(runs, title or " vs ".join(run.name for run in runs), bootstrap=bootstrap))
    atomic_write_text(output, render_page(data))
    return data


def encode_data(data: dict) -> str:
    # allow_nan=False: a NaN would make the page's JSON.parse fail (the inputs are checked; this is the backstop)
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return base64.b64encode(gzip.compress(text.encode(), 6, mtime=0)).decode()


def decode_data(page: str) -> dict:
    """The data embedded in a page render_page wrote (tests read it back)."""
    start = page.index(DATA_OPEN) + len(DATA_OPEN)
    return json.loads(gzip.decompress(base64.b64decode(page[start:page.index("</script>", start)])))


def render_page(data: dict) -> str:
    # one pass: a title holding "@DATA@" stays text (chained replace() would copy the data into <title>)
    values = {"@TITLE@": html.escape(data["title"]), "@DATA@": encode_data(data)}
    return re.sub("@TITLE@|@DATA@", lambda m: values[m.group()], PAGE)


DATA_OPEN = '<script id="report-data" type="application/octet-stream">'
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>@TITLE@</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.2em 2em; color: #1d2129; background: #fff; }
h1 { font-size: 1.35em; margin: .7em 0 .1em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.meta, .note { color: #5a6270; font-size: .9em; } .note { color: #8a4b00; }
table { border-collapse: collapse; } th, td { padding: .25em .5em; text-align: left; vertical-align: top; }
#runs th, #runs td { border-bottom: 1px solid #e3e6ea; white-space: nowrap; } #runs td.num { text-align: right; }
.ci { color: #6b7380; font-size: .85em; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.card-body { display: flex; gap: 1.2em; align-items: flex-start; }
.card { border: 1px solid #dfe3e8; border-radius: 6px; padding: .5em .8em; }
.card h3 { font-size: 1em; margin: .2em 0 .4em; }
.cm td, .cm th { border: 1px solid #dfe3e8; text-align: center; min-width: 3.2em; }
.controls { position: sticky; top: 0; background: #f6f8fa; border: 1px solid #dfe3e8; border-radius: 6px;
  padding: .5em .8em; display: flex; flex-wrap: wrap; gap: .4em 1.2em; align-items: center; z-index: 2; }
.controls label { white-space: nowrap; } select, input, button { font: inherit; }
input[type=search] { width: 16em; } :focus-visible { outline: 2px solid #1f6feb; outline-offset: 1px; }
#examples { width: 100%; margin-top: .6em; table-layout: fixed; }
#examples th { position: sticky; top: 3.2em; background: #fff; border-bottom: 2px solid #d0d7de; }
#examples td { border-bottom: 1px solid #e3e6ea; overflow-wrap: anywhere; }
.answer { white-space: pre-wrap; font: 12px/1.35 ui-monospace, monospace; max-height: 9em; overflow: auto;
  background: #f6f8fa; padding: .2em .4em; margin: .2em 0 0; border-radius: 4px; }
.badge { display: inline-block; padding: 0 .45em; border-radius: 4px; font-weight: 600; }
.right { background: #dafbe1; color: #116329; } .wrong { background: #ffebe9; color: #a40e26; }
.fail { background: #fff1c2; color: #7a4d00; } .nolabel { background: #eef1f4; }
.small { font-size: .85em; color: #5a6270; }
.pager { margin: .6em 0; display: flex; gap: .8em; align-items: center; }
</style></head>
<body>
<h1 id="title"></h1><div class="meta" id="meta"></div><div class="note" id="note"></div>
<h2>Runs</h2><table id="runs"></table>
<h2>Confusion and calibration</h2><div class="cards" id="cards"></div>
<h2>Examples</h2>
<form class="controls" id="controls" role="search" onsubmit="return false">
 <label>show <select id="show" aria-label="which examples">
  <option value="all">all</option><option value="wrong-any">wrong in any run</option>
  <option value="disagree">runs disagree</option><option value="parse-any">parse failure in any run</option>
 </select></label>
 <span id="run-filters"></span>
 <label>gold <select id="gold" aria-label="gold label"><option value="">any</option></select></label>
 <label>search <input id="q" type="search" placeholder="text, id ... ( / )" aria-label="search text"></label>
 <label>sort <select id="sort" aria-label="sort"><option value="input">input order</option></select></label>
 <span id="count" aria-live="polite"></span>
</form>
<div class="pager"><button id="prev" type="button">&larr; previous</button><span id="page"></span>
<button id="next" type="button">next &rarr;</button><span class="small">keys: / search, n / p page</span></div>
<table id="examples"><thead></thead><tbody></tbody></table>
""" + DATA_OPEN + """@DATA@</script>
<script>
"use strict";
const PAGE_SIZE = 100;
let D, N, R, order = [], haystack = null;
const $ = (id) => document.getElementById(id);

// Every string from the data goes in as text (append / textContent), never as HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "class") e.className = v; else e.setAttribute(k, v); }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const fmt = (x, d = 3) => (x === null || x === undefined) ? "\\u2013" : x.toFixed(d);
const ci = (v) => v ? el("span", {class: "ci"}, ` [${fmt(v[0])}, ${fmt(v[1])}]`) : null;

async function loadData() {
  const binary = atob($("report-data").textContent.trim()), bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function header() {
  $("title").textContent = D.title; document.title = D.title;
  $("meta").textContent = `${N} examples, ${R} run${R > 1 ? "s" : ""}; written ${D.created}`;
  $("note").textContent = D.note;
  const cols = ["run", "model", "n", "accuracy [95% CI]", "macro-F1 [95% CI]", "parse rate", "stop rate", "samples/s", "ECE"];
  $("runs").append(el("tr", {}, ...cols.map((c) => el("th", {}, c))));
  for (const r of D.runs) {
    $("runs").append(el("tr", {}, el("td", {title: r.source}, r.name), el("td", {}, r.model), el("td", {class: "num"}, r.n),
      el("td", {class: "num"}, fmt(r.accuracy), ci(r.accuracy_ci)), el("td", {class: "num"}, fmt(r.f1_macro), ci(r.f1_ci)),
      el("td", {class: "num"}, fmt(r.parse_rate)), el("td", {class: "num"}, fmt(r.stop_rate)),
      el("td", {class: "num"}, fmt(r.samples_per_s, 2)), el("td", {class: "num"}, fmt(r.ece))));
  }
  D.runs.forEach((r, k) => $("cards").append(card(r, k)));
}

function card(r, k) {
  const box = el("div", {class: "card-body"});
  if (r.confusion) {
    const c = r.confusion, t = el("table", {class: "cm"});
    const what = c.of === "token" ? ["expected token", "token given"] : ["gold", "predicted"];
    t.append(el("tr", {}, el("th", {}, `${what[0]} \\\\ ${what[1]}`), ...c.cols.map((x) => el("th", {}, x === "null" ? "parse failure" : x))));
    c.rows.forEach((row, i) => {
      const total = c.counts[i].reduce((a, b) => a + b, 0) || 1;
      t.append(el("tr", {}, el("th", {}, row), ...c.counts[i].map((v, j) => {
        const hue = c.cols[j] === row ? "46,160,67" : "207,34,46", td = el("td", {}, v);
        td.style.background = `rgba(${hue},${(0.08 + 0.6 * v / total).toFixed(2)})`;
        return td;
      })));
    });
    box.append(t);
  }
  if (r.reliability) box.append(reliability(r));
  else box.append(el("div", {class: "small"}, "no probabilities in this run:", el("br"), "no reliability diagram"));
  if (r.risk_coverage) box.append(riskCoverage(r));
  return el("div", {class: "card"}, el("h3", {}, r.name), box);
}

function reliability(r) {
  const ns = "http://www.w3.org/2000/svg", S = 170, P = 26, svg = document.createElementNS(ns, "svg");
  const node = (tag, attrs, text) => { const e = document.createElementNS(ns, tag);
    for (const [a, v] of Object.entries(attrs)) e.setAttribute(a, v); if (text) e.textContent = text; svg.append(e); return e; };
  svg.setAttribute("width", S + P + 8); svg.setAttribute("height", S + P + 18); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `reliability diagram of ${r.name}`);
  const x = (v) => P + v * S, y = (v) => 8 + (1 - v) * S;
  node("rect", {x: P, y: 8, width: S, height: S, fill: "none", stroke: "#c9d1d9"});
  node("line", {x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#8c959f", "stroke-dasharray": "4 3"});
  const most = Math.max(...r.reliability.map((b) => b.size));
  for (const b of r.reliability) node("circle", {cx: x(b.confidence), cy: y(b.accuracy), r: 2 + 4 * Math.sqrt(b.size / most), fill: "#1f6feb", "fill-opacity": 0.7})
    .append(Object.assign(document.createElementNS(ns, "title"), {textContent: `${b.size} examples: confidence ${fmt(b.confidence)}, accuracy ${fmt(b.accuracy)}`}));
  // after calibration (evaluate.calibrate): the same bins of the calibrated confidences, in orange
  for (const b of r.reliability_calibrated || []) node("rect", {x: x(b.confidence) - 3, y: y(b.accuracy) - 3, width: 6, height: 6, fill: "#d4700f", "fill-opacity": 0.8, class: "calibrated"})
    .append(Object.assign(document.createElementNS(ns, "title"), {textContent: `calibrated, ${b.size} examples: confidence ${fmt(b.confidence)}, accuracy ${fmt(b.accuracy)}`}));
  node("text", {x: P + S / 2, y: S + P + 14, "text-anchor": "middle", "font-size": 11}, "confidence");
  node("text", {x: 10, y: 8 + S / 2, "font-size": 11, transform: `rotate(-90 10 ${8 + S / 2})`, "text-anchor": "middle"}, "accuracy");
  const caption = el("div", {class: "small"}, `ECE ${fmt(r.ece)}, Brier ${fmt(r.brier)} (${r.n_confidence} examples)`);
  if (r.reliability_calibrated) caption.append(el("br"), el("span", {style: "color:#1f6feb"}, "\u25cf raw"), " ",
    el("span", {style: "color:#d4700f"}, "\u25a0 calibrated"), `: ECE ${fmt(r.ece_calibrated)}, Brier ${fmt(r.brier_calibrated)}`);
  return el("div", {}, caption, svg);
}

// Accuracy of the answered examples against the share answered, as the confidence threshold rises
// (from coverage 1 on the right to the most confident examples alone on the left).
function riskCoverage(r) {
  const ns = "http://www.w3.org/2000/svg", S = 170, P = 26, svg = document.createElementNS(ns, "svg");
  const node = (tag, attrs, text) => { const e = document.createElementNS(ns, tag);
    for (const [a, v] of Object.entries(attrs)) e.setAttribute(a, v); if (text) e.textContent = text; svg.append(e); return e; };
  svg.setAttribute("width", S + P + 8); svg.setAttribute("height", S + P + 18); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `risk-coverage curve of ${r.name}`);
  const x = (v) => P + v * S, y = (v) => 8 + (1 - v) * S;
  node("rect", {x: P, y: 8, width: S, height: S, fill: "none", stroke: "#c9d1d9"});
  const points = [...r.risk_coverage].sort((a, b) => a.coverage - b.coverage);
  node("polyline", {points: points.map((p) => `${x(p.coverage).toFixed(1)},${y(p.accuracy).toFixed(1)}`).join(" "),
    fill: "none", stroke: "#1f6feb", "stroke-width": 1.5, class: "risk-coverage"});
  for (const [target, coverage] of Object.entries(r.coverage_at_accuracy || {})) if (coverage !== null)
    node("circle", {cx: x(coverage), cy: y(+target), r: 3, fill: "#d4700f"})
      .append(Object.assign(document.createElementNS(ns, "title"), {textContent: `accuracy ${target} at coverage ${fmt(coverage)}`}));
  node("text", {x: P + S / 2, y: S + P + 14, "text-anchor": "middle", "font-size": 11}, "coverage (share answered)");
  node("text", {x: 10, y: 8 + S / 2, "font-size": 11, transform: `rotate(-90 10 ${8 + S / 2})`, "text-anchor": "middle"}, "accuracy answered");
  const at90 = (r.coverage_at_accuracy || {})["0.90"];
  const caption = el("div", {class: "small"}, `AURC ${fmt(r.aurc)}, coverage at 90% accuracy ${at90 === null || at90 === undefined ? "unreachable" : fmt(at90)}`);
  if (r.coverage !== undefined) caption.append(el("br"), `abstaining: coverage ${fmt(r.coverage)}, accuracy answered ${fmt(r.answered_accuracy)}`);
  return el("div", {}, caption, svg);
}

function controls() {
  D.runs.forEach((r, k) => {
    const s = el("select", {id: `r${k}`, "aria-label": `filter by ${r.name}`});
    for (const [v, t] of [["any", "any"], ["right", "right"], ["wrong", "wrong"], ["parse", "parse failure"]]) s.append(el("option", {value: v}, t));
    $("run-filters").append(el("label", {}, `${r.name} `, s), " ");
    if (D.examples.conf[k].some((c) => c !== null)) {
      $("sort").append(el("option", {value: `c${k}-asc`}, `${r.name}: least confident first`));
      $("sort").append(el("option", {value: `c${k}-desc`}, `${r.name}: most confident first`));
    }
  });
  for (const g of D.labels) $("gold").append(el("option", {value: g}, g));
  for (const id of ["show", "gold", "sort", ...D.runs.map((_, k) => `r${k}`)]) $(id).addEventListener("change", () => { state.page = 1; fromControls(); });
  let timer; $("q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.page = 1; fromControls(); }, 150); });
  $("prev").addEventListener("click", () => turn(-1)); $("next").addEventListener("click", () => turn(1));
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); $("q").focus(); } else if (e.key === "n") turn(1); else if (e.key === "p") turn(-1);
  });
  window.addEventListener("hashchange", () => { readHash(); render(); });
}

let state = {};
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  state = {show: h.get("show") || "all", gold: h.get("gold") || "", q: h.get("q") || "", sort: h.get("sort") || "input",
           page: Math.max(1, parseInt(h.get("page") || "1", 10) || 1), runs: D.runs.map((_, k) => h.get(`r${k}`) || "any")};
  for (const id of ["show", "gold", "q", "sort"]) $(id).value = state[id];
  state.runs.forEach((v, k) => { $(`r${k}`).value = v; });
  // a link with a value this page does not offer falls back to the first option
  for (const id of ["show", "gold", "sort", ...D.runs.map((_, k) => `r${k}`)]) if ($(id).selectedIndex < 0) $(id).selectedIndex = 0;
  Object.assign(state, {show: $("show").value, gold: $("gold").value, sort: $("sort").value, runs: D.runs.map((_, k) => $(`r${k}`).value)});
}
function fromControls() {
  Object.assign(state, {show: $("show").value, gold: $("gold").value, q: $("q").value, sort: $("sort").value,
                        runs: D.runs.map((_, k) => $(`r${k}`).value)});
  writeHash(); render();
}
function writeHash() {
  const h = new URLSearchParams();
  for (const key of ["show", "gold", "q", "sort"]) if (state[key] && !["all", "input"].includes(state[key])) h.set(key, state[key]);
  state.runs.forEach((v, k) => { if (v !== "any") h.set(`r${k}`, v); });
  if (state.page > 1) h.set("page", state.page);
  history.replaceState(null, "", "#" + h.toString());
}
function turn(step) {
  const pages = Math.max(1, Math.ceil(order.length / PAGE_SIZE)), page = Math.min(pages, Math.max(1, state.page + step));
  if (page !== state.page) { state.page = page; writeHash(); render(); }
}

function matches(i) {
  const E = D.examples;
  if (state.show === "wrong-any" && !E.correct.some((c) => c[i] === false)) return false;
  if (state.show === "disagree" && new Set(E.pred.map((p) => p[i])).size < 2) return false;
  if (state.show === "parse-any" && !E.pred.some((p) => p[i] === null)) return false;
  for (let k = 0; k < R; k++) {
    const f = state.runs[k];
    if ((f === "right" && E.correct[k][i] !== true) || (f === "wrong" && E.correct[k][i] !== false) ||
        (f === "parse" && E.pred[k][i] !== null)) return false;
  }
  if (state.gold && E.gold[i] !== state.gold) return false;
  if (state.q) {
    if (!haystack) haystack = E.id.map((id, j) => [id, ...E.inputs.map((c) => c[j]), ...E.raw.map((c) => c[j])].join("\\n").toLowerCase());
    if (!haystack[i].includes(state.q.toLowerCase())) return false;
  }
  return true;
}

function render() {
  order = [];
  for (let i = 0; i < N; i++) if (matches(i)) order.push(i);
  const m = /^c(\\d+)-(asc|desc)$/.exec(state.sort);
  if (m && D.examples.conf[+m[1]]) {
    const conf = D.examples.conf[+m[1]], sign = m[2] === "asc" ? 1 : -1;
    order.sort((a, b) => (conf[a] === null) - (conf[b] === null) || sign * (conf[a] - conf[b]) || a - b);
  }
  const pages = Math.max(1, Math.ceil(order.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages);
  const shown = order.slice((state.page - 1) * PAGE_SIZE, state.page * PAGE_SIZE);
  $("count").textContent = `${order.length} of ${N} examples`;
  $("count").dataset.count = order.length;
  $("page").textContent = `page ${state.page} of ${pages}`;
  $("prev").disabled = state.page <= 1; $("next").disabled = state.page >= pages;
  const body = el("tbody");
  for (const i of shown) body.append(row(i));
  $("examples").tBodies[0].replaceWith(body);
  // what a test reads: rows matching, rows on this page, and when the page first became usable
  window.reportState = {count: order.length, shown: shown.length, page: state.page, hash: location.hash,
                        readyMs: (window.reportState || {}).readyMs || performance.now()};
  document.body.dataset.ready = "1";
}

function row(i) {
  const E = D.examples, tr = el("tr", {class: "example"});
  tr.append(el("td", {}, E.id[i]), ...E.inputs.map((c) => el("td", {}, c[i])), el("td", {}, E.gold[i] === null ? "\\u2013" : E.gold[i]));
  for (let k = 0; k < R; k++) {
    const pred = E.pred[k][i], right = E.correct[k][i], stop = E.stop[k][i], conf = E.conf[k][i];
    const kind = pred === null ? "fail" : right === true ? "right" : right === false ? "wrong" : "nolabel";
    const td = el("td", {}, el("span", {class: `badge ${kind}`}, pred === null ? "parse failure" : pred));
    if (E.abstained && E.abstained[k][i]) td.append(el("span", {class: "small abstained"}, " abstained"));
    if (conf !== null) td.append(el("span", {class: "small"}, ` p ${fmt(conf, 2)}`));
    const why = {length: " (cut at max tokens)", error: " (API error)", context: " (prompt past the context: not scored)"}[stop];
    if (why) td.append(el("span", {class: "small"}, why));
    td.append(el("pre", {class: "answer"}, E.raw[k][i]));
    tr.append(td);
  }
  return tr;
}

function tableHead() {
  const widths = D.input_fields.length ? 36 / D.input_fields.length : 0;
  const tr = el("tr", {}, el("th", {style: "width:5em"}, "id"),
    ...D.input_fields.map((f) => el("th", {style: `width:${widths}%`}, f)), el("th", {style: "width:4em"}, "gold"),
    ...D.runs.map((r) => el("th", {}, r.name)));
  $("examples").tHead.append(tr);
}

loadData().then((data) => {
  D = data; N = D.examples.id.length; R = D.runs.length;
  header(); controls(); tableHead(); readHash(); render();
}).catch((err) => { document.body.prepend(el("p", {class: "note"}, `cannot show the report: ${err}`)); throw err; });
</script></body></html>
"""
