"""A fine-tuned model as one GGUF file for llama.cpp, Ollama and LM Studio, written in pure Python.

    python scripts/export_gguf.py --model models/smollm2-135m-nli-demo --outfile nli.gguf --outtype q8_0

An adapter is merged into its base (a hub id, a folder, or the GGUF file it was trained from) and the
merged weights go out under llama.cpp's tensor names, with llama's Q/K rows in llama.cpp's rope layout,
the hyperparameters llama.cpp reads, the tokenizer exactly as trained (vocabulary, merges, special ids,
pad != eos, the chat template) and what the model was trained for (`nli_finetune.*` keys). Nothing is
compiled: the `gguf` package writes the file and quantizes in numpy. `--adapter-only` writes the LoRA
alone (llama.cpp `--lora`, Ollama `ADAPTER`). The file is written to a temp name and renamed.
"""

import fcntl
import json
import logging
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("gguf_export")
PROJECT_KEY = "nli_finetune"  # namespace of the keys that say what the model was trained for
# transformers model_type -> llama.cpp architecture (Mistral runs as llama in llama.cpp)
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# llama.cpp stores q/k of these rotated-pairs-interleaved (its rope), HF stores them half-split
PERMUTED_QK = {"llama"}
HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
# what the gguf package quantizes in numpy; K-quants it can only read
WRITABLE = ("f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
OUTTYPES = (*WRITABLE, "same")
# `same`: the type of the tensors the fine-tune changed (the base's 4/5-bit step is larger than a LoRA's
# change; measured per candidate type in docs/gguf.md)
CHANGED_TYPE = "q8_0"
PRE_TOKENIZERS = {  # llama.cpp's tokenizer.ggml.pre for the pre-tokenizers tokenizer.json can hold
    "\\p{N}": "smollm",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}


class ExportError(RuntimeError):
    """An input that can't be exported; the message names the file and why."""


class WriteError(OSError):
    """The file could not be written (a full disk, a size limit); nothing was left behind."""


def qtype(name: str):
    from gguf import GGMLQuantizationType
    return GGMLQuantizationType.BF16 if name == "bf16" else GGMLQuantizationType[name.upper()]


def file_type_for(name: str) -> int:
    from gguf import LlamaFileType
    return LlamaFileType.MOSTLY_BF16 if name == "bf16" else LlamaFileType[f"MOSTLY_{name.upper()}"]


# --- what was trained ------------------------------------------------------------------------------------

@dataclass
class Source:
    """A fine-tuned output: the folder, whether it is an adapter, its base, and what it was trained for."""
    path: Path
    adapter: bool
    base: str | None
    base_gguf: Path | None
    trained: dict = field(default_factory=dict)


def _config_of(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}/config.json: unreadable ({exc})") from exc


def trained_for(model_dir: Path, base: str | None = None, allow_other_base: bool = False) -> dict:
    """What the output was trained for, from its model contract (nli_finetune/model_contract.py, the one
    reader): task, answer format and its JSON schema, labels, label field, system line, added tokens, and
    the base model: `base`, the one an adapter is merged into (refused when it is not the contract's, unless
    `allow_other_base`), else the recorded one. {} for a folder without a contract (a base model, or an
    output older than contracts)."""
    from nli_finetune.model_contract import OTHER_BASE_FLAG, ContractError, check_base, read_contract
    try:
        contract = read_contract(model_dir)
        other = check_base(contract, base, OTHER_BASE_FLAG, allow_other_base)
    except ContractError as exc:
        raise ExportError(str(exc)) from exc
    if contract is None:
        return {}
    task = contract.trained_task
    schema = contract.answer_schema()
    return {"task": contract.task, "answer_format": contract.answer_format,
            "answer_schema": json.dumps(schema, ensure_ascii=False) if schema else None,
            "labels": list(task.labels), "label_field": task.label_field, "system_prompt": task.system_prompt,
            "special_tokens": contract.special_tokens, "confidence_tokens": contract.confidence_tokens,
            "base_model": str(base) if base else contract.base_model.get("model_id"),
            "trained_on_base": other["trained_on"] if other else None, "contract_sha256": contract.digest()}


def _base_gguf(path: Path, base: str | None) -> Path | None:
    """The GGUF file the weights came from, when they came from one."""
    from nli_finetune.gguf_convert import gguf_source, is_gguf
    from nli_finetune.modeling import BASE_SOURCE_FILE
    if base and is_gguf(base):
        return Path(base)
    for folder in (path, path.parent):  # an adapter dir, or its merged/ folder
        source = folder / BASE_SOURCE_FILE
        if source.is_file():
            gguf_file = json.loads(source.read_text()).get("gguf_file")
            return Path(gguf_file) if gguf_file and Path(gguf_file).is_file() else None
    found = gguf_source(path) or (gguf_source(base) if base else None)
    return Path(found) if found and Path(found).is_file() else None


def describe(path, base_model: str | None = None, allow_other_base: bool = False) -> Source:
    """The export's input, checked before any weight is loaded; `base_model` overrides an adapter's base,
    which must be the one its contract records unless `allow_other_base`."""
    from nli_finetune.modeling import ModelLoadError, adapter_base
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ExportError(f"{path}: not a folder (give a fine-tuned output: an adapter or a model folder)")
    is_adapter = (path / "adapter_config.json").is_file()
    if not is_adapter and not (path / "config.json").is_file():
        raise ExportError(f"{path}: not a model (no config.json or adapter_config.json)")
    try:
        base = (base_model or adapter_base(str(path))) if is_adapter else None
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from exc
    config_dir = path if not is_adapter else (Path(base) if base and Path(base).is_dir() else None)
    if config_dir is not None:
        model_type = _config_of(config_dir).get("model_type")
        if model_type not in ARCHITECTURES:
            raise ExportError(f"{config_dir}/config.json: architecture '{model_type}' can't be exported to GGUF; "
                              f"supported: {', '.join(sorted(ARCHITECTURES))}")
    return Source(path, is_adapter, base, _base_gguf(path, base), trained_for(path, base, allow_other_base))


# --- tensors ---------------------------------------------------------------------------------------------

def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for a Hugging Face parameter name."""
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"] and len(parts) >= 5:
        module, kind = ".".join(parts[3:-1]), parts[-1]
        if module in LAYER_TO_GGUF:
            return f"blk.{parts[2]}.{LAYER_TO_GGUF[module]}.{kind}"
    raise ExportError(f"parameter '{hf_name}' has no llama.cpp name (an architecture this exporter doesn't know)")


def permute_for_rope(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF's half-split rotary layout -> llama.cpp's interleaved pairs, per head, along the output rows
    (what llama.cpp's converter calls permute; transformers' GGUF reader undoes it)."""
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _rope_heads(gguf_name: str, config) -> int | None:
    if ".attn_q." in gguf_name:
        return config.num_attention_heads
    if ".attn_k." in gguf_name:
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return None


def pick_type(gguf_name: str, array: np.ndarray, outtype: str, base_types: dict):
    """The GGML type a tensor is written as: 1-D tensors (norms, biases) stay F32 as llama.cpp keeps them;
    `same` takes the base file's type for that tensor; rows that don't fill a quant block go F16."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    if array.ndim < 2:
        return GGMLQuantizationType.F32
    wanted = base_types.get(gguf_name) if outtype == "same" else qtype(outtype)
    if wanted is None:  # a tensor the base file lacks (an untied output): the base's main type
        wanted = base_types["*"]
    if wanted not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) and \
            array.shape[-1] % GGML_QUANT_SIZES[wanted][0]:
        return GGMLQuantizationType.F16
    return wanted


def bits_per_weight(kind) -> float:
    from gguf import GGML_QUANT_SIZES
    block, size = GGML_QUANT_SIZES[kind]
    return 8 * size / block


class BaseFile:
    """The base GGUF file, for `--outtype same`: each tensor's type and its encoded bytes.

    Why the bytes: the base's weights sit exactly on its quantization grid, so re-quantizing a tensor the
    fine-tune left alone reproduces the base's blocks bit for bit, while a LoRA's change is mostly smaller
    than one Q4_1 step and re-quantizing a changed tensor to the base's type would round it back to the
    base. A tensor whose blocks differ is therefore one the fine-tune changed, and it is written in a finer
    type (`changed_type`), as llama.cpp's own mixed files (Q4_K_M) keep some tensors at higher precision."""

    def __init__(self, gguf_file: Path):
        from collections import Counter

        from gguf import GGMLQuantizationType, GGUFReader
        self.path = Path(gguf_file)
        reader = GGUFReader(str(gguf_file))  # memory-mapped: the bytes are read only when compared
        self.tensors = {t.name: t for t in reader.tensors}
        self.types = {name: t.tensor_type for name, t in self.tensors.items()}
        writable = {qtype(name) for name in WRITABLE} | {GGMLQuantizationType.F32}
        foreign = sorted({t.name for t in self.types.values() if t not in writable})
        if foreign:
            raise ExportError(f"{gguf_file}: holds {', '.join(foreign)}, which the gguf package can't write; "
                              f"export with --outtype f16 and quantize with llama-quantize (see docs/gguf.md), "
                              f"or choose one of {', '.join(WRITABLE)}")
        matrices = Counter(t.tensor_type for t in reader.tensors if len(t.shape) > 1)
        self.types["*"] = matrices.most_common(1)[0][0]

    def reproduces(self, gguf_name: str, kind, encoded: np.ndarray) -> bool:
        """Whether `encoded` (of type `kind`) is exactly the base file's tensor: one the fine-tune left alone."""
        tensor = self.tensors.get(gguf_name)
        return tensor is not None and tensor.tensor_type == kind and tensor.data.nbytes == encoded.nbytes \
            and np.asarray(tensor.data).tobytes() == encoded.tobytes()


def encode_tensor(array: np.ndarray, kind) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    if kind == GGMLQuantizationType.F32:
        return array.astype(np.float32)
    return quantize(array.astype(np.float32), kind)


def model_tensors(model):
    """(gguf name, float32 array) for every weight the file holds; a tied output is left to token_embd."""
    config = model.config
    arch = ARCHITECTURES[config.model_type]
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        gguf_name = gguf_tensor_name(name)
        array = tensor.detach().to("cpu").float().numpy()
        heads = _rope_heads(gguf_name, config)
        if arch in PERMUTED_QK and heads:
            array = permute_for_rope(array, heads)
        yield gguf_name, array


# --- metadata --------------------------------------------------------------------------------------------

def _rope_settings(config) -> dict:
    """rope_theta and the scaling llama.cpp can express; other scalings are refused by name."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ExportError(f"rope scaling '{kind}' is not exported (supported: none, linear)")
    return {"theta": float(theta), "linear_factor": float(params["factor"]) if kind == "linear" else None}


def write_hyperparameters(writer, config) -> None:
    from gguf import RopeScalingType
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = _rope_settings(config)
    writer.add_rope_freq_base(rope["theta"])
    if rope["linear_factor"]:
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["linear_factor"])


def pre_tokenizer_name(pre_tokenizer: dict | None, base_gguf: Path | None) -> str:
    """llama.cpp's name for how text is split before BPE, read from the trained tokenizer.json."""
    steps = (pre_tokenizer or {}).get("pretokenizers") or [pre_tokenizer or {}]
    for step in steps:
        if step.get("type") == "Digits" and step.get("individual_digits"):
            return "smollm"
        if step.get("type") == "Split" and step.get("pattern", {}).get("Regex") in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[step["pattern"]["Regex"]]
    if [s.get("type") for s in steps] == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if base_gguf is not None:  # a split this table doesn't know: the base file's own name for it
        from nli_finetune.gguf_header import read_gguf_header
        name = read_gguf_header(base_gguf).metadata.get("tokenizer.ggml.pre")
        if name is not None:
            return name
    raise ExportError(f"tokenizer: pre-tokenizer {json.dumps(pre_tokenizer)[:200]} has no llama.cpp name here")


def write_tokenizer(writer, tokenizer, vocab_size: int, chat_template: str, base_gguf: Path | None) -> None:
    """The vocabulary, merges and special ids as trained (pad != eos); bos is left to the chat template,
    as training encoded prompts (add_special_tokens=False)."""
    from gguf import TokenType
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback") or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(f"tokenizer: only byte-level BPE tokenizers are exported (this one is {model.get('type')}"
                          f"{' with byte_fallback' if model.get('byte_fallback') else ''}); sentencepiece-style "
                          "vocabularies are not supported yet")
    by_id = {index: token for token, index in model["vocab"].items()}
    added = {item["id"]: item for item in spec.get("added_tokens", [])}
    if len(tokenizer) > vocab_size:
        raise ExportError(f"tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} embedding rows")
    tokens, types = [], []
    for index in range(vocab_size):
        if index in added:
            tokens.append(added[index]["content"])
            types.append(TokenType.CONTROL if added[index]["special"] else TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(TokenType.NORMAL)
        else:  # embedding rows beyond the vocabulary (Qwen pads to a multiple)
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(spec.get("pre_tokenizer"), base_gguf))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template)


def write_project_metadata(writer, source: Source, outtype: str) -> None:
    writer.add_string(f"{PROJECT_KEY}.source", source.path.name)
    writer.add_string(f"{PROJECT_KEY}.outtype", outtype)
    for key, value in source.trained.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, str):
            writer.add_string(f"{PROJECT_KEY}.{key}", value)
        else:  # labels may be ints or strings: JSON keeps them exact
            writer.add_string(f"{PROJECT_KEY}.{key}", json.dumps(value, ensure_ascii=False))


def read_project_metadata(gguf_file) -> dict:
    """The `nli_finetune.*` keys of an exported file."""
    from nli_finetune.gguf_header import read_gguf_header
    metadata = read_gguf_header(gguf_file).metadata
    return {key.split(".", 1)[1]: value for key, value in metadata.items() if key.startswith(f"{PROJECT_KEY}.")}


# --- writing ---------------------------------------------------------------------------------------------

@contextmanager
def temp_beside(out: Path, folder: bool = False):
    """A new temp file (or folder) beside `out`, `.<out name>.export-XXXXXXXX.tmp`, locked while this export
    runs and removed at the end unless renamed: a rerun tells a killed export's leftover (its lock died with
    it) from one still being written (remove_stale_temps)."""
    prefix, suffix = f".{out.name}.export-", ".tmp"
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=out.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=out.parent)
        os.close(fd)
        tmp = Path(name)
    lock = os.open(tmp, os.O_RDONLY)  # a lock of its own: the writer opens and closes the file itself
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield tmp
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        os.close(lock)


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove what an export of `out` killed mid-write (kill -9 skips every cleanup) left beside it: the temp
    files and folders named for `out` (temp_beside's, and the `.<name>.XXXXXXXX.tmp` of earlier versions)
    that no running export holds locked. Another file's temps, and a live export's, stay."""
    owned = re.compile(rf"\.{re.escape(out.name)}\.(export-)?[a-z0-9_]{{8}}\.tmp")
    removed = []
    for path in out.parent.iterdir() if out.parent.is_dir() else []:
        if not owned.fullmatch(path.name) or path.is_symlink():
            continue
        try:
            lock = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: an export is writing it now
        except BlockingIOError:
            continue
        else:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(lock)
    return removed


def write_atomically(writer, out: Path, progress: bool = False) -> None:
    """Header, metadata and tensors into a temp file beside `out`, then renamed: an interrupted or failed
    write (a full disk) leaves nothing behind and never touches an existing file."""
    with temp_beside(out) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file(progress=progress)
            for handle in writer.fout or []:
                handle.flush()
                os.fsync(handle.fileno())
            writer.close()
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException as exc:
            try:
                writer.close()
            except OSError:
                pass  # the close of a file that hit a full disk fails too: the temp file goes anyway
            if isinstance(exc, OSError):  # numpy's short write carries no errno: say what happened
                raise WriteError(f"writing {out}: {exc.strerror or exc}") from exc
            raise


def new_writer(arch: str, out: Path, name: str):
    from gguf import GGUFWriter
    writer = GGUFWriter(None, arch)  # the path is given at write time: the temp file
    writer.add_name(name)
    return writer


def add_tensors(writer, named_arrays, outtype: str, base: BaseFile | None = None,
                changed_type: str = CHANGED_TYPE) -> dict:
    """Encode and queue every tensor. With `same` (`base` given) a matrix keeps the base's type when that
    reproduces the base's blocks, and is written as `changed_type` (or the base's type, if finer) when the
    fine-tune changed it. Returns {"tensor_types": {type: count}, "changed": [names], "main_type": the
    type holding most matrix weights}."""
    from collections import Counter
    counts, weights, changed = Counter(), Counter(), []
    for gguf_name, array in named_arrays:
        kind = pick_type(gguf_name, array, outtype, base.types if base else {})
        encoded = encode_tensor(array, kind)
        if base is not None and array.ndim >= 2 and not base.reproduces(gguf_name, kind, encoded):
            changed.append(gguf_name)
            finer = pick_type(gguf_name, array, changed_type, {})
            if bits_per_weight(finer) > bits_per_weight(kind):
                kind, encoded = finer, encode_tensor(array, finer)
        writer.add_tensor(gguf_name, encoded, raw_dtype=kind)
        counts[kind.name] += 1
        if array.ndim >= 2:
            weights[kind] += array.size
    return {"tensor_types": dict(counts), "changed": changed,
            "main_type": weights.most_common(1)[0][0] if weights else None}


def export_model(model, tokenizer, source: Source, out: Path, outtype: str, chat_template: str,
                 progress: bool = False, changed_type: str = CHANGED_TYPE) -> dict:
    """The merged model as one GGUF file; returns a summary (tensor types, file type, and for `same` the
    tensors the fine-tune changed, written as `changed_type`)."""
    arch = ARCHITECTURES.get(model.config.model_type)
    if arch is None:
        raise ExportError(f"architecture '{model.config.model_type}' can't be exported to GGUF; supported: "
                          f"{', '.join(sorted(ARCHITECTURES))}")
    base = None
    if outtype == "same":
        if source.base_gguf is None:
            raise ExportError(f"{source.path}: --outtype same needs a base that came from a GGUF file (this one: "
                              f"{source.base or source.path}); choose one of {', '.join(WRITABLE)}")
        base = BaseFile(source.base_gguf)
    writer = new_writer(arch, out, source.path.name)
    writer.add_type("model")
    write_hyperparameters(writer, model.config)
    writer.add_quantization_version(2)
    write_tokenizer(writer, tokenizer, model.config.vocab_size, chat_template, source.base_gguf)
    write_project_metadata(writer, source, outtype)
    summary = add_tensors(writer, model_tensors(model), outtype, base, changed_type)
    # a mixed file is named by the type most of its weights are in, as llama.cpp names Q4_K_M
    main = summary["main_type"]
    file_type = file_type_for(main.name.lower() if base is not None and main is not None else outtype)
    writer.add_file_type(file_type)
    write_atomically(writer, out, progress)
    return {**summary, "file_type": int(file_type)}


# --- LoRA alone ------------------------------------------------------------------------------------------

def lora_tensors(adapter_dir: Path, config: dict, base_config):
    """(gguf name + .lora_a / .lora_b, array) pairs; B carries the rope permutation, since it holds the
    output rows. Refuses what llama.cpp's LoRA format can't hold."""
    from safetensors.numpy import load_file
    arch = ARCHITECTURES[base_config.model_type]
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs = {}
    for name, array in weights.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.weight"
            if name.endswith(marker):
                base_name = name.removeprefix("base_model.model.").removesuffix(marker) + ".weight"
                pairs.setdefault(base_name, {})[part] = array.astype(np.float32)
                break
        else:
            raise ExportError(f"{adapter_dir}: '{name}' is not a LoRA matrix (the adapter changes embeddings, e.g. "
                              "added tokens): export it merged, without --adapter-only")
    for base_name, pair in sorted(pairs.items()):
        gguf_name = gguf_tensor_name(base_name)
        lora_b = pair["lora_B"]
        heads = _rope_heads(gguf_name, base_config)
        if arch in PERMUTED_QK and heads:
            lora_b = permute_for_rope(lora_b, heads)
        yield f"{gguf_name}.lora_a", pair["lora_A"]
        yield f"{gguf_name}.lora_b", lora_b


def export_adapter(source: Source, out: Path, outtype: str, progress: bool = False) -> dict:
    """The LoRA adapter alone as a GGUF adapter file (llama.cpp scales it by alpha / rank, as PEFT does)."""
    from transformers import AutoConfig
    config = json.loads((source.path / "adapter_config.json").read_text())
    refused = [key for key in ("use_dora", "alpha_pattern", "rank_pattern", "modules_to_save",
                               "trainable_token_indices") if config.get(key)]
    if refused:
        raise ExportError(f"{source.path}/adapter_config.json: {', '.join(refused)} set: llama.cpp's LoRA format "
                          "can't hold that; export it merged, without --adapter-only")
    if outtype not in WRITABLE:
        raise ExportError(f"--adapter-only writes {', '.join(WRITABLE)}, not {outtype} (a LoRA is small; 'same' "
                          "and K-quants are for merged models)")
    from nli_finetune.modeling import resolve_model_dir
    base_config = AutoConfig.from_pretrained(resolve_model_dir(source.base))
    arch = ARCHITECTURES.get(base_config.model_type)
    if arch is None:
        raise ExportError(f"{source.base}: architecture '{base_config.model_type}' can't be exported to GGUF")
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # PEFT scales by alpha / sqrt(r), llama.cpp by alpha / r
        alpha *= math.sqrt(config["r"])
    writer = new_writer(arch, out, source.path.name)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    write_project_metadata(writer, source, outtype)
    summary = add_tensors(writer, lora_tensors(source.path, config, base_config), outtype)
    write_atomically(writer, out, progress)
    return {"tensor_types": summary["tensor_types"], "lora_alpha": alpha, "rank": config["r"]}


# --- Ollama ----------------------------------------------------------------------------------------------

def ollama_template(tokenizer, chat_template: str, system_prompt: str | None) -> str:
    """The chat template as Ollama's Go template: the trained template rendered around placeholders, so
    the prompt Ollama builds for one system + one user turn is the one training and sample_model build.
    Without a task system line, Ollama's `.System` is empty unless the user sets one: then the template
    renders the model's own choice for a lone user turn (some write a default system text, SmolLM2's does)."""
    from jinja2 import TemplateError
    if system_prompt:
        return _render_marked(tokenizer, chat_template, with_system=True)
    alone = _render_marked(tokenizer, chat_template, with_system=False)
    try:
        with_system = _render_marked(tokenizer, chat_template, with_system=True)
    except TemplateError:  # a template that refuses a system turn
        return alone
    if with_system == alone:  # a template that drops it
        return alone
    return f"{{{{ if .System }}}}{with_system}{{{{ else }}}}{alone}{{{{ end }}}}"


def _render_marked(tokenizer, chat_template: str, with_system: bool) -> str:
    """One (system +) user turn rendered around Ollama's placeholders."""
    from prompts import render_prompt
    system_mark, prompt_mark = "\x00SYSTEM\x00", "\x00PROMPT\x00"
    messages = ([{"role": "system", "content": system_mark}] if with_system else []) + \
        [{"role": "user", "content": prompt_mark}]
    saved = tokenizer.chat_template
    tokenizer.chat_template = chat_template
    try:
        rendered = render_prompt(tokenizer, messages)
    finally:
        tokenizer.chat_template = saved
    rendered = rendered.replace("{{", "{{`{{`}}")  # literal braces in the text stay literal in Go
    return rendered.replace(system_mark, "{{ .System }}").replace(prompt_mark, "{{ .Prompt }}")


def modelfile_text(gguf_name: str, tokenizer, chat_template: str, system_prompt: str | None,
                   adapter: str | None = None, base_gguf: Path | None = None) -> str:
    """The Ollama Modelfile; FROM names the file written (or, for an adapter, the base GGUF it was trained on
    when there is one: a placeholder only for a base Ollama has to find by name)."""
    stops = [t for t in dict.fromkeys([tokenizer.eos_token]) if t]
    if adapter is None:
        lines = [f"FROM ./{gguf_name}"]
    else:
        base = str(base_gguf.resolve()) if base_gguf else "<the base model's .gguf or Ollama name>"
        lines = [f"FROM {base}", f"ADAPTER ./{adapter}"]
    template = ollama_template(tokenizer, chat_template, system_prompt)
    lines.append(f'TEMPLATE """{template}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines.append("PARAMETER temperature 0")
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    return "\n".join(lines) + "\n"

# --- parity through an independent reader ----------------------------------------------------------------

def load_exported(gguf_file):
    """(model, tokenizer) read back from an exported file by transformers' own GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf_file = Path(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    return model.eval(), tokenizer


def model_outputs(model, tokenizer, messages: list[list[dict]], max_new_tokens: int = 12,
                  batch_size: int = 8) -> dict:
    """Prompt ids (the tokenizer's own chat template), greedy answers and last-position logits for each chat."""
    import torch

    from nli_finetune.generation import generate_answers
    from nli_finetune.greedy_decode import left_pad
    from prompts import encode_prompt
    prompts = [encode_prompt(tokenizer, m) for m in messages]
    answers = generate_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                               progress=False)
    logits = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            ids, mask = left_pad(prompts[start:start + batch_size], tokenizer.pad_token_id)
            logits.append(model(input_ids=ids, attention_mask=mask).logits[:, -1].float())
    return {"prompts": prompts, "answers": [a["text"] for a in answers], "logits": torch.cat(logits)}


def compare_answers(reference, reference_tokenizer, exported, exported_tokenizer, messages: list[list[dict]],
                    max_new_tokens: int = 12, batch_size: int = 8, reference_outputs: dict | None = None) -> dict:
    """Greedy answers and logits of the exported model against the merged HF model on the same chats.
    Each side encodes the prompts with its own tokenizer and chat template (the file's, for the export).
    `reference_outputs` (from model_outputs) saves recomputing the reference for several files."""
    if exported_tokenizer.pad_token_id is None:  # the reader may leave it unset; the file has the trained one
        exported_tokenizer.pad_token_id = reference_tokenizer.pad_token_id
    ref = reference_outputs or model_outputs(reference, reference_tokenizer, messages, max_new_tokens, batch_size)
    exp = model_outputs(exported, exported_tokenizer, messages, max_new_tokens, batch_size)
    same = [a == b for a, b in zip(ref["answers"], exp["answers"])]
    return {"examples": len(messages), "identical_prompts": sum(a == b for a, b in zip(ref["prompts"], exp["prompts"])),
            "identical_answers": sum(same), "agreement": sum(same) / len(same),
            "max_abs_logit_diff": (ref["logits"] - exp["logits"]).abs().max().item(),
            "reference_answers": ref["answers"], "exported_answers": exp["answers"]}
