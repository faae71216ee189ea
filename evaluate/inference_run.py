"""What one `sample_model` run does, settled once, and the interface its backends share.

    run = resolve_run(build_parser().parse_args(argv))   # evaluate/sample_model.py: a frozen InferenceRun
    backend = load_backend(run)                          # hf_backend.py, vllm_backend.py or api_backend.py

`resolve_run` reads the parsed arguments and the model's contract (model_contract.resolve_model_use, which
scripts/serve.py uses too) and refuses what cannot run, before any model loads: every later step reads
the frozen `InferenceRun`, never the arguments. A `Backend` answers the run's items (`generate`), scores
each label's answer (`score`, the HF backend only) and frees what it holds (`close`).
"""

from dataclasses import dataclass, fields
from pathlib import Path

from evaluate.backend import SCORING_NEEDS, Backend
from nli_finetune import REPO_ROOT
from nli_finetune.data_io import DataError
from nli_finetune.llm_api import PROVIDERS
from nli_finetune.model_contract import ModelContract, resolve_model_use
from prompts import get_task


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
    task: str                         # --task, else the contract's, else nli
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
    task = get_task(use.task)
    check_backend_args(args, task)
    calibration, abstain_below = resolve_calibration(args, task)
    resolved = {
        "contract": use.contract, "other_base": use.other_base, "task": use.task,
        "batch_size": 1 if args.backend == "openai" else args.batch_size,
        "stop_at_json": not task.free_text if args.stop_at_json is None else args.stop_at_json,
        "calibration": calibration, "abstain_below": abstain_below,
        "paths": output_paths(args.output_file, args.output_csv, args.model_id or args.model_name, args.test_file,
                              args.shard, args.scoring)}
    # every other field is the option of the same name, as given
    given = {f.name: getattr(args, f.name) for f in fields(InferenceRun) if f.name not in resolved}
    return InferenceRun(**given, **resolved)


def check_backend_args(args, task) -> None:
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


def resolve_calibration(args, task) -> tuple[dict | None, float | None]:
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
