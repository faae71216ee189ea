"""A model's shape (layers, widths, vocabulary) without loading a weight: for memory estimates.

Sources, in order: a local folder's `config.json` (a LoRA adapter folder: its base model's); a `.gguf`
file's converted folder or its header; a hub id's `config.json` from the local hub cache, or from the
hub when it is reachable; else, with only a parameter count (`--model_params_b`), the shape of the
nearest common architecture scaled to that count (said so). No torch import: the preflight prints its
plan in seconds. A config or header without a usable number is a ShapeError naming the field.
"""

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from nli_finetune import REPO_ROOT


def looks_local(model_id: str) -> bool:
    """A path rather than a hub id ("org/name"): it starts with . / or ~, exists, is a .gguf file, has
    more than one slash, or its first part is a folder here (models/x)."""
    return (model_id.startswith((".", "/", "~")) or Path(model_id).exists() or model_id.lower().endswith(".gguf")
            or model_id.count("/") > 1 or Path(model_id.split("/")[0]).is_dir())


class ShapeError(ValueError):
    """A shape that can't be read or assumed; the message says what to pass."""


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int = 0  # 0 = hidden // heads
    source: str = ""   # where the numbers come from, for the plan

    @property
    def attention_width(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection in one decoder layer, by the usual Llama/Mistral/Qwen names."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.attention_width), "k_proj": (h, self.kv_width), "v_proj": (h, self.kv_width),
                "o_proj": (self.attention_width, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_dims().values())

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the output head when it is a separate matrix."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.layers * self.layer_linear_params + self.embedding_params + norms


# Published configs of common base models, the nearest of which stands in when only a size is known.
REFERENCE_SHAPES = {
    "SmolLM2-135M": ModelShape(576, 30, 1536, 9, 3, 49152, True),
    "Qwen2.5-0.5B": ModelShape(896, 24, 4864, 14, 2, 151936, True),
    "Llama-3.2-1B": ModelShape(2048, 16, 8192, 32, 8, 128256, True),
    "Llama-3.2-3B": ModelShape(3072, 28, 8192, 24, 8, 128256, True),
    "Qwen3-4B": ModelShape(2560, 36, 9728, 32, 8, 151936, True, head_dim=128),
    "Mistral-7B-v0.3": ModelShape(4096, 32, 14336, 32, 8, 32768, False),
    "Llama-3.1-8B": ModelShape(4096, 32, 14336, 32, 8, 128256, False),
    "Llama-2-13B": ModelShape(5120, 40, 13824, 40, 40, 32000, False),
    "Qwen2.5-32B": ModelShape(5120, 64, 27648, 40, 8, 152064, False),
    "Llama-3.1-70B": ModelShape(8192, 80, 28672, 64, 8, 128256, False),
}


def _checked(source: str, **numbers) -> dict:
    """The numbers of a shape, each a positive whole number, or ShapeError naming the one that isn't."""
    for name, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "head_dim" else 1):
            raise ShapeError(f"{source}: '{name}' must be a positive whole number, got {value!r}; "
                             "pass --model_params_b")
    return numbers


def shape_from_config(config: dict, source: str) -> ModelShape:
    inner = config.get("text_config") if isinstance(config, dict) else None
    config = inner if isinstance(inner, dict) else config  # multimodal wrappers keep the LM's config inside
    if not isinstance(config, dict):
        raise ShapeError(f"{source}: not a model config (a JSON object); pass --model_params_b")
    try:
        heads = config["num_attention_heads"]
        numbers = _checked(source, hidden_size=config["hidden_size"], num_hidden_layers=config["num_hidden_layers"],
                           intermediate_size=config["intermediate_size"], num_attention_heads=heads,
                           num_key_value_heads=config.get("num_key_value_heads") or heads,
                           vocab_size=config["vocab_size"], head_dim=config.get("head_dim") or 0)
    except KeyError as exc:
        raise ShapeError(f"{source}: no '{exc.args[0]}' in the model config; pass --model_params_b") from exc
    return ModelShape(hidden=numbers["hidden_size"], layers=numbers["num_hidden_layers"],
                      intermediate=numbers["intermediate_size"], heads=heads, kv_heads=numbers["num_key_value_heads"],
                      vocab=numbers["vocab_size"], tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                      head_dim=numbers["head_dim"], source=source)


def shape_from_gguf(path: Path) -> ModelShape:
    from nli_finetune.gguf_header import read_gguf_header
    try:
        header = read_gguf_header(path)
        meta = header.metadata
        arch = meta["general.architecture"]
        heads = meta.get(f"{arch}.attention.head_count")
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = meta.get(f"{arch}.vocab_size") or (len(tokens) if tokens is not None else None)
        numbers = dict(embedding_length=meta.get(f"{arch}.embedding_length"),
                       block_count=meta.get(f"{arch}.block_count"),
                       feed_forward_length=meta.get(f"{arch}.feed_forward_length"), head_count=heads,
                       head_count_kv=meta.get(f"{arch}.attention.head_count_kv", heads), vocab_size=vocab,
                       head_dim=meta.get(f"{arch}.attention.key_length", 0))
    except Exception as exc:  # a foreign or truncated file
        raise ShapeError(f"{path}: cannot read the GGUF header ({type(exc).__name__}: {exc})") from exc
    tied = "output.weight" not in header.tensors
    n = _checked(f"{path} (GGUF header)", **numbers)
    return ModelShape(hidden=n["embedding_length"], layers=n["block_count"], intermediate=n["feed_forward_length"],
                      heads=n["head_count"], kv_heads=n["head_count_kv"], vocab=n["vocab_size"], tied_embeddings=tied,
                      head_dim=n["head_dim"], source=f"{path} (GGUF header)")


def adapter_base_path(folder: Path) -> str | None:
    """The base model a LoRA adapter folder names (a relative path as typed at training time is looked
    up from here, the repo root and the folder), or None when `folder` is not an adapter."""
    try:
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(base, str):
        return None
    for candidate in (Path(base), REPO_ROOT / base, folder / base):
        if candidate.exists():
            return str(candidate)
    return base


def hub_config(model_id: str) -> tuple[dict | None, str]:
    """(config, where) from the hub cache, or from the hub when not offline; (None, why) otherwise."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None, "huggingface_hub is not installed"
    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), f"{model_id} (hub cache)"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return None, "offline (HF_HUB_OFFLINE=1) and not in the hub cache"
    if not _hub_answers():  # huggingface_hub would retry for half a minute
        return None, "the hub is not reachable from here"
    try:
        return json.loads(Path(hf_hub_download(model_id, "config.json", etag_timeout=5)).read_text()), f"{model_id} (hub)"
    except Exception as exc:  # network, auth (gated models) and missing-repo errors all mean the same here
        return None, f"the hub did not answer ({type(exc).__name__})"


def _hub_answers(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def shape_from_size(params_b: float, why: str) -> ModelShape:
    """The nearest reference architecture, with its layer count scaled so the total matches `params_b`."""
    target = params_b * 1e9
    name, ref = min(REFERENCE_SHAPES.items(), key=lambda item: abs(math.log(item[1].params / target)))
    layers = max(1, round((target - ref.embedding_params) / ref.layer_linear_params))
    return replace(ref, layers=layers, source=f"assumed: {params_b:g}B parameters shaped like {name} "
                                               f"({why}; pass a local model folder for the exact shape)")


def read_model_shape(model_id: str, params_b: float | None = None, converted_dir: Path | None = None) -> ModelShape:
    path = Path(model_id).expanduser()
    if model_id.lower().endswith(".gguf"):
        from nli_finetune.gguf_convert import converted_dir_for
        converted = converted_dir_for(path, converted_dir) / "config.json"
        if converted.is_file():
            return shape_from_config(_read_json(converted), str(converted))
        if not path.is_file():
            raise ShapeError(f"{model_id}: GGUF file not found")
        return shape_from_gguf(path)
    if (path / "config.json").is_file():
        return shape_from_config(_read_json(path / "config.json"), str(path / "config.json"))
    base = adapter_base_path(path)
    if base is not None:  # a LoRA adapter folder trains on (or merges into) its base's shape
        return read_model_shape(base, params_b, converted_dir)
    if looks_local(model_id):
        raise ShapeError(f"{model_id}: not found, or a folder without config.json")
    config, where = hub_config(model_id)
    if config is not None:
        return shape_from_config(config, where)
    if params_b is None:
        raise ShapeError(f"{model_id}: {where}; pass --model_params_b N (its size in billions of parameters)")
    if not math.isfinite(params_b) or params_b <= 0:
        raise ShapeError(f"--model_params_b must be a finite number above 0, got {params_b}")
    return shape_from_size(params_b, f"{model_id}: {where}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShapeError(f"{path}: unreadable ({type(exc).__name__}: {exc}); pass --model_params_b") from exc
