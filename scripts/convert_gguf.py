"""Dequantize a GGUF model file (Ollama, llama.cpp, LM Studio) into a Hugging Face folder, once.

    python scripts/convert_gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf      # -> models/converted/<stem>/
    python scripts/convert_gguf.py ~/models/x.gguf --cache-dir /data/converted --force

Training, inference and merging accept a `.gguf` path as `model_id` and do this themselves; this script
does it on its own (e.g. before a run without write access to models/). The folder holds float32
safetensors, the tokenizer with its chat template, and `gguf_source.json`; an unchanged file is not
converted again. A GGUF whose architecture transformers can't load exits 2 naming it.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from nli_finetune.cli import ArgumentParser
from nli_finetune.gguf_convert import GGUFError, convert_gguf
from nli_finetune.redaction import redact


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gguf_file")
    p.add_argument("--cache-dir", default=None, help="where converted folders go (default $NLI_FT_CONVERTED_DIR, else models/converted)")
    p.add_argument("--force", action="store_true", help="convert again even if the folder is up to date")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.time()
    try:
        out = convert_gguf(args.gguf_file, Path(args.cache_dir) if args.cache_dir else None, force=args.force)
    except GGUFError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    print(f"convert_gguf: {args.gguf_file} -> {out} ({time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
