"""Plain-Python training configs with validated command-line overrides.

`train/configs/default.py` declares every key (its value is the default, its type the schema).
A config file sets only what differs; the command line overrides both. Precedence is always
default.py < config file < command line, whatever the order of the arguments.

    python -m train.show_config ablation2.py --learning_rate=1 --use_wandb false   # resolved JSON
    python -m train.show_config --config train/configs/tiny_cpu.py --max_steps 5

Unknown keys and wrong types exit with status 2 and one line naming the key (and the closest valid
key). Secrets never live in configs: anything that looks like an API key or token taken from the
environment is redacted from every dump (`redact_secrets`).
"""

import ast
import difflib
import json
import os
import re
import runpy
import sys
from pathlib import Path

from cli import bool_word

REPO_ROOT = Path(__file__).resolve().parent.parent

CONFIG_DIR = REPO_ROOT / "train" / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.py"
PLAIN_TYPES = (str, int, float, bool, type(None), list, tuple, dict)
# Command-line habits of the original project: `--no_wandb` means `--use_wandb false`.
FLAG_ALIASES = {"no_wandb": ("use_wandb", False),
                "no_gradient_checkpointing": ("gradient_checkpointing", False)}
SECRET_ENV_PATTERN = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


class ConfigError(ValueError):
    """A config problem the user must fix; the message names the key or file."""


def _plain_values(namespace: dict) -> dict:
    """The config keys of an executed config file: plain values whose names don't start with `_`."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and isinstance(v, PLAIN_TYPES)}


def _run_config_file(path: Path) -> dict:
    try:
        return _plain_values(runpy.run_path(str(path)))
    except Exception as exc:  # a config is user code: report which file broke and how
        raise ConfigError(f"config file {path} failed to load: {type(exc).__name__}: {exc}") from exc


def load_defaults() -> dict:
    return _run_config_file(DEFAULT_CONFIG)


def resolve_config_path(name: str) -> Path:
    """A path as given, else a bare file name looked up in train/configs/ (`.py` optional)."""
    candidates = [Path(name), CONFIG_DIR / name, CONFIG_DIR / f"{name}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
    close = difflib.get_close_matches(Path(name).name, available, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f"; available: {', '.join(available)}"
    raise ConfigError(f"config file not found: {name}{hint}")


def _unknown_key_error(key: str, known, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}' {where}{hint}")


def _type_name(value) -> str:
    return type(value).__name__


def check_type(key: str, value, default, where: str):
    """Return `value` coerced to the default's type, or raise ConfigError naming the key."""
    if default is None:  # a key whose default is None accepts any plain value
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f"config key '{key}' {where} must be {_type_name(default)} "
                      f"(like its default {default!r}), got {_type_name(value)} {value!r}")


def parse_cli_value(raw: str, default, key: str = ""):
    """A command-line string as a Python literal, else as a string; bools take true/false/yes/no/1/0."""
    from train.config_rules import NONE_DEFAULT_TYPES
    if default is None and NONE_DEFAULT_TYPES.get(key) is str and raw.lower() != "none":
        return raw  # --wandb_run_name 2024 is a name, not a number
    if isinstance(default, bool) and bool_word(raw) is not None:
        return bool_word(raw)
    if isinstance(default, str) and raw.lower() != "none":
        return raw  # a string key never needs quoting: --output_dir 1e-4 stays "1e-4"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def split_args(argv: list[str]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Split argv into (config name, [(key, raw value or None for a bare flag)])."""
    config_name, pairs, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            if config_name is not None:
                raise ConfigError(f"unexpected argument '{arg}' (one config file only: "
                                  f"already have '{config_name}'; overrides look like --key value)")
            config_name = arg
            i += 1
            continue
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                raw, i = nxt, i + 1
            else:
                raw = None
        i += 1
        if key == "config":
            if raw is None:
                raise ConfigError("--config needs a file name, e.g. --config ablation2.py")
            config_name = raw
        else:
            pairs.append((key, raw))
    return config_name, pairs


def load_config(argv: list[str] | None = None, defaults: dict | None = None) -> dict:
    """Resolve defaults < config file < command line and validate every key and type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = load_defaults() if defaults is None else defaults
    config_name, overrides = split_args(argv)
    config = dict(defaults)
    if config_name:
        path = resolve_config_path(config_name)
        for key, value in _run_config_file(path).items():
            if key not in defaults:
                raise _unknown_key_error(key, defaults, f"in {path}")
            config[key] = check_type(key, value, defaults[key], f"in {path}")
        config["config_file"] = str(path)
    for key, raw in overrides:
        if key in FLAG_ALIASES and raw is None:
            key, value = FLAG_ALIASES[key]
        elif key.startswith("no_") and raw is None and isinstance(defaults.get(key[3:]), bool):
            key, value = key[3:], False
        elif key not in defaults:
            raise _unknown_key_error(key, list(defaults) + list(FLAG_ALIASES), "on the command line")
        elif raw is None:
            if not isinstance(defaults[key], bool):
                raise ConfigError(f"--{key} needs a value")
            value = True
        else:
            value = parse_cli_value(raw, defaults[key], key)
        config[key] = check_type(key, value, defaults[key], "on the command line")
    check_values(config)
    return config


def check_values(config: dict) -> None:
    """Ranges, allowed words and rules between keys (train/config_rules.py), before anything loads."""
    from train.config_rules import cross_key_problems, value_problem
    for key, value in config.items():
        problem = value_problem(key, value)
        if problem:
            raise ConfigError(f"config key '{key}' {problem}")
    problems = cross_key_problems(config)
    if problems:
        raise ConfigError(problems[0])


def secret_values(environ=None) -> list[str]:
    """Values of environment variables that look like credentials (long enough to be real)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if SECRET_ENV_PATTERN.search(k) and len(v) >= 8]


def redact_secrets(obj, secrets: list[str] | None = None):
    """A copy of obj (nested dicts/lists/strings) with every credential value replaced by ***."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, "***")
        return obj
    if isinstance(obj, dict):
        return {k: redact_secrets(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v, secrets) for v in obj]
    return obj


def config_to_json(config: dict) -> str:
    return json.dumps(redact_secrets(config), indent=2, sort_keys=True)
