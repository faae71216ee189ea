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

import argparse
import json
import sys
import time
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, above_zero, at_least, parse_bool
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
from nli_finetune.llm_api import PROVIDERS, ApiError
from nli_finetune.model_contract import OTHER_BASE_FLAG, check_base, check_tokenizer, read_contract, resolve_setting
from nli_finetune.modeling import ModelLoadError, adapter_base, check_outputs_spare_model, model_fingerprint
from nli_finetune.redaction import redact, safe_url
from nli_finetune.results import score_record, summarize, write_outputs
from prompts import TASKS, get_task

# Recorded in the output but free to differ on resume: they don't change what is generated.
OUTPUT_ONLY_SETTINGS = ("loaded", "decoder", "model_contract",  # the contract is one of the model's files
                        "calibration", "abstain_below")  # applied to finished records; fingerprinted apart


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n such as 0/4, got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m evaluate.sample_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_id", default=None, help="base model dir / hub id, or a LoRA adapter dir "
                   "(required except with --backend openai)")
    p.add_argument("--test_file", required=True, help="CSV or JSONL with the task's inputs (+ optional label, id)")
    p.add_argument("--output_file", default=None, help="results JSON (default results/<model>-<data>.json)")
    p.add_argument("--output_csv", default=None, help="results CSV (default: the JSON path with .csv)")
    p.add_argument("--task", default=None, choices=sorted(TASKS),
                   help="default: the task in the model's model_contract.json, else nli")
    p.add_argument("--ignore_contract", action="store_true",
                   help="run even when --task or the tokenizer contradicts the model's model_contract.json")
    p.add_argument("--batch_size", type=at_least(1), default=8)
    p.add_argument("--max_new_tokens", type=at_least(1), default=512)
    p.add_argument("--max_prompt_tokens", type=at_least(1), default=None,
                   help="longer prompts lose their start (the instruction at the end is kept)")
    p.add_argument("--stop_at_json", type=parse_bool, default=None,
                   help="stop a sequence once it has written a complete JSON object (default: true for label "
                        "tasks, false for free_text)")
    p.add_argument("--backend", choices=["hf", "vllm", "openai"], default="hf",
                   help="openai: an OpenAI-compatible chat-completions endpoint (see the API options)")
    p.add_argument("--decoder", choices=["auto", "generate"], default="auto",
                   help="hf backend: auto = greedy_decode.py where the model allows it (same tokens, "
                        "faster), generate = always transformers' generate")
    p.add_argument("--scoring", choices=["generate", "logprob"], default="generate",
                   help="hf backend, label tasks: logprob = predict the label whose answer the model finds most "
                        "probable (label_scoring.py; label_probs per record, ECE/Brier/ROC AUC and a reliability "
                        "diagram); chain-of-thought tasks generate the reasoning first")
    p.add_argument("--no_calibration", action="store_true",
                   help="--scoring logprob: ignore the model's calibration.json (evaluate.calibrate)")
    p.add_argument("--abstain_below", type=unit_interval, default=None,
                   help="--scoring logprob: mark answers whose (calibrated) probability is below P as abstained "
                        "(default: the threshold evaluate.calibrate --target_accuracy stored, else none; 0: none)")
    p.add_argument("--json_schema", action="store_true",
                   help="vllm: constrain answers to the task's JSON answer schema (prompts.Task.answer_schema)")
    p.add_argument("--device", default="auto")
    p.add_argument("--load_in_4bit", type=parse_bool, default=None, help="default: true on CUDA, false elsewhere")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--base_model", default=None, help="override the base named in adapter_config.json")
    p.add_argument("--allow_other_base", action="store_true",
                   help="run an adapter on a base other than the one its model_contract.json records (the "
                        "results then say so in settings.other_base)")
    p.add_argument("--shard", type=parse_shard, default=None, help="i/n: run only shard i of n")
    p.add_argument("--limit", type=at_least(1), default=None, help="only the first N rows")
    p.add_argument("--restart", action="store_true", help="discard saved progress and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    api = p.add_argument_group("API options (--backend openai); the key comes from the provider's variable "
                               "in the environment or .env (local: API_KEY or SERVE_API_KEY)")
    api.add_argument("--api", choices=sorted(PROVIDERS), default="local", help="provider defaults (default: local)")
    api.add_argument("--api_base", "--api-base", default=None, help="base URL, e.g. http://127.0.0.1:8000/v1")
    api.add_argument("--model_name", "--model-name", default=None, help="the model name the endpoint serves")
    api.add_argument("--workers", type=at_least(1), default=8, help="concurrent requests")
    api.add_argument("--requests_per_minute", type=above_zero, default=None, help="stay under a quota")
    api.add_argument("--max_attempts", type=at_least(1), default=6, help="HTTP attempts per request")
    api.add_argument("--timeout", type=above_zero, default=120.0, help="seconds per HTTP request")
    return p


def model_label(args) -> str:
    """What names the model in outputs and settings: its path, or for an API its name there."""
    return args.model_id or args.model_name


def default_output(model_id: str, test_file: str, shard) -> Path:
    name = f"{Path(model_id.rstrip('/')).name}-{Path(test_file).stem}"
    if shard:
        name += f".shard-{shard[0]}-of-{shard[1]}"
    return REPO_ROOT / "results" / f"{name}.json"


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


def output_paths(args) -> dict:
    output = Path(args.output_file) if args.output_file else default_output(model_label(args), args.test_file,
                                                                             args.shard)
    progress = output.with_name(output.name + ".progress.jsonl")
    paths = {"--output_file": output,
             "--output_csv": Path(args.output_csv) if args.output_csv else output.with_suffix(".csv"),
             "progress file": progress, "progress settings": progress.with_name(progress.name + ".meta.json")}
    if getattr(args, "scoring", "generate") == "logprob":
        paths["reliability diagram"] = output.with_suffix(".reliability.png")
    return paths


def check_paths(args, paths: dict) -> None:
    """No output may be an input (or another output): a results table written over the test file
    destroys it. Checked before the model loads."""
    inputs = {"--test_file": args.test_file}
    if args.model_id and Path(args.model_id).is_file():  # a GGUF file
        inputs["--model_id"] = args.model_id
    from nli_finetune.calibration_file import calibration_path
    inputs["the model's calibration"] = calibration_path(args.model_id)  # not a model file, but the model's
    check_outputs(inputs, paths)
    if args.backend != "openai":  # nor a file of the model, its base or its converted GGUF folder
        check_outputs_spare_model(paths, args.model_id, args.base_model)
    check_shard_not_empty(args)


def check_shard_not_empty(args) -> None:
    """More shards than rows leaves a shard with nothing to do: say so before the model loads."""
    if args.shard:
        rows = len(read_records(args.test_file)[:args.limit])
        if not shard_items(list(range(rows)), args.shard):
            raise DataError(f"--shard {args.shard[0]}/{args.shard[1]}: this shard is empty ({rows} rows for "
                            f"{args.shard[1]} shards); use at most {rows} shards")


def load_generator(args, settings: dict):
    """(generate function, tokenizer, close function) for the chosen backend; generate(items, on_batch)."""
    if args.backend == "openai":
        return load_api_generator(args)
    if args.backend == "vllm":
        from evaluate.vllm_backend import VllmGenerator
        generator = VllmGenerator(args.model_id, base_model=args.base_model, dtype=args.dtype,
                                  json_schema=get_task(args.task).answer_schema() if args.json_schema else None)

        def generate(items, on_batch):
            try:
                generator.generate([item.prompt_ids for item in items], max_new_tokens=args.max_new_tokens,
                                   on_batch=on_batch, stop_at_json=args.stop_at_json)
            finally:
                generator.close()
        return generate, generator.tokenizer, generator.close
    from nli_finetune.generation import generate_answers
    from nli_finetune.modeling import load_for_inference
    model, tokenizer, info = load_for_inference(args.model_id, device=args.device, load_in_4bit=args.load_in_4bit,
                                                dtype=args.dtype, base_model=args.base_model)
    settings["loaded"] = info
    args.context_length = getattr(model.config, "max_position_embeddings", None)
    if args.scoring == "logprob":
        return label_scorer(args, model, tokenizer), tokenizer, lambda: None

    def generate(items, on_batch):
        generate_answers(model, tokenizer, [item.prompt_ids for item in items], batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, stop_at_json=args.stop_at_json, on_batch=on_batch,
                         progress=not args.quiet, sort_by_length=False, decoder=args.decoder)
    return generate, tokenizer, lambda: None


def label_scorer(args, model, tokenizer):
    """generate(items, on_batch) for --scoring logprob: each label's answer scored (label_scoring.py)."""
    from nli_finetune.label_scoring import scored_answers

    def generate(items, on_batch):
        scored_answers(model, tokenizer, [item.prompt_ids for item in items], args.task, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, decoder=args.decoder, on_batch=on_batch,
                       progress=not args.quiet)
    return generate


def write_reliability_diagram(path: Path, records: list, task: str) -> None:
    """The reliability diagram of scored labels (probability of the predicted label against being right),
    written atomically next to the outputs."""
    from nli_finetune.calibration import calibration_report, plot_reliability
    records = [r for r in records if "label_probs" in r]  # a prompt past the context was not scored
    confidence = [r["label_probs"][str(r["predicted_label"])] for r in records]
    report = calibration_report(confidence, [r["correct"] for r in records], beta=max(1, len(records) // 10))
    partial = path.with_name(f".{path.stem}.partial.png")
    plot_reliability(report, partial, title=f"{task}, scored labels")
    partial.replace(path)


def apply_calibration(args) -> dict | None:
    """The model's calibration.json for --scoring logprob (None: none, --no_calibration, or another scoring),
    checked against the task and the test file; sets args.abstain_below from its stored threshold."""
    from nli_finetune.calibration_file import check_calibration_use, read_calibration
    if args.abstain_below is not None and args.scoring != "logprob":
        raise DataError("--abstain_below needs --scoring logprob (the probability of each label)")
    calibration = None if args.scoring != "logprob" or args.no_calibration else read_calibration(args.model_id)
    if calibration:
        check_calibration_use(calibration, list(get_task(args.task).labels), args.test_file)
        stored = (calibration.get("threshold") or {}).get("threshold")
        if args.abstain_below is None and stored is not None:
            args.abstain_below = stored
    if args.abstain_below == 0:
        args.abstain_below = None  # nothing lies below 0: no abstention
    return calibration


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


def load_api_generator(args):
    from argparse import Namespace

    from evaluate.api_backend import ApiGenerator
    from nli_finetune.llm_api import client_from_args
    try:
        client = client_from_args(Namespace(api=args.api, api_base=args.api_base, model_name=args.model_name,
                                            timeout=args.timeout, max_attempts=args.max_attempts,
                                            requests_per_minute=args.requests_per_minute, no_json_mode=True,
                                            workers=args.workers))
    except ApiError as exc:  # no key: a setup error, before any request
        raise DataError(str(exc)) from None
    generator = ApiGenerator(client, workers=args.workers, max_new_tokens=args.max_new_tokens,
                             stop_at_json=args.stop_at_json, progress=not args.quiet, task=args.task)
    return (lambda items, on_batch: generator.generate([item.messages for item in items], on_batch)), None, \
        lambda: None


def fingerprints(args, items: list) -> dict:
    """What the saved progress was computed from: the prompts and labels (so an edited input file or a
    changed chat template is noticed) and the model's files (weights, adapter, tokenizer); for an API,
    the messages sent (its model is named by the settings: api_base, model_name)."""
    if args.backend == "openai":
        return {"inputs": content_fingerprint([[i.id, i.messages, i.true_label, i.inputs] for i in items])}
    base = args.base_model
    if base is None and (Path(args.model_id) / "adapter_config.json").is_file():
        from nli_finetune.modeling import adapter_base
        base = adapter_base(args.model_id)
    found = {"inputs": content_fingerprint([[i.id, i.prompt_ids, i.true_label, i.inputs] for i in items]),
             "model": model_fingerprint(args.model_id), "base_model": model_fingerprint(base) if base else None}
    return found | calibration_fingerprints(args)


def calibration_fingerprints(args) -> dict:
    """{"calibration": hash} when scored labels use the model's calibration.json: progress saved under
    another calibration is refused. Nothing otherwise, so progress saved before calibrations existed resumes."""
    if args.scoring != "logprob" or getattr(args, "no_calibration", False):
        return {}
    from nli_finetune.calibration_file import calibration_fingerprint
    fingerprint = calibration_fingerprint(args.model_id)
    return {"calibration": fingerprint} if fingerprint else {}


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
        raise DataError(f"{progress}: saved progress has no readable settings file ({meta.name}), so it can't be "
                        "tied to its inputs; rerun with --restart to discard it")
    wanted = json.loads(json.dumps(resumable))
    settings = [k for k in wanted if k != "fingerprint" and saved.get(k) != wanted[k]]
    changed = [f"settings ({', '.join(settings)})"] if settings else []
    names = {"inputs": "input rows", "model": "model files", "base_model": "base model files",
             "calibration": "calibration (calibration.json)"}
    saved_prints = saved.get("fingerprint") or {}
    # both sides' keys: a calibration used then but not now (or now but not then) is a change too
    changed += [names.get(k, k) for k in [*wanted["fingerprint"], *(k for k in saved_prints if k not in wanted["fingerprint"])]
                if saved_prints.get(k) != wanted["fingerprint"].get(k)]
    if changed:
        raise DataError(f"{progress}: saved progress was computed from other {', '.join(changed)}; "
                        "rerun with --restart to discard it")
    repair_torn_tail(progress)
    records = {r["id"]: strip_private(r) for r in read_jsonl(progress, tolerate_torn_tail=True)}
    return {key: r for key, r in records.items() if r.get("stop_reason") != "error"}  # API refusals: asked again


def batch_plan(items: list, batch_size: int) -> list[list[int]]:
    """Batches of item indexes, longest prompts first. The plan depends only on the input and batch
    size, so a resumed run regenerates whole planned batches and every example sees the same
    batch-mates (and padding) as in an uninterrupted run."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].prompt_ids))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_missing(generate, items: list, done: dict, progress_path: Path, batch_size: int, task: str) -> None:
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


def check_backend_args(args) -> None:
    if args.scoring == "logprob" and (args.backend != "hf" or get_task(args.task).free_text):
        raise DataError("--scoring logprob needs --backend hf and a label task (not free_text); "
                        "docs/inference.md says what vLLM offers")
    if args.json_schema and (args.backend != "vllm" or get_task(args.task).free_text):
        raise DataError("--json_schema needs --backend vllm and a label task (not free_text)")
    if args.backend == "openai":
        if not args.model_name:
            raise DataError("--backend openai needs --model_name (the name the endpoint serves; /v1/models lists it)")
        if args.max_prompt_tokens:
            raise DataError("--max_prompt_tokens needs a local tokenizer; not with --backend openai")
        args.batch_size = 1  # every answer is saved as it arrives: a resumed run asks again only what was in flight
    elif not args.model_id:
        raise DataError(f"--backend {args.backend} needs --model_id (a model folder, adapter, hub id or .gguf)")
    if args.stop_at_json is None:
        args.stop_at_json = not get_task(args.task).free_text


def run_settings(args) -> dict:
    """What the outputs record of this run; all but OUTPUT_ONLY_SETTINGS must match to resume."""
    settings = {"model_id": model_label(args), "test_file": args.test_file, "task": args.task,
                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "max_prompt_tokens": args.max_prompt_tokens,
                "stop_at_json": args.stop_at_json, "backend": args.backend, "shard": args.shard,
                "limit": args.limit, "base_model": args.base_model, "decoder": args.decoder,
                "scoring": args.scoring, "other_base": getattr(args, "other_base", None)}
    if args.backend == "openai":
        settings |= {"api_base": safe_url(args.api_base or PROVIDERS[args.api]["base"]), "model_name": args.model_name}
    return settings


def load_items_and_progress(args, tokenizer, settings: dict, paths: dict) -> tuple[list, bool, dict]:
    """(this shard's items with their prompts, whether they are labelled, {id: record} already done)."""
    items, has_labels = load_eval_items(args.test_file, tokenizer, args.task, args.limit)
    items = shard_items(items, args.shard)
    if tokenizer is not None:
        for item in items:
            item.prompt_ids, item.trimmed = trim_prompt(item.prompt_ids, args.max_prompt_tokens, tokenizer.bos_token_id)
    resumable = {k: v for k, v in settings.items() if k not in OUTPUT_ONLY_SETTINGS}
    resumable["fingerprint"] = fingerprints(args, items)
    # merge_shards refuses shards of other inputs or models: the whole test file and the model files
    settings["fingerprints"] = {"test_file": path_fingerprint(args.test_file),
                                **{k: v for k, v in resumable["fingerprint"].items() if k != "inputs"}}
    warn_long_prompts(items, getattr(args, "context_length", None))
    return items, has_labels, load_progress(paths, resumable, args.restart)


def warn_long_prompts(items: list, context_length: int | None) -> None:
    """A prompt the model can't see whole answers blind: count them (--max_prompt_tokens cuts their start)."""
    too_long = [item.id for item in items if context_length and len(item.prompt_ids) >= context_length]
    if too_long:
        print(f"warning: {len(too_long)} prompt(s) reach the model's context of {context_length} tokens (ids "
              f"{', '.join(too_long[:5])}{', ...' if len(too_long) > 5 else ''}); their answers are unreliable; "
              "--max_prompt_tokens cuts their start", file=sys.stderr)


def finish(args, paths: dict, settings: dict, items: list, pending: list, done: dict, has_labels: bool,
           seconds: float) -> dict:
    """Score every record, time this run, and write the outputs."""
    records = annotate([done[item.id] for item in items], args.calibration, args.abstain_below)
    tokens_now = sum(done[item.id]["generated_tokens"] for item in pending)
    settings["has_labels"] = has_labels
    metrics = summarize(records, args.task, has_labels)
    timing = {"seconds_this_run": seconds, "generated_this_run": len(pending),
              "samples_per_s": len(pending) / seconds if pending and seconds > 0 else None,
              "generated_tokens_per_s": tokens_now / seconds if pending and seconds > 0 else None}
    write_outputs(paths["--output_file"], paths["--output_csv"], settings, metrics, timing, records)
    if "reliability diagram" in paths and has_labels:
        write_reliability_diagram(paths["reliability diagram"], records, args.task)
    return {"output": str(paths["--output_file"]), "output_csv": str(paths["--output_csv"]), "metrics": metrics,
            "timing": timing}


def apply_contract(args):
    """The model's contract (model_contract.py), or None: it gives the default --task and refuses another,
    and an adapter's base other than the one it was trained on (args.other_base: the allowed one)."""
    contract = read_contract(args.model_id)
    args.task = resolve_setting(contract, "task", args.task, "nli", "--task", args.ignore_contract)
    base = None
    if contract is not None and args.backend != "openai":
        base = args.base_model or adapter_base(args.model_id)
    args.other_base = check_base(contract, base, OTHER_BASE_FLAG, args.allow_other_base)
    return contract


def run(args) -> dict:
    contract = apply_contract(args)
    check_backend_args(args)
    args.calibration = apply_calibration(args)
    paths = output_paths(args)
    check_paths(args, paths)
    settings = run_settings(args) | {"model_contract": contract.summary() if contract else None,
                                     "calibration": calibration_setting(args.calibration),
                                     "abstain_below": args.abstain_below}
    with output_lock(paths["progress file"]):  # a second run on this output is refused
        generate, tokenizer, close = load_generator(args, settings)
        try:
            check_tokenizer(contract, tokenizer, args.ignore_contract)
            items, has_labels, done = load_items_and_progress(args, tokenizer, settings, paths)
        except BaseException:
            close()  # a vLLM engine must not outlive a refused run
            raise
        pending = [item for item in items if item.id not in done]
        if done:
            print(f"resuming: {len(done)} done, {len(pending)} to go ({paths['progress file']})", file=sys.stderr)
        started = time.time()
        if pending:
            generate_missing(generate, items, done, paths["progress file"], args.batch_size, args.task)
        else:
            close()
        return finish(args, paths, settings, items, pending, done, has_labels, time.time() - started)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_env_file()  # HF_TOKEN for a gated base model
    try:
        summary = run(args)
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
