"""What one `sample_model` run does, settled once, and the interface its backends share.

    run = resolve_run(build_parser().parse_args(argv))   # sample_model's options -> a frozen InferenceRun
    backend = load_backend(run)                          # hf_backend.py, vllm_backend.py or api_backend.py

`resolve_run` reads the parsed arguments and the model's contract (model_contract.resolve_model_use, which
scripts/serve.py uses too) and refuses what cannot run, before any model loads: every later step reads
the frozen `InferenceRun` (the task in it is the `prompts.Task`, looked up once), never the arguments. A
`Backend` answers the run's items (`generate`), scores each label's answer (`score`, the HF backend only)
and frees what it holds (`close`).
"""

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from evaluate.backend import SCORING_NEEDS, Backend
from nli_finetune import REPO_ROOT
from nli_finetune.cli import ArgumentParser, above_zero, at_least, parse_bool
from nli_finetune.data_io import DataError
from nli_finetune.llm_api import PROVIDERS
from nli_finetune.model_contract import ModelContract, resolve_model_use
from prompts import TASKS, Task


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


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """sample_model's options (its entry script passes its docstring as the description); the study reads an
    arm's eval options with this same parser at load."""
    p = ArgumentParser(prog="python -m evaluate.sample_model", description=description,
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


@dataclass(frozen=True)
class InferenceRun:
    # the model and how it is reached
    backend: str                      # hf, vllm or openai (an OpenAI-compatible endpoint)
    model_id: str | None              # a folder, adapter, hub id or .gguf (None: an API's model_name)
    model_name: str | None            # the name an endpoint serves
    base_model: str | None            # --base_model: the base an adapter runs on instead of its own
    contract: ModelContract | None
    other_base: dict | None           # an other base --allow_other_base allowed, as the results record it
    ignore_contract: bool
    device: str
    load_in_4bit: bool | None
    dtype: str
    # what is asked and how it is answered
    task: Task                        # --task, else the contract's, else nli
    test_file: str
    limit: int | None
    shard: tuple[int, int] | None
    batch_size: int                   # 1 for an API: every answer is saved as it arrives
    max_new_tokens: int
    max_prompt_tokens: int | None
    stop_at_json: bool                # --stop_at_json, else true for label tasks
    decoder: str
    scoring: str                      # generate, or logprob: each label's answer scored
    json_schema: bool                 # vLLM: answers held to the task's answer schema
    # scored labels
    no_calibration: bool
    calibration: dict | None          # the model's calibration.json, checked against task and test file
    abstain_below: float | None       # --abstain_below, else the calibration's threshold; None: no abstention
    # an API
    api: str
    api_base: str | None
    workers: int
    requests_per_minute: float | None
    max_attempts: int
    timeout: float
    # outputs and this invocation
    paths: dict                       # {name in messages: path} of every file the run writes
    restart: bool
    quiet: bool

    @property
    def label(self) -> str:
        """What names the model in outputs and settings: its path, or for an API its name there."""
        return self.model_id or self.model_name

    @property
    def api_url(self) -> str:
        return self.api_base or PROVIDERS[self.api]["base"]


def resolve_run(args) -> InferenceRun:
    """The run the parsed arguments ask for, with the model's contract applied; refuses (DataError, exit 2)
    what no backend can do. Reads the arguments, never changes them."""
    use = resolve_model_use(args.model_id, task=args.task, default_task="nli", base_model=args.base_model,
                            local=args.backend != "openai", ignore=args.ignore_contract,
                            allow_other_base=args.allow_other_base)
    task = use.task
    check_backend_args(args, task)
    calibration, abstain_below = resolve_calibration(args, task)
    resolved = {
        "contract": use.contract, "other_base": use.other_base, "task": task,
        "batch_size": 1 if args.backend == "openai" else args.batch_size,
        "stop_at_json": not task.free_text if args.stop_at_json is None else args.stop_at_json,
        "calibration": calibration, "abstain_below": abstain_below,
        "paths": output_paths(args.output_file, args.output_csv, args.model_id or args.model_name, args.test_file,
                              args.shard, args.scoring)}
    # every other field is the option of the same name, as given
    given = {f.name: getattr(args, f.name) for f in fields(InferenceRun) if f.name not in resolved}
    return InferenceRun(**given, **resolved)


def check_backend_args(args, task: Task) -> None:
    """Refuse options the chosen backend cannot honour, before the model loads."""
    if args.scoring == "logprob" and (args.backend != "hf" or task.free_text):
        raise DataError(SCORING_NEEDS)
    if args.json_schema and (args.backend != "vllm" or task.free_text):
        raise DataError("--json_schema needs --backend vllm and a label task (not free_text)")
    if args.backend == "openai":
        if not args.model_name:
            raise DataError("--backend openai needs --model_name (the name the endpoint serves; /v1/models lists it)")
        if args.max_prompt_tokens:
            raise DataError("--max_prompt_tokens needs a local tokenizer; not with --backend openai")
    elif not args.model_id:
        raise DataError(f"--backend {args.backend} needs --model_id (a model folder, adapter, hub id or .gguf)")


def resolve_calibration(args, task: Task) -> tuple[dict | None, float | None]:
    """(the model's calibration.json for --scoring logprob, checked against the task and the test file, or None:
    none, --no_calibration or another scoring; the abstention threshold: --abstain_below, else the one the
    calibration stored; None for no abstention)."""
    from nli_finetune.calibration_file import check_calibration_use, read_calibration
    if args.abstain_below is not None and args.scoring != "logprob":
        raise DataError("--abstain_below needs --scoring logprob (the probability of each label)")
    calibration = None if args.scoring != "logprob" or args.no_calibration else read_calibration(args.model_id)
    abstain_below = args.abstain_below
    if calibration:
        check_calibration_use(calibration, list(task.labels), args.test_file)
        stored = (calibration.get("threshold") or {}).get("threshold")
        if abstain_below is None and stored is not None:
            abstain_below = stored
    return calibration, (None if abstain_below == 0 else abstain_below)  # nothing lies below 0: no abstention


def default_output(model_id: str, test_file: str, shard) -> Path:
    name = f"{Path(model_id.rstrip('/')).name}-{Path(test_file).stem}"
    if shard:
        name += f".shard-{shard[0]}-of-{shard[1]}"
    return REPO_ROOT / "results" / f"{name}.json"


def output_paths(output_file, output_csv, model: str, test_file: str, shard, scoring: str) -> dict:
    """{name in messages: path} of every file the run writes (the progress files included)."""
    output = Path(output_file) if output_file else default_output(model, test_file, shard)
    progress = output.with_name(output.name + ".progress.jsonl")
    paths = {"--output_file": output,
             "--output_csv": Path(output_csv) if output_csv else output.with_suffix(".csv"),
             "progress file": progress, "progress settings": progress.with_name(progress.name + ".meta.json")}
    if scoring == "logprob":
        paths["reliability diagram"] = output.with_suffix(".reliability.png")
    return paths


def load_backend(run: InferenceRun) -> Backend:
    """The run's backend, with its model loaded (or its client set up); the GPU libraries load lazily."""
    if run.backend == "openai":
        from evaluate.api_backend import ApiBackend
        return ApiBackend(run)
    if run.backend == "vllm":
        from evaluate.vllm_backend import VllmBackend
        return VllmBackend(run)
    from evaluate.hf_backend import HfBackend
    return HfBackend(run)
