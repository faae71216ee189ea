"""Confidence tokens: calibration metrics, parsing and judging, single-position masking, training."""

import json
import math

import pytest
import torch

from nli_finetune.calibration import (
    adaptive_bins,
    brier_score,
    calibration_error,
    calibration_report,
    expected_calibration_error,
)
from nli_finetune.confidence_tokens import judge_option_letter, judge_yes_no, two_way_p
from prompts import TASKS
from scripts.prepare_confidence_data import main as prepare_confidence
from tests.conftest import run_train, shared_file
from train.sft_data import IGNORE_INDEX, tokenize_example

TOKENS = '{"READ": ["<C_READ>", "<U_READ>"], "MED": ["<C_MED>", "<U_MED>"]}'


@pytest.mark.parametrize("p", ["1", "2", "infty"])
def test_the_issue_example_is_0_4_in_every_norm(p):
    assert calibration_error([0.9] * 100, [1, 0] * 50, p=p, beta=100) == pytest.approx(0.4)


def test_n_below_beta_is_one_bin_not_zero_or_an_error():
    # the original skipped the last bin, so every run with n <= beta scored 0
    assert calibration_error([0.8] * 10, [1] * 5 + [0] * 5, p="2", beta=100) == pytest.approx(0.3)
    assert len(adaptive_bins([0.5] * 10, [1] * 10, beta=100)) == 1


def test_remainder_joins_the_last_bin_and_bins_are_weighted_by_size():
    # 250 points, beta 100 -> bins of 100 and 150 (sorted by confidence)
    confidence = [0.2] * 100 + [0.7] * 150
    correct = [0] * 100 + [1] * 150  # gaps: 0.2 (size 100) and 0.3 (size 150)
    bins = adaptive_bins(confidence, correct, beta=100)
    assert [b["size"] for b in bins] == [100, 150]
    assert calibration_error(confidence, correct, "1", 100) == pytest.approx((100 * 0.2 + 150 * 0.3) / 250)
    assert calibration_error(confidence, correct, "2", 100) == pytest.approx(math.sqrt((100 * 0.04 + 150 * 0.09) / 250))
    assert calibration_error(confidence, correct, "infty", 100) == pytest.approx(0.3)


def test_ece_and_brier_on_hand_computed_cases():
    # equal-width bins: 0.15 (bin 1) correct 0 of 2 -> gap .15 ; 0.95 (bin 9) correct 1 of 2 -> gap .45
    confidence, correct = [0.15, 0.15, 0.95, 0.95], [0, 0, 1, 0]
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.15 + 0.5 * 0.45)
    assert brier_score(confidence, correct) == pytest.approx((0.0225 * 2 + 0.0025 + 0.9025) / 4)
    assert expected_calibration_error([1.0], [1]) == 0.0
    with pytest.raises(ValueError):
        calibration_error([0.5], [1], p="3")
    report = calibration_report(confidence, correct, beta=2)
    assert set(report) >= {"l1", "l2", "infty", "ece", "brier", "bins"}


def test_correctness_rules_and_two_way_softmax():
    assert judge_yes_no("Yes\n\nExplanation: ...", "True") and judge_yes_no("no, it is not", "false")
    assert not judge_yes_no("No\n\nExplanation", "True") and not judge_yes_no("It depends.", "True")
    assert judge_option_letter("The answer is (C) because ...", "C") and judge_option_letter("B. Aspirin", "B")
    assert not judge_option_letter("The answer is A", "C") and not judge_option_letter("unsure", "C")
    logits = torch.zeros(10)
    logits[3], logits[7] = 2.0, 0.0
    assert two_way_p(logits, 3, 7) == pytest.approx(1 / (1 + math.exp(-2)))
    assert two_way_p(torch.zeros(10), 3, 7) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def confidence_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("confidence")
    assert prepare_confidence(["--tagged", str(shared_file("confidence/qwen_tagged_1k.jsonl")), "--incorrect",
                               str(shared_file("confidence/mistral_boolq_incorrect.json")), "--out-dir", str(out)]) == 0
    lines = (out / "train.jsonl").read_text().splitlines()
    short = [line for line in lines if len(json.loads(line)["tagged_response"]) < 600][:48]
    (out / "train_small.jsonl").write_text("\n".join(short) + "\n")
    (out / "eval_small.jsonl").write_text("\n".join(short[:8]) + "\n")
    return out


def test_exactly_one_position_carries_a_label_and_it_is_the_confidence_token(tiny_mistral):
    from nli_finetune.modeling import load_tokenizer
    tok = load_tokenizer(str(tiny_mistral))
    tok.add_special_tokens({"additional_special_tokens": ["<C_READ>", "<U_READ>"]}, replace_extra_special_tokens=False)
    record = {"question": "is the sky blue", "passage": "The sky is blue.", "dataset": "boolq",
              "tagged_response": "Yes, it is. <U_READ>\n"}
    example = tokenize_example(tok, record, "confidence", TASKS["nli"], 2048, "drop", "x")
    labelled = [(i, t) for i, t in enumerate(example["labels"]) if t != IGNORE_INDEX]
    assert len(labelled) == 1 and labelled[0][1] == tok.convert_tokens_to_ids("<U_READ>")
    assert example["input_ids"][labelled[0][0]] == labelled[0][1]
    assert "Passage: The sky is blue." in tok.decode(example["input_ids"])  # the context stays in the prompt


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])  # untied and tied embeddings
def test_tokens_train_on_both_sides_and_reload_without_size_mismatch(tiny_models, confidence_data, tmp_path, arch):
    from nli_finetune.modeling import load_for_inference
    code, out = run_train(tiny_models[arch], tmp_path / arch, "--confidence_tokens", TOKENS, "--max_steps", "8",
                          "--learning_rate", "1e-2", train_data=confidence_data / "train_small.jsonl")
    assert code == 0
    model, tok, _ = load_for_inference(str(out), device="cpu")  # raises on any size mismatch
    c_id, u_id = tok.convert_tokens_to_ids(["<C_READ>", "<U_READ>"])
    with torch.no_grad():
        ids = torch.tensor([[tok.bos_token_id or 0, 10, 20, 30]])
        logits = model(ids).logits[0, -1]
        assert not torch.isclose(logits[c_id], logits[u_id])  # the original's stayed identical (p = 0.5)
    from safetensors.torch import load_file
    saved = load_file(out / "adapter_model.safetensors")
    sides = {("embed_tokens" if "embed_tokens" in k else "lm_head") for k in saved if "token_adapter" in k}
    assert sides == {"embed_tokens", "lm_head"}  # untied: two deltas; tied: PEFT saves the tied copy too


@pytest.mark.slow
def test_end_to_end_run_writes_best_checkpoints_reliability_json_and_diagram(tiny_models, confidence_data, tmp_path):
    val = confidence_data / "val_small.jsonl"
    val.write_text("\n".join((confidence_data / "val.jsonl").read_text().splitlines()[:6]) + "\n")
    code, out = run_train(tiny_models["qwen2"], tmp_path / "run", "--confidence_tokens", TOKENS,
                          "--confidence_datasets", '{"boolq": "READ"}', "--confidence_eval_data", f"['{val}']",
                          "--confidence_eval_examples", "6", "--eval_data", confidence_data / "eval_small.jsonl",
                          "--eval_steps", "4", "--save_steps", "4", "--max_steps", "8",
                          train_data=confidence_data / "train_small.jsonl")
    assert code == 0
    for name in ("best_accuracy", "best_calibration"):
        assert (out / name / "adapter_config.json").exists()
    reports = sorted(out.glob("reliability_step_*.json"))
    assert [p.name for p in reports] == ["reliability_step_4.json", "reliability_step_8.json"]
    report = json.loads(reports[-1].read_text())
    metrics = report["sets"][str(val)]
    assert metrics["n"] == 6 and 0 <= metrics["val_accuracy"] <= 1 and "l2" in metrics["calibration"]
    assert metrics["token_missing"] <= 6
    assert reports[-1].with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    from evaluate.confidence import main as confidence_main
    result = tmp_path / "results" / "conf.json"  # a folder that doesn't exist yet, as in a fresh clone
    assert confidence_main(["--model_id", str(out), "--eval_data", str(val), "--output", str(result),
                            "--max_new_tokens", "16"]) == 0
    offline = json.loads(result.read_text())[str(val)]["metrics"]
    assert offline["n"] == 6 and 0 <= offline["mean_p_confident"] <= 1
    assert result.with_name(f"conf-{val.stem}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("spare_rows", [0, 8])  # 8: like Qwen, the matrix already has unused rows
def test_new_token_rows_start_at_the_mean_of_the_existing_rows(tiny_mistral, spare_rows):
    from transformers import AutoModelForCausalLM

    from nli_finetune.modeling import load_tokenizer
    from train.train_sft import grow_embeddings, register_special_tokens
    tok = load_tokenizer(str(tiny_mistral))
    model = AutoModelForCausalLM.from_pretrained(tiny_mistral)
    if spare_rows:
        model.resize_token_embeddings(len(tok) + spare_rows)
    rows_before = model.get_input_embeddings().weight.shape[0]
    mean = model.get_input_embeddings().weight[:len(tok)].mean(dim=0)
    new_ids = register_special_tokens(tok, ["<C_READ>", "<U_READ>"])
    grow_embeddings(model, tok, new_ids)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == max(rows_before, len(tok))
    assert torch.allclose(weight[new_ids[0]], mean, atol=1e-6) and torch.allclose(weight[new_ids[1]], mean, atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight[new_ids[0]],
                          model.get_output_embeddings().weight[:new_ids[0]].mean(dim=0), atol=1e-6)
