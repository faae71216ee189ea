"""A model's shape (layers, widths, vocabulary) without loading a weight: for memory estimates.

Sources, in order: a local folder's `config.json`; a `.gguf` file's header; a hub id's `config.json`
from the local hub cache, or from the hub when it is reachable; else, with only a parameter count
(`--model_params_b`), the shape of the nearest common architecture scaled to that count (said so).
No torch import: the preflight prints its plan in seconds.
"""

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path


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


def shape_from_config(config: dict, source: str) -> ModelShape:
    config = config.get("text_config", config)  # multimodal wrappers keep the LM's config inside
    try:
        heads = config["num_attention_heads"]
        return ModelShape(hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                          intermediate=config["intermediate_size"], heads=heads,
                          kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                          tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                          head_dim=config.get("head_dim") or 0, source=source)
    except KeyError as exc:
        raise ShapeError(f"{source}: no '{exc.args[0]}' in the model config; pass --model_params_b") from exc


def shape_from_gguf(path: Path) -> ModelShape:
    from gguf import GGUFReader
    try:
        reader = GGUFReader(str(path))
        fields = reader.fields
        arch = fields["general.architecture"].contents()

        def value(key, default=None):
            return fields[key].contents() if key in fields else default
        heads = value(f"{arch}.attention.head_count")
        vocab = value(f"{arch}.vocab_size") or len(fields["tokenizer.ggml.tokens"].data)
        tied = not any(t.name == "output.weight" for t in reader.tensors)
        key_length = value(f"{arch}.attention.key_length", 0)
        return ModelShape(hidden=value(f"{arch}.embedding_length"), layers=value(f"{arch}.block_count"),
                          intermediate=value(f"{arch}.feed_forward_length"), heads=heads,
                          kv_heads=value(f"{arch}.attention.head_count_kv", heads), vocab=vocab,
                          tied_embeddings=tied, head_dim=key_length, source=f"{path} (GGUF header)")
    except Exception as exc:  # a foreign or truncated file: gguf raises assorted errors
        raise ShapeError(f"{path}: cannot read the GGUF header ({type(exc).__name__}: {exc})") from exc


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
        converted = (converted_dir / path.stem / "config.json") if converted_dir else None
        if converted and converted.is_file():
            return shape_from_config(json.loads(converted.read_text()), str(converted))
        if not path.is_file():
            raise ShapeError(f"{model_id}: GGUF file not found")
        return shape_from_gguf(path)
    if (path / "config.json").is_file():
        return shape_from_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    if looks_local(model_id):
        raise ShapeError(f"{model_id}: not found, or a folder without config.json")
    config, where = hub_config(model_id)
    if config is not None:
        return shape_from_config(config, where)
    if params_b is None:
        raise ShapeError(f"{model_id}: {where}; pass --model_params_b N (its size in billions of parameters)")
    return shape_from_size(params_b, f"{model_id}: {where}")
