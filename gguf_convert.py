"""GGUF files as a model source: the file a user already runs in Ollama, llama.cpp or LM Studio.

    python scripts/convert_gguf.py path/to/model.gguf                 # -> models/converted/<name>/
    python -m train.train_sft --config smollm2_cpu.py --model_id path/to/model.gguf
    python -m evaluate.sample_model --model_id path/to/model.gguf --test_file data/sample/dev_300.csv

Wherever a model goes in, a `.gguf` path is dequantized once into an ordinary Hugging Face folder
(`models/converted/<file stem>/`, float32 safetensors + tokenizer + chat template) and that folder is
used. `gguf_source.json` in it records the file and its fingerprint: the next run reuses the folder,
a changed file rebuilds it. The conversion is written to a temp folder and renamed, so an interrupted
one leaves nothing half-written behind.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from data_io import atomic_write_json, path_fingerprint

log = logging.getLogger("gguf")
REPO_ROOT = Path(__file__).resolve().parent
CONVERTED_DIR = REPO_ROOT / "models" / "converted"
SOURCE_FILE = "gguf_source.json"


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


def converted_dir_for(path: Path, cache_dir: Path | None = None) -> Path:
    return (cache_dir or CONVERTED_DIR) / path.stem


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

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
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
    """The Hugging Face folder for a GGUF file, converting it when missing or out of date."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GGUFError(f"{path}: GGUF file not found")
    out = converted_dir_for(path, cache_dir)
    fingerprint = path_fingerprint(path)
    if not force and _is_current(out, fingerprint):
        return out
    if out.exists() and not (out / SOURCE_FILE).is_file():  # never replace a folder this module didn't make
        raise GGUFError(f"{out} exists and was not made from a GGUF file (no {SOURCE_FILE}); move it or choose "
                        "another --cache-dir")
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
    return out


def gguf_source(model_dir) -> str | None:
    """The GGUF file a converted folder was made from, or None."""
    try:
        return json.loads((Path(model_dir) / SOURCE_FILE).read_text())["gguf_file"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
