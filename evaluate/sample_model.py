"""Resumable batch inference with robust label extraction and metrics.

    python -m evaluate.sample_model --model_id models/X --test_file data/sample/sample.csv
    python -m evaluate.sample_model --model_id models/X-adapter --test_file data/dev.csv --batch_size 32
    python -m evaluate.sample_model ... --shard 1/4          # the second quarter (merge with merge_shards.py)
    python -m evaluate.sample_model ... --task nli_label --scoring logprob   # labels scored: label_probs, ECE
    python -m evaluate.sample_model --backend openai --api_base http://127.0.0.1:8000/v1 --model_name NAME \
        --test_file data/dev.csv                             # a served model or any API (evaluate/api_backend.py)
    ./evaluate/run_inference.sh --model models/X --data data/dev.csv --gpu 1   # the same, in the container

Each finished example is appended (and fsynced) to `<output>.progress.jsonl`; rerunning the same
command continues where it stopped (`--restart` discards the progress). Outputs, written atomically:
`<output>.json` (settings, metrics, timing, one record per example) and `<output>.csv` (id order =
input order). Bad input exits with status 2 and a message naming the file, row and field.
"""

import json
import sys
import time
from pathlib import Path

from evaluate.inference_run import InferenceRun, build_parser, load_backend, resolve_run
from nli_finetune.data_io import (
    DataError,
    append_jsonl,
    atomic_write_json,
    check_outputs,
    content_fingerprint,
    load_env_file,
    path_fingerprint,
    read_jsonl,
    read_records,
    repair_torn_tail,
    strip_private,
    sync_file,
)
from nli_finetune.eval_inputs import load_eval_items
from nli_finetune.job_runner import output_lock
from nli_finetune.llm_api import ApiError
from nli_finetune.model_contract import check_tokenizer
from nli_finetune.modeling import ModelLoadError, check_outputs_spare_model, model_fingerprint
from nli_finetune.redaction import redact, safe_url
from nli_finetune.results import score_record, summarize, write_outputs
from nli_finetune.resume import changes, refusal, unknown_origin
from prompts import Task

# Recorded in the output but free to differ on resume: they don't change what is generated.
OUTPUT_ONLY_SETTINGS = ("loaded", "decoder", "model_contract",  # the contract is one of the model's files
                        "calibration", "abstain_below")  # applied to finished records; fingerprinted apart


def shard_items(items: list, shard) -> list:
    """Contiguous slices, so merging shards in index order restores the input order."""
    if not shard:
        return items
    index, count = shard
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return items[start:start + size + (1 if index < extra else 0)]


def trim_prompt(ids: list[int], limit: int | None, bos_id) -> tuple[list[int], int]:
    if not limit or len(ids) <= limit:
        return ids, 0
    head = 1 if ids and ids[0] == bos_id else 0
    cut = len(ids) - limit
    return ids[:head] + ids[head + cut:], cut


def check_paths(run: InferenceRun) -> None:
    """No output may be an input (or another output): a results table written over the test file
    destroys it. Checked before the model loads."""
    inputs = {"--test_file": run.test_file}
    if run.model_id and Path(run.model_id).is_file():  # a GGUF file
        inputs["--model_id"] = run.model_id
    from nli_finetune.calibration_file import calibration_path
    inputs["the model's calibration"] = calibration_path(run.model_id)  # not a model file, but the model's
    check_outputs(inputs, run.paths)
    if run.backend != "openai":  # nor a file of the model, its base or its converted GGUF folder
        check_outputs_spare_model(run.paths, run.model_id, run.base_model)
    check_shard_not_empty(run)


def check_shard_not_empty(run: InferenceRun) -> None:
    """More shards than rows leaves a shard with nothing to do: say so before the model loads."""
    if run.shard:
        rows = len(read_records(run.test_file)[:run.limit])
        if not shard_items(list(range(rows)), run.shard):
            raise DataError(f"--shard {run.shard[0]}/{run.shard[1]}: this shard is empty ({rows} rows for "
                            f"{run.shard[1]} shards); use at most {rows} shards")


def write_reliability_diagram(path: Path, records: list, task: Task) -> None:
    """The reliability diagram of scored labels (probability of the predicted label against being right),
    written atomically next to the outputs."""
    from nli_finetune.calibration import calibration_report, plot_reliability
    records = [r for r in records if "label_probs" in r]  # a prompt past the context was not scored
    confidence = [r["label_probs"][str(r["predicted_label"])] for r in records]
    report = calibration_report(confidence, [r["correct"] for r in records], beta=max(1, len(records) // 10))
    partial = path.with_name(f".{path.stem}.partial.png")
    plot_reliability(report, partial, title=f"{task.name}, scored labels")
    partial.replace(path)


def calibration_setting(calibration: dict | None) -> dict | None:
    """What the outputs record of the calibration used."""
    if calibration is None:
        return None
    return {k: calibration.get(k) for k in ("source", "method", "temperature", "bias")} | \
        {"fitted_on": (calibration.get("fitted_on") or {}).get("file")}


def annotate(records: list[dict], calibration: dict | None, abstain_below: float | None) -> list[dict]:
    """Finished records with their calibrated `label_probs` (beside the raw) and, with a threshold, whether
    the answer is `abstained` (its probability below it): not a parse failure, not wrong; its prediction is
    kept, so the full-set numbers stay those of answering everything."""
    from nli_finetune.calibration_file import calibrated_label_probs
    from nli_finetune.results import answer_confidence
    annotated = []
    for record in records:
        record = dict(record)
        if calibration and record.get("label_probs"):
            record["calibrated_label_probs"] = calibrated_label_probs(calibration, record["label_probs"])
        if abstain_below is not None:
            confidence = answer_confidence(record)
            record["abstained"] = confidence is not None and confidence < abstain_below
        annotated.append(record)
    return annotated


def fingerprints(run: InferenceRun, items: list) -> dict:
    """What the saved progress was computed from: the prompts and labels (so an edited input file or a
    changed chat template is noticed) and the model's files (weights, adapter, tokenizer); for an API,
    the messages sent (its model is named by the settings: api_base, model_name)."""
    if run.backend == "openai":
        return {"inputs": content_fingerprint([[i.id, i.messages, i.true_label, i.inputs] for i in items])}
    base = run.base_model
    if base is None and (Path(run.model_id) / "adapter_config.json").is_file():
        from nli_finetune.modeling import adapter_base
        base = adapter_base(run.model_id)
    found = {"inputs": content_fingerprint([[i.id, i.prompt_ids, i.true_label, i.inputs] for i in items]),
             "model": model_fingerprint(run.model_id), "base_model": model_fingerprint(base) if base else None}
    return found | calibration_fingerprints(run)


def calibration_fingerprints(run: InferenceRun) -> dict:
    """{"calibration": hash} when scored labels use the model's calibration.json: progress saved under
    another calibration is refused. Nothing otherwise, so progress saved before calibrations existed resumes."""
    if run.scoring != "logprob" or run.no_calibration:
        return {}
    from nli_finetune.calibration_file import calibration_fingerprint
    fingerprint = calibration_fingerprint(run.model_id)
    return {"calibration": fingerprint} if fingerprint else {}


RESTART = "rerun with --restart to discard it"


def progress_inputs(side: dict, resumable: dict) -> dict:
    """What counts when resuming progress: this run's settings (a setting saved by an older version and
    since dropped does not) and both sides' fingerprints (a calibration used then but not now is a change)."""
    return {"settings": {key: side.get(key) for key in resumable if key != "fingerprint"},
            "files": side.get("fingerprint") or {}}


def load_progress(paths: dict, resumable: dict, restart: bool) -> dict:
    """{id: record} of saved progress that was computed from exactly these inputs, model and settings;
    saved progress from anything else is refused (never reused, never silently discarded)."""
    progress, meta = paths["progress file"], paths["progress settings"]
    if restart:
        progress.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    if not progress.exists():
        atomic_write_json(meta, resumable)
        return {}
    try:
        saved = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise DataError(unknown_origin(progress, meta.name, RESTART, what="saved progress"))
    changed = changes(*(progress_inputs(side, resumable) for side in (saved, resumable)))
    if changed:
        raise DataError(refusal(progress, changed, RESTART, what="saved progress"))
    repair_torn_tail(progress)
    records = {r["id"]: strip_private(r) for r in read_jsonl(progress, tolerate_torn_tail=True)}
    return {key: r for key, r in records.items() if r.get("stop_reason") != "error"}  # API refusals: asked again


def batch_plan(items: list, batch_size: int) -> list[list[int]]:
    """Batches of item indexes, longest prompts first. The plan depends only on the input and batch
    size, so a resumed run regenerates whole planned batches and every example sees the same
    batch-mates (and padding) as in an uninterrupted run."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].prompt_ids))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_missing(generate, items: list, done: dict, progress_path: Path, batch_size: int, task: Task) -> None:
    """Generate every planned batch that holds a missing item, appending each new record to the progress file."""
    rerun = [items[i] for batch in batch_plan(items, batch_size) if any(items[j].id not in done for j in batch)
             for i in batch]
    if not rerun:
        return
    progress_path.parent.mkdir(parents=True, exist_ok=True)
    with open(progress_path, "a", encoding="utf-8") as progress:
        def save(batch):
            for index, result in batch:
                item = rerun[index]
                if item.id in done:
                    continue
                result["prompt_tokens_trimmed"] = item.trimmed
                record = score_record(item, result, task)
                append_jsonl(progress, record, sync=False)
                done[item.id] = record
            sync_file(progress)  # once per batch: a resumed run redoes whole batches anyway
        generate(rerun, save)


def run_settings(run: InferenceRun) -> dict:
    """What the outputs record of this run; all but OUTPUT_ONLY_SETTINGS must match to resume."""
    settings = {"model_id": run.label, "test_file": run.test_file, "task": run.task.name,
                "batch_size": run.batch_size, "max_new_tokens": run.max_new_tokens, "max_prompt_tokens": run.max_prompt_tokens,
                "stop_at_json": run.stop_at_json, "backend": run.backend, "shard": run.shard,
                "limit": run.limit, "base_model": run.base_model, "decoder": run.decoder,
                "scoring": run.scoring, "other_base": run.other_base}
    if run.backend == "openai":
        settings |= {"api_base": safe_url(run.api_url), "model_name": run.model_name}
    return settings | {"model_contract": run.contract.summary() if run.contract else None,
                       "calibration": calibration_setting(run.calibration), "abstain_below": run.abstain_below}


def load_items_and_progress(run: InferenceRun, backend, settings: dict) -> tuple[list, bool, dict]:
    """(this shard's items with their prompts, whether they are labelled, {id: record} already done)."""
    tokenizer = backend.tokenizer
    items, has_labels = load_eval_items(run.test_file, tokenizer, run.task, run.limit)
    items = shard_items(items, run.shard)
    if tokenizer is not None:
        for item in items:
            item.prompt_ids, item.trimmed = trim_prompt(item.prompt_ids, run.max_prompt_tokens, tokenizer.bos_token_id)
    resumable = {k: v for k, v in settings.items() if k not in OUTPUT_ONLY_SETTINGS}
    resumable["fingerprint"] = fingerprints(run, items)
    # merge_shards refuses shards of other inputs or models: the whole test file and the model files
    settings["fingerprints"] = {"test_file": path_fingerprint(run.test_file),
                                **{k: v for k, v in resumable["fingerprint"].items() if k != "inputs"}}
    warn_long_prompts(items, backend.context_length)
    return items, has_labels, load_progress(run.paths, resumable, run.restart)


def warn_long_prompts(items: list, context_length: int | None) -> None:
    """A prompt the model can't see whole answers blind: count them (--max_prompt_tokens cuts their start)."""
    too_long = [item.id for item in items if context_length and len(item.prompt_ids) >= context_length]
    if too_long:
        print(f"warning: {len(too_long)} prompt(s) reach the model's context of {context_length} tokens (ids "
              f"{', '.join(too_long[:5])}{', ...' if len(too_long) > 5 else ''}); their answers are unreliable; "
              "--max_prompt_tokens cuts their start", file=sys.stderr)


def finish(run: InferenceRun, settings: dict, items: list, pending: list, done: dict, has_labels: bool,
           seconds: float) -> dict:
    """Score every record, time this run, and write the outputs."""
    paths = run.paths
    records = annotate([done[item.id] for item in items], run.calibration, run.abstain_below)
    tokens_now = sum(done[item.id]["generated_tokens"] for item in pending)
    settings["has_labels"] = has_labels
    metrics = summarize(records, run.task, has_labels)
    timing = {"seconds_this_run": seconds, "generated_this_run": len(pending),
              "samples_per_s": len(pending) / seconds if pending and seconds > 0 else None,
              "generated_tokens_per_s": tokens_now / seconds if pending and seconds > 0 else None}
    write_outputs(paths["--output_file"], paths["--output_csv"], settings, metrics, timing, records)
    if "reliability diagram" in paths and has_labels:
        write_reliability_diagram(paths["reliability diagram"], records, run.task)
    return {"output": str(paths["--output_file"]), "output_csv": str(paths["--output_csv"]), "metrics": metrics,
            "timing": timing}


def execute(run: InferenceRun) -> dict:
    """Load the run's backend, answer what the progress file lacks, and write the outputs."""
    check_paths(run)
    settings = run_settings(run)
    with output_lock(run.paths["progress file"]):  # a second run on this output is refused
        backend = load_backend(run)
        if backend.loaded is not None:
            settings["loaded"] = backend.loaded
        try:
            check_tokenizer(run.contract, backend.tokenizer, run.ignore_contract)
            items, has_labels, done = load_items_and_progress(run, backend, settings)
        except BaseException:
            backend.close()  # a vLLM engine must not outlive a refused run
            raise
        pending = [item for item in items if item.id not in done]
        if done:
            print(f"resuming: {len(done)} done, {len(pending)} to go ({run.paths['progress file']})", file=sys.stderr)
        started = time.time()
        try:
            if pending:
                answer = backend.score if run.scoring == "logprob" else backend.generate
                generate_missing(answer, items, done, run.paths["progress file"], run.batch_size, run.task)
        finally:
            backend.close()  # once the answers are in: a vLLM engine's processes must not outlive them
        return finish(run, settings, items, pending, done, has_labels, time.time() - started)


def main(argv=None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    load_env_file()  # HF_TOKEN for a gated base model
    try:
        summary = execute(resolve_run(args))
    except (DataError, ModelLoadError) as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except ApiError as exc:  # the endpoint failed for good: the answers so far are in the progress file
        print(f"error: {redact(exc)}; rerun the same command to continue", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, a folder made read-only mid-run: progress so far is kept
        print(f"error: cannot write: {redact(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsample_model: interrupted by Ctrl-C; finished examples are saved in the progress file, rerun the "
              "same command to continue", file=sys.stderr)
        return 130
    m, t = summary["metrics"], summary["timing"]
    line = f"sample_model: {m['n']} examples, stop rate {m['stop_rate']:.3f}"
    if "parse_rate" in m:
        line += f", parse rate {m['parse_rate']:.3f}"
    if "rouge_l" in m:
        line += f", exact match {m['exact_match']:.3f}, ROUGE-L {m['rouge_l']:.3f}"
    if "accuracy" in m:
        line += f", accuracy {m['accuracy']:.3f}, macro-F1 {m['f1_macro']:.3f}"
    if "ece" in m:
        line += f", ECE {m['ece']:.3f}, Brier {m['brier']:.3f}"
    if "calibrated_ece" in m:
        line += f" (calibrated: ECE {m['calibrated_ece']:.3f}, Brier {m['calibrated_brier']:.3f})"
    if "coverage" in m:
        answered = "-" if m["answered_accuracy"] is None else f"{m['answered_accuracy']:.3f}"
        line += f", coverage {m['coverage']:.3f} at accuracy {answered} answered"
    if t["samples_per_s"]:
        line += f", {t['samples_per_s']:.2f} samples/s"
    print(line + f" -> {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
