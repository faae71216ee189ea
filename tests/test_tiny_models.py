import hashlib

import torch
from tokenizers import Tokenizer

from nli_finetune.modeling import load_for_inference, load_tokenizer
from prompts import TASKS, encode_prompt
from scripts.make_tiny_model import make_tiny_model

PROBE = 'Premise: a cat sat.\nHypothesis: {"thought_process": "step 1", "predicted_label": 1}'


def test_all_three_architectures_reload_offline_and_generate(tiny_models):
    for arch, path in tiny_models.items():
        model, tokenizer, info = load_for_inference(str(path), device="cpu")
        assert model.config.model_type == arch and not info["adapter"]
        assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
        # ids match the tokenizer trained and saved by make_tiny_model (the qwen2 pitfall)
        saved = Tokenizer.from_file(str(path / "tokenizer.json")).encode(PROBE, add_special_tokens=False).ids
        assert tokenizer(PROBE, add_special_tokens=False)["input_ids"] == saved, arch
        ids = torch.tensor([encode_prompt(tokenizer, TASKS["nli"].messages({"premise": "a", "hypothesis": "b"}))])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
        assert out.shape[1] > ids.shape[1]
        assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_build_is_deterministic_for_a_seed(tmp_path):
    def digest(path):
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    a = make_tiny_model("llama", tmp_path / "a", seed=3)
    b = make_tiny_model("llama", tmp_path / "b", seed=3)
    c = make_tiny_model("llama", tmp_path / "c", seed=4)
    assert digest(a) == digest(b) != digest(c)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_chat_templates_put_bos_once(tiny_models):
    for arch, path in tiny_models.items():
        tokenizer = load_tokenizer(str(path))
        ids = encode_prompt(tokenizer, [{"role": "user", "content": "hello"}])
        if tokenizer.bos_token_id is not None:
            assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1, arch


def test_head_size_is_an_option_for_vllm_cpu(tmp_path):
    import json
    path = make_tiny_model("qwen2", tmp_path / "q", hidden_size=128, head_dim=32)
    config = json.loads((path / "config.json").read_text())
    assert (config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]) == (32, 4, 2)
    model, _, _ = load_for_inference(str(path), device="cpu")
    assert model.model.layers[0].self_attn.q_proj.out_features == 128
