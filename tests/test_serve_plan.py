"""What scripts/serve.py and run_serve.sh hand to vLLM and Docker, checked without vLLM (tests/test_serve.py
runs the server itself in .venv-vllm)."""

import json
import os
import subprocess
import sys

import pytest

from prompts import FALLBACK_CHAT_TEMPLATE, TASKS, encode_prompt, render_prompt
from scripts.serve import lora_rank, plan_server
from tests.conftest import REPO_ROOT

MESSAGES = [TASKS[task].messages({"premise": "A man plays a guitar.", "hypothesis": "Someone makes music."})
            for task in ("nli", "nli_label")]


def test_an_adapter_is_served_on_its_base_with_its_name_rank_and_training_template(trained_adapter, tmp_path):
    template = tmp_path / "chat_template.jinja"
    plan = plan_server(str(trained_adapter), "127.0.0.1", 8011, template)
    command = plan.command
    base = json.loads((trained_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert command[command.index("--model") + 1] == base and command[command.index("--tokenizer") + 1] == str(trained_adapter)
    assert command[command.index("--lora-modules") + 1] == f"{trained_adapter.name}={trained_adapter}"
    assert "--enable-lora" in command and command[command.index("--max-lora-rank") + 1] == str(lora_rank(trained_adapter))
    assert command[command.index("--generation-config") + 1] == "vllm"  # not the model's sampling defaults
    assert command[command.index("--dtype") + 1] == "float32"  # what sample_model uses on a CPU
    assert plan.model_name == trained_adapter.name and plan.base_url == "http://127.0.0.1:8011/v1"
    from modeling import load_tokenizer
    assert template.read_text() == load_tokenizer(str(trained_adapter)).chat_template


def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts(tmp_path):
    for rank, expected in ((4, 8), (8, 8), (12, 16), (64, 64)):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
        assert lora_rank(tmp_path) == expected


def test_the_fallback_template_renders_through_transformers_as_prompts_render_it(tiny_mistral):
    from modeling import load_tokenizer
    tokenizer = load_tokenizer(str(tiny_mistral))
    tokenizer.chat_template = None  # a tokenizer without a template: the server gets FALLBACK_CHAT_TEMPLATE
    for messages in MESSAGES:
        served = tokenizer.apply_chat_template(messages, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False,
                                               add_generation_prompt=True)
        assert served == render_prompt(tokenizer, messages) and served.startswith(f"{tokenizer.bos_token}[INST] ")
        assert tokenizer(served, add_special_tokens=False)["input_ids"] == encode_prompt(tokenizer, messages)


def test_the_key_never_reaches_a_command_line_and_other_hosts_get_a_warning(trained_adapter):
    env = {**os.environ, "SERVE_API_KEY": "s3cret-key"}
    local = subprocess.run([sys.executable, "scripts/serve.py", "--model", str(trained_adapter), "--dry-run"],
                           cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert local.returncode == 0 and "--host 127.0.0.1" in local.stdout and "s3cret" not in local.stdout + local.stderr
    open_host = subprocess.run([sys.executable, "scripts/serve.py", "--model", str(trained_adapter), "--dry-run",
                                "--host", "0.0.0.0"], cwd=REPO_ROOT, capture_output=True, text=True,
                               env={k: v for k, v in env.items() if k != "SERVE_API_KEY"})
    assert "without SERVE_API_KEY" in open_host.stderr
    missing = subprocess.run([sys.executable, "scripts/serve.py", "--model", "models/none", "--dry-run"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "models/none" in missing.stderr


@pytest.mark.parametrize("gpu_args,gpus_flag,count", [(["--gpu", "1"], "--gpus device=1", "1"),
                                                      (["--gpus", "0,1"], '--gpus \'"device=0,1"\'', "2")])
def test_the_serve_wrapper_publishes_the_port_on_the_host_only_and_passes_the_key_by_name(gpu_args, gpus_flag, count):
    if (REPO_ROOT / ".env").exists():
        pytest.skip("a local .env adds --env-file to the command")
    env = {**os.environ, "HF_HOME": "/hf-cache", "SERVE_API_KEY": "s3cret-key"}
    proc = subprocess.run(["bash", "run_serve.sh", "--dry-run", "--docker", "--model", "models/X", *gpu_args,
                           "--max-model-len", "4096"], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"docker run --rm --ipc=host -p 127.0.0.1:8000:8000 -e SERVE_API_KEY {gpus_flag} -v {REPO_ROOT}/data:/app/data "
        f"-v {REPO_ROOT}/models:/app/models -v {REPO_ROOT}/results:/app/results -v /hf-cache:/home/app/.cache/huggingface "
        f"nli-finetune:latest /opt/vllm-venv/bin/python scripts/serve.py --model models/X --host 0.0.0.0 --port 8000 "
        f"--gpus {count} --max-model-len 4096")
    assert "s3cret" not in proc.stdout
    missing = subprocess.run(["bash", "run_serve.sh", "--dry-run", "--docker"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "--model is required" in missing.stderr
