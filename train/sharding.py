"""FSDP2 through the Trainer (accelerate's plugin): the TrainingArguments a config's `fsdp` key asks for,
the final gather into an ordinary model, and the same path on CPU processes over gloo.

    ./run_training.sh --config distributed_fsdp.py --gpus 0,1
    torchrun --nproc_per_node 2 -m train.train_sft --config tiny_cpu.py --fsdp full_shard --use_lora false

accelerate 1.15 turns FSDP on only for accelerators: on CPU it silently falls back to DDP (a whole copy
per process). PyTorch's fully_shard itself runs on CPU tensors over gloo, so `sharding_trainer` puts
accelerate's own FSDP plugin in place there; everything after that (wrapping, sharded checkpoints,
resume, the full state dict) is accelerate's and the Trainer's unchanged code, the same as on GPUs.
"""

import logging

from train.config_schema import TrainConfig

log = logging.getLogger("train_sft")


def fsdp_arguments(config: TrainConfig) -> dict:
    """TrainingArguments for FSDP2. Checkpoints are sharded (each rank writes its own part: fast, and what
    resuming reads); the final output is gathered by save_final_model. FSDP's own activation checkpointing
    replaces the Trainer's, which would add an all-gather to every backward."""
    if config.fsdp == "none":
        return {}
    return dict(fsdp=True, fsdp_config={
        "version": 2, "reshard_after_forward": config.fsdp == "full_shard", "state_dict_type": "SHARDED_STATE_DICT",
        "cpu_offload": config.fsdp_cpu_offload, "activation_checkpointing": config.gradient_checkpointing})


def sharding_trainer(**trainer_kwargs):
    """A transformers Trainer whose FSDP settings also hold on CPU processes (see the module docstring);
    transformers is imported only here, so `--help` and `--dry_run` stay quick."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from transformers import Trainer

    class ShardingTrainer(Trainer):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state, plugin_args = self.accelerator.state, self.args.fsdp_plugin_args
            if plugin_args is None or self.is_fsdp_enabled:
                return
            if state.distributed_type != DistributedType.MULTI_CPU:
                raise RuntimeError(f"fsdp was asked for, but accelerate chose {state.distributed_type}")
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
            # both states, as accelerate does for GPUs: every AcceleratorState() re-reads PartialState's
            state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.is_fsdp_enabled = True
            gather = self.accelerator.get_state_dict
            # its "offload to CPU" is a no-op for CPU tensors, which then share storage that FSDP frees
            # when it reshards: copy them while they are whole
            self.accelerator.get_state_dict = lambda model, unwrap=True: {
                name: tensor.clone() for name, tensor in gather(model, unwrap).items()}
            log.info("fsdp: FSDP2 on CPU processes over gloo")

    return ShardingTrainer(**trainer_kwargs)


def save_final_model(trainer, output_dir: str) -> None:
    """The adapter (or full model) of the best/last state, called on every rank: under FSDP each rank
    sends its shards and rank 0 writes an ordinary model that from_pretrained loads on one device."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(output_dir)
