"""The LoRA rank vLLM is told for an adapter: one rule for `scripts/serve.py` and `--backend vllm`.

vLLM accepts only the values of `vllm.config.lora.MaxLoRARanks` as `max_lora_rank` (0.32.0: 1, 8, 16, 32,
64, 128, 256, 320, 512), and refuses any other, such as an adapter's own r = 4, 12 or 24. The smallest
allowed value at or above the adapter's rank serves it unchanged (vLLM pads the adapter up to it).
"""

import json
from pathlib import Path

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


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
