"""Print a resolved training config (schema defaults < CONFIG < overrides) as JSON, validated like a run.

    python -m train.show_config ablation2.py --learning_rate=1e-4 --use_wandb false
    python -m train.show_config --config train/configs/tiny_cpu.py --max_steps 5
"""

import sys

from nli_finetune.redaction import redact
from train.config_loader import ConfigError, config_to_json, load_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m train.show_config [--config] CONFIG [--key value | --key=value ...]")
        print("Prints the resolved config (schema defaults < CONFIG < overrides) as JSON.")
        return 0
    try:
        print(config_to_json(load_config(argv)))
    except ConfigError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)  # a bad value may be a pasted key
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
