"""The model contract (model_contract.py): train_sft writes it with every trained output, and sample_model,
evaluate.confidence, serve and merge_shards read it. A model without one behaves as before."""

import json
import shutil

import pytest

from nli_finetune.model_contract import (
    CONTRACT_FILE,
    ContractError,
    base_source,
    build_contract,
    check_base,
    check_same_contract,
    read_contract,
    resolve_setting,
    write_contract,
)
from nli_finetune.modeling import base_fingerprint
from prompts import TASKS
from tests.conftest import REPO_ROOT, run_train

DEV = REPO_ROOT / "data/sample/dev_300.csv"


@pytest.fixture(scope="module")
def label_adapter(tiny_mistral, tmp_path_factory):
    """A tiny adapter trained for nli_label (not sample_model's fallback task, nli), with two checkpoints
    and merged/."""
    code, out = run_train(tiny_mistral, tmp_path_factory.mktemp("contract") / "run", "--task", "nli_label",
                          "--max_steps", "4", "--save_steps", "2", "--merge_adapter", "true")
    assert code == 0
    return out


def adapter_copy(label_adapter, tmp_path, **changes):
    """The adapter (no checkpoints, no merged/) in a folder of its own, its contract changed as asked."""
    folder = tmp_path / "adapter"
    shutil.copytree(label_adapter, folder, ignore=shutil.ignore_patterns("checkpoint-*", "merged"))
    contract = json.loads((folder / CONTRACT_FILE).read_text()) | changes
    (folder / CONTRACT_FILE).write_text(json.dumps(contract))
    return folder


def sample(model, tmp_path, *extra, name="out"):
    from evaluate.sample_model import main
    output = tmp_path / f"{name}.json"
    code = main(["--model_id", str(model), "--test_file", str(DEV), "--limit", "4", "--max_new_tokens", "4",
                 "--output_file", str(output), "--quiet", *extra])
    return code, output


def test_every_trained_output_carries_the_same_contract(label_adapter, tiny_mistral):
    from nli_finetune.modeling import load_tokenizer
    from prompts import chat_template
    contract = read_contract(label_adapter)
    assert contract.task == "nli_label" and contract.answer_format == "label_only"
    assert contract.trained_task is TASKS["nli_label"]  # the file stores the name; the contract hands out the Task
    assert contract.max_seq_length == 1024 and contract.confidence_tokens == {}
    assert contract.base_model == {"model_id": str(tiny_mistral), "local_dir": str(tiny_mistral.resolve()),
                                   "fingerprint": base_fingerprint(tiny_mistral)}
    assert contract.chat_template == chat_template(load_tokenizer(str(label_adapter)))  # what prompts render with
    for folder in ("checkpoint-2", "checkpoint-4", "merged"):
        assert read_contract(label_adapter / folder) == contract, folder
    # no contract: a base model folder, a hub id, a .gguf path, nothing
    for model in (tiny_mistral, "org/name", str(tiny_mistral / "x.gguf"), None):
        assert read_contract(model) is None


def test_the_contract_says_the_answer_format_and_round_trips(tiny_mistral, tmp_path):
    from nli_finetune.modeling import load_tokenizer
    tokenizer = load_tokenizer(str(tiny_mistral))
    settings = dict(data_format="auto", special_tokens=[], confidence_datasets={}, max_seq_length=64,
                    model_id="org/base")
    formats = {name: build_contract(tokenizer, task=TASKS[name], confidence_tokens={}, **settings).answer_format
               for name in ("nli", "nli_label", "free_text")}
    assert formats == {"nli": "cot_json", "nli_label": "label_only", "free_text": "free_text"}
    contract = build_contract(tokenizer, task=TASKS["nli"], confidence_tokens={"READ": ("<C_READ>", "<U_READ>")}, **settings)
    assert contract.answer_format == "confidence" and contract.base_model["hub_id"] == "org/base"
    assert contract.task == "nli" and contract.to_json()["task"] == "nli"  # the task's name, as before
    write_contract(tmp_path, contract)
    assert read_contract(tmp_path) == contract and read_contract(tmp_path).source == str(tmp_path / CONTRACT_FILE)


def test_a_flag_that_contradicts_the_contract_is_an_error_naming_both(label_adapter):
    contract = read_contract(label_adapter)
    assert resolve_setting(None, "task", None, "nli", "--task") == "nli"  # no contract: as before
    assert resolve_setting(None, "task", "boolq", "nli", "--task") == "boolq"
    assert resolve_setting(contract, "task", None, "nli", "--task") == "nli_label"
    assert resolve_setting(contract, "task", "nli_label", "nli", "--task") == "nli_label"
    assert resolve_setting(contract, "task", "nli", "nli", "--task", ignore=True) == "nli"
    with pytest.raises(ContractError, match=r"--task nli contradicts .*model_contract.json.*'nli_label'"):
        resolve_setting(contract, "task", "nli", "nli", "--task")


def test_sample_model_takes_the_task_from_the_contract_and_refuses_another(label_adapter, tiny_mistral, tmp_path,
                                                                            capsys):
    code, output = sample(label_adapter, tmp_path)
    settings = json.loads(output.read_text())["settings"]
    assert code == 0 and settings["task"] == "nli_label"
    assert settings["model_contract"] == read_contract(label_adapter).summary()
    code, output = sample(label_adapter / "checkpoint-2", tmp_path, name="checkpoint")
    assert code == 0 and json.loads(output.read_text())["settings"]["task"] == "nli_label"
    capsys.readouterr()
    code, output = sample(label_adapter, tmp_path, "--task", "nli", name="refused")
    err = capsys.readouterr().err
    assert code == 2 and "--task nli contradicts" in err and "'nli_label'" in err and "--ignore_contract" in err
    assert len(err.strip().splitlines()) == 1 and not output.exists()
    code, output = sample(label_adapter, tmp_path, "--task", "nli", "--ignore_contract", name="ignored")
    assert code == 0 and json.loads(output.read_text())["settings"]["task"] == "nli"
    code, output = sample(tiny_mistral, tmp_path, name="base")  # no contract: the old default
    settings = json.loads(output.read_text())["settings"]
    assert code == 0 and settings["task"] == "nli" and settings["model_contract"] is None


def test_a_tokenizer_that_differs_from_the_contract_is_refused(label_adapter, tmp_path, capsys):
    from nli_finetune.model_contract import template_sha256
    other = "{{ messages[0]['content'] }}"
    folder = adapter_copy(label_adapter, tmp_path, chat_template=other, chat_template_sha256=template_sha256(other),
                          special_tokens=["<EXTRA>"])
    code, output = sample(folder, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "no token <EXTRA>" in err and "chat template" in err and not output.exists()
    assert sample(folder, tmp_path, "--ignore_contract")[0] == 0


@pytest.mark.parametrize("change, field", [({"task": "nope"}, "task"), ({"max_seq_length": "64"}, "max_seq_length"),
                                           ({"chat_template": "edited"}, "chat_template"),
                                           ({"format_version": 99}, "format_version")])
def test_a_malformed_contract_is_one_line_naming_the_file_and_field(label_adapter, tmp_path, capsys, change, field):
    folder = adapter_copy(label_adapter, tmp_path, **change)
    code, _ = sample(folder, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and f"{folder / CONTRACT_FILE}: field '{field}'" in err and len(err.strip().splitlines()) == 1


def test_merge_shards_refuses_shards_of_models_with_different_contracts(label_adapter, tmp_path, capsys):
    from evaluate.merge_shards import main as merge
    shards = [sample(label_adapter, tmp_path, "--shard", f"{i}/2", name=f"x.shard-{i}-of-2")[1] for i in range(2)]
    assert merge([*map(str, shards), "--output", str(tmp_path / "merged.json")]) == 0
    data = json.loads(shards[1].read_text())
    data["settings"]["model_contract"] = dict(data["settings"]["model_contract"], sha256="0" * 64)
    shards[1].write_text(json.dumps(data))
    capsys.readouterr()
    assert merge([*map(str, shards), "--output", str(tmp_path / "refused.json")]) == 2
    err = capsys.readouterr().err
    assert str(shards[0]) in err and str(shards[1]) in err and "different models" in err
    assert not (tmp_path / "refused.json").exists()
    with pytest.raises(ContractError, match="no contract"):  # results of a base model and of a trained one
        check_same_contract({"a.json": read_contract(label_adapter).summary(), "b.json": None})


def test_confidence_takes_its_tokens_from_the_contract(label_adapter, tmp_path, capsys):
    from evaluate.confidence import main as confidence
    data = tmp_path / "val.jsonl"
    data.write_text(json.dumps({"question": "is water wet", "correct_answer": "yes", "dataset": "boolq"}) + "\n")
    args = ["--eval_data", str(data), "--output", str(tmp_path / "conf.json")]
    assert confidence(["--model_id", str(label_adapter), *args]) == 2  # trained for labels, not confidence
    assert "trained without confidence_tokens (task nli_label" in capsys.readouterr().err
    folder = adapter_copy(label_adapter, tmp_path, confidence_tokens={"READ": ["<C_R2>", "<U_R2>"]},
                          confidence_datasets={"boolq": "READ"}, answer_format="confidence")
    assert confidence(["--model_id", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert "<C_R2>, <U_R2>" in err and "<C_READ>" not in err  # the contract's tokens, not the default list


def test_serve_uses_the_contract_template_and_announces_the_task_schema(label_adapter, tmp_path, capsys):
    from scripts.serve import main as serve_main
    from scripts.serve import plan_server, schema_line
    template = tmp_path / "chat_template.jinja"
    plan = plan_server(str(label_adapter), "127.0.0.1", 8011, template)
    assert template.read_text() == read_contract(label_adapter).chat_template
    assert plan.task is TASKS["nli_label"] and plan.answer_schema == TASKS["nli_label"].answer_schema()
    assert serve_main(["--model", str(label_adapter), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert schema_line(plan) in out and '"enum": [0, 1]' in out
    from nli_finetune.model_contract import template_sha256
    other = "{{ messages[0]['content'] }}"
    folder = adapter_copy(label_adapter, tmp_path, chat_template=other, chat_template_sha256=template_sha256(other))
    with pytest.raises(ContractError, match="chat template other than"):
        plan_server(str(folder), "127.0.0.1", 8011, template)


def test_the_training_callback_stamps_checkpoints_and_the_confidence_best_models(label_adapter, tmp_path):
    from types import SimpleNamespace

    from nli_finetune.model_contract import checkpoint_writer
    contract = read_contract(label_adapter)
    for folder in ("checkpoint-6", "best_accuracy", "checkpoint-9"):
        (tmp_path / folder).mkdir()
    writer = checkpoint_writer(contract)
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=6, is_world_process_zero=True)
    writer.on_save(args, state, None)
    writer.on_evaluate(args, state, None)
    assert read_contract(tmp_path / "checkpoint-6") == contract and read_contract(tmp_path / "best_accuracy") == contract
    assert read_contract(tmp_path / "checkpoint-9") is None  # only the checkpoint just saved
    writer.on_save(args, SimpleNamespace(global_step=9, is_world_process_zero=False), None)  # rank > 0 writes nothing
    assert read_contract(tmp_path / "checkpoint-9") is None


def other_base(tiny_mistral, tmp_path):
    """A copy of the base with one weight changed: the same architecture and files, another model."""
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "other-base"
    shutil.copytree(tiny_mistral, folder)
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = weights[name] + 0.5
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_m1_the_base_fingerprint_is_its_weights_wherever_they_are(tiny_mistral, tmp_path, monkeypatch):
    import os

    from nli_finetune import data_io
    copy = tmp_path / "copy"
    shutil.copytree(tiny_mistral, copy)
    os.utime(copy / "model.safetensors", (1, 1))
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")  # not weights
    assert base_fingerprint(copy) == base_fingerprint(tiny_mistral) != base_fingerprint(other_base(tiny_mistral, tmp_path))
    assert base_fingerprint("org/name") != base_fingerprint("org/other")  # a hub id: its name
    # a file too large to hash whole: a copy (new mtime, new name) is the same, a change inside it is not
    monkeypatch.setattr(data_io, "FULL_HASH_LIMIT", 2 * 2**20)
    big = tmp_path / "base.gguf"
    big.write_bytes(bytes(40 * 2**20))
    moved = tmp_path / "renamed.gguf"
    shutil.copyfile(big, moved)
    os.utime(moved, (1, 1))
    assert base_fingerprint(moved) == base_fingerprint(big)
    with open(moved, "r+b") as f:  # inside one of the blocks a portable hash reads (not the first or last)
        f.seek((40 * 2**20 - 2**20) * 7 // (data_io.PORTABLE_BLOCKS - 1) + 100)
        f.write(b"x")
    assert base_fingerprint(moved) != base_fingerprint(big)


def test_m1_sample_model_refuses_an_adapter_on_another_base(label_adapter, tiny_mistral, tmp_path, capsys):
    other = other_base(tiny_mistral, tmp_path)
    capsys.readouterr()
    code, output = sample(label_adapter, tmp_path, "--base_model", str(other), name="other")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and not output.exists(), err
    assert str(tiny_mistral) in err and str(other) in err and "--allow_other_base" in err
    edited = adapter_copy(label_adapter, tmp_path)  # adapter_config.json pointed at another base
    config = json.loads((edited / "adapter_config.json").read_text())
    (edited / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(other)}))
    code, output = sample(edited, tmp_path, name="edited")
    assert code == 2 and str(other) in capsys.readouterr().err and not output.exists()
    code, output = sample(label_adapter, tmp_path, "--base_model", str(other), "--allow_other_base", name="allowed")
    recorded = json.loads(output.read_text())["settings"]["other_base"]
    assert code == 0 and recorded["trained_on"] == str(tiny_mistral) and recorded["used"] == str(other)
    copy = tmp_path / "copy"  # the same base elsewhere is the same base
    shutil.copytree(tiny_mistral, copy)
    code, output = sample(label_adapter, tmp_path, "--base_model", str(copy), name="copy")
    assert code == 0 and json.loads(output.read_text())["settings"]["other_base"] is None


def test_m1_a_base_gguf_whose_content_changed_is_refused(label_adapter, tmp_path, capsys):
    from nli_finetune.modeling import BASE_SOURCE_FILE
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    folder = adapter_copy(label_adapter, tmp_path, base_model=base_source(str(gguf)))
    (folder / BASE_SOURCE_FILE).write_text(json.dumps({"gguf_file": str(gguf)}))
    assert check_base(read_contract(folder), str(gguf)) is None
    gguf.write_bytes(b"GGUF" + bytes(999) + b"x")  # re-downloaded, re-quantized, replaced
    capsys.readouterr()
    code, output = sample(folder, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "base.gguf" in err and len(err.strip().splitlines()) == 1 and not output.exists(), err


def test_m1_a_contract_without_the_base_fingerprint_still_loads_and_says_so_once(label_adapter, tmp_path, caplog):
    base = dict(read_contract(label_adapter).base_model)
    base.pop("fingerprint")
    folder = adapter_copy(label_adapter, tmp_path, base_model=base)
    assert sample(folder, tmp_path, name="a")[0] == 0 and sample(folder, tmp_path, name="b")[0] == 0
    assert caplog.text.count("not checked") == 1


def test_m1_an_init_adapter_trained_on_another_base_is_refused(label_adapter, tiny_mistral, tmp_path, capsys):
    from types import SimpleNamespace

    from train.run_config import init_adapter_base_problem
    other = other_base(tiny_mistral, tmp_path)
    assert init_adapter_base_problem(SimpleNamespace(init_adapter=str(label_adapter), model_id=str(tiny_mistral))) \
        is None
    capsys.readouterr()
    code, out = run_train(other, tmp_path / "run", "--task", "nli_label", "--init_adapter", label_adapter)
    err = capsys.readouterr().err
    assert code == 2 and "init_adapter" in err and str(tiny_mistral) in err and str(other) in err, err
    assert not out.exists()
    from train.train_sft import main
    code = main(["tiny_cpu.py", "--model_id", str(other), "--output_dir", str(tmp_path / "dry"), "--task", "nli_label",
                 "--init_adapter", str(label_adapter), "--dry_run"])
    assert code == 1 and "PROBLEM: init_adapter" in capsys.readouterr().out  # the preflight says it too


def test_m1_export_merges_the_recorded_base_and_names_the_one_merged(label_adapter, tiny_mistral, tmp_path, capsys):
    from nli_finetune.gguf_export import read_project_metadata
    from scripts.export_gguf import main as export
    other = other_base(tiny_mistral, tmp_path)
    assert export(["--model", str(label_adapter), "--outfile", str(tmp_path / "a.gguf")]) == 0
    assert read_project_metadata(tmp_path / "a.gguf")["base_model"] == str(tiny_mistral)
    capsys.readouterr()
    assert export(["--model", str(label_adapter), "--outfile", str(tmp_path / "b.gguf"), "--base_model", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "--allow_other_base" in err and not (tmp_path / "b.gguf").exists()
    assert export(["--model", str(label_adapter), "--outfile", str(tmp_path / "c.gguf"), "--base_model", str(other),
                   "--allow_other_base"]) == 0
    metadata = read_project_metadata(tmp_path / "c.gguf")
    assert metadata["base_model"] == str(other) and metadata["trained_on_base"] == str(tiny_mistral)


def test_low_a_contract_that_is_a_folder_is_refused(label_adapter, tmp_path, capsys):
    folder = adapter_copy(label_adapter, tmp_path)
    (folder / CONTRACT_FILE).unlink()
    (folder / CONTRACT_FILE).mkdir()
    with pytest.raises(ContractError, match="a folder"):
        read_contract(folder)
    capsys.readouterr()
    code, output = sample(folder, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and str(folder / CONTRACT_FILE) in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_m1_serve_refuses_an_adapter_on_another_base(label_adapter, tiny_mistral, tmp_path, capsys):
    from scripts.serve import main as serve_main
    folder = adapter_copy(label_adapter, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    other = other_base(tiny_mistral, tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(other)}))
    capsys.readouterr()
    assert serve_main(["--model", str(folder), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and str(tiny_mistral) in err and len(err.strip().splitlines()) == 1, err
