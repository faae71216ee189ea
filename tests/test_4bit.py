"""4-bit (bitsandbytes NF4) on the CPU: it must really train, also after an eval pass."""

import json

import pytest
import torch

from nli_finetune.modeling import can_load_4bit, load_model
from tests.conftest import run_train

pytestmark = pytest.mark.skipif(not can_load_4bit("cpu")[0], reason="bitsandbytes has no CPU 4-bit backend here")
IDS = torch.tensor([[1, 20, 30, 40, 50, 60, 70, 80]])


def lora_gradients(model_dir, eval_pass_first: bool, keep_cpu_repack: bool = False) -> dict:
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    model = load_model(str(model_dir), device="cpu", load_in_4bit=True, compute_dtype="bfloat16")
    if keep_cpu_repack:  # bitsandbytes' own default on AVX512-BF16 CPUs, which load_model switches off
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = True
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                             target_modules=["q_proj", "v_proj", "down_proj"]))
    if eval_pass_first:
        model.eval()
        with torch.no_grad():
            model(IDS)
    model.train()
    model(IDS, labels=IDS).loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters() if p.requires_grad}


def test_lora_gradients_after_an_eval_pass_match_the_reference(tiny_mistral):
    reference = lora_gradients(tiny_mistral, eval_pass_first=False)
    after_eval = lora_gradients(tiny_mistral, eval_pass_first=True)
    assert reference and all(g is not None for g in reference.values())
    for name, grad in reference.items():
        assert after_eval[name] is not None and torch.allclose(grad, after_eval[name]), name


def test_the_check_detects_bitsandbytes_cpu_repack_when_left_on(tiny_mistral):
    from bitsandbytes.nn.modules import has_avx512bf16
    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks")
    reference = lora_gradients(tiny_mistral, eval_pass_first=False)
    broken = lora_gradients(tiny_mistral, eval_pass_first=True, keep_cpu_repack=True)
    differs = [n for n, g in reference.items() if broken[n] is None or not torch.allclose(g, broken[n])]
    assert differs, "with the repack left on, gradients should come out wrong (that is the bug we guard)"


def test_train_sft_in_4bit_on_cpu_with_eval_between_steps(tiny_mistral, tmp_path):
    code, out = run_train(tiny_mistral, tmp_path / "q", "--load_in_4bit", "true", "--max_steps", "4",
                          "--eval_data", "data/sample/sample_thoughts.jsonl", "--max_eval_examples", "4",
                          "--eval_steps", "2", "--save_steps", "2")
    assert code == 0
    results = json.loads((out / "train_results.json").read_text())
    assert results["load_in_4bit"] is True and results["global_step"] == 4
