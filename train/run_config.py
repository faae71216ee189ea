"""One run's config as one frozen, typed object, resolved once for the machine, shared by training and
the preflight (`--dry_run`), so the plan is the run.

    config = load_run_config(["tiny_cpu.py", "--max_steps", "5"])   # schema < file < command line, checked
    config, notes = resolve(config, device)     # 4-bit fallback, use_lora => no 4-bit, use_wandb => report_to
    tokenizer, new_ids = setup_tokenizer(config)      # pad != eos, special and confidence tokens registered
    config, notes, resume = resolve_training_run(config, device, probe_4bit=..., planned=False,
                                                 problem=refuse)  # the steps training and --dry_run share

`TrainConfig` (train/config_schema.py) has one field per key (plus `config_file`);
`training_config.json` is the resolved object's fields. Each checkpoint carries
`run_fingerprint.json` (the training data, the base model's files and every setting that changes the
trained weights), and resuming from a checkpoint of another run is refused.
"""

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

from nli_finetune.data_io import (
    DataError,
    atomic_write_json,
    path_overlap,
    read_records,
)
from nli_finetune.resume import changes, fingerprint, refusal, unknown_origin
from train.config_loader import ConfigError, load_config
from train.config_schema import TrainConfig

log = logging.getLogger("train_sft")
FINGERPRINT_FILE = "run_fingerprint.json"
# the loader is where a TrainConfig comes from; training and its tests know it by this name
load_run_config = load_config


def resolve(config: TrainConfig, device: str, *, probe_4bit=None) -> tuple[TrainConfig, list[str]]:
    """(the config as this machine runs it, what changed and why). `probe_4bit(device) -> (ok, why)` tests
    4-bit loading here; None when planning for a device this machine doesn't have."""
    changes, notes = {}, []
    if config.load_in_4bit and not config.use_lora:
        changes["load_in_4bit"] = False
        notes.append("use_lora = False: full fine-tuning, so the base is loaded unquantized (load_in_4bit ignored)")
    elif config.load_in_4bit and probe_4bit is not None:
        ok, why = probe_4bit(device)
        if not ok and not config.allow_4bit_fallback:
            raise ConfigError(f"load_in_4bit = True but {why}. Install a bitsandbytes build for this device, "
                              "or set --allow_4bit_fallback true to train unquantized (more memory)")
        if not ok:
            changes["load_in_4bit"] = False
            notes.append(f"4-bit fallback: {why}; training the base unquantized in {config.torch_dtype}")
    if config.use_wandb:
        changes["report_to"] = "wandb"
    return dataclasses.replace(config, **changes), notes


def launch_check(config: TrainConfig, device: str, environ=None, *, planned: bool = False) -> list[str]:
    """Problems of this launch (config_rules.launch_problems). `planned`: a dry run, which the wrapper
    starts with WORLD_SIZE but without torchrun."""
    from train.config_rules import launch_problems
    environ = os.environ if environ is None else environ
    under_torchrun = "LOCAL_RANK" in environ or (planned and int(environ.get("WORLD_SIZE", "1") or 0) > 1)
    return launch_problems(config, device, under_torchrun=under_torchrun, optimizers=optimizer_names())


def optimizer_names() -> set[str]:
    """The values of transformers' OptimizerNames, read from its source: importing training_args pulls in
    accelerate and the rest (~3-5 s), which a dry run would pay for one set of names. Imported after all
    when the source does not have the shape expected."""
    import ast
    import importlib.util
    try:
        tree = ast.parse(Path(importlib.util.find_spec("transformers.training_args").origin).read_text())
        enum = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "OptimizerNames")
        names = {node.value.value for node in enum.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)}
    except (OSError, SyntaxError, StopIteration, AttributeError, TypeError):
        names = set()
    if names:
        return names
    from transformers.training_args import OptimizerNames
    return {name.value for name in OptimizerNames}


@dataclasses.dataclass(frozen=True)
class Batching:
    """How a run batches its examples: the attention that runs and the collator that goes with it."""
    attention: str        # the implementation (as loaded, or as load_model will pick it)
    source: str           # where it comes from: "loaded", "auto: not on CUDA", "flash-attn package", ...
    padding_free: bool    # PaddingFreeCollator (use_packing under flash attention), else AnswerWindowCollator

    @property
    def collator(self) -> str:
        return "padding-free" if self.padding_free else "answer-window"


def batching(config, device: str = "cpu", loaded_attention: str | None = None, *,
             device_here: bool = True) -> Batching:
    """The one decision of attention and collator, shared by the run and the preflight so the memory
    plan counts what the run computes. Padding-free batches only under a flash variant (the package's or
    the hub kernel's varlen path): SDPA and eager compute the whole masked square over a flattened batch,
    slower than padded length-grouped batches, so there use_packing falls back to the answer-window
    collator. Training passes the attention its loaded model really runs (a hub kernel may have fallen
    back to SDPA); the preflight gets what load_model will pick on `device` (ModelLoadError as the load
    would), or, planning for a GPU this machine lacks (`device_here` False), whose packages it can't see,
    a flash variant wherever one may run: the larger of the two plans."""
    if loaded_attention is not None:
        attention, source = loaded_attention, "loaded"
    elif not device_here and device.startswith("cuda") and config.attn_implementation in ("auto", "flash_attention_2"):
        attention, source = "flash_attention_2", "assumed: no GPU here to tell; with sdpa the plan is smaller"
    else:
        from nli_finetune.modeling import pick_attn_implementation
        attention, source = pick_attn_implementation(config.attn_implementation, device)
    return Batching(attention, source, padding_free=bool(config.use_packing) and "flash" in attention)


def all_special_tokens(config) -> list[str]:
    tokens = list(config.special_tokens)
    for pair in config.confidence_tokens.values():
        tokens += [t for t in pair if t not in tokens]
    return tokens


def register_special_tokens(tokenizer, tokens: list[str]) -> list[int]:
    """Add tokens to the tokenizer (before any data is tokenized, so each is one token); the new ids."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(new)


def tokenizer_source(config) -> str:
    return config.tokenizer_id or config.model_id


def setup_tokenizer(config, tokenizer=None) -> tuple[object, list[int]]:
    """(the run's tokenizer with every special and confidence token registered, the new token ids): the
    one setup training and the preflight tokenize with. `tokenizer`: an already loaded one to set up."""
    if tokenizer is None:
        from nli_finetune.modeling import load_tokenizer
        tokenizer = load_tokenizer(tokenizer_source(config))  # pad != eos guaranteed
    return tokenizer, register_special_tokens(tokenizer, all_special_tokens(config))


def _model_paths(config) -> dict[str, Path]:
    """What output_dir must stay clear of: the model and tokenizer folders (or GGUF files and their
    converted folders) and the adapter training starts from (init_adapter) that exist on disk."""
    from nli_finetune.gguf_convert import converted_dir_for, is_gguf
    paths = {}
    if config.init_adapter and (Path(config.init_adapter).expanduser() / "adapter_config.json").is_file():
        # an input like the model: output_dir = A overwrites it, out/checkpoint-N is rotated away
        paths["init_adapter folder"] = Path(config.init_adapter).expanduser()
    for key in ("model_id", "tokenizer_id"):
        value = getattr(config, key)
        if not value:
            continue
        path = Path(value).expanduser()
        if is_gguf(value):
            paths[f"{key} file"] = path
            paths[f"{key}'s converted folder"] = converted_dir_for(path)
        elif path.exists():
            paths[f"{key} folder"] = path
    return paths


def resolved_output_dir(config) -> Path:
    """output_dir after ~ and links: the one name its lock (`<it>.lock`, job_runner.output_lock) is
    taken under, by the run, and probed under by the preflight."""
    return Path(config.output_dir).expanduser().resolve()


def output_overlap_problem(config) -> str | None:
    """Why output_dir would write over the model's own files (it is, holds or lies inside one), or None."""
    for name, path in _model_paths(config).items():
        how = path_overlap(config.output_dir, path)
        if how:
            return (f"output_dir {config.output_dir} {how} the {name} {path}: training would write over the "
                    "model it reads; choose another --output_dir")
    return None


def path_problems(config) -> list[str]:
    """What on disk stops this run, beyond its data files: an output_dir that is a file or overlaps the
    model, an empty confidence validation set, a checkpoint to resume that is missing."""
    problems = []
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        problems.append(f"output_dir {output_dir} is a file, not a folder")
    problems += [problem for problem in [output_overlap_problem(config)] if problem]
    for path in config.confidence_eval_data:
        try:
            if not read_records(path):  # an empty set would crash the first evaluation, after training started
                problems.append(f"{path}: no examples (confidence_eval_data)")
        except DataError as exc:
            problems.append(f"{exc} (confidence_eval_data)")
    if config.init_adapter and not (Path(config.init_adapter) / "adapter_config.json").is_file():
        problems.append(f"init_adapter: {config.init_adapter} holds no LoRA adapter (no adapter_config.json)")
    elif config.init_adapter:
        problems += [problem for problem in [init_adapter_base_problem(config)] if problem]
    resume = config.resume_from_checkpoint
    if resume not in (None, "", "latest") and not Path(resume).is_dir():
        problems.append(f"resume_from_checkpoint: checkpoint dir not found: {resume}")
    return problems


def init_adapter_base_problem(config) -> str | None:
    """Why init_adapter can't go on training on model_id: its contract records another base (the adapter's
    weights would continue on a model they were not trained for), or None."""
    from nli_finetune.model_contract import ContractError, check_base, read_contract
    try:
        check_base(read_contract(config.init_adapter), config.model_id, flag=None)
    except ContractError as exc:
        return f"init_adapter: {exc} as model_id"


# LoRA settings an init_adapter must share with the config: config key -> adapter_config.json key
ADAPTER_SETTINGS = {"lora_r": "r", "lora_alpha": "lora_alpha", "lora_target_modules": "target_modules",
                    "lora_layers": "layers_to_transform"}
LORA_TENSOR = re.compile(r"\.layers\.(\d+)\..*?(\w+)\.lora_([AB])\.weight$")


def normalised(value):
    """A LoRA setting compared by content: sets and lists of names or layers as sorted lists."""
    return sorted(value) if isinstance(value, (list, set, tuple)) else value


def embedding_rows(shape, tokenizer) -> int | None:
    """The rows the run's embedding matrix will have: the base's, grown to the tokenizer's length once
    the run's tokens are registered (train_sft.grow_embeddings); None when the tokenizer is unknown."""
    return None if tokenizer is None else max(shape.vocab, len(tokenizer))


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a .safetensors file's header: no weight read, no torch."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def init_adapter_problems(config, tokenizer=None) -> list[str]:
    """Why the run can't go on training init_adapter: LoRA settings other than the config's (the run
    would silently train another shape than its config and fingerprint say), or tensors of another base
    than model_id (hidden size, layers; vocabulary when the run's `tokenizer` is known). Read from
    adapter_config.json, the weights' header and the base's config, nothing loaded: the preflight and
    training both ask here, so `--dry_run` refuses what the run refuses."""
    from nli_finetune.model_shape import ShapeError, read_model_shape
    if not config.init_adapter:
        return []
    try:
        shape = read_model_shape(config.model_id)
    except ShapeError:
        shape = None  # a hub id not in the cache: its tensors are checked when peft loads them
    return _adapter_problems(config, shape, embedding_rows(shape, tokenizer) if shape else None)


def _adapter_problems(config, shape, rows: int | None) -> list[str]:
    folder = Path(config.init_adapter)
    try:
        saved = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return []  # no adapter at all is path_problems' to say
    if not config.use_lora or not isinstance(saved, dict):
        return []
    for key, theirs_key in ADAPTER_SETTINGS.items():
        ours, theirs = getattr(config, key), saved.get(theirs_key)
        if ours != "all-linear" and normalised(theirs) != normalised(ours):  # peft saves all-linear resolved
            return [f"init_adapter {folder} has {key} = {normalised(theirs)}, this config {normalised(ours)}: "
                    f"set --{key} to the adapter's"]
    weights = folder / "adapter_model.safetensors"
    if shape is None or not weights.is_file():
        return []
    try:
        tensors = safetensors_shapes(weights)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"init_adapter {folder}: {weights.name} is unreadable ({type(exc).__name__}: {exc})"]
    problem = _tensor_misfit(tensors, shape, rows)
    return [f"init_adapter {folder} does not fit model_id {config.model_id} (an adapter of another base "
            f"model?): {problem}"] if problem else []


def _tensor_misfit(tensors: dict, shape, rows: int | None) -> str | None:
    """The first adapter tensor that does not fit a base of `shape`, said in the base's terms."""
    dims = shape.linear_dims()
    for name, size in sorted(tensors.items()):
        match = LORA_TENSOR.search(name)
        if match:
            layer, module, side = int(match[1]), match[2], match[3]
            if layer >= shape.layers:
                return f"{name} is for layer {layer}, the model has {shape.layers} layers"
            wanted = dims.get(module, (None, None))[0 if side == "A" else 1]
            got = size[1] if side == "A" else size[0]
            if wanted is not None and got != wanted:
                return (f"{name} has {got} {'inputs' if side == 'A' else 'outputs'}, the model's {module} "
                        f"{wanted} (hidden size {shape.hidden})")
        elif name.endswith(("embed_tokens.weight", "lm_head.weight", "trainable_tokens_delta")):
            if size[-1] != shape.hidden:
                return f"{name} is {size[-1]} wide, the model's hidden size {shape.hidden}"
            if rows is not None and not name.endswith("trainable_tokens_delta") and size[0] != rows:
                return f"{name} has {size[0]} rows, the model's vocabulary {rows} (with this run's tokens)"
    return None


def missing_data_files(config) -> list[DataError]:
    return [DataError(f"{getattr(config, key)}: file not found ({key})") for key in ("train_data", "eval_data")
            if getattr(config, key) and not Path(getattr(config, key)).is_file()]


def check_paths(config) -> None:
    """Everything on disk a run needs, checked before the model loads and before anything is written."""
    problems = missing_data_files(config) + [ConfigError(problem) for problem in path_problems(config)]
    if problems:
        raise problems[0]


def resolve_training_run(config: TrainConfig, device: str, *, probe_4bit, planned: bool,
                problem) -> tuple[TrainConfig, list[str], str | None]:
    """(the config as `device` runs it, what resolve changed and why, the checkpoint to resume or None):
    the steps training and its preflight share, in one order: resolve, the launch rules, the files on
    disk, the checkpoint. Each problem (a ConfigError or DataError) goes to `problem`: training's raises
    it, so the run stops at the first as before; the preflight's collects them all. `planned`: a dry run,
    which reads the data files itself (and says what each keeps) and is started without torchrun."""
    notes = []
    try:
        config, notes = resolve(config, device, probe_4bit=probe_4bit)
    except ConfigError as exc:
        problem(exc)  # planning goes on with the config as written
    for found in launch_check(config, device, planned=planned):
        problem(ConfigError(found))
    for found in ([] if planned else missing_data_files(config)) + [ConfigError(p) for p in path_problems(config)]:
        problem(found)
    resume = None
    try:
        resume = resume_checkpoint(config)
    except ConfigError as exc:
        problem(exc)
    return config, notes, resume


def run_fingerprint(config: TrainConfig) -> dict:
    """What a checkpoint's weights were computed from: the settings that change them (every key not
    marked resume_neutral in train/config_schema.py) and the files read."""
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if not f.metadata["resume_neutral"]}
    return fingerprint(settings, {"train_data": config.train_data, "base model": config.model_id,
                                  "tokenizer": config.tokenizer_id or None, "init_adapter": config.init_adapter or None})


def write_fingerprint(folder, fingerprint: dict) -> None:
    atomic_write_json(Path(folder) / FINGERPRINT_FILE, fingerprint)


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last by the Trainer) is whole: a run
    killed while saving leaves a partial checkpoint dir, which must not be resumed from."""
    def step(path: Path) -> int:
        number = path.name.rsplit("-", 1)[1]
        return int(number) if number.isdigit() else -1
    for checkpoint in sorted(Path(output_dir).glob("checkpoint-*"), key=step, reverse=True):
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("skipping incomplete checkpoint %s (interrupted while saving)", checkpoint)
            continue
        if str(state.get("global_step")) == checkpoint.name.rsplit("-", 1)[1]:
            return str(checkpoint)
    return None


def _saved_fingerprint(checkpoint: Path) -> dict | None:
    """The checkpoint's fingerprint; for one killed between its save and its fingerprint, that of the run
    folder holding it."""
    for candidate in (checkpoint / FINGERPRINT_FILE, checkpoint.parent / FINGERPRINT_FILE):
        try:
            return json.loads(candidate.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return None


def resume_checkpoint(config) -> str | None:
    """The checkpoint to resume from (None: start fresh), refused when it was computed from other data,
    another base model or other answer-changing settings than this run's."""
    value, output_dir = config.resume_from_checkpoint, Path(config.output_dir)
    if value in (None, ""):
        return None
    checkpoint = latest_complete_checkpoint(str(output_dir)) if value == "latest" else value
    if value == "latest":
        log.info("resume_from_checkpoint = latest: %s", checkpoint or "no checkpoint yet, starting fresh")
    if checkpoint is None:
        return None
    if not Path(checkpoint).is_dir():
        raise ConfigError(f"resume_from_checkpoint: checkpoint dir not found: {checkpoint}")
    saved, wanted = _saved_fingerprint(Path(checkpoint)), run_fingerprint(config)
    where = f"resume_from_checkpoint: {checkpoint}"
    if saved is None:
        raise ConfigError(unknown_origin(where, FINGERPRINT_FILE, "start fresh in another --output_dir",
                                         what="the checkpoint"))
    # what counts: the settings and the files read (settings_hash only summarises the settings)
    changed = changes({key: saved.get(key) for key in ("settings", "files")},
                      {key: wanted[key] for key in ("settings", "files")})
    if changed:
        raise ConfigError(refusal(where, changed, "resume with the same data, model and settings, or start fresh in "
                                  "another --output_dir", what="the checkpoint"))
    problem = schedule_problem(config, Path(checkpoint))
    if problem:
        raise ConfigError(problem)
    return checkpoint


def schedule_problem(config, checkpoint: Path) -> str | None:
    """Why resuming `checkpoint` with this config's length would give a run that matches neither: the
    checkpoint's learning-rate schedule (and warmup) was laid out over its run's steps, which the Trainer
    records in trainer_state.json; a longer or shorter resume bends it mid-way (a cosine restarted)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None  # latest_complete_checkpoint skips such a checkpoint; an explicit one fails in the Trainer
    if config.max_steps > 0:
        key, ours, theirs = "max_steps", config.max_steps, state.get("max_steps")
    else:
        key, ours, theirs = "num_epochs", config.num_epochs, state.get("num_train_epochs")
    if not theirs or ours == theirs:  # a state without the number: nothing to compare
        return None
    further = f"--init_adapter {checkpoint} " if config.use_lora else ""
    return (f"resume_from_checkpoint: {checkpoint} is from a run of {key} = {theirs}, this run has {key} = {ours}; "
            f"its {config.lr_scheduler} learning-rate schedule was laid out over the checkpoint's run, so the result "
            f"would match neither: resume with --{key} {theirs}, or train on in a new run "
            f"({further}--output_dir <another folder>)")


def fingerprint_writer(fingerprint: dict):
    """A Trainer callback that saves the run's fingerprint into every checkpoint it writes (rank 0)."""
    from transformers import TrainerCallback

    class FingerprintWriter(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                write_fingerprint(checkpoint, fingerprint)

    return FingerprintWriter()
