"""Loading tokenizers and models the same way for training, inference and the demo.

- `load_tokenizer` gives a fast tokenizer whose ids match the saved `tokenizer.json`, with a pad
  token distinct from eos (a spare existing token when there is one).
- `load_model` loads a base model in 4-bit NF4 (bitsandbytes) or in a plain dtype, picks the attention
  implementation (flash-attn only when installed and on CUDA) and says what it did.
- `load_for_inference` accepts a base model dir or a LoRA adapter dir (base from adapter_config.json).
GPU-only packages are imported lazily; when they are missing the error says how to install them.
"""

import fnmatch
import json
import logging
import os
from pathlib import Path

from nli_finetune import REPO_ROOT
from nli_finetune.cli import on_terminal
from nli_finetune.data_io import DataError, check_outputs, path_fingerprint
from nli_finetune.model_shape import looks_local

log = logging.getLogger("modeling")
# bitsandbytes announces at import that an optional CPU kernel package from the hub is missing: noise here
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
SPARE_PAD_TOKENS = ["<pad>", "<|finetune_right_pad_id|>", "<|pad|>", "<|endoftext|>", "<unk>"]
DTYPES = ("bfloat16", "float16", "float32")  # torch's names; torch itself is imported where it is used, so
# the API backend, --help and bad-input errors start without it (~1.5 s)


class ModelLoadError(RuntimeError):
    """A model, adapter or tokenizer that cannot be loaded; the message says what to do."""


def resolve_device(device: str = "auto") -> str:
    """cpu, cuda or cuda:N; under torchrun each process takes the GPU of its LOCAL_RANK."""
    import torch
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        local_rank = os.environ.get("LOCAL_RANK")
        return f"cuda:{local_rank}" if local_rank is not None else "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: str):
    """The torch dtype for weights; 'auto' is bf16 on CUDA GPUs that support it and float32 elsewhere."""
    import torch
    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)} or auto")
    return getattr(torch, name)


BASE_SOURCE_FILE = "base_model_source.json"  # in an adapter dir trained from a GGUF file


def resolve_model_dir(model_id: str) -> str:
    """The folder to load for `model_id`: itself, or for a `.gguf` file its converted folder."""
    from nli_finetune.gguf_convert import GGUFError, convert_gguf, is_gguf
    if not is_gguf(model_id):
        return model_id
    try:
        return str(convert_gguf(model_id))
    except GGUFError as exc:
        raise ModelLoadError(str(exc)) from exc


def check_local_model(model_id: str) -> None:
    """A model given as a path must be there: a folder with config.json or adapter_config.json, or a
    .gguf file (hub ids are left to the hub)."""
    from nli_finetune.gguf_convert import is_gguf
    path = Path(model_id).expanduser()
    if is_gguf(model_id) and path.is_file():
        return
    if looks_local(model_id) and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"model dir not found or incomplete: {model_id} (no config.json); "
                             "build a tiny one with `python scripts/make_tiny_model.py` or download one "
                             "with `python models/download_model.py`")


def load_tokenizer(path: str):
    """A fast tokenizer for `path` with left padding and pad != eos."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = resolve_model_dir(path)
    check_local_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot load tokenizer from {path}: {exc}") from exc
    tokenizer_json = Path(path) / "tokenizer.json"
    if tokenizer_json.is_file():
        # transformers 5 rebuilds some families' tokenizers (qwen2, phi3, ...) from vocab/merges with
        # the family's own pre-tokenizer; when that disagrees with the saved tokenizer.json, trust the file.
        from tokenizers import Tokenizer
        probe = "Premise: It's 42 o'clock.\nHypothesis: {\"a\": 1}  ünïcode"
        saved = Tokenizer.from_file(str(tokenizer_json)).encode(probe, add_special_tokens=False).ids
        if tokenizer(probe, add_special_tokens=False)["input_ids"] != saved:
            log.info("tokenizer: %s rebuilt differently from tokenizer.json; loading the file as is",
                     type(tokenizer).__name__)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = "left"
    return tokenizer


def ensure_pad_token(tokenizer) -> bool:
    """Make pad != eos, preferring an existing spare token. Returns True if a token was added
    (the model's embeddings must then be resized)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    vocab = tokenizer.get_vocab()
    for candidate in SPARE_PAD_TOKENS:
        if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
            tokenizer.pad_token = candidate
            return False
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return True


HUB_FLASH_KERNEL = "kernels-community/flash-attn2"  # prebuilt flash-attention from the hub (`kernels`)


def installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def hub_kernel_problem() -> str | None:
    """Why transformers cannot fetch the hub's flash-attention kernel here, or None when it can. transformers
    accepts only a `kernels` inside its own version window and otherwise raises at load (which once made
    every run fall back to SDPA while the log and gpu-check still promised the hub kernel)."""
    import importlib.util

    from packaging.version import Version
    from transformers.utils import import_utils
    if importlib.util.find_spec("kernels") is None:
        return "no `kernels` package"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    low, high = import_utils.KERNELS_MIN_VERSION, import_utils.KERNELS_MAX_VERSION
    found = installed_version("kernels")
    if found is None or not Version(low) <= Version(found) < Version(high):
        return f"kernels {found} is outside transformers' window >={low},<{high}"
    return None


def hub_kernels_usable() -> bool:
    return hub_kernel_problem() is None


def pick_attn_implementation(requested: str, device: str) -> tuple[str, str]:
    """(implementation, where it comes from). On CUDA, `auto` takes flash-attention from the flash-attn
    package, else from the hub's prebuilt kernel (nothing compiled), else SDPA."""
    import importlib.util
    has_package = importlib.util.find_spec("flash_attn") is not None
    if requested == "flash_attention_2":
        if not device.startswith("cuda"):
            raise ModelLoadError("flash_attention_2 needs a CUDA device")
        if has_package:
            return requested, "flash-attn package"
        if hub_kernels_usable():
            return HUB_FLASH_KERNEL, "hub kernel"
        raise ModelLoadError("flash_attention_2: neither the flash-attn package nor the `kernels` package with hub "
                             f"access ({HUB_FLASH_KERNEL}) is available; use sdpa, or see the README's GPU image section")
    if requested != "auto":
        return requested, "as configured"
    if device.startswith("cuda") and has_package:
        return "flash_attention_2", "flash-attn package"
    if device.startswith("cuda") and hub_kernels_usable():
        return HUB_FLASH_KERNEL, "hub kernel"
    why = "not on CUDA" if not device.startswith("cuda") else "no flash-attn package and no hub kernel access"
    return "sdpa", f"auto: {why}"


def _require(module: str, install_hint: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(f"'{module}' is not installed: {install_hint}") from exc


def bnb_4bit_config(quant_type="nf4", double_quant=True, compute_dtype=None, quant_storage=None):
    """compute_dtype: bf16 unless given. quant_storage: the dtype the packed 4-bit values are stored as; FSDP
    can shard only floating tensors, so sharded QLoRA stores them as the compute dtype (uint8 otherwise,
    bitsandbytes' default)."""
    import torch
    from transformers import BitsAndBytesConfig
    _require("bitsandbytes", "pip install bitsandbytes (see requirements.txt)")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
                              bnb_4bit_quant_storage=quant_storage or torch.uint8)


def can_load_4bit(device: str) -> tuple[bool, str]:
    """Whether bitsandbytes can quantize to 4-bit on this device, and why not."""
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.functional import quantize_4bit
    except ImportError as exc:
        return False, f"bitsandbytes is not importable ({exc})"
    import torch
    try:
        weight = torch.randn(64, 64, dtype=torch.bfloat16, device=device)
        quantize_4bit(weight, quant_type="nf4")
    except Exception as exc:  # bitsandbytes raises assorted errors when it has no backend
        return False, f"bitsandbytes has no 4-bit backend for {device}: {type(exc).__name__}: {exc}"
    return True, ""


def disable_cpu_4bit_repack(model) -> int:
    """bitsandbytes 0.50's Linear4bit, on CPUs with AVX512-BF16, repacks its 4-bit weight in place during
    the first no-grad eval forward; gradients through the repacked weight are then wrong, silently. Turn
    the switch off on every 4-bit layer so train/eval alternation stays correct. Returns layers changed."""
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_model(model_id: str, *, device: str = "cpu", load_in_4bit: bool = False, dtype: str = "float32",
               attn_implementation: str = "auto", quant_type: str = "nf4", double_quant: bool = True,
               compute_dtype: str = "bfloat16", for_sharding: bool = False):
    """A causal LM on `device`, 4-bit quantized on request. for_sharding (FSDP): 4-bit values stored in a
    floating dtype so they can be sharded, and an unquantized model left in CPU memory, where FSDP takes
    each rank's shard to the GPU (a whole copy on every GPU first would defeat the sharding)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not on_terminal():  # "Loading weights" would be a carriage-return bar in a log
        hf_logging.disable_progress_bar()
    model_id = resolve_model_dir(model_id)
    check_local_model(model_id)
    attn, source = pick_attn_implementation(attn_implementation, device)
    kwargs = {"attn_implementation": attn}
    if load_in_4bit:
        kwargs["quantization_config"] = bnb_4bit_config(
            quant_type, double_quant, resolve_dtype(compute_dtype, device),
            quant_storage=resolve_dtype(compute_dtype, device) if for_sharding else None)
        kwargs["dtype"] = resolve_dtype(compute_dtype, device)
        kwargs["device_map"] = {"": device}
    else:
        kwargs["dtype"] = resolve_dtype(dtype, device)
    try:
        model = _from_pretrained_with_attention(AutoModelForCausalLM, model_id, kwargs, source)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {model_id}: {exc}") from exc
    if not load_in_4bit:
        model.to("cpu" if for_sharding else device)
    elif device == "cpu":
        disable_cpu_4bit_repack(model)
    return model


def _from_pretrained_with_attention(model_class, model_id: str, kwargs: dict, source: str):
    """from_pretrained, saying which attention runs; a hub kernel that can't be fetched or has no build for
    this torch falls back to SDPA (said in the log) rather than ending the run."""
    try:
        model = model_class.from_pretrained(model_id, **kwargs)
    except Exception as exc:  # the kernels package raises hub, build-lookup and import errors alike
        if kwargs["attn_implementation"] != HUB_FLASH_KERNEL:
            raise
        log.warning("attention: hub kernel %s unavailable (%s: %s); falling back to sdpa", HUB_FLASH_KERNEL,
                    type(exc).__name__, str(exc)[:200])
        kwargs, source = {**kwargs, "attn_implementation": "sdpa"}, "fallback"
        model = model_class.from_pretrained(model_id, **kwargs)
    log.info("attention: %s (%s)", model.config._attn_implementation, source)
    return model


def adapter_base(path: str) -> str | None:
    """The base model of a PEFT adapter dir, or None when `path` is not an adapter. A relative base
    path (as typed at training time) is looked up from here, the repo root and the adapter dir; a base
    converted from GGUF is found again through the GGUF file it came from."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.is_file():
        return None
    try:
        base = json.loads(config_file.read_text())["base_model_name_or_path"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{config_file}: unreadable or without 'base_model_name_or_path' ({exc}); "
                             "pass --base_model") from exc
    source_file = Path(path) / BASE_SOURCE_FILE
    if source_file.is_file():
        gguf_file = json.loads(source_file.read_text()).get("gguf_file")
        if gguf_file and Path(gguf_file).is_file():
            return gguf_file
    for candidate in (Path(base), REPO_ROOT / base, Path(path) / base):
        if (candidate / "config.json").is_file() or candidate.is_file():
            return str(candidate)
    if looks_local(base) or Path(base).suffix:
        raise ModelLoadError(f"{config_file}: base model '{base}' not found (looked here, in the repo root and in "
                             "the adapter dir); pass --base_model PATH")
    return base  # a hub id


# The files that make a model (weights, config, tokenizer, adapter, contract): what its fingerprint hashes
# and what no output may overwrite. Anything else in its folder (an evaluation saved there) is not the model.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.model", "*.tiktoken", "*.jinja",
                       "*config.json", "tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                       "vocab.txt", "merges.txt", "*.index.json", "chat_template.json", "model_contract.json",
                       BASE_SOURCE_FILE)


def is_model_file_name(name: str) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pattern) for pattern in MODEL_FILE_PATTERNS)


def model_fingerprint(model_id) -> str:
    """A short hash of a model's own files (a .gguf file, or the files of its folder MODEL_FILE_PATTERNS
    names); a hub id hashes its name. Outputs saved in the model folder don't change it."""
    return path_fingerprint(model_id, include=lambda relative: len(relative.parts) == 1
                            and is_model_file_name(relative.name))


# A base is its weights: tokenizer or config files re-saved by another library version are the same base
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def base_fingerprint(model_id) -> str:
    """A base model's weights by content (a .gguf file, or the weight files at the top of its folder), the
    same wherever the base is copied or moved to (what a model contract records); a hub id by its name."""
    def is_weight(relative: Path) -> bool:
        return len(relative.parts) == 1 and any(fnmatch.fnmatch(relative.name.lower(), pattern)
                                                for pattern in WEIGHT_FILE_PATTERNS)
    return path_fingerprint(Path(model_id).expanduser(), include=is_weight, portable=True)


def model_locations(model_id: str | None, base_model: str | None = None) -> list[Path]:
    """Where a model is read from: its folder or .gguf file, an adapter's base, and a GGUF file's
    converted folder (hub ids are not local)."""
    from nli_finetune.gguf_convert import converted_dir_for, is_gguf
    if base_model is None and model_id:
        try:
            base_model = adapter_base(model_id)
        except ModelLoadError:
            base_model = None  # the load reports it
    found = []
    for source in (model_id, base_model):
        path = Path(source).expanduser() if source else None
        if path is None or not path.exists() or path in found:
            continue
        found.append(path)
        if is_gguf(source) and path.is_file():
            found.append(converted_dir_for(path))
    return found


def check_outputs_spare_model(outputs: dict, model_id: str | None, base_model: str | None = None) -> None:
    """Refuse (DataError) an output that is one of the model's files (after symlinks and hard links) or
    would add one to a model folder: writing it would change or break the model (issue #22 H4)."""
    inputs = {}
    for location in model_locations(model_id, base_model):
        files = [location] if location.is_file() else [p for p in location.iterdir() if p.is_file()] \
            if location.is_dir() else []
        inputs |= {f"model file {file}": file for file in files if is_model_file_name(file.name)}
        if location.is_dir():
            for name, output in outputs.items():
                if output is not None and Path(output).resolve().parent == location.resolve() \
                        and is_model_file_name(Path(output).name):
                    raise DataError(f"{name} {output}: a file of that name is part of the model in {location}; "
                                    "writing it would change the model; choose another output path")
    check_outputs(inputs, outputs)


def load_for_inference(path: str, *, device: str = "auto", load_in_4bit: bool | None = None,
                       dtype: str = "auto", attn_implementation: str = "auto", base_model: str | None = None,
                       merge_lora: bool = True):
    """(model, tokenizer, info) for a base model dir or a LoRA adapter dir, in eval mode.
    4-bit defaults to on for CUDA and off elsewhere; the tokenizer comes from the adapter dir. On an
    unquantized base the adapter is merged into the weights (faster generation, same model); on a
    4-bit base it stays separate, since merging into quantized weights would round it away."""
    device = resolve_device(device)
    load_in_4bit = device.startswith("cuda") if load_in_4bit is None else load_in_4bit
    base = base_model or adapter_base(path)
    tokenizer = load_tokenizer(path)
    model = load_model(base or path, device=device, load_in_4bit=load_in_4bit, dtype=dtype,
                       attn_implementation=attn_implementation)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # the adapter was trained with added tokens (pad or special tokens): grow to its vocab
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    merged = False
    if base:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, path)
        if merge_lora and not load_in_4bit:
            model, merged = model.merge_and_unload(), True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    info = {"model": path, "base_model": base or path, "adapter": bool(base), "merged": merged, "device": device,
            "load_in_4bit": load_in_4bit, "dtype": str(model.dtype).replace("torch.", "")}
    return model, tokenizer, info
