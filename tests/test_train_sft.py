import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT, run_train


def test_short_run_changes_lora_weights_only(trained_adapter, tiny_mistral):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prompts import get_task
    from train.sft_data import load_sft_examples

    base = AutoModelForCausalLM.from_pretrained(tiny_mistral)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_mistral), trained_adapter)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: it moved
    for name, tensor in tuned.get_base_model().state_dict().items():
        clean = name.replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(tensor, reference[clean]), name
    results = json.loads((trained_adapter / "train_results.json").read_text())
    assert results["global_step"] == 12 and results["train_samples"] == 32
    # what the steps consumed (issue 44; the study's tokens_trained): 12 steps of 4 examples, one and a half
    # epochs of the 32, at the data's answer tokens per example
    assert results["examples_seen"] == 48
    assert results["answer_tokens_seen"] == round(48 * results["trained_tokens_per_epoch"] / 32)
    # and what they cost (issue 42, the study's compute axis): every token of those 48 examples, prompt and
    # answer, at the data's mean tokenized length; every parameter, base and adapter; 6 x the two
    saved_config = json.loads((trained_adapter / "training_config.json").read_text())
    examples, _ = load_sft_examples(REPO_ROOT / "data/sample/sample_thoughts.jsonl",
                                    AutoTokenizer.from_pretrained(trained_adapter), task=get_task(saved_config["task"]),
                                    max_seq_length=saved_config["max_seq_length"], limit=32)
    assert results["tokens_seen"] == round(48 * sum(len(ex["input_ids"]) for ex in examples) / 32)
    assert results["tokens_seen"] > results["answer_tokens_seen"]
    assert results["model_parameters"] == sum(p.numel() for p in tuned.parameters())
    assert results["train_flops"] == 6 * results["model_parameters"] * results["tokens_seen"]
    # what really ran, for gpu_check to judge (issue #41): the attention of the loaded model and the
    # optimizer's state (AdamW's two float32 moments per LoRA tensor here; uint8 under paged_adamw_8bit)
    assert results["attn_implementation"] in ("sdpa", "eager")
    state = results["optimizer_state"]
    assert state["class"] == "AdamW" and state["dtypes"] == ["float32"] and state["paged"] == 0
    assert state["state_tensors"] == 2 * sum("lora_" in k for k in adapter_state_keys(trained_adapter))
    assert saved_config["max_steps"] == 12 and saved_config["lora_r"] == 16
    adapter_weights = load_file(trained_adapter / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter_weights)


def test_issue44_examples_seen_counts_every_batch_a_step_accumulates(tiny_mistral, tmp_path):
    code, out = run_train(tiny_mistral, tmp_path / "run", "--max_steps", "3", "--grad_accumulation_steps", "2",
                          "--max_train_examples", "16", "--save_steps", "100")
    assert code == 0
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 3 and results["train_samples"] == 16
    assert results["examples_seen"] == 3 * 4 * 2  # steps x per-device batch x accumulation (one process)
    assert results["answer_tokens_seen"] == round(24 * results["trained_tokens_per_epoch"] / 16) > 0


def test_issue42_a_4bit_weight_counts_its_elements_not_its_bytes():
    bnb = pytest.importorskip("bitsandbytes")
    from train.train_sft import parameter_count
    layer = bnb.nn.Linear4bit(64, 32, quant_type="nf4").to("cpu")  # quantized on the move: 2 elements a byte
    assert layer.weight.numel() == 32 * 64 // 2
    assert parameter_count(layer) == 32 * 64 + 32  # the weight's elements and the bias


def adapter_state_keys(adapter_dir):
    return list(load_file(adapter_dir / "adapter_model.safetensors"))


def test_outputs_never_contain_secrets(tiny_mistral, tmp_path, monkeypatch):
    canary = "hf_CANARYtoken0123456789"
    monkeypatch.setenv("HF_TOKEN", canary)
    monkeypatch.setenv("WANDB_API_KEY", canary + "w")
    code, out = run_train(tiny_mistral, tmp_path / "run", "--max_steps", "2", "--wandb_run_name", f"x{canary}")
    assert code == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert canary.encode() not in path.read_bytes(), path


def test_clear_errors_and_exit_codes(tiny_mistral, tmp_path, capsys):
    code, _ = run_train(tiny_mistral, tmp_path / "a", train_data=tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"premise": "p", "hypothesis": "h", "thought_process": "t", "predicted_label": 1}\n{\n')
    code, _ = run_train(tiny_mistral, tmp_path / "b", train_data=bad)
    assert code == 2 and "bad.jsonl: line 2" in capsys.readouterr().err
    code, _ = run_train(tmp_path / "no_model", tmp_path / "c")
    assert code == 2 and "model dir not found" in capsys.readouterr().err
    code, _ = run_train(tiny_mistral, tmp_path / "d", "--optimizer", "paged_adamw_8bit")
    assert code == 2 and "needs CUDA" in capsys.readouterr().err


def test_merged_model_and_full_finetune(tiny_mistral, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    code, out = run_train(tiny_mistral, tmp_path / "merge", "--max_steps", "3", "--merge_adapter", "true")
    assert code == 0
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.dtype == torch.bfloat16
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_mistral, dtype=torch.bfloat16), out)
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():  # equal up to bf16 rounding of the merged weights
        gap = (merged(ids).logits.float() - adapter(ids).logits.float()).abs().mean()
    assert gap < 0.05

    code, full = run_train(tiny_mistral, tmp_path / "full", "--max_steps", "3", "--use_lora", "false")
    assert code == 0 and (full / "model.safetensors").exists() and not (full / "adapter_config.json").exists()


def test_hub_push_without_network_fails_after_training_keeping_outputs(tiny_mistral, tmp_path, capsys):
    code, out = run_train(tiny_mistral, tmp_path / "hub", "--max_steps", "2", "--hub_model_id", "someone/tiny")
    assert code == 1
    assert "push to the hub" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").exists() and (out / "train_results.json").exists()


def test_eval_early_stopping_and_generation_eval(tiny_mistral, tmp_path):
    data = REPO_ROOT / "data/sample/sample_thoughts.jsonl"
    code, out = run_train(tiny_mistral, tmp_path / "eval", "--eval_data", data, "--max_eval_examples", "8",
                          "--eval_steps", "6", "--gen_eval_examples", "4", "--gen_eval_max_new_tokens", "16",
                          "--early_stopping_patience", "2")
    assert code == 0
    history = json.loads((out / "log_history.json").read_text())
    assert [h["step"] for h in history if "eval_loss" in h][:2] == [6, 12]
    gen = [h for h in history if "eval_gen_parse_rate" in h]
    assert len(gen) >= 2 and all(0 <= h["eval_gen_accuracy"] <= 1 for h in gen)
    results = json.loads((out / "train_results.json").read_text())
    assert results["best_checkpoint"] and results["eval_loss"] is not None


def _train_cmd(model, out):
    return [sys.executable, "-m", "train.train_sft", "tiny_cpu.py", "--model_id", str(model), "--output_dir", str(out),
            "--train_data", "data/sample/sample_thoughts.jsonl", "--eval_data", "None", "--max_steps", "40",
            "--batch_size", "2", "--save_steps", "5", "--save_total_limit", "2", "--logging_steps", "5",
            "--max_train_examples", "40", "--resume_from_checkpoint", "latest"]


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_last_checkpoint(tiny_mistral, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = subprocess.run(_train_cmd(tiny_mistral, tmp_path / "straight"), cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tiny_mistral, out), cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-15").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "train_results.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_train_cmd(tiny_mistral, out), cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 40 and int(results["resumed_from"].rsplit("-", 1)[1]) in range(10, 40, 5)
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    for key in a:  # same data order, optimizer and scheduler state: the same weights as an uninterrupted run
        assert torch.allclose(a[key], b[key], atol=1e-5), key


@pytest.mark.slow
def test_two_process_ddp_on_cpu_ends_with_identical_weights(tiny_mistral, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "train.train_sft", "tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(out),
           "--train_data", "data/sample/sample_thoughts.jsonl", "--eval_data", "None", "--max_steps", "6",
           "--batch_size", "2", "--max_train_examples", "24", "--save_steps", "100"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["world_size"] == 2
    assert results["examples_seen"] == 6 * 2 * 2  # steps x per-device batch x the two processes
    first, second = results["rank_param_checksums"]
    assert first == second and first != 0


def test_a_finished_run_leaves_the_process_group_and_a_failed_one_does_not(tmp_path, monkeypatch):
    # gloo threads left running at exit abort a rank now and then (seen in CI); a finished run waits for
    # every rank before it leaves; a failed run must not touch the group, since another rank may still
    # be inside a collective
    import torch.distributed as dist

    from train import train_sft
    calls = []

    def recorded(name):
        real = getattr(dist, name)

        def call(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return call
    for name in ("barrier", "destroy_process_group"):
        monkeypatch.setattr(dist, name, recorded(name))
    results = {"global_step": 1, "train_runtime_s": 0.0, "train_loss": 1.0, "eval_loss": None,
               "train_samples": 1, "dropped_too_long": {"train": 0}}
    for fails, left in ((False, True), (True, False)):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{fails}'}", rank=0, world_size=1)
        try:
            def fake_train(config, fails=fails):
                assert dist.is_initialized()
                if fails:
                    raise train_sft.TrainError("boom")
                return results
            monkeypatch.setattr(train_sft, "train", fake_train)
            code = train_sft.main(["tiny_cpu.py", "--output_dir", str(tmp_path / "out")])
            assert code == (2 if fails else 0)
            assert dist.is_initialized() is not left
            assert calls == (["barrier", "destroy_process_group"] if left else [])
            calls.clear()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


def test_tensorboard_reporting_writes_event_files(tiny_mistral, tmp_path):
    code, out = run_train(tiny_mistral, tmp_path / "tb", "--max_steps", "2", "--logging_steps", "1",
                          "--report_to", "tensorboard")
    assert code == 0
    assert list(out.rglob("events.out.tfevents.*"))
    code, _ = run_train(tiny_mistral, tmp_path / "bad", "--report_to", "mlflow")
    assert code == 2


def test_an_added_pad_token_resizes_and_the_adapter_reloads(tiny_models, tmp_path, monkeypatch):
    from nli_finetune import modeling
    from nli_finetune.modeling import load_for_inference
    bare = tmp_path / "no_pad_model"
    import shutil
    shutil.copytree(tiny_models["llama"], bare)  # its vocabulary has no "<pad>"
    config_path = bare / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["pad_token"] = None
    config_path.write_text(json.dumps(config))
    monkeypatch.setattr(modeling, "SPARE_PAD_TOKENS", [])  # no spare token to reuse: one must be added
    code, out = run_train(bare, tmp_path / "run", "--max_steps", "2")
    assert code == 0
    model, tokenizer, _ = load_for_inference(str(out), device="cpu")
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 2048  # a new row
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 2049


def test_wandb_offline_needs_no_network(tiny_mistral, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    canary = "hf_CANARYtoken0123456789"
    monkeypatch.setenv("HF_TOKEN", canary)  # and pasted into the command line by mistake:
    monkeypatch.setattr("sys.argv", ["train_sft.py", "--wandb_run_name", f"run-{canary}"])
    code, out = run_train(tiny_mistral, tmp_path / "wb", "--max_steps", "2", "--logging_steps", "1", "--use_wandb", "true",
                          "--wandb_run_name", f"run-{canary}")
    assert code == 0
    runs = list(tmp_path.glob("wandb/offline-run-*"))
    assert runs
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert canary.encode() not in path.read_bytes(), path


def test_attention_is_never_requested_blindly():
    from nli_finetune.modeling import ModelLoadError, pick_attn_implementation
    assert pick_attn_implementation("auto", "cpu")[0] == "sdpa"
    assert pick_attn_implementation("eager", "cpu")[0] == "eager"
    with pytest.raises(ModelLoadError, match="flash"):
        pick_attn_implementation("flash_attention_2", "cpu")


@pytest.mark.parametrize("installed,offline,expected", [
    ({"flash_attn", "kernels"}, "1", ("flash_attention_2", "flash-attn package")),
    ({"kernels"}, "0", ("kernels-community/flash-attn2", "hub kernel")),
    ({"kernels"}, "1", ("sdpa", "auto: no flash-attn package and no hub kernel access")),
    (set(), "0", ("sdpa", "auto: no flash-attn package and no hub kernel access")),
])
def test_cuda_attention_comes_from_the_package_then_the_hub_kernel_then_sdpa(monkeypatch, installed, offline, expected):
    import importlib.util

    from nli_finetune import modeling
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in installed else
                        (None if name in ("flash_attn", "kernels") else real_find_spec(name, *a)))
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(modeling, "installed_version", lambda name: "0.18.3")  # inside transformers' window
    assert modeling.pick_attn_implementation("auto", "cuda") == expected
    if "flash_attn" not in installed and offline == "1":
        with pytest.raises(modeling.ModelLoadError, match="neither the flash-attn package"):
            modeling.pick_attn_implementation("flash_attention_2", "cuda")


def test_a_hub_kernel_that_cannot_be_fetched_falls_back_to_sdpa_and_says_so(caplog):
    import types

    from nli_finetune import modeling
    class FakeModel:
        @staticmethod
        def from_pretrained(model_id, **kwargs):
            if kwargs["attn_implementation"] == modeling.HUB_FLASH_KERNEL:
                raise OSError("no build of kernels-community/flash-attn2 for this torch")
            return types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation=kwargs["attn_implementation"]))

    with caplog.at_level("INFO", logger="modeling"):
        model = modeling._from_pretrained_with_attention(
            FakeModel, "m", {"attn_implementation": modeling.HUB_FLASH_KERNEL}, "hub kernel")
    assert model.config._attn_implementation == "sdpa"
    assert "falling back to sdpa" in caplog.text and "attention: sdpa (fallback)" in caplog.text


def test_a_run_that_fails_before_training_writes_nothing(tiny_mistral, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args, message in [((), "no examples"), (("--resume_from_checkpoint", str(tmp_path / "gone")),
                                                 "checkpoint dir not found")]:
        out = tmp_path / f"out{len(args)}"
        code, _ = run_train(tiny_mistral, out, *args, train_data=empty if not args else None)
        assert code == 2 and message in capsys.readouterr().err
        assert not out.exists()  # no training_config.json left behind
    code, _ = run_train(tmp_path / "missing_model", tmp_path / "out9")
    assert code == 2 and not (tmp_path / "out9").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _ = run_train(tiny_mistral, a_file)
    assert code == 2 and "is a file, not a folder" in capsys.readouterr().err and a_file.read_text() == "x"


def test_a_gguf_whose_architecture_transformers_cannot_load_exits_2_naming_it(tmp_path, capsys):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "mamba9")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from scripts.convert_gguf import main as convert
    assert convert([str(path), "--cache-dir", str(tmp_path / "converted")]) == 2
    err = capsys.readouterr().err
    assert "odd.gguf" in err and "architecture 'mamba9'" in err
    assert not (tmp_path / "converted" / "odd").exists() and not list((tmp_path / "converted").glob(".odd*"))
    code, _ = run_train(path, tmp_path / "run")
    assert code == 2 and "mamba9" in capsys.readouterr().err and not (tmp_path / "run").exists()
    precious = tmp_path / "converted" / "odd"  # a folder of the user's, not a conversion: never replaced
    precious.mkdir(parents=True)
    (precious / "weights.bin").write_text("mine")
    assert convert([str(path), "--cache-dir", str(tmp_path / "converted")]) == 2
    assert "was not made from a GGUF file" in capsys.readouterr().err and (precious / "weights.bin").exists()
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all")
    assert convert([str(garbage), "--cache-dir", str(tmp_path / "converted")]) == 2
    assert "garbage.gguf: not a readable GGUF file" in capsys.readouterr().err


def test_the_boolq_config_trains_from_a_json_object_of_raw_rows(tiny_mistral, tmp_path):
    from train.config_loader import load_config
    config = load_config(["boolq.py"])  # the third task's config: its own task, data and CPU recipe
    assert config.task == "boolq" and config.max_train_examples == 912
    rows = {str(i): {"question": f"is {i} even", "correct_answer": i % 2 == 0} for i in range(16)}
    data = tmp_path / "boolq.json"
    data.write_text(json.dumps(rows))
    code, out = run_train(tiny_mistral, tmp_path / "run", "--task", "boolq", "--max_steps", "2", train_data=data)
    assert code == 0
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_samples"] == 16 and results["global_step"] == 2


def test_auto_mixed_precision_uses_bf16_on_a_cpu_only_where_it_is_native(monkeypatch):
    """Emulated CPU bfloat16 made a 200-step run take hours instead of minutes on an AVX2-only machine."""
    import train.train_sft as train_sft
    from train.run_config import load_run_config
    config = load_run_config(["--config", "smollm2_cpu.py"])
    assert config.mixed_precision == "auto" and config.torch_dtype == "float32"
    for native in (True, False):
        monkeypatch.setattr(train_sft, "cpu_has_native_bf16", lambda native=native: native)
        assert train_sft.training_arguments(config, "cpu", n_train=8, has_eval=False).bf16 is native
    gpu = load_run_config(["--config", "default.py", "--mixed_precision", "auto", "--torch_dtype", "bfloat16"])
    assert train_sft.autocast_pays_off(gpu, "cuda")
    import dataclasses
    assert not train_sft.autocast_pays_off(dataclasses.replace(gpu, torch_dtype="float32", load_in_4bit=False), "cuda")


@pytest.mark.parametrize("flags, strategy", [([], "group_by_length"), (["--no_group_by_length"], "random"),
                                             (["--no_shuffle", "--no_group_by_length"], "sequential")])
def test_shuffle_false_trains_the_rows_in_the_files_order(flags, strategy):
    """A curriculum (prepare_ft_data --rationales-first) only holds if the Trainer keeps the file's order."""
    from transformers import Trainer

    import train.train_sft as train_sft
    from train.run_config import load_run_config
    config = load_run_config(["--config", "smollm2_cpu.py", *flags])
    args = train_sft.training_arguments(config, "cpu", n_train=40, has_eval=False)
    assert args.train_sampling_strategy == strategy
    rows = [{"input_ids": [1] * (1 + i % 7)} for i in range(40)]
    order = list(Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=rows)._get_train_sampler())
    assert sorted(order) == list(range(40)) and (order == list(range(40))) is (strategy == "sequential")


def test_init_adapter_goes_on_training_the_given_adapter_and_refuses_another_shape(trained_adapter, tiny_mistral,
                                                                                  tmp_path, capsys):
    start = load_file(trained_adapter / "adapter_model.safetensors")
    code, out = run_train(tiny_mistral, tmp_path / "next", "--init_adapter", trained_adapter, "--max_steps", "1",
                          "--learning_rate", "1e-9")
    assert code == 0
    after = load_file(out / "adapter_model.safetensors")
    assert after.keys() == start.keys()
    lora_b = [k for k in start if "lora_B" in k]
    assert lora_b and all(start[k].abs().sum() > 0 for k in lora_b)  # a fresh adapter's lora_B is zero
    for key in start:  # one step at lr 1e-9: the trained weights came through
        assert torch.allclose(after[key], start[key], atol=1e-6), key
    assert json.loads((out / "training_config.json").read_text())["init_adapter"] == str(trained_adapter)

    code, _ = run_train(tiny_mistral, tmp_path / "wrong_rank", "--init_adapter", trained_adapter, "--lora_r", "8")
    err = capsys.readouterr().err
    assert code == 2 and "lora_r = 16" in err and "--lora_r" in err
    assert not (tmp_path / "wrong_rank" / "adapter_model.safetensors").exists()
    code, _ = run_train(tiny_mistral, tmp_path / "none", "--init_adapter", tmp_path)
    assert code == 2 and "holds no LoRA adapter" in capsys.readouterr().err


@pytest.mark.parametrize("kernels_version,usable", [("0.17.2", False), ("0.18.2", True), ("0.18.3", True),
                                                   ("0.19.1", False)])
def test_a_kernels_outside_transformers_window_is_not_offered(monkeypatch, kernels_version, usable):
    """kernels 0.17.2 was locked while transformers takes only >=0.18.2,<0.19: every CUDA run fell back to SDPA
    while the plan said "hub kernel" (issue #41, item 1)."""
    import importlib.util

    from nli_finetune import modeling
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "kernels" else
                        (None if name == "flash_attn" else real_find_spec(name, *a)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(modeling, "installed_version", lambda name: kernels_version)
    assert modeling.hub_kernels_usable() is usable
    if not usable:
        assert f"kernels {kernels_version} is outside transformers' window" in modeling.hub_kernel_problem()
        assert modeling.pick_attn_implementation("auto", "cuda")[0] == "sdpa"


def _copy_adapter(adapter, folder):
    import shutil
    shutil.copytree(adapter, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    return folder


@pytest.mark.parametrize("layout", ["same", "checkpoint_inside", "output_inside"])
def test_h3_an_init_adapter_that_output_dir_is_holds_or_lies_in_is_refused(trained_adapter, tiny_mistral, tmp_path,
                                                                           capsys, layout):
    """The starting adapter is an input: `--output_dir A` would overwrite it, `out/checkpoint-4` would be
    rotated away by save_total_limit, and an output inside it would change it."""
    out = tmp_path / "out"
    adapter = {"same": out, "checkpoint_inside": out / "checkpoint-4", "output_inside": tmp_path / "adapter"}[layout]
    _copy_adapter(trained_adapter, adapter)
    start = (adapter / "adapter_model.safetensors").read_bytes()
    if layout == "output_inside":
        out = adapter / "run"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _ = run_train(tiny_mistral, out, "--init_adapter", adapter, "--save_total_limit", "1")
    err = capsys.readouterr().err
    assert code == 2 and "init_adapter" in err and str(adapter) in err and "--output_dir" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (adapter / "adapter_model.safetensors").read_bytes() == start
    from train.preflight import make_plan
    from train.run_config import load_run_config
    plan = make_plan(load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(out),
                                      "--init_adapter", str(adapter)]), {"dry_run": True})
    assert any("init_adapter folder" in problem for problem in plan.problems), plan.problems


def test_m2_a_second_run_into_the_same_output_dir_is_refused_at_once(tiny_mistral, tmp_path, capsys):
    """Two runs into one output_dir left one run's training_config.json beside the other's adapter."""
    from nli_finetune.job_runner import output_lock
    out = tmp_path / "run"
    with output_lock(out.resolve()):  # the first run, still training
        started = time.time()
        code, _ = run_train(tiny_mistral, out, "--max_steps", "1")
        err = capsys.readouterr().err
        assert code == 2 and "another run is writing it now" in err and str(out) in err, err
        assert time.time() - started < 30 and not out.exists()  # refused before loading or writing anything
        from train.preflight import make_plan
        from train.run_config import load_run_config
        config = load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(out)])
        plan = make_plan(config, {"dry_run": True})
        assert any("another run is writing it now" in problem for problem in plan.problems), plan.problems
    assert not any("another run" in problem for problem in make_plan(config, {"dry_run": True}).problems)
    assert not list(tmp_path.glob("*.lock"))  # the preflight's probe creates nothing
    code, _ = run_train(tiny_mistral, out, "--max_steps", "1")  # once it ended, a run goes ahead
    assert code == 0 and (out / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.lock"))  # the lock goes with the run


@pytest.fixture(scope="module")
def narrow_base(tmp_path_factory):
    """A base like tiny_mistral but 32 wide: an adapter of the 64-wide one does not fit it."""
    from scripts.make_tiny_model import make_tiny_model
    return make_tiny_model("mistral", tmp_path_factory.mktemp("narrow") / "tiny-narrow", hidden_size=32)


def _plan_problems(model, out, *argv):
    from train.preflight import make_plan
    from train.run_config import load_run_config
    config = load_run_config(["tiny_cpu.py", "--model_id", str(model), "--output_dir", str(out),
                              "--train_data", str(REPO_ROOT / "data/sample/sample_thoughts.jsonl"),
                              *map(str, argv)])
    return make_plan(config, {"dry_run": True, "gpu_memory_gb": 80}).problems


def test_m3_the_preflight_and_training_refuse_an_init_adapter_of_another_rank_or_base(
        trained_adapter, tiny_mistral, narrow_base, tmp_path, capsys):
    """--dry_run said "ready" for these; training then exited 2 (rank) or died on a size-mismatch traceback
    (another base: hidden size, vocabulary). Both now see the same check, and training names it in one line."""
    from safetensors.torch import save_file
    other_vocab = tmp_path / "other_vocab"  # an adapter whose run saved its (resized) embedding rows
    other_vocab.mkdir()
    for name in ("adapter_config.json",):
        (other_vocab / name).write_text((trained_adapter / name).read_text())
    weights = load_file(trained_adapter / "adapter_model.safetensors")
    weights["base_model.model.model.embed_tokens.weight"] = torch.zeros(1024, 64)
    save_file(weights, other_vocab / "adapter_model.safetensors")
    # another base is caught twice (M1: the adapter's contract records its base), and training names the first
    cases = [(tiny_mistral, trained_adapter, ["--lora_r", "8"], "lora_r = 16", "lora_r = 16"),
             (narrow_base, trained_adapter, [], "hidden size", "was trained on the base"),
             (tiny_mistral, other_vocab, [], "vocabulary", "vocabulary")]
    for model, adapter, extra, message, training_says in cases:
        problems = _plan_problems(model, tmp_path / "planned", "--init_adapter", adapter, *extra)
        assert any(message in problem and str(adapter) in problem for problem in problems), (message, problems)
        out = tmp_path / f"run-{message.split()[0]}"
        code, _ = run_train(model, out, "--init_adapter", adapter, "--max_steps", "1", *extra)
        err = capsys.readouterr().err
        assert code == 2 and training_says in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and not out.exists(), err
    assert not _plan_problems(tiny_mistral, tmp_path / "planned", "--init_adapter", trained_adapter)


def test_low_resuming_with_another_max_steps_is_refused_naming_both(tiny_mistral, tmp_path, capsys):
    """A checkpoint of a 6-step cosine run resumed with --max_steps 12 ran a schedule that matched neither
    run (the rate laid out over 6 steps, stretched mid-way to 12)."""
    out = tmp_path / "run"
    code, _ = run_train(tiny_mistral, out, "--max_steps", "6", "--save_steps", "6")
    assert code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for resume in ("latest", out / "checkpoint-6"):
        code, _ = run_train(tiny_mistral, out, "--max_steps", "12", "--resume_from_checkpoint", resume)
        err = capsys.readouterr().err
        assert code == 2 and "max_steps = 6" in err and "max_steps = 12" in err and "--max_steps 6" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing trained or written
    from train.preflight import make_plan
    from train.run_config import load_run_config
    plan = make_plan(load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(out),
                                      "--train_data", str(REPO_ROOT / "data/sample/sample_thoughts.jsonl"),
                                      "--eval_data", "None", "--max_train_examples", "32", "--batch_size", "4",
                                      "--learning_rate", "3e-3", "--max_steps", "12",
                                      "--resume_from_checkpoint", "latest"]), {"dry_run": True})
    assert any("max_steps = 6" in problem for problem in plan.problems), plan.problems
    code, _ = run_train(tiny_mistral, out, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    assert code == 0  # the same schedule resumes (here: nothing left to do)


def test_m3_a_misfit_the_early_check_cannot_see_is_one_line_too(trained_adapter, narrow_base, tmp_path, capsys,
                                                                monkeypatch):
    """A hub base not in the cache has no shape to check before loading: peft's size mismatch is then
    still one line, exit 2, not a traceback."""
    import train.run_config as run_config
    import train.train_sft as train_sft
    monkeypatch.setattr(train_sft, "init_adapter_problems", lambda config, tokenizer=None: [])
    monkeypatch.setattr(run_config, "init_adapter_base_problem", lambda config: None)  # M1's contract check too
    code, _ = run_train(narrow_base, tmp_path / "run", "--init_adapter", trained_adapter, "--max_steps", "1")
    err = capsys.readouterr().err
    assert code == 2 and "does not fit model_id" in err and "size mismatch" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
