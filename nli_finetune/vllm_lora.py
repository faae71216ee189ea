"""What vLLM is told about a model, one rule each for `scripts/serve.py` and `--backend vllm`: the dtype
(resolved as the HF backend resolves it) and the LoRA rank of an adapter.

vLLM accepts only the values of `vllm.config.lora.MaxLoRARanks` as `max_lora_rank` (0.32.0: 1, 8, 16, 32,
64, 128, 256, 320, 512), and refuses any other, such as an adapter's own r = 4, 12 or 24. The smallest
allowed value at or above the adapter's rank serves it unchanged (vLLM pads the adapter up to it).
"""

import json
from pathlib import Path

from nli_finetune.modeling import resolve_device, resolve_dtype

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_dtype(name: str | None = "auto") -> str:
    """vLLM's `dtype` for a dtype name (None = auto: float32 on a CPU, bfloat16 or float16 on a GPU)."""
    return str(resolve_dtype(name or "auto", resolve_device("auto"))).replace("torch.", "")


class LoraRankError(ValueError):
    """An adapter whose rank vLLM cannot serve, or whose adapter_config.json has no usable rank."""


def vllm_max_lora_rank(rank) -> int:
    """The `max_lora_rank` vLLM accepts for an adapter of rank `rank`."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoraRankError(f"LoRA rank must be a whole number >= 1, got {rank!r}")
    for allowed in VLLM_MAX_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise LoraRankError(f"LoRA rank {rank} is above {VLLM_MAX_LORA_RANKS[-1]}, the largest vLLM can serve; "
                        "use the HF backend, or merge the adapter (merge_adapter = True) and serve the merged model")


def adapter_max_lora_rank(adapter_dir) -> int:
    """The `max_lora_rank` for the adapter in `adapter_dir`: its adapter_config.json's `r`, or the largest
    rank of its `rank_pattern` (per-module ranks) when that is larger."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text())
        ranks = [config["r"], *(config.get("rank_pattern") or {}).values()]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise LoraRankError(f"{config_file}: no LoRA rank 'r' ({type(exc).__name__}: {exc})") from exc
    try:
        return max(vllm_max_lora_rank(rank) for rank in ranks)
    except LoraRankError as exc:
        raise LoraRankError(f"{config_file}: {exc}") from exc
