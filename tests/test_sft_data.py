import json

import pytest

from nli_finetune.data_io import DataError
from nli_finetune.modeling import load_tokenizer
from nli_finetune.sft_formats import detect_format
from prompts import TASKS, encode_prompt
from tests.conftest import REPO_ROOT
from train.sft_data import (
    IGNORE_INDEX,
    AnswerWindowCollator,
    PaddedCollator,
    PaddingFreeCollator,
    load_sft_examples,
    tokenize_example,
)

NLI = {"id": 1, "premise": "A man is sleeping.", "hypothesis": "A person rests.",
       "thought_process": "Step 1: sleeping is resting.", "predicted_label": 1}


@pytest.fixture(scope="module")
def tokenizers(tiny_models):
    return {arch: load_tokenizer(str(path)) for arch, path in tiny_models.items()}


def trained_part(example):
    return [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_loss_only_on_the_answer_and_its_eos(tokenizers):
    for arch, tok in tokenizers.items():
        ex = tokenize_example(tok, NLI, "nli", TASKS["nli"], 2048, "drop", "x")
        prompt = encode_prompt(tok, TASKS["nli"].messages(NLI))
        assert ex["input_ids"][:len(prompt)] == prompt, arch  # train/inference parity
        assert all(label == IGNORE_INDEX for label in ex["labels"][:len(prompt)])
        answer = trained_part(ex)
        assert answer == ex["input_ids"][len(prompt):]
        assert answer[-1] == tok.eos_token_id and answer.count(tok.eos_token_id) == 1
        assert json.loads(tok.decode(answer[:-1]))["predicted_label"] == 1
        assert tok.pad_token_id != tok.eos_token_id


@pytest.mark.parametrize("collator_name", ["padding_free", "padded", "answer_window"])
def test_collated_labels_contain_eos(tokenizers, collator_name):
    tok = tokenizers["mistral"]
    examples = [tokenize_example(tok, dict(NLI, thought_process=t), "nli", TASKS["nli"], 2048, "drop", "x")
                for t in ("short.", "a much longer line of reasoning that goes on.")]
    collator = {"padding_free": PaddingFreeCollator(), "padded": PaddedCollator(tok.pad_token_id),
                "answer_window": AnswerWindowCollator(tok.pad_token_id)}[collator_name]
    batch = collator(examples)
    labels = batch["labels"].flatten().tolist()
    assert labels.count(tok.eos_token_id) == 2
    n_trained = sum(len(trained_part(e)) for e in examples)
    assert sum(label != IGNORE_INDEX for label in labels) == n_trained
    if collator_name == "padding_free":
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        positions = batch["position_ids"][0].tolist()
        assert positions.count(0) == 2  # each example restarts its positions: no cross-example attention
    elif collator_name == "padded":
        assert tok.pad_token_id in batch["input_ids"][0].tolist()
        assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    else:  # left-padded: the shorter example's padding comes first, every answer ends at the last column
        assert batch["input_ids"][0, 0].item() == tok.pad_token_id
        assert batch["labels"][:, -1].tolist() == [tok.eos_token_id] * 2


def test_formats_agree_on_the_prompt(tokenizers):
    tok, nli = tokenizers["qwen2"], TASKS["nli"]
    user = nli.user_message(NLI)
    completion = nli.answer(1, NLI["thought_process"])
    records = {
        "record": NLI,
        "prompt_completion": {"prompt": [{"role": "user", "content": user}],
                              "completion": [{"role": "assistant", "content": completion}]},
        "messages": {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": completion}]},
        "prompt_response": {"prompt": user, "response": completion},
    }
    tokenized = {fmt: tokenize_example(tok, r, detect_format(r, nli), nli, 2048, "drop", fmt) for fmt, r in records.items()}
    assert {detect_format(r, nli) for r in records.values()} == set(records)
    first = tokenized["record"]
    for fmt, ex in tokenized.items():
        assert ex == first, fmt


def test_legacy_text_format_has_one_bos_and_no_literal_eos(tokenizers):
    tok = tokenizers["mistral"]
    record = json.loads((REPO_ROOT / "data/sample/sample_ft.jsonl").read_text().splitlines()[0])
    ex = tokenize_example(tok, record, "text", TASKS["nli"], 4096, "drop", "x")
    assert ex["input_ids"][0] == tok.bos_token_id and ex["input_ids"].count(tok.bos_token_id) == 1
    answer = tok.decode(trained_part(ex)[:-1])
    assert answer.startswith("{") and answer.endswith("}") and "</s>" not in answer
    assert json.loads(answer)["predicted_label"] in (0, 1)


def test_multi_turn_messages_train_every_assistant_turn(tokenizers):
    tok = tokenizers["llama"]
    record = {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
                           {"role": "assistant", "content": "6"}]}
    ex = tokenize_example(tok, record, "messages", TASKS["nli"], 2048, "drop", "x")
    assert trained_part(ex).count(tok.eos_token_id) == 2
    assert tok.decode(trained_part(ex), skip_special_tokens=True) == "46"


def test_overlong_examples_are_dropped_or_prompt_trimmed_never_cut_in_the_answer(tokenizers, tmp_path):
    tok = tokenizers["mistral"]
    long_premise = dict(NLI, premise="word " * 400)
    path = write_jsonl(tmp_path / "d.jsonl", [NLI, long_premise, NLI])
    examples, report = load_sft_examples(path, tok, task=TASKS["nli"], max_seq_length=200)
    assert len(examples) == 2 and report.dropped_too_long == 1 and "1 dropped" in report.line()
    trimmed = tokenize_example(tok, long_premise, "nli", TASKS["nli"], 200, "trim_prompt", "x")
    full = tokenize_example(tok, long_premise, "nli", TASKS["nli"], 4096, "drop", "x")
    assert len(trimmed["input_ids"]) == 200
    assert trained_part(trimmed) == trained_part(full)  # the whole answer survives


def test_bad_data_names_file_line_and_field(tokenizers, tmp_path):
    tok = tokenizers["mistral"]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(NLI) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2"):
        load_sft_examples(bad_json, tok, task=TASKS["nli"])
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [NLI, {"question": "q"}])
    with pytest.raises(DataError, match=r"unknown.jsonl: line 2: unrecognised"):
        load_sft_examples(unknown, tok, task=TASKS["nli"])
    no_answer = write_jsonl(tmp_path / "noanswer.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="no assistant turn"):
        load_sft_examples(no_answer, tok, task=TASKS["nli"])


def test_padding_free_batch_gives_the_same_loss_as_padded(tiny_mistral, tokenizers):
    """Flattened examples with restarting position_ids must not attend across examples: the per-token
    loss equals the padded batch's (the path flash-attention training takes on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = tokenizers["mistral"]
    model = AutoModelForCausalLM.from_pretrained(tiny_mistral, attn_implementation="sdpa").eval()
    examples = [tokenize_example(tok, dict(NLI, thought_process=t), "nli", TASKS["nli"], 2048, "drop", "x")
                for t in ("short.", "a much longer line of reasoning that goes on and on.", "medium length one.")]
    with torch.no_grad():
        flat = model(**PaddingFreeCollator()(examples)).loss
        padded = model(**PaddedCollator(tok.pad_token_id)(examples)).loss
    assert torch.allclose(flat, padded, atol=1e-5)


@pytest.mark.parametrize("arch", ["mistral", "llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_answer_window_batch_gives_the_same_loss_and_gradients_as_padded(tiny_models, tokenizers, arch, attn):
    """Left padding + logits only over the answer window: the loss and the gradients equal the
    right-padded full-logits batch's, and the window really is shorter than the batch."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = tokenizers[arch]
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], attn_implementation=attn)
    examples = [tokenize_example(tok, dict(NLI, premise=p, thought_process=t), "nli", TASKS["nli"], 2048, "drop", "x")
                for p, t in (("A short premise.", "short."), ("A much longer premise " * 6, "a longer line of reasoning."),
                             ("Medium premise here.", "medium length one."))]
    windowed_batch = AnswerWindowCollator(tok.pad_token_id)(examples)
    assert windowed_batch["logits_to_keep"] < windowed_batch["input_ids"].shape[1]
    losses, grads = [], []
    for batch in (PaddedCollator(tok.pad_token_id)(examples), windowed_batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.get_input_embeddings().weight.grad.clone())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("change,message", [
    ({"predicted_label": 2}, r"field 'predicted_label': 2 is not in the label set \[0, 1\]"),
    ({"predicted_label": -1}, "field 'predicted_label': -1 is not in the label set"),
    ({"predicted_label": "yes"}, "field 'predicted_label': 'yes' is not in the label set"),
    ({"predicted_label": None}, "field 'predicted_label': None is not in the label set"),
    ({"premise": None}, "missing field 'premise'"),
    ({"premise": ["a", "list"]}, "field 'premise' must be text, got list"),
    ({"hypothesis": "  "}, "missing field 'hypothesis'"),
    ({"thought_process": 42}, "field 'thought_process' must be text, got int"),
    ({"thought_process": ""}, "missing field 'thought_process'"),
])
def test_invalid_nli_records_are_errors_naming_line_and_field(tokenizers, tmp_path, change, message):
    data = write_jsonl(tmp_path / "nli.jsonl", [NLI, {**NLI, **change}])
    with pytest.raises(DataError, match=rf"nli.jsonl: line 2: {message}"):
        load_sft_examples(data, tokenizers["mistral"], task=TASKS["nli"])


def test_empty_assistant_answers_are_errors_in_every_chat_format(tokenizers, tmp_path):
    user = {"role": "user", "content": "hi"}
    for name, record in {"messages": {"messages": [user, {"role": "assistant", "content": " "}]},
                         "completion": {"prompt": [user], "completion": [{"role": "assistant", "content": ""}]},
                         "response": {"prompt": "hi", "response": ""}}.items():
        data = write_jsonl(tmp_path / f"{name}.jsonl", [record])
        with pytest.raises(DataError, match=rf"{name}.jsonl: line 1: .*(empty|non-empty)"):
            load_sft_examples(data, tokenizers["mistral"], task=TASKS["nli"])


def test_invalid_examples_can_be_skipped_and_counted(tokenizers, tmp_path):
    data = write_jsonl(tmp_path / "mixed.jsonl", [NLI, {**NLI, "predicted_label": 2}, NLI, {**NLI, "premise": None}])
    examples, report = load_sft_examples(data, tokenizers["mistral"], task=TASKS["nli"], invalid="skip")
    assert len(examples) == 2 and report.skipped_invalid == 2
    assert "2 invalid skipped (first: " in report.line() and "line 2" in report.line()
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [{**NLI, "predicted_label": 7}])
    with pytest.raises(DataError, match="no valid example"):
        load_sft_examples(only_bad, tokenizers["mistral"], task=TASKS["nli"], invalid="skip")


def test_label_only_task_trains_the_short_answer(tokenizers):
    tok = tokenizers["llama"]
    example = tokenize_example(tok, {"premise": "p", "hypothesis": "h", "label": "1"}, "nli", TASKS["nli_label"], 512,
                               "drop", "x")
    assert tok.decode(trained_part(example), skip_special_tokens=True) == '{"predicted_label": 1}'


def test_the_boolq_task_is_one_instance_its_rows_train_and_evaluate(tokenizers, tmp_path):
    """The third classification task: the confidence data's yes/no questions (a JSON object of rows
    whose gold label is a boolean), with nothing but its Task in prompts.py and train/configs/boolq.py."""
    from nli_finetune.eval_inputs import load_eval_items
    from nli_finetune.extraction import extract_label
    from nli_finetune.sft_formats import detect_format, example_segments
    boolq = TASKS["boolq"]
    rows = {"0": {"question": "is the sun a star", "correct_answer": True, "response": "No", "correct": False},
            "1": {"question": "can fish fly", "correct_answer": False, "response": "Yes", "correct": False}}
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps(rows))
    assert boolq.messages(rows["0"]) == [{"role": "user", "content": 'Question: is the sun a star?\n'
                                          'Answer {"answer": "yes"} or {"answer": "no"}.'}]
    assert boolq.normalize_label(True) == "yes" and boolq.normalize_label("No.") == "no"
    assert boolq.normalize_label(1) is None  # a boolean gold label is a label, a number is not
    assert extract_label('{"answer": "no"}', boolq) == ("no", "json")
    assert boolq.answer_schema()["properties"]["answer"]["enum"] == ["yes", "no"]
    tok = tokenizers["qwen2"]
    items, labelled = load_eval_items(path, tok, boolq)
    assert labelled and [item.true_label for item in items] == ["yes", "no"]
    assert detect_format(rows["0"], boolq) == "record" and detect_format(rows["0"], TASKS["nli"]) is None
    segments = example_segments(tok, rows["1"], "record", boolq, "row 1")
    trained = [ids for ids, is_trained in segments if is_trained]
    assert tok.decode(trained[0], skip_special_tokens=True) == '{"answer": "no"}'
    assert segments[0][0] == encode_prompt(tok, boolq.messages(rows["1"]))


def test_one_format_detector_serves_training_evaluation_and_combine_datasets(tokenizers):
    """question/answer rows (the statistics Q&A data) are an SFT format of their own, found by the same
    detector combine_datasets.py uses; a number answer is its text."""
    from scripts import combine_datasets
    tok = tokenizers["llama"]
    row = {"question": "What is the median of 1, 2, 9?", "answer": 2}
    assert detect_format(row, TASKS["nli"]) == "question_answer" and detect_format(row, TASKS["boolq"]) == "record"
    example = tokenize_example(tok, row, "question_answer", TASKS["free_text"], 256, "drop", "row 1")
    assert tok.decode(trained_part(example), skip_special_tokens=True) == "2"
    assert combine_datasets.to_messages(row, "auto", "row 1", None)[-1] == {"role": "assistant", "content": "2"}
    assert not hasattr(combine_datasets, "detect")
    with pytest.raises(DataError, match="'question' \\(text\\) and 'answer' are required"):
        tokenize_example(tok, {"question": "q", "answer": ""}, "question_answer", TASKS["free_text"], 256, "drop", "row 2")
