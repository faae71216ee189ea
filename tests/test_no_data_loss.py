"""Hostile-user cases (issue: lose no data, guess no label): colliding paths, bad values, partial writes."""

import json
import os
import stat

import pytest

from evaluate.merge_shards import main as merge
from evaluate.parse_predictions import main as parse
from evaluate.sample_model import main as sample_main
from nli_finetune.data_io import DataError, atomic_write_json, check_outputs, read_csv, read_jsonl
from prompts import TASKS
from scripts.combine_datasets import main as combine
from scripts.prepare_confidence_data import main as prepare_confidence
from scripts.prepare_finetuning_data import main as prepare_chat
from scripts.prepare_ft_data import main as prepare
from scripts.split_dataset import main as split
from tests.conftest import REPO_ROOT, shared_file

THOUGHTS = REPO_ROOT / "data/sample/sample_thoughts.jsonl"


def test_check_outputs_catches_inputs_links_duplicates_and_unwritable_places(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    hard = tmp_path / "hard.jsonl"
    os.link(data, hard)
    for outputs, message in [({"--out": data}, "same file as input"), ({"--out": hard}, "same file as input"),
                             ({"--a": tmp_path / "x", "--b": tmp_path / "./x"}, "choose distinct output paths"),
                             ({"--out": tmp_path}, "is a folder"), ({"--out": data / "below"}, "is a file, not a folder")]:
        with pytest.raises(DataError, match=message):
            check_outputs({"input": data}, outputs)
    check_outputs({"input": data}, {"--out": tmp_path / "new" / "deeper" / "o.jsonl", "--none": None})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folders_are_refused_up_front(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(DataError, match="not writable"):
        check_outputs({}, {"--out": locked / "o.json"})


def test_atomic_writes_respect_the_umask_and_keep_a_replaced_files_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = atomic_write_json(tmp_path / "fresh.json", {})
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        atomic_write_json(kept, {"a": 1})
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_csv_rows_with_extra_fields_are_errors_and_long_fields_are_read(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("premise,hypothesis,label\na,b,1\nc, with a comma,d,0\n")
    with pytest.raises(DataError, match=r"bad.csv: row 2: 4 fields but the header has 3"):
        read_csv(bad)
    long = tmp_path / "long.csv"
    long.write_text('premise,hypothesis,label\n"' + "x" * 200_000 + '",h,1\n')
    assert len(read_csv(long)[0]["premise"]) == 200_000


@pytest.mark.parametrize("args", [["--output1", "same.jsonl", "--output2", "same.jsonl"]])
def test_split_refuses_colliding_outputs(tmp_path, capsys, args):
    source = tmp_path / "in.jsonl"
    source.write_text('{"a": 1}\n{"a": 2}\n')
    assert split([str(source), *[str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]]) == 2
    assert "choose distinct output paths" in capsys.readouterr().err and not (tmp_path / "same.jsonl").exists()


def test_prepare_ft_data_refuses_collisions_and_bad_holdouts(tmp_path, capsys):
    base = ["--ablation", "1", "--original-thoughts", str(THOUGHTS)]
    out = tmp_path / "train.jsonl"
    assert prepare([*base, "--output-file", str(out), "--holdout", "5", "--holdout-file", str(out)]) == 2
    assert "choose distinct output paths" in capsys.readouterr().err
    copy = tmp_path / "thoughts.jsonl"
    copy.write_text(THOUGHTS.read_text())
    assert prepare(["--ablation", "1", "--original-thoughts", str(copy), "--output-file", str(copy)]) == 2
    assert copy.read_text() == THOUGHTS.read_text()
    for holdout, message in [("-0.2", "--holdout must be"), ("nan", "--holdout must be"), ("1.5", "whole number")]:
        assert prepare([*base, "--output-file", str(out), "--holdout", holdout,
                        "--holdout-file", str(tmp_path / "h.jsonl")]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_rows_without_ids_stay_distinct(tmp_path, capsys):
    rows = [json.loads(line) for line in THOUGHTS.read_text().splitlines()][:67]
    no_ids = tmp_path / "noid.jsonl"
    no_ids.write_text("".join(json.dumps({**r, "id": None}) + "\n" for r in rows))
    out = tmp_path / "t.jsonl"
    assert prepare(["--ablation", "3", "--original-thoughts", str(no_ids), "--output-file", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 67 and "0 duplicate ids" in capsys.readouterr().out


def test_label_only_answers_are_balanced_and_leave_out_the_eval_pairs(tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    assert prepare(["--answer", "label", "--pairs", str(REPO_ROOT / "data/sample/dev_300.csv"), "--balance",
                    "--eval-file", str(REPO_ROOT / "data/sample/sample.csv"), "--output-file", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["label"] == 1 for r in rows) == sum(r["label"] == 0 for r in rows) == 145  # 145 of label 0 in dev_300
    assert rows[0]["completion"][0]["content"] in ('{"predicted_label": 0}', '{"predicted_label": 1}')
    assert rows[0]["prompt"][0]["role"] == "system" and "Entailed?" in rows[0]["prompt"][1]["content"]


def test_combine_refuses_an_output_that_is_an_input(tmp_path, capsys):
    data = tmp_path / "a.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    assert combine(["--input", f"a={data}", "--output", str(data)]) == 2
    assert "same file as --input" in capsys.readouterr().err and data.read_text() == '{"prompt": "p", "response": "r"}\n'


def test_merge_shards_default_output_never_overwrites_a_shard(tmp_path, capsys):
    shard = tmp_path / "results.json"  # a shard file whose name has no .shard-i-of-n part
    shard.write_text(json.dumps({"settings": {"shard": [0, 1], "task": "nli", "has_labels": False}, "records": [],
                                 "timing": {"seconds_this_run": 1, "generated_this_run": 0}}))
    before = shard.read_text()
    assert merge([str(shard)]) == 2
    assert "same file as shard" in capsys.readouterr().err and shard.read_text() == before
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    assert merge([str(listing), "--output", str(tmp_path / "m.json")]) == 2
    assert "not a sample_model results file" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"[]", b"\xff\xfe garbage", b'{"settings": {}, "records": [{}]}'])
def test_parse_predictions_on_broken_files_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    assert parse([str(path)]) == 2
    err = capsys.readouterr().err
    assert "r.json" in err and "Traceback" not in err


def test_parse_predictions_rescores_free_text_results(tmp_path, capsys):
    path = tmp_path / "ft.json"
    record = {"id": "1", "raw_output": "an answer", "predicted_label": None, "true_label": "an answer",
              "stop_reason": "eos", "generated_tokens": 2, "json_objects": 0}
    path.write_text(json.dumps({"settings": {"task": "free_text"}, "records": [record]}))
    assert parse([str(path), "--strict"]) == 0
    assert "ft.json" in capsys.readouterr().out


@pytest.mark.parametrize("task, message", [(None, "None is not a task name"),
                                           ("sentiment", "unknown task 'sentiment'; known tasks: boolq, ")])
def test_a_results_file_without_a_known_task_is_one_line_naming_file_and_field(tmp_path, capsys, task, message):
    """parse_predictions and merge_shards look a results file's task up once (results.results_task): a file
    that names none, or one this code does not know, is refused, never scored as some default task."""
    shard = tmp_path / "r.shard-0-of-1.json"
    record = {"id": "1", "raw_output": '{"predicted_label": 1}', "predicted_label": 1, "true_label": None,
              "stop_reason": "eos", "generated_tokens": 5, "json_objects": 1}
    shard.write_text(json.dumps({"settings": {"shard": [0, 1], "has_labels": False} | ({"task": task} if task else {}),
                                 "records": [record], "timing": {"seconds_this_run": 1, "generated_this_run": 1}}))
    for run in (lambda: parse([str(shard)]), lambda: merge([str(shard), "--output", str(tmp_path / "m.json")])):
        assert run() == 2
        err = capsys.readouterr().err
        assert f"{shard}: field 'settings.task': {message}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_answer_schemas_follow_the_task():
    assert TASKS["nli"].answer_schema()["required"] == ["thought_process", "predicted_label"]
    assert TASKS["nli_label"].answer_schema() == {"type": "object", "required": ["predicted_label"],
                                          "properties": {"predicted_label": {"type": "integer", "enum": [0, 1]}}}
    hate = TASKS["hate_speech"].answer_schema()["properties"]["classification"]
    assert hate == {"type": "string", "enum": ["hate_speech", "not_hate"]}
    with pytest.raises(ValueError):
        TASKS["free_text"].answer_schema()


@pytest.mark.parametrize("args,message", [
    (["--batch_size", "0"], "--batch_size: must be at least 1"), (["--batch_size", "-1"], "must be at least 1"),
    (["--max_new_tokens", "0"], "--max_new_tokens: must be at least 1"), (["--limit", "-1"], "--limit"),
    (["--max_prompt_tokens", "-3"], "--max_prompt_tokens"), (["--json_schema"], "--json_schema needs --backend vllm"),
])
def test_sample_model_refuses_bad_numbers_in_one_line(tiny_mistral, tmp_path, capsys, args, message):
    try:
        code = sample_main(["--model_id", str(tiny_mistral), "--test_file", str(REPO_ROOT / "data/sample/sample.csv"),
                            "--output_file", str(tmp_path / "o.json"), *args])
    except SystemExit as exc:  # argparse's own one-line usage error
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "o.json").exists()


def test_free_text_rows_must_be_in_an_sft_format(tiny_mistral, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"query": "q", "reply": "a"}\n')  # question/answer would be a format of its own
    assert sample_main(["--model_id", str(tiny_mistral), "--test_file", str(data), "--task", "free_text",
                        "--output_file", str(tmp_path / "o.json")]) == 2
    assert "row 1: the free_text task reads prompt/completion" in capsys.readouterr().err


def test_nested_values_are_not_premises(tiny_mistral, tmp_path, capsys):
    data = tmp_path / "nested.jsonl"
    data.write_text('{"premise": ["a", "b"], "hypothesis": "h", "label": 1}\n')
    assert sample_main(["--model_id", str(tiny_mistral), "--test_file", str(data),
                        "--output_file", str(tmp_path / "o.json")]) == 2
    assert "field 'premise' must be text" in capsys.readouterr().err


def test_prepare_confidence_data_reads_correct_strictly(tmp_path, capsys):
    judged = tmp_path / "judged.json"
    rows = {"0": {"question": "q0", "response": "yes", "correct_answer": "yes", "correct": 1},
            "1": {"question": "q1", "response": "no", "correct_answer": "yes", "correct": "no"}}
    judged.write_text(json.dumps(rows))
    out = tmp_path / "conf"
    assert prepare_confidence(["--incorrect", str(judged), "--out-dir", str(out), "--eval-share", "0"]) == 0
    tagged = [json.loads(line)["tagged_response"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert sorted(t.split()[-1] for t in tagged) == ["<C_READ>", "<U_READ>"]
    for change, message in [({"correct": "maybe"}, "field 'correct': 'maybe' is not true or false"),
                            ({"correct": None}, "field 'correct'"), ({"response": 42}, "field 'response' must be")]:
        judged.write_text(json.dumps({"0": {**rows["0"], **change}}))
        assert prepare_confidence(["--incorrect", str(judged), "--out-dir", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert prepare_confidence(["--incorrect", str(judged), "--dataset", "squad", "--out-dir", str(tmp_path / "x")]) == 2
    assert "--dataset squad: unknown" in capsys.readouterr().err
    assert prepare_confidence(["--out-dir", str(tmp_path / "x")]) == 2
    assert prepare_confidence(["--incorrect", str(judged), "--eval-share", "-0.1", "--out-dir", str(tmp_path / "x")]) == 2


def test_a_strategy_with_literal_braces_writes_no_file(tmp_path, capsys):
    unified = tmp_path / "unified"
    unified.mkdir()
    for name in ("unified_train.json", "unified_val.json"):
        (unified / name).write_text(shared_file("hatespeech/unified_val.json").read_text())
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"strategies": {"s": {"system_prompt": "x",
                                                         "user_template": 'Answer as {"a": 1}: {text}'}}}))
    out = tmp_path / "prepared"
    assert prepare_chat(["--unified_dir", str(unified), "--data_output_dir", str(out), "--prompt_template",
                         str(template), "--strategy", "s"]) == 2
    assert "literal braces must be doubled" in capsys.readouterr().err and not out.exists()


def test_an_unknown_flag_is_named_without_its_value(tmp_path, capsys):
    from scripts.generate_thoughts import main as generate
    with pytest.raises(SystemExit) as exit_info:
        generate(["--input-csv", "x.csv", "--output-json", "y.jsonl", "--api-key", "sk-live-SECRET1234",
                  "--token=sk-other-SECRET5678"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--api-key" in err and "--token" in err
    assert "SECRET" not in err


def test_split_keeps_bytes_bom_crlf_and_u2028_and_refuses_empty_input(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    lines = [b'\xef\xbb\xbf{"a": "first"}\r\n'] + [f'{{"a": "x\u2028y {i}"}}\r\n'.encode() for i in range(9)]
    source.write_bytes(b"".join(lines))
    assert split([str(source), "--output1", str(tmp_path / "1.jsonl"), "--output2", str(tmp_path / "2.jsonl")]) == 0
    bom = b"\xef\xbb\xbf"  # the file's mark starts each output, never a shuffled line (issue #22 M16)
    outputs = [(tmp_path / name).read_bytes() for name in ("1.jsonl", "2.jsonl")]
    assert all(out.startswith(bom) and bom not in out[3:] for out in outputs)
    assert sorted(b"".join(out[3:] for out in outputs).splitlines(keepends=True)) == sorted([lines[0][3:]] + lines[1:])
    assert all(read_jsonl(tmp_path / name) for name in ("1.jsonl", "2.jsonl"))  # the project's reader takes both
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert split([str(empty)]) == 2 and "no lines to split" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--max-attempts", "0"), ("--max-retries", "-1"), ("--timeout", "0"),
                                        ("--workers", "0")])
def test_api_numbers_are_checked(flag, value, capsys):
    from scripts.generate_thoughts import main as generate
    with pytest.raises(SystemExit):
        generate(["--input-csv", "x.csv", "--output-json", "y.jsonl", flag, value])
    assert flag in capsys.readouterr().err


def test_an_adapter_finds_its_relative_base_from_any_folder(trained_adapter, tiny_mistral, tmp_path, monkeypatch):
    import shutil

    from nli_finetune.modeling import ModelLoadError, adapter_base
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_adapter, adapter)
    shutil.copytree(tiny_mistral, adapter / "base")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "base"}))
    monkeypatch.chdir(tmp_path.parent)  # "base" is not a folder here, but it is in the adapter dir
    assert adapter_base(str(adapter)) == str(adapter / "base")
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "./gone"}))
    with pytest.raises(ModelLoadError, match=r"adapter_config.json: base model './gone' not found.*--base_model"):
        adapter_base(str(adapter))
    (adapter / "adapter_config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="adapter_config.json: unreadable"):
        adapter_base(str(adapter))


def test_a_finished_vllm_rerun_shuts_its_engine_down(tiny_mistral, tmp_path, monkeypatch):
    """A rerun with nothing left to generate, or one refused for stale progress, must not leave an engine."""
    import evaluate.vllm_backend as vllm_backend
    from nli_finetune.modeling import load_tokenizer
    closed = []

    class FakeVllm:
        def __init__(self, model_id, **kwargs):
            self.tokenizer = load_tokenizer(str(model_id))

        def generate(self, prompts, *, max_new_tokens, on_batch=None, stop_at_json=True):
            on_batch([(i, {"text": '{"predicted_label": 1}', "stop_reason": "json", "generated_tokens": 5})
                      for i in range(len(prompts))])

        def close(self):
            closed.append(True)

    monkeypatch.setattr(vllm_backend, "VllmGenerator", FakeVllm)
    args = ["--model_id", str(tiny_mistral), "--test_file", str(REPO_ROOT / "data/sample/sample.csv"), "--limit", "3",
            "--backend", "vllm", "--output_file", str(tmp_path / "v.json"), "--quiet"]
    assert sample_main(args) == 0 and len(closed) == 1
    assert sample_main(args) == 0 and len(closed) == 2  # nothing to do: the engine still goes down
    assert sample_main([*args, "--max_new_tokens", "7"]) == 2 and len(closed) == 3  # refused: likewise


def test_a_full_disk_is_one_line_and_keeps_the_progress(tiny_mistral, tmp_path, monkeypatch, capsys):
    import errno

    from nli_finetune import results as results
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(results, "atomic_write_json", full)
    out = tmp_path / "o.json"
    args = ["--model_id", str(tiny_mistral), "--test_file", str(REPO_ROOT / "data/sample/sample.csv"), "--limit", "2",
            "--max_new_tokens", "4", "--output_file", str(out), "--quiet"]
    assert sample_main(args) == 1
    err = capsys.readouterr().err
    assert "error: cannot write: [Errno 28] No space left on device" in err and "Traceback" not in err
    assert len((tmp_path / "o.json.progress.jsonl").read_text().splitlines()) == 2  # nothing generated is lost
    monkeypatch.undo()
    assert sample_main(args) == 0 and "resuming: 2 done, 0 to go" in capsys.readouterr().err
