"""FSDP2 (fsdp = "full_shard") on two CPU processes over gloo: the same weights as one process with the same
global batch, an output that loads on one process, and a resume from sharded checkpoints after SIGKILL."""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT, run_train

# random order (not length-grouped: its mega-batches depend on the number of processes), so one process
# with batch 4 sees, step by step, the examples two processes with batch 2 see together; no bf16 autocast
# (mixed_precision = auto turns it on where the CPU has AVX512-BF16), whose rounding of a batch of 2
# against one of 4 would be compared instead of the sharding
QUICK = ["--train_data", "data/sample/sample_thoughts.jsonl", "--eval_data", "None", "--logging_steps", "4",
         "--group_by_length", "false", "--save_total_limit", "2", "--mixed_precision", "no"]


def train_cmd(model, out, *overrides, processes=2):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    return [sys.executable, *launcher, "-m", "train.train_sft", "tiny_cpu.py", "--model_id", str(model),
            "--output_dir", str(out), *QUICK, *map(str, overrides)]


def run(cmd):
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def sharded_and_single(tiny_mistral, tmp_path, *overrides):
    """(2-process FSDP run dir, 1-process run dir): 8 steps of a global batch of 4."""
    common = ["--max_steps", "8", "--max_train_examples", "32", "--save_steps", "4", *overrides]
    sharded, single = tmp_path / "fsdp", tmp_path / "single"
    log = run(train_cmd(tiny_mistral, sharded, "--fsdp", "full_shard", "--batch_size", "2", *common))
    assert "fsdp: FSDP2 on CPU processes over gloo" in log.stderr
    run(train_cmd(tiny_mistral, single, "--batch_size", "4", *common, processes=1))
    return sharded, single


def assert_sharded(sharded, single, rel=1e-4):
    shards = json.loads((sharded / "train_results.json").read_text())["rank_param_checksums"]
    whole = json.loads((single / "train_results.json").read_text())["rank_param_checksums"]
    assert len(shards) == 2 and shards[0] != shards[1]  # each rank held a different part of the weights
    assert sum(shards) == pytest.approx(whole[0], rel=rel)
    checkpoint = sharded / "checkpoint-4"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()
    assert not list(checkpoint.glob("*.safetensors"))  # sharded checkpoints, an ordinary final output


@pytest.mark.slow
def test_a_sharded_full_fine_tune_matches_one_process_and_reloads_on_one(tiny_mistral, tmp_path):
    from transformers import AutoModelForCausalLM
    sharded, single = sharded_and_single(tiny_mistral, tmp_path, "--use_lora", "false")
    assert_sharded(sharded, single)
    base = load_file(tiny_mistral / "model.safetensors")
    mine, theirs = load_file(sharded / "model.safetensors"), load_file(single / "model.safetensors")
    moved = max_difference({k: mine[k] for k in base}, base)
    # same data, order and seed; float sums in another order, which AdamW's first steps magnify a little
    assert max_difference(mine, theirs) < 0.02 * moved, (max_difference(mine, theirs), moved)
    reloaded = AutoModelForCausalLM.from_pretrained(sharded)
    for name, tensor in reloaded.state_dict().items():
        if name in mine:
            assert torch.equal(tensor, mine[name]), name


@pytest.mark.slow
def test_sharded_qlora_matches_one_process_and_saves_an_ordinary_adapter(tiny_mistral, tmp_path):
    # bitsandbytes' CPU backend: FSDP can shard the packed 4-bit weights once they are stored as bf16
    sharded, single = sharded_and_single(tiny_mistral, tmp_path, "--load_in_4bit", "true", "--torch_dtype", "bfloat16")
    assert_sharded(sharded, single, rel=0.1)
    losses = [[e["loss"] for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e]
              for run_dir in (sharded, single)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    mine = load_file(sharded / "adapter_model.safetensors")
    theirs = load_file(single / "adapter_model.safetensors")
    # bf16 matmuls summed in another order: further apart than float32, still the same training
    assert max_difference(mine, theirs) < 0.1 * max(t.abs().max().item() for t in theirs.values())
    # an ordinary adapter: it loads on one process onto the unquantized base
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_mistral), sharded)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)


def kill_tree(process) -> None:
    """SIGKILL torchrun and its workers at once, as a crashed node would go."""
    procs = [process, *process.children(recursive=True)]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.slow
def test_a_sharded_run_resumes_after_sigkill_with_the_same_weights(tiny_mistral, tmp_path):
    args = ["--use_lora", "false", "--fsdp", "full_shard", "--batch_size", "2", "--max_steps", "60",
            "--max_train_examples", "40", "--save_steps", "4", "--resume_from_checkpoint", "latest"]
    run(train_cmd(tiny_mistral, tmp_path / "straight", *args))
    out = tmp_path / "killed"
    launcher = psutil.Popen(train_cmd(tiny_mistral, out, *args), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "checkpoint-8" / "trainer_state.json").exists():
        time.sleep(0.02)
    kill_tree(launcher)
    assert not (out / "train_results.json").exists(), "the run finished before it could be killed"
    resumed = run(train_cmd(tiny_mistral, out, *args))
    assert "resume_from_checkpoint = latest" in resumed.stderr
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 60 and int(results["resumed_from"].rsplit("-", 1)[1]) in range(8, 60, 4)
    # the sharded model, optimizer, scheduler and data position all came back
    assert max_difference(load_file(out / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")) < 1e-5


def test_fsdp_outside_torchrun_or_with_rank0_evaluation_stops_before_loading(tiny_mistral, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    code, out = run_train(tiny_mistral, tmp_path / "alone", "--fsdp", "full_shard")
    assert code == 2 and "launch with torchrun" in capsys.readouterr().err and not out.exists()
    for flags, word in ((["--fsdp_cpu_offload", "true"], "set --fsdp full_shard"),
                        (["--fsdp", "full_shard", "--gen_eval_examples", "4"], "--gen_eval_examples 0"),
                        (["--fsdp", "zero3"], "must be one of none, full_shard, shard_grad_op")):
        code, _ = run_train(tiny_mistral, tmp_path / "bad", *flags)
        assert code == 2 and word in capsys.readouterr().err, flags


def test_fsdp_keys_become_the_trainers_fsdp2_settings():
    from dataclasses import replace

    from train.config_schema import TrainConfig
    from train.sharding import fsdp_arguments
    config = TrainConfig(fsdp="shard_grad_op", fsdp_cpu_offload=True, gradient_checkpointing=True)
    assert fsdp_arguments(config) == {"fsdp": True, "fsdp_config": {
        "version": 2, "reshard_after_forward": False, "state_dict_type": "SHARDED_STATE_DICT", "cpu_offload": True,
        "activation_checkpointing": True}}
    assert fsdp_arguments(replace(config, fsdp="full_shard"))["fsdp_config"]["reshard_after_forward"] is True
    assert fsdp_arguments(replace(config, fsdp="none")) == {}
