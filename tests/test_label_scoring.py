"""Labels scored with probabilities (label_scoring.py, `sample_model --scoring logprob`)."""

import json
import math

import pytest

from tests.conftest import REPO_ROOT

DEV = REPO_ROOT / "data/sample/dev_300.csv"


def hand_probs(model, tokenizer, prompt: list[int], answers: list[str]) -> list[float]:
    """Each answer run on its own after the prompt, no padding, log-probs summed from the full logits."""
    import torch
    totals = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        totals.append(sum(log_probs[len(prompt) - 1 + j, token].item() for j, token in enumerate(ids)))
    norm = max(totals) + math.log(sum(math.exp(t - max(totals)) for t in totals))
    return [math.exp(t - norm) for t in totals]


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
@pytest.mark.parametrize("task_name", ["nli_label", "hate_speech"])
@pytest.mark.parametrize("tokens_per_forward", [1, 10**6])  # a forward per row / the whole batch, padded
def test_scored_probabilities_sum_to_one_and_equal_a_hand_computation(tiny_models, arch, task_name,
                                                                      tokens_per_forward, monkeypatch):
    from nli_finetune import label_scoring
    from nli_finetune.label_scoring import score_labels
    monkeypatch.setattr(label_scoring, "SCORE_TOKENS", tokens_per_forward)
    from nli_finetune.modeling import load_for_inference
    from prompts import encode_prompt, get_task

    model, tokenizer, _ = load_for_inference(str(tiny_models[arch]), device="cpu", load_in_4bit=False,
                                             dtype="float32")
    task = get_task(task_name)
    rows = [{"premise": "A man sleeps.", "hypothesis": "Someone rests.", "text": "hello there"},
            {"premise": "Two dogs run through a long field of grass on a sunny day in the park.",
             "hypothesis": "Cats sleep.", "text": "a much longer text than the first one, so the batch pads it"}]
    prompts = [encode_prompt(tokenizer, task.messages(row)) for row in rows]
    assert len(prompts[0]) != len(prompts[1])  # the batch is padded
    reasonings = ["Step 1. The premise says so.", "Short."] if task.reasoning_field else None
    scored = score_labels(model, tokenizer, prompts, task, reasonings=reasonings)
    for index, (prompt, probs) in enumerate(zip(prompts, scored)):
        assert set(probs) == {str(label) for label in task.labels}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        answers = [task.answer(label, reasonings[index] if reasonings else None) for label in task.labels]
        expected = hand_probs(model, tokenizer, prompt, answers)
        assert [probs[str(label)] for label in task.labels] == pytest.approx(expected, abs=1e-5)


def test_forward_chunks_group_the_shortest_rows_within_the_token_budget():
    from nli_finetune.label_scoring import forward_chunks
    # lengths by index: 0:100, 1:30, 2:60, 3:50, 4:300; sorted 1, 3, 2, 0, 4
    assert forward_chunks([100, 30, 60, 50, 300], 200) == [[1, 3, 2], [0], [4]]  # 3 x 60 <= 200 < 2 x 100
    assert forward_chunks([100, 30], 10) == [[1], [0]]  # a row longer than the budget still gets a forward
    assert forward_chunks([], 512) == []


def test_roc_auc_and_probability_metrics_by_hand():
    from nli_finetune.metrics import probability_metrics, roc_auc
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [False, True]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([0.1, 0.2], [True, True]) is None
    probs = [{"0": 0.9, "1": 0.1}, {"0": 0.2, "1": 0.8}, {"0": 0.6, "1": 0.4}]
    m = probability_metrics([0, 1, 1], probs, [0, 1])
    # confidences 0.9, 0.8, 0.6; right, right, wrong: Brier = (0.01 + 0.04 + 0.36) / 3
    assert m["brier"] == pytest.approx(0.41 / 3)
    assert m["roc_auc"] == pytest.approx(1.0)  # p(1): 0.1 for the 0, 0.8 and 0.4 for the 1s


def run_sample(model, out, *extra):
    from evaluate.sample_model import main
    return main(["--model_id", str(model), "--test_file", str(DEV), "--limit", "6", "--batch_size", "4",
                 "--max_new_tokens", "12", "--output_file", str(out), "--quiet", *map(str, extra)])


def test_sample_model_logprob_writes_probabilities_calibration_and_a_diagram(tiny_mistral, tmp_path):
    out = tmp_path / "scored.json"
    assert run_sample(tiny_mistral, out, "--task", "nli_label", "--scoring", "logprob") == 0
    result = json.loads(out.read_text())
    assert result["settings"]["scoring"] == "logprob"
    for record in result["records"]:
        assert sum(record["label_probs"].values()) == pytest.approx(1.0, abs=1e-6)
        assert record["predicted_label"] == max((0, 1), key=lambda label: record["label_probs"][str(label)])
        assert record["extraction_method"] == "logprob"
    metrics = result["metrics"]
    assert metrics["parse_rate"] == 1.0
    for key in ("ece", "brier", "roc_auc"):
        assert key in metrics
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in result["records"]) / 6)
    assert (tmp_path / "scored.reliability.png").read_bytes().startswith(b"\x89PNG")


def test_chain_of_thought_labels_are_scored_after_the_generated_reasoning(tiny_mistral, tmp_path):
    out = tmp_path / "cot.json"
    assert run_sample(tiny_mistral, out, "--task", "nli", "--scoring", "logprob") == 0
    records = json.loads(out.read_text())["records"]
    assert all(r["generated_tokens"] > 0 and r["stop_reason"] != "scored" for r in records)  # reasoning generated
    assert all(r["extraction_method"] == "logprob" and r["predicted_label"] in (0, 1) for r in records)


# LOW: a prompt whose scored answer runs past the model's context was scored anyway: a confident prediction
# with only a warning on stderr. Now it is recorded as not scored: no label_probs, no label (like an answer
# generation could not finish), stop_reason "length" and the reason; the metrics count it.
@pytest.mark.parametrize("task, context, over, scored", [("nli_label", 100, [2, 4, 5], [0, 1, 3]),
                                                        ("nli", 110, [5], [0])])
def test_low_a_prompt_past_the_context_is_recorded_as_not_scored(tiny_mistral, tmp_path, capsys, task, context,
                                                                  over, scored):
    import shutil
    model = shutil.copytree(tiny_mistral, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"max_position_embeddings": context}))
    out = tmp_path / "scored.json"
    assert run_sample(model, out, "--task", task, "--scoring", "logprob") == 0
    assert "reach the model's context" in capsys.readouterr().err
    result = json.loads(out.read_text())
    records = result["records"]
    for index in over:
        record = records[index]
        assert "label_probs" not in record and record["predicted_label"] is None and record["correct"] is False
        assert record["stop_reason"] == "length" and record["extraction_method"] == "over_context"
        assert f"the model's context of {context} tokens" in record["over_context"]
    for index in scored:
        assert "label_probs" in records[index] and "over_context" not in records[index]
    n_over = sum("over_context" in r for r in records)  # a generated reasoning may push more past the context
    assert n_over == len(over) or (task == "nli" and n_over >= len(over))
    metrics = result["metrics"]
    assert metrics["over_context"] == n_over and metrics["parse_rate"] == pytest.approx(1 - n_over / 6)
    assert "ece" in metrics  # over the examples that were scored
    assert (tmp_path / "scored.reliability.png").is_file()


def test_resume_refuses_a_changed_scoring(tiny_mistral, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert run_sample(tiny_mistral, out, "--task", "nli_label") == 0
    assert run_sample(tiny_mistral, out, "--task", "nli_label", "--scoring", "logprob") == 2
    assert "scoring" in capsys.readouterr().err
    assert json.loads(out.read_text())["settings"]["scoring"] == "generate"  # the first run's outputs are kept
    assert run_sample(tiny_mistral, out, "--task", "nli_label", "--scoring", "logprob", "--restart") == 0


def test_logprob_scoring_is_refused_where_it_cannot_work(tmp_path, capsys):
    from evaluate.sample_model import main
    assert main(["--model_id", "x", "--test_file", str(DEV), "--task", "free_text", "--scoring", "logprob",
                 "--output_file", str(tmp_path / "o.json")]) == 2
    assert "--scoring logprob" in capsys.readouterr().err


def test_training_time_generation_eval_logs_scored_labels(tiny_mistral):
    from types import SimpleNamespace

    from nli_finetune.modeling import load_for_inference
    from prompts import TASKS
    from train.gen_eval import GenerationEvalCallback

    model, tokenizer, _ = load_for_inference(str(tiny_mistral), device="cpu", load_in_4bit=False, dtype="float32")
    callback = GenerationEvalCallback(tokenizer, DEV, TASKS["nli"], n_examples=4, max_new_tokens=8, batch_size=4)
    state = SimpleNamespace(is_world_process_zero=True, global_step=3, log_history=[])
    callback.on_evaluate(None, state, None, model=model)
    logged = state.log_history[-1]
    assert 0 <= logged["eval_gen_scored_accuracy"] <= 1 and 0 <= logged["eval_gen_ece"] <= 1
    assert logged["eval_gen_parse_rate"] < 1  # the untrained model's generated answers don't parse; scored ones do
