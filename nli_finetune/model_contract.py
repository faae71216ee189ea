"""The model contract: what a trained model was trained for, saved beside its weights and read back by
everything that uses the model (litgpt saves its prompt style with a checkpoint for the same reason).

    cat models/smollm2-135m-nli-demo/model_contract.json          # what train_sft wrote
    python -m evaluate.sample_model --model_id models/smollm2-135m-nli-demo --test_file data/sample/dev_300.csv

`train/train_sft.py` writes `model_contract.json` into its output folder, every checkpoint and `merged/`:
the task (`prompts.Task`) and its answer format, the special and confidence tokens it added, the chat
template its prompts were rendered with (text and SHA-256), the max sequence length and the base model's
source and content fingerprint. One writer (`write_contract`), one reader (`read_contract`), used by `evaluate/sample_model.py`
(default `--task`, tokenizer check), `evaluate/confidence.py` (the confidence tokens), `scripts/serve.py`
(chat template, answer schema) and `evaluate/merge_shards.py` (shards of different models are refused).
What it settles for one use of the model (the task, the base an adapter runs on) is resolved once, by
`resolve_model_use`, for both sample_model (`evaluate/inference_run.py`) and `scripts/serve.py`.
A folder without the file (a base model, a hub id, a `.gguf` file) has no contract: `read_contract`
returns None and every reader behaves as it did before contracts existed.

An adapter is only right on the base it was trained on: `check_base` compares the base about to be used
(adapter_config.json's, `--base_model`, the base a continued `init_adapter` is trained on) with the
contract's fingerprint, and refuses another unless the caller's override flag allows it.
"""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nli_finetune.data_io import DataError, atomic_write_json
from nli_finetune.modeling import adapter_base, base_fingerprint
from prompts import TASKS, Task, chat_template, get_task

CONTRACT_FILE = "model_contract.json"
FORMAT_VERSION = 1
# label_only: {"label": ...}; cot_json: {"reasoning": ..., "label": ...}; free_text: any text;
# confidence: an answer followed by a confidence token
ANSWER_FORMATS = ("label_only", "cot_json", "free_text", "confidence")
IGNORE_FLAG = "--ignore_contract"
OTHER_BASE_FLAG = "--allow_other_base"
log = logging.getLogger("model_contract")


class ContractError(DataError):
    """A contract file that can't be read, or a setting that contradicts one; the message names both."""


@dataclass(frozen=True)
class ModelContract:
    task: str                        # the task's name, as the file stores it (trained_task: the Task)
    answer_format: str
    data_format: str
    special_tokens: list
    confidence_tokens: dict          # domain -> [confident token, unconfident token]
    confidence_datasets: dict        # dataset name -> domain
    chat_template: str               # the Jinja text prompts were rendered with (prompts.chat_template)
    chat_template_sha256: str
    max_seq_length: int
    base_model: dict                 # model_id as configured, gguf_file, local_dir or hub_id, and fingerprint
    format_version: int = FORMAT_VERSION
    source: str = field(default="", compare=False)  # the file it was read from (not saved)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("source")
        return data

    def digest(self) -> str:
        """SHA-256 of everything but the template text (its own hash stands for it)."""
        data = {k: v for k, v in self.to_json().items() if k != "chat_template"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def summary(self) -> dict:
        """What a results file records of the model's contract (merge_shards compares it)."""
        return {"task": self.task, "answer_format": self.answer_format, "sha256": self.digest()}

    @property
    def trained_task(self) -> Task:
        """The task the model was trained for (read_contract has checked that its name is a task)."""
        return get_task(self.task)

    def answer_schema(self) -> dict | None:
        """The JSON schema of an answer, for a model trained to answer in JSON (else None)."""
        return self.trained_task.answer_schema() if self.answer_format in ("label_only", "cot_json") else None


def template_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def answer_format_of(task: Task, confidence_tokens: dict) -> str:
    if confidence_tokens:
        return "confidence"
    if task.free_text:
        return "free_text"
    return "cot_json" if task.reasoning_field else "label_only"


def base_source(model_id: str) -> dict:
    """Where the base came from: a GGUF file, a local folder (both resolved) or a hub id, and its fingerprint."""
    from nli_finetune.gguf_convert import is_gguf
    path = Path(model_id).expanduser()
    if is_gguf(model_id):
        source = {"model_id": model_id, "gguf_file": str(path.resolve())}
    elif path.is_dir():
        source = {"model_id": model_id, "local_dir": str(path.resolve())}
    else:
        source = {"model_id": model_id, "hub_id": model_id}
    return source | {"fingerprint": base_fingerprint(model_id)}


def build_contract(tokenizer, *, task: Task, data_format: str, special_tokens: list, confidence_tokens: dict,
                   confidence_datasets: dict, max_seq_length: int, model_id: str) -> ModelContract:
    """The contract of a model trained with these settings and this tokenizer (special tokens already added)."""
    template = chat_template(tokenizer)
    return ModelContract(
        task=task.name, answer_format=answer_format_of(task, confidence_tokens), data_format=data_format,
        special_tokens=list(special_tokens), confidence_tokens={k: list(v) for k, v in confidence_tokens.items()},
        confidence_datasets=dict(confidence_datasets), chat_template=template,
        chat_template_sha256=template_sha256(template), max_seq_length=max_seq_length,
        base_model=base_source(model_id))


def write_contract(folder, contract: ModelContract) -> Path:
    return atomic_write_json(Path(folder) / CONTRACT_FILE, contract.to_json())


FIELD_TYPES = {"task": str, "answer_format": str, "data_format": str, "special_tokens": list,
               "confidence_tokens": dict, "confidence_datasets": dict, "chat_template": str,
               "chat_template_sha256": str, "max_seq_length": int, "base_model": dict, "format_version": int}


def _checked(data, where: str) -> dict:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected a JSON object")
    for name, kind in FIELD_TYPES.items():
        if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
            raise ContractError(f"{where}: field '{name}' must be {kind.__name__}, got {data.get(name)!r}"[:300])
    if data["format_version"] > FORMAT_VERSION:
        raise ContractError(f"{where}: field 'format_version': {data['format_version']} is newer than this code "
                            f"reads ({FORMAT_VERSION}); update the repository")
    if data["task"] not in TASKS:
        raise ContractError(f"{where}: field 'task': unknown task '{data['task']}' (known: {', '.join(sorted(TASKS))})")
    if data["answer_format"] not in ANSWER_FORMATS:
        raise ContractError(f"{where}: field 'answer_format': '{data['answer_format']}' is not one of "
                            f"{', '.join(ANSWER_FORMATS)}")
    if template_sha256(data["chat_template"]) != data["chat_template_sha256"]:
        raise ContractError(f"{where}: field 'chat_template' does not match chat_template_sha256 (edited by hand?)")
    return {f.name: data[f.name] for f in fields(ModelContract) if f.name != "source"}


def read_contract(model) -> ModelContract | None:
    """The contract of a model folder (adapter, merged model or checkpoint); None when `model` is not a
    folder or has no contract (a base model, a hub id, a .gguf file)."""
    if model is None or not Path(model).expanduser().is_dir():
        return None
    path = Path(model).expanduser() / CONTRACT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # not "no contract": the adapter would then run as the default task
        raise ContractError(f"{path}: {'a folder' if path.is_dir() else 'a broken link'}, not a contract file; "
                            "restore the file train_sft wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{path}: unreadable ({exc})") from None
    return ModelContract(**_checked(data, str(path)), source=str(path))


def resolve_setting(contract: ModelContract | None, name: str, given, default, flag: str, ignore: bool = False):
    """The value of a setting the contract fixes: the given one, else the contract's, else the default.
    A given value that contradicts the contract is an error naming both, unless `ignore`."""
    if contract is None:
        return default if given is None else given
    trained = getattr(contract, name)
    if given is None or given == trained or ignore:
        return trained if given is None else given
    raise ContractError(f"{flag} {given} contradicts {contract.source}: the model was trained with {name} "
                        f"'{trained}'; leave out {flag} to use it, or add {IGNORE_FLAG} to run anyway")


_said_unchecked: set = set()  # contracts without a base fingerprint already announced


def check_base(contract: ModelContract | None, base: str | None, flag: str | None = OTHER_BASE_FLAG,
               allow: bool = False) -> dict | None:
    """Refuse (naming both) an adapter on a base other than the one its contract records: the adapter
    would silently compute something else. With `allow` (the caller's `flag`), returns what the record
    says of the other base; None when the base is the recorded one or there is nothing to compare."""
    if contract is None or not base:
        return None
    recorded = contract.base_model.get("fingerprint")
    if recorded is None:
        if contract.source not in _said_unchecked:
            _said_unchecked.add(contract.source)
            log.warning("%s: written before contracts recorded the base's fingerprint; the base %s is not checked",
                        contract.source, base)
        return None
    used = base_fingerprint(base)
    if used == recorded:
        return None
    trained = contract.base_model.get("model_id")
    what = (f"{contract.source}: the adapter was trained on the base {trained} (fingerprint {recorded}), "
            f"not on {base} (fingerprint {used})")
    if allow:
        log.warning("%s; using it anyway (%s)", what, flag)
        return {"trained_on": trained, "trained_fingerprint": recorded, "used": str(base), "used_fingerprint": used}
    raise ContractError(f"{what}; use the base it was trained on" + (f", or add {flag} to run anyway" if flag else ""))


@dataclass(frozen=True)
class ModelUse:
    """What a model's contract settles for one use of it (a sample_model run, a server)."""
    contract: ModelContract | None
    task: Task | None        # the given task, else the contract's, else the caller's default (None: none of them)
    other_base: dict | None  # an other base the caller's flag allowed, as check_base records it


def resolve_model_use(model_id, *, task=None, default_task=None, base_model=None, local: bool = True,
                      ignore: bool = False, other_base_flag: str | None = OTHER_BASE_FLAG,
                      allow_other_base: bool = False) -> ModelUse:
    """The one resolution of a model's contract that evaluate/inference_run.py and scripts/serve.py share:
    read it, settle the task (a given name that contradicts the contract's is refused unless `ignore`; the
    name settled is looked up once, into the `Task`) and refuse an adapter on another base (`base_model`,
    else adapter_config.json's) unless `allow_other_base`. `local`: the model's files are used here (not
    through an API), so its base can be checked."""
    contract = read_contract(model_id)
    task = resolve_setting(contract, "task", task, default_task, "--task", ignore)
    base = (base_model or adapter_base(model_id)) if contract is not None and local else None
    return ModelUse(contract, None if task is None else get_task(task),
                    check_base(contract, base, other_base_flag, allow_other_base))


def tokenizer_problems(contract: ModelContract, tokenizer) -> list[str]:
    """How a loaded tokenizer differs from what the model was trained with (empty: it matches)."""
    vocab = tokenizer.get_vocab()
    wanted = list(contract.special_tokens) + [t for pair in contract.confidence_tokens.values() for t in pair]
    missing = [t for t in wanted if t not in vocab]
    problems = [f"no token {', '.join(missing)}"] if missing else []
    if template_sha256(chat_template(tokenizer)) != contract.chat_template_sha256:
        problems.append("a chat template other than the one it was trained with")
    return problems


def check_tokenizer(contract: ModelContract | None, tokenizer, ignore: bool = False) -> None:
    """Refuse a tokenizer that would not give the prompts or tokens the model was trained on."""
    if contract is None or tokenizer is None or ignore:
        return
    problems = tokenizer_problems(contract, tokenizer)
    if problems:
        raise ContractError(f"{contract.source}: the model's tokenizer has {'; '.join(problems)}; "
                            f"add {IGNORE_FLAG} to run anyway")


def check_same_contract(contracts: dict) -> None:
    """{source: contract summary or None}: refuse results of models trained for different things."""
    (first, expected), *rest = contracts.items()
    for source, summary in rest:
        if summary != expected:
            def show(s):
                return "no contract" if not s else f"task {s['task']}, contract {s['sha256'][:12]}"
            raise ContractError(f"{source} comes from another model than {first} ({show(summary)} vs "
                                f"{show(expected)}): results of different models are not merged")


def checkpoint_writer(contract: ModelContract):
    """A Trainer callback that writes the contract into every checkpoint (rank 0, after the Trainer has
    written the checkpoint) and into the best_*/ models the confidence evaluation saves (it runs after that
    callback), so any model folder of the run says what it was trained for."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class ContractWriter(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_contract(folder, contract)

        def on_evaluate(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                for folder in Path(args.output_dir).glob("best_*"):
                    if folder.is_dir():
                        write_contract(folder, contract)

    return ContractWriter()
