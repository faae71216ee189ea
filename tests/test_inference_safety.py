"""Issue #22's inference, data-file and shard defects: every one is refused or handled before it costs
anything, and nothing a run reads (test file, model, base, converted GGUF folder) is ever written."""

import csv
import json
import shutil

import pytest

from evaluate.merge_shards import main as merge_main
from evaluate.sample_model import main as sample_main
from nli_finetune.data_io import DataError, check_outputs, read_records
from nli_finetune.eval_inputs import load_eval_items
from prompts import TASKS
from tests.conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "data/sample/sample.csv"


def infer(model, data, out, *extra):
    return sample_main(["--model_id", str(model), "--test_file", str(data), "--output_file", str(out),
                        "--max_new_tokens", "4", "--quiet", *map(str, extra)])


@pytest.fixture
def model_copy(tiny_mistral, tmp_path):
    return shutil.copytree(tiny_mistral, tmp_path / "model")


# H4: --output_file <model folder>/config.json overwrote the model's own file (exit 0)
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors", "generation_config.json"])
def test_an_output_never_overwrites_or_adds_a_model_file(model_copy, tmp_path, capsys, name):
    target = model_copy / name
    before = target.read_bytes() if target.exists() else None
    assert infer(model_copy, SAMPLE, target, "--limit", "2") == 2
    assert "model" in capsys.readouterr().err
    assert (target.read_bytes() if target.exists() else None) == before


def test_the_adapters_base_and_a_converted_gguf_folder_are_inputs_too(trained_adapter, model_copy, tmp_path,
                                                                     monkeypatch, capsys):
    adapter = shutil.copytree(trained_adapter, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path=str(model_copy))))
    base_config = (model_copy / "config.json").read_bytes()
    assert infer(adapter, SAMPLE, model_copy / "config.json", "--limit", "2") == 2
    assert (model_copy / "config.json").read_bytes() == base_config
    assert "is part of the model" in capsys.readouterr().err

    from nli_finetune import gguf_convert
    monkeypatch.setenv(gguf_convert.CONVERTED_DIR_ENV, str(tmp_path / "converted"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    converted = shutil.copytree(model_copy, tmp_path / "converted" / "m")
    assert infer(gguf, SAMPLE, converted / "config.json", "--limit", "2") == 2
    assert (converted / "config.json").read_bytes() == base_config
    assert f"a file of that name is part of the model in {converted}" in capsys.readouterr().err


# M7: an output saved inside the model folder changed the model's fingerprint: the rerun was refused
def test_an_output_inside_the_model_folder_does_not_change_its_fingerprint(model_copy, capsys):
    from nli_finetune.modeling import model_fingerprint
    before = model_fingerprint(model_copy)
    out = model_copy / "eval" / "dev.json"
    assert infer(model_copy, SAMPLE, out, "--limit", "2") == 0
    assert infer(model_copy, SAMPLE, model_copy / "dev.json", "--limit", "2") == 0
    assert model_fingerprint(model_copy) == before
    capsys.readouterr()
    assert infer(model_copy, SAMPLE, out, "--limit", "2") == 0  # the same command again: resumed, not refused
    assert "resuming: 2 done, 0 to go" in capsys.readouterr().err
    (model_copy / "config.json").write_text((model_copy / "config.json").read_text().replace("2048", "1024"))
    assert model_fingerprint(model_copy) != before  # the model's own files still count


def _shard(model, data, tmp_path, name, index, count, *extra):
    out = tmp_path / f"{name}.shard-{index}-of-{count}.json"
    assert infer(model, data, out, "--shard", f"{index}/{count}", *extra) == 0
    return str(out)


# H7: merge_shards merged shards of two runs and overlapping shards (80 records for 60 ids)
def test_merge_refuses_shards_of_other_runs_and_overlapping_ids(tiny_mistral, tmp_path, capsys):
    other = tmp_path / "other.csv"
    rows = list(csv.reader(open(SAMPLE, encoding="utf-8-sig")))[:5]
    rows[3][0] = "an edited premise"
    with open(other, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    a0 = _shard(tiny_mistral, SAMPLE, tmp_path, "a", 0, 2, "--limit", "4")
    a1 = _shard(tiny_mistral, SAMPLE, tmp_path, "a", 1, 2, "--limit", "4")
    b1 = _shard(tiny_mistral, other, tmp_path, "b", 1, 2, "--limit", "4", "--output_csv", tmp_path / "b1.csv")
    c1 = _shard(tiny_mistral, SAMPLE, tmp_path, "c", 1, 2, "--limit", "4", "--max_new_tokens", "3")
    assert merge_main([a0, a1, "--output", str(tmp_path / "ok.json")]) == 0
    capsys.readouterr()
    b1_same_name = json.loads(open(b1).read())
    b1_same_name["settings"]["test_file"] = str(SAMPLE)  # the same name, other content: the fingerprint tells
    (tmp_path / "b1x.json").write_text(json.dumps(b1_same_name))
    for shards, message in [([a0, b1], "test_file"), ([a0, str(tmp_path / "b1x.json")], "fingerprint of the test file"),
                            ([a0, c1], "max_new_tokens")]:
        assert merge_main(shards + ["--output", str(tmp_path / "m.json")]) == 2
        assert "different runs" in (err := capsys.readouterr().err) and message in err
    # given shard 1 first, the message still names each file with its own shard (it named them swapped)
    assert merge_main([c1, a0, "--output", str(tmp_path / "m.json")]) == 2
    assert f"{c1} and {a0} are shards of different runs" in capsys.readouterr().err
    overlapping = json.loads(open(a1).read())
    overlapping["records"][0]["id"] = json.loads(open(a0).read())["records"][0]["id"]
    (tmp_path / "a1x.json").write_text(json.dumps(overlapping))
    assert merge_main([a0, str(tmp_path / "a1x.json"), "--output", str(tmp_path / "m.json")]) == 2
    assert "more than one shard" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


# M14: --shard 3/4 on 3 rows gave a ZeroDivisionError after the model loaded
def test_an_empty_shard_is_refused_before_the_model_loads(tiny_mistral, tmp_path, capsys, monkeypatch):
    import evaluate.sample_model as sample_model
    monkeypatch.setattr(sample_model, "load_backend", lambda *a: pytest.fail("the model was loaded"))
    assert infer(tiny_mistral, SAMPLE, tmp_path / "o.json", "--limit", "3", "--shard", "3/4") == 2
    assert "this shard is empty (3 rows for 4 shards)" in capsys.readouterr().err


# M10: a lone surrogate crashed append_jsonl after the request was paid for
@pytest.mark.parametrize("suffix,content", [
    (".jsonl", '{"premise": "a", "hypothesis": "ok"}\n{"premise": "b\\ud800", "hypothesis": "c"}\n'),
    (".json", '[{"premise": "a", "hypothesis": "ok"}, {"premise": "b\\ud800", "hypothesis": "c"}]'),
])
def test_a_lone_surrogate_is_refused_at_load_time_naming_row_and_field(tmp_path, suffix, content):
    path = tmp_path / f"in{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=r"(line|row) 2: field 'premise': a lone surrogate"):
        read_records(path)
    path.write_text(content.replace("\\ud800", "\\ud83d\\ude00"))  # a surrogate pair is an emoji: fine
    assert read_records(path)[1]["premise"] == "b\U0001F600"


PARTS = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Premise: a. "},
                                                   {"type": "text", "text": "Hypothesis: b."}]},
                      {"role": "assistant", "content": [{"type": "text", "text": '{"predicted_label": 1}'}]}]}
PLAIN = {"messages": [{"role": "user", "content": "Premise: a. Hypothesis: b."},
                      {"role": "assistant", "content": '{"predicted_label": 1}'}]}


# M9: content as a list of text parts gave tracebacks, and the API backend sent the list as is
def test_chat_content_parts_are_joined_for_training_inference_and_the_api(tiny_mistral, tmp_path):
    from nli_finetune.modeling import load_tokenizer
    from nli_finetune.sft_formats import example_segments
    tokenizer = load_tokenizer(str(tiny_mistral))
    for name, record in (("parts", PARTS), ("plain", PLAIN)):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    api_items, _ = load_eval_items(tmp_path / "parts.jsonl", None, TASKS["nli"])
    assert api_items[0].messages == PLAIN["messages"][:1] and api_items[0].true_label == 1
    local = [load_eval_items(tmp_path / f"{name}.jsonl", tokenizer, TASKS["nli"])[0][0] for name in ("parts", "plain")]
    assert local[0].prompt_ids == local[1].prompt_ids and local[0].true_label == 1
    assert example_segments(tokenizer, PARTS, "messages", TASKS["nli"], "x") == \
        example_segments(tokenizer, PLAIN, "messages", TASKS["nli"], "x")


@pytest.mark.parametrize("message,error", [
    ({"content": "no role"}, "messages[0]: field 'role'"),
    ({"role": "user"}, "messages[0]: field 'content'"),
    ({"role": "user", "content": {"text": "a dict"}}, "messages[0]: field 'content'"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}, "messages[0]: field 'content'"),
])
def test_a_bad_message_is_an_error_naming_it(tiny_mistral, tmp_path, message, error):
    from nli_finetune.modeling import load_tokenizer
    from nli_finetune.sft_formats import example_segments
    record = {"messages": [message, PLAIN["messages"][1]]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n")
    tokenizer = load_tokenizer(str(tiny_mistral))
    for load in (lambda: load_eval_items(path, None, TASKS["nli"]), lambda: load_eval_items(path, tokenizer, TASKS["nli"]),
                 lambda: example_segments(tokenizer, record, "messages", TASKS["nli"], "row 1")):
        with pytest.raises(DataError, match=error.replace("[", r"\[").replace("]", r"\]")):
            load()


def test_labels_are_read_strictly_and_errors_name_the_real_field(tmp_path):
    chat = tmp_path / "chat.jsonl"
    answer = {"role": "assistant", "content": '{"predicted_label": "0 or 1"}'}
    chat.write_text(json.dumps({"messages": [PLAIN["messages"][0], answer]}) + "\n")
    with pytest.raises(DataError, match=r"row 1: field 'messages\[1\]\.content'.*no valid 'predicted_label'"):
        load_eval_items(chat, None, TASKS["nli"])  # was: silently "unlabelled"
    boolq = tmp_path / "boolq.jsonl"
    boolq.write_text('{"question": "a", "correct_answer": "yes"}\n{"question": "b"}\n')
    with pytest.raises(DataError, match="row 2: field 'correct_answer' is missing"):
        load_eval_items(boolq, None, TASKS["boolq"])  # was: "field 'label'", which boolq rows don't have
    as_csv = tmp_path / "labels.csv"
    as_csv.write_text("premise,hypothesis,label\na,b,1.0\nc,d,0\n")
    items, labelled = load_eval_items(as_csv, None, TASKS["nli"])
    assert labelled and [item.true_label for item in items] == [1, 0]  # CSV "1.0" as JSON's 1.0


def test_an_object_of_records_keeps_its_keys_as_ids(tmp_path):
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps({"0": {"question": "a"}, "3": {"question": "b"}, "7": {"id": "own", "question": "c"}}))
    assert [r["id"] for r in read_records(path)] == ["0", "3", "own"]


def test_a_dangling_symlink_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "missing")
    with pytest.raises(DataError, match="symlink to a missing"):
        check_outputs({}, {"--output_file": tmp_path / "out" / "r.json"})


def test_a_prompt_longer_than_the_context_is_counted_and_warned(model_copy, tmp_path, capsys):
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=32)))
    assert infer(model_copy, SAMPLE, tmp_path / "o.json", "--limit", "2", "--max_new_tokens", "1") == 0
    assert "warning: 2 prompt(s) reach the model's context of 32 tokens" in capsys.readouterr().err


# M13: `correct_answer: "maybe"` was scored as wrong instead of refused
@pytest.mark.parametrize("row,error", [
    ({"question": "q", "correct_answer": "maybe", "dataset": "boolq"}, "'maybe' is not yes, no, true or false"),
    ({"question": "q", "correct_answer": "Z", "dataset": "medqa"}, "'Z' is not an option letter A-E"),
])
def test_a_correct_answer_outside_the_rule_is_refused(tiny_mistral, tmp_path, row, error):
    from nli_finetune.confidence_tokens import DEFAULT_DATASETS, load_items
    from nli_finetune.modeling import load_tokenizer
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps({"question": "p", "correct_answer": True, "dataset": "boolq"}) + "\n"
                    + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"row 2: field 'correct_answer': {error}"):
        load_items(path, load_tokenizer(str(tiny_mistral)), DEFAULT_DATASETS, None)
