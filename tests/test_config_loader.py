import json
import re
import subprocess
import sys

import pytest

from nli_finetune.redaction import redact_data, secret_values
from tests.conftest import REPO_ROOT
from train.config_loader import CONFIG_DIR, ConfigError, load_config, load_defaults


def run_loader(*args, env=None):
    return subprocess.run([sys.executable, "-m", "train.show_config", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env)


def test_done_criteria_from_the_issue():
    ok = run_loader("ablation2.py", "--learning_rate=1", "--use_wandb", "false")
    assert ok.returncode == 0, ok.stderr
    config = json.loads(ok.stdout)
    assert config["learning_rate"] == 1.0 and isinstance(config["learning_rate"], float)
    assert config["use_wandb"] is False
    assert config["lora_r"] == 32  # from ablation2.py, over default.py's 16

    typo = run_loader("ablation2.py", "--lerning_rate", "1e-4")
    assert typo.returncode == 2
    assert "learning_rate" in typo.stderr and "Traceback" not in typo.stderr

    wrong_type = run_loader("ablation2.py", "--lora_r", "16.5")
    assert wrong_type.returncode == 2
    assert "lora_r" in wrong_type.stderr and len(wrong_type.stderr.strip().splitlines()) == 1


def test_precedence_is_default_then_file_then_cli_whatever_the_order():
    before = load_config(["--learning_rate", "3e-5", "--config", "ablation2.py"])
    after = load_config(["--config=ablation2.py", "--learning_rate=3e-5"])
    assert before.learning_rate == after.learning_rate == 3e-5
    assert before.warmup_ratio == 0.10  # file beats default
    assert load_config([]).learning_rate == load_defaults()["learning_rate"]


@pytest.mark.parametrize("raw,expected", [("true", True), ("YES", True), ("1", True), ("False", False),
                                          ("no", False), ("0", False)])
def test_bool_words(raw, expected):
    assert load_config(["--use_wandb", raw]).use_wandb is expected


def test_aliases_and_bare_flags():
    config = load_config(["--use_wandb", "--no_gradient_checkpointing"])
    assert config.use_wandb is True and config.gradient_checkpointing is False
    assert load_config(["--use_wandb", "--no_wandb"]).use_wandb is False
    assert load_config(["--no_group_by_length"]).group_by_length is False


def test_types():
    config = load_config(["--lora_target_modules", "['q_proj','v_proj']", "--eval_data", "x.jsonl",
                          "--output_dir", "1e-4", "--warmup_ratio", "0"])
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.eval_data == "x.jsonl"  # default None accepts anything
    assert config.output_dir == "1e-4"  # a str key keeps the text
    assert config.warmup_ratio == 0.0 and isinstance(config.warmup_ratio, float)
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(["--batch_size", "four"])
    with pytest.raises(ConfigError, match="use_wandb"):
        load_config(["--use_wandb", "maybe"])
    with pytest.raises(ConfigError, match="needs a value"):
        load_config(["--batch_size"])


def test_config_file_errors(tmp_path):
    bad_key = tmp_path / "bad_key.py"
    bad_key.write_text("lora_rank = 8\n")
    with pytest.raises(ConfigError, match=r"lora_rank.*did you mean 'lora_r'"):
        load_config([str(bad_key)])
    bad_type = tmp_path / "bad_type.py"
    bad_type.write_text("num_epochs = '3'\n")
    with pytest.raises(ConfigError, match=r"num_epochs.*bad_type.py"):
        load_config([str(bad_type)])
    broken = tmp_path / "broken.py"
    broken.write_text("x = (\n")
    with pytest.raises(ConfigError, match="broken.py"):
        load_config([str(broken)])
    helpers = tmp_path / "helpers.py"  # functions, modules and _private names are not keys
    helpers.write_text("import os\n_scratch = 1\ndef f():\n    pass\nseed = 7\n")
    assert load_config([str(helpers)]).seed == 7
    with pytest.raises(ConfigError, match="not found"):
        load_config(["no_such_config.py"])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_")))
def test_every_shipped_config_loads_and_says_how_to_run_it(name):
    config = load_config([name])
    assert config.config_file.endswith(name)
    first_lines = (CONFIG_DIR / name).read_text().splitlines()[:6]
    assert any("python -m train.train_sft" in line or "run_training.sh" in line for line in first_lines)


def test_secrets_are_redacted_from_dumps(monkeypatch):
    canary = "sk-canary-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    assert canary in secret_values()
    assert redact_data({"a": [f"token={canary}"], "b": 3}) == {"a": ["token=***"], "b": 3}
    env = dict(__import__("os").environ, HF_TOKEN=canary)
    out = run_loader("--wandb_run_name", f"run-{canary}", env=env)
    assert out.returncode == 0 and canary not in out.stdout and "run-***" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--batch_size", "0"], "'batch_size' must be >= 1, got 0"),
    (["--batch_size", "-1"], "'batch_size' must be >= 1"),
    (["--learning_rate", "-1"], "'learning_rate' must be > 0, got -1.0"),
    (["--lr_scheduler", "bogus"], "'lr_scheduler' must be one of linear, cosine"),
    (["--lora_r", "0"], "'lora_r' must be >= 1"),
    (["--max_train_examples", "abc"], "'max_train_examples' must be int or None, got str"),
    (["--max_steps", "0"], "'max_steps' must be a positive number of steps or -1"),
    (["--warmup_ratio", "1.5"], "'warmup_ratio' must be >= 0 and <= 1"),
    (["--task", "nli2"], "'task' must be one of"),
    (["--mixed_precision", "fp8"], "'mixed_precision' must be one of auto, bf16, no"),
    (["--eval_data", "e.jsonl", "--eval_steps", "5", "--save_steps", "7"], "save_steps (7) to be a multiple of eval_steps"),
    (["--shuffle", "false"], "shuffle = False keeps the file's row order, which group_by_length would undo"),
    (["--init_adapter", "models/a", "--use_lora", "false"], "init_adapter continues a LoRA adapter, which use_lora = False"),
])
def test_values_are_checked_against_the_rules(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(["ablation2.py", *args])


def test_keys_defaulting_to_none_keep_their_type(tmp_path):
    assert load_config(["--wandb_run_name", "2024"]).wandb_run_name == "2024"  # a name, not a number
    assert load_config(["--eval_data", "5"]).eval_data == "5"
    assert load_config(["--max_train_examples", "12"]).max_train_examples == 12
    assert load_config(["--eval_data", "None"]).eval_data is None
    config = tmp_path / "typed.py"
    config.write_text("tokenizer_id = 3\n")
    with pytest.raises(ConfigError, match="'tokenizer_id' must be str or None, got int 3"):
        load_config([str(config)])


def test_configs_derive_from_the_schema_at_most_one_level():
    """A config builds on the schema's defaults, or on one config that builds on nothing, so editing one
    recipe changes only the configs that name it."""
    import ast
    for path in CONFIG_DIR.glob("*.py"):
        bases = [node.module for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("train.configs")]
        assert len(bases) <= 1, path.name
        for base in bases:
            base_file = CONFIG_DIR / f"{base.rsplit('.', 1)[1]}.py"
            assert "import" not in "".join(line.split("#")[0] for line in base_file.read_text().splitlines()), \
                f"{path.name} builds on {base_file.name}, which builds on another"


def test_every_key_is_declared_once_with_a_type_and_a_comment():
    from train.config_loader import key_type, schema
    defaults = load_defaults()
    for key in schema():
        assert schema()[key].metadata["doc"].strip(), f"{key} has no comment"
        base, _, optional, choices = key_type(key)
        default = defaults[key]
        assert (default is None and optional) or isinstance(default, base), key
        assert choices is None or default in choices, key
    with pytest.raises(ConfigError, match=r"'eval_steps' must be >= 1, got 0"):
        load_config(["--eval_steps", "0"])
    with pytest.raises(ConfigError, match=r"'lora_layers' must be list or None, got str 'top'"):
        load_config(["--lora_layers", "top"])
