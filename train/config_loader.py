"""Plain-Python training configs with validated command-line overrides.

`train/config_schema.py` declares every key once, as a field of `TrainConfig`: its type, allowed values
or range, and default; `load_config` returns that frozen object.
A config file sets only what differs (it may build on one other config, never on a chain); the
command line overrides both. Precedence is always schema defaults < config file < command line,
whatever the order of the arguments.

    python -m train.show_config ablation2.py --learning_rate=1 --use_wandb false   # resolved JSON
    python -m train.show_config --config train/configs/tiny_cpu.py --max_steps 5

Unknown keys and wrong types exit with status 2 and one line naming the key (and the closest valid
key). Secrets never live in configs: anything that looks like an API key or token taken from the
environment is redacted from every dump (nli_finetune/redaction.py, the project's one policy).
"""

import ast
import dataclasses
import difflib
import functools
import json
import math
import runpy
import sys
import types
from pathlib import Path, PurePath
from typing import Union, get_args, get_origin

from nli_finetune import REPO_ROOT
from nli_finetune.cli import bool_word
from nli_finetune.redaction import redact_data
from train.config_schema import Above, AtLeast, Between, TrainConfig

CONFIG_DIR = REPO_ROOT / "train" / "configs"
PLAIN_TYPES = (str, int, float, bool, type(None), list, tuple, dict)
# Command-line habits of the original project: `--no_wandb` means `--use_wandb false`.
FLAG_ALIASES = {"no_wandb": ("use_wandb", False),
                "no_gradient_checkpointing": ("gradient_checkpointing", False)}
# list keys that also take one word instead of a list
KEY_WORDS = {"lora_target_modules": "all-linear"}


class ConfigError(ValueError):
    """A config problem the user must fix; the message names the key or file."""


def _plain_value(key: str, value, path: Path):
    """A config file's value as plain data: a Path becomes its text and a set its sorted list; any other
    object is an error naming the key (dropping it would silently train with the default instead)."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            raise ConfigError(f"config key '{key}' in {path}: a set of mixed types {value!r}; use a list") from None
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_value(key, item, path) for item in value)
    if isinstance(value, dict):
        return {k: _plain_value(key, v, path) for k, v in value.items()}
    if isinstance(value, PLAIN_TYPES):
        return value
    raise ConfigError(f"config key '{key}' in {path} is a {type(value).__name__} ({value!r}"[:200]
                      + "); a config value must be text, a number, a bool, None, or a list/dict of those")


def _is_config_key(name: str, value) -> bool:
    """Names a config file defines as settings: not _private, not imported modules, functions or classes."""
    return not name.startswith("_") and not isinstance(
        value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))


def _run_config_file(path: Path) -> dict:
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # a config is user code: report which file broke and how
        raise ConfigError(f"config file {path} failed to load: {type(exc).__name__}: {exc}") from exc
    return {k: _plain_value(k, v, path) for k, v in namespace.items() if _is_config_key(k, v)}


@functools.cache
def schema() -> dict[str, dataclasses.Field]:
    """key -> its field of TrainConfig, for the keys a config sets (config_file is the loader's own)."""
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "config_file"}


def load_defaults() -> dict:
    defaults = TrainConfig()  # each list or dict default is a fresh copy
    return {key: getattr(defaults, key) for key in schema()}


def key_type(key: str) -> tuple[type, object, bool, tuple | None]:
    """(base type, range constraint or None, whether None is allowed, allowed words or None) of a key."""
    declared, hint, optional = schema()[key], schema()[key].type, False
    if get_origin(hint) in (Union, types.UnionType):
        optional = type(None) in get_args(hint)
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    return hint, declared.metadata["range"], optional, declared.metadata["choices"]


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


def check_type(key: str, value, where: str):
    """`value` coerced to the key's declared type (an int where a float is declared becomes a float, a
    tuple a list), or ConfigError naming the key."""
    base, _, optional, _ = key_type(key)
    if value is None and optional:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r} ({where})")
    if key in KEY_WORDS and value in (KEY_WORDS[key], [KEY_WORDS[key]]):
        return KEY_WORDS[key]  # the one word a list key also takes; as a one-item list PEFT would look for a module of that name
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is list and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, base) and not (isinstance(value, bool) and base is not bool):
        return value
    expected = f"{base.__name__} or None" if optional else f"{base.__name__} (like its default {load_defaults()[key]!r})"
    expected += f" or '{KEY_WORDS[key]}'" if key in KEY_WORDS else ""
    raise ConfigError(f"config key '{key}' must be {expected}, got {type(value).__name__} {value!r} ({where})")


def parse_cli_value(raw: str, key: str):
    """A command-line string as the key's type: a string key takes it as is (--output_dir 1e-4 and
    --wandb_run_name 2024 stay strings), a bool key true/false/yes/no/1/0, others a Python literal."""
    base, _, optional, _ = key_type(key)
    if optional and raw.lower() == "none":
        return None
    if base is bool and bool_word(raw) is not None:
        return bool_word(raw)
    if base is str:
        return raw
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


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Resolve defaults < config file < command line and validate every key and type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = load_defaults()
    config_name, overrides = split_args(argv)
    values = dict(defaults)
    if config_name:
        path = resolve_config_path(config_name)
        for key, value in _run_config_file(path).items():
            if key not in defaults:
                raise _unknown_key_error(key, defaults, f"in {path}")
            values[key] = check_type(key, value, f"in {path}")
        values["config_file"] = str(path)
    for key, raw in overrides:
        if key in FLAG_ALIASES and raw is None:
            key, value = FLAG_ALIASES[key]
        elif key.startswith("no_") and raw is None and key[3:] in defaults and key_type(key[3:])[0] is bool:
            key, value = key[3:], False
        elif key not in defaults:
            raise _unknown_key_error(key, list(defaults) + list(FLAG_ALIASES), "on the command line")
        elif raw is None:
            if key_type(key)[0] is not bool:
                raise ConfigError(f"--{key} needs a value")
            value = True
        else:
            value = parse_cli_value(raw, key)
        values[key] = check_type(key, value, "on the command line")
    config = TrainConfig(**values)
    check_values(config)
    return config


def declared_problem(key: str, value) -> str | None:
    """Why `value` is outside the key's declared words or range, or None."""
    _, constraint, _, choices = key_type(key)
    if value is None:
        return None
    if choices and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
    bounds = {AtLeast: lambda c: (value >= c.low, f">= {c.low}"), Above: lambda c: (value > c.low, f"> {c.low}"),
              Between: lambda c: (c.low <= value <= c.high, f">= {c.low} and <= {c.high}")}
    if constraint is not None:
        ok, wanted = bounds[type(constraint)](constraint)
        if not ok:
            return f"must be {wanted}, got {value!r}"
    return None


def check_values(config: TrainConfig) -> None:
    """Declared words and ranges (train/config_schema.py), then the rules types can't say and the rules
    between keys (train/config_rules.py), before anything loads."""
    from train.config_rules import cross_key_problems, value_problem
    for key, value in dataclasses.asdict(config).items():
        problem = declared_problem(key, value) if key in schema() else None
        problem = problem or value_problem(key, value)
        if problem:
            raise ConfigError(f"config key '{key}' {problem}")
    problems = cross_key_problems(config)
    if problems:
        raise ConfigError(problems[0])


def config_to_json(config: TrainConfig) -> str:
    return json.dumps(redact_data(dataclasses.asdict(config)), indent=2, sort_keys=True)
