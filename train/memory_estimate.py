"""GPU memory of one training step, estimated from the model's shape and the config (docs/training.md
has the formula and its check against published figures). Every term is in bytes; nothing is loaded.

    base weights   4-bit: 0.5 B per quantized parameter + its constants (1/64 B with double quantization,
                   4/64 B without); the embeddings, output head and norms stay unquantized and PEFT's
                   prepare_model_for_kbit_training casts them to float32 (4 B). Unquantized: dtype bytes.
    trainable      LoRA (r x (in + out) per adapted projection and layer) or every parameter in full
                   fine-tuning: weight + gradient + optimizer state (AdamW 8 B, 8-bit AdamW 2 B, SGD 0).
    activations    with gradient checkpointing: each layer's input (tokens x hidden) plus one layer's
                   full activations while it is recomputed; without: every layer's full activations;
                   layers below the lowest adapted one (lora_layers) keep nothing.
                   Eager attention adds heads x seq^2 scores per sequence; SDPA and flash keep none.
    logits         batch x logit columns x vocab x 12 B (float32 logits, log-softmax and their gradient for
                   the loss); the answer-window collator computes them only on the widest answer window of
                   the data (logit_columns), packing on every token.
    CUDA context   0.5 GiB that torch's allocator does not see but the GPU does.
    FSDP           over N ranks, "full_shard" divides the base weights and the trainable terms by N and
                   adds the layer being gathered plus the one prefetched (2 x one layer in compute dtype);
                   "shard_grad_op" divides only gradients and optimizer state. A full fine-tune under
                   bf16 mixed precision keeps float32 master weights and gradients (accelerate upcasts
                   them for FSDP2): 4 + 4 + optimizer state bytes per parameter. Activations don't shard.
"""

import dataclasses
from dataclasses import dataclass

from train.config_schema import TrainConfig

GIB = 1024 ** 3
FITS = 0.95  # the share of a GPU's memory a plan may fill: allocator fragmentation takes the rest
CUDA_CONTEXT = int(0.5 * GIB)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MemoryEstimate:
    parts: dict  # name -> bytes, in the order they are printed
    trainable_params: int
    notes: list

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def optimizer_state_bytes(optimizer: str) -> float:
    """Bytes of state per trainable parameter: AdamW keeps two float32 moments, 8-bit AdamW two bytes,
    SGD and Adafactor (factored moments) about none."""
    if "8bit" in optimizer:
        return 2.0
    if optimizer.startswith(("sgd", "adafactor")):
        return 0.0
    return 8.0


def lora_params(shape, targets, rank: int, layers: int) -> tuple[int, list]:
    dims = shape.linear_dims()
    names = ALL_LINEAR if targets == "all-linear" else list(targets)
    unknown = [name for name in names if name not in dims]
    per_layer = sum(rank * (dims[name][0] + dims[name][1]) for name in names if name in dims)
    notes = [f"LoRA targets {unknown} are not Llama-style projection names; not counted"] if unknown else []
    return per_layer * layers, notes


def activation_bytes(shape, tokens: int, seq_len: int, sequences: int, act: int, *, checkpointing: bool,
                     eager: bool, lora_inputs: int, layers: int) -> int:
    """Saved for the backward pass; `layers` counts from the lowest trained layer up (autograd keeps
    nothing below it)."""
    h, i = shape.hidden, shape.intermediate
    # one layer, per token: 2 norm outputs, q/k/v, attention output, o_proj output, residual, gate, up,
    # activation, product, down output, and the dropped-out inputs LoRA keeps for its own backward
    per_token = 5 * h + 2 * shape.attention_width + 2 * shape.kv_width + 4 * i + lora_inputs
    layer = tokens * per_token * act
    if eager:
        layer += 2 * sequences * shape.heads * seq_len * seq_len * act
    if checkpointing:
        return layers * tokens * h * act + layer
    return layers * layer


def base_and_trainable(shape, config: TrainConfig) -> tuple[float, int, float, str, list]:
    """(base weight bytes, trainable parameters, bytes per trainable parameter, its part's name, notes)."""
    quantized = shape.layers * shape.layer_linear_params
    unquantized = shape.params - quantized
    notes = []
    if config.use_lora and config.load_in_4bit:
        constants = 1 / 64 + 4 / (64 * 256) if config.bnb_4bit_use_double_quant else 4 / 64
        base = quantized * (0.5 + constants) + unquantized * 4
        notes.append(f"embeddings/head/norms ({unquantized / 1e9:.2f}B) in float32: PEFT's k-bit preparation casts them")
    else:
        base = shape.params * DTYPE_BYTES.get(config.torch_dtype, 2)
    if config.use_lora:
        layers = len(config.lora_layers) if config.lora_layers else shape.layers
        trainable, lora_notes = lora_params(shape, config.lora_target_modules, config.lora_r, layers)
        per_trainable = 4 + 4 + optimizer_state_bytes(config.optimizer)  # float32 adapters
        return base, trainable, per_trainable, "LoRA weights, grads, optimizer", notes + lora_notes
    weight_bytes = DTYPE_BYTES.get(config.torch_dtype, 2)
    if config.fsdp != "none" and (config.mixed_precision == "bf16" or config.mixed_precision == "auto"
                                     and config.torch_dtype == "bfloat16"):
        notes.append("FSDP with bf16 mixed precision keeps float32 master weights and gradients")
        base, weight_bytes = shape.params * 4, 4
    return base, shape.params, weight_bytes + optimizer_state_bytes(config.optimizer), "gradients, optimizer", notes


def estimate_training_memory(shape, config: TrainConfig, *, tokens_per_sequence: int | None = None,
                             logit_columns: int | None = None, world_size: int = 1) -> MemoryEstimate:
    """Peak GPU memory of one rank for `config` (a resolved TrainConfig) on a
    model of `shape`, with `world_size` ranks sharing the shards when config.fsdp asks for FSDP.
    `logit_columns`: the widest answer window when known (else every token of the sequence)."""
    seq = tokens_per_sequence or config.max_seq_length
    batch = config.batch_size
    tokens = batch * seq
    compute = DTYPE_BYTES.get(config.bnb_4bit_compute_dtype if config.load_in_4bit else config.torch_dtype, 2)
    base, trainable, per_trainable, weights_part, notes = base_and_trainable(shape, config)
    backprop_layers = max(0, shape.layers - min(config.lora_layers)) if config.lora_layers and config.use_lora \
        else shape.layers
    lora_inputs = 0
    if config.use_lora and config.lora_dropout > 0:
        dims = shape.linear_dims()
        targets = ALL_LINEAR if config.lora_target_modules == "all-linear" else config.lora_target_modules
        lora_inputs = sum(dims[name][0] for name in targets if name in dims)
    shards = world_size if config.fsdp != "none" else 1
    weight_shards = world_size if config.fsdp == "full_shard" else 1
    parts = {
        "base weights": int(base / weight_shards),
        weights_part: int(trainable * per_trainable / shards),
        "activations": activation_bytes(shape, tokens, seq, batch, compute, checkpointing=config.gradient_checkpointing,
                                        eager=config.attn_implementation == "eager", lora_inputs=lora_inputs,
                                        layers=backprop_layers),
        "logits (loss)": batch * min(seq, logit_columns or seq) * shape.vocab * 12,
        "CUDA context": CUDA_CONTEXT,
    }
    if config.fsdp == "full_shard" and world_size > 1:
        gathered_bytes = 0.5 if config.use_lora and config.load_in_4bit else compute
        parts["gathered layers (FSDP)"] = int(2 * shape.layer_linear_params * gathered_bytes)
    if config.fsdp != "none":
        notes.append(f"fsdp = {config.fsdp} over {world_size} rank(s): "
                     + ("weights, gradients and optimizer state" if weight_shards > 1 else "gradients and optimizer state")
                     + f" divided by {world_size}")
    if "paged" in config.optimizer:
        notes.append("paged optimizer: its state can spill to CPU memory under pressure (counted here in full)")
    return MemoryEstimate(parts=parts, trainable_params=int(trainable), notes=notes)


def gpus_needed(shape, config, gpu_bytes: int, tokens_per_sequence: int | None = None,
                logit_columns: int | None = None, most: int = 512) -> int | None:
    """The fewest ranks over which `config` with fsdp = "full_shard" fits `gpu_bytes` each, or None when
    even `most` don't (activations and logits don't shard)."""
    sharded = dataclasses.replace(config, fsdp="full_shard")
    for ranks in range(1, most + 1):
        if estimate_training_memory(shape, sharded, tokens_per_sequence=tokens_per_sequence,
                                    logit_columns=logit_columns, world_size=ranks).total <= FITS * gpu_bytes:
            return ranks
    return None


def advice(estimate: MemoryEstimate, config: TrainConfig, gpu_bytes: int) -> list[str]:
    """What to lower, biggest saving first, when the estimate does not fit `gpu_bytes`."""
    tips = []
    if estimate.parts["logits (loss)"] + estimate.parts["activations"] > 0.3 * gpu_bytes:
        tips.append(f"--batch_size {max(1, config.batch_size // 2)} with --grad_accumulation_steps "
                    f"{config.grad_accumulation_steps * 2} (same effective batch)")
        tips.append(f"--max_seq_length {max(64, config.max_seq_length // 2)}")
    if not config.gradient_checkpointing:
        tips.append("--gradient_checkpointing true")
    if not config.load_in_4bit and config.use_lora:
        tips.append("--load_in_4bit true (QLoRA)")
    if not config.use_lora:
        tips.append("--use_lora true (with --load_in_4bit true: QLoRA)")
    if "8bit" not in config.optimizer:
        tips.append("--optimizer paged_adamw_8bit")
    return tips or ["a GPU with more memory, or a smaller base model"]
