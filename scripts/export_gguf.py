"""Export a fine-tuned model to one GGUF file for llama.cpp, Ollama and LM Studio (nothing compiled).

    python scripts/export_gguf.py --model models/smollm2-135m-nli-demo --outfile nli.gguf --outtype q8_0
    python scripts/export_gguf.py --model models/smollm2-135m-nli-demo --outfile nli-same.gguf --outtype same
    python scripts/export_gguf.py --model models/smollm2-135m-nli-demo --outfile nli-lora.gguf --adapter-only
    python scripts/export_gguf.py --model models/my-run/merged --outfile my.gguf --outtype q4_k_m   # llama-quantize
    ollama create nli -f nli.Modelfile && ollama run nli

--model is a LoRA adapter (merged into its base: a hub id, a folder, or the GGUF file it was trained from;
tokens the adapter added come along) or a merged model folder. --outtype: f16, bf16, q8_0 (and q4_0, q4_1,
q5_0, q5_1) are written in numpy; `same` keeps the base GGUF's own type (SmolLM2: Q4_1, its embedding
Q8_0) for every tensor the fine-tune left alone and writes the ones it changed as Q8_0 (--changed-type);
K-quants (q4_k_m, ...) are written as f16 to a temp folder and quantized there by llama.cpp's `llama-quantize`
when it is on PATH; else `<name>.f16.gguf` is the output and the command to run is printed. Beside the
file: `<name>.Modelfile` for Ollama (FROM the file written, the trained chat template as TEMPLATE, stop
token, temperature 0, the task's system line). Bad input (not a model, an architecture other than
llama/mistral/qwen2/qwen3, an output that exists, is an input or lies in a folder the model is read from)
exits 2 with one line; a full disk exits 1; a failed export leaves no file behind, and a rerun removes the
temp files of an export of the same file that was killed. See docs/gguf.md.
"""

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nli_finetune.cli import ArgumentParser, on_terminal
from nli_finetune.data_io import DataError, atomic_write_text, check_outputs, path_overlap
from nli_finetune.gguf_export import (
    CHANGED_TYPE,
    OUTTYPES,
    WRITABLE,
    ExportError,
    WriteError,
    describe,
    export_adapter,
    export_model,
    modelfile_text,
    remove_stale_temps,
    temp_beside,
)
from nli_finetune.modeling import ModelLoadError

# 4/5-bit types: re-quantizing a merged LoRA to them rounds most of its change back to the base
COARSE = ("q4_0", "q4_1", "q5_0", "q5_1")
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


def parse_args(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned output: LoRA adapter folder or merged model folder")
    p.add_argument("--outfile", required=True, help="the .gguf file to write")
    p.add_argument("--outtype", default="f16", choices=[*OUTTYPES, *K_QUANTS])
    p.add_argument("--changed-type", default=CHANGED_TYPE, choices=WRITABLE,
                   help="with --outtype same: the type of the tensors the fine-tune changed (default: %(default)s)")
    p.add_argument("--adapter-only", action="store_true", help="write the LoRA alone (llama.cpp --lora, Ollama ADAPTER)")
    p.add_argument("--base_model", default=None, help="the adapter's base, when adapter_config.json's can't be found")
    p.add_argument("--allow_other_base", action="store_true",
                   help="merge an adapter into a base other than the one its model_contract.json records (the "
                        "file's metadata then names both)")
    p.add_argument("--force", action="store_true", help="replace an existing --outfile")
    return p.parse_args(argv)


def model_folders(args, source) -> list[Path]:
    """Where the export reads the model from: --model, the adapter's base, the base GGUF's converted folder
    (made by this export when missing). A file written inside one would change that model (and the
    fingerprints saved progress is tied to)."""
    from nli_finetune.gguf_convert import converted_dir_for
    from nli_finetune.modeling import model_locations
    folders = model_locations(str(source.path), args.base_model)
    if source.base_gguf is not None:
        folders.append(converted_dir_for(source.base_gguf))
    return folders


def check_paths(args, source, keep_f16: bool) -> tuple[Path, Path, Path | None]:
    """(--outfile, its Modelfile, the f16 file a K-quant export leaves for llama-quantize, or None), all
    checked before any weight loads: none exists (unless --force), is an input or lies in a model folder."""
    out = Path(args.outfile).expanduser()
    if out.suffix.lower() != ".gguf":
        raise ExportError(f"--outfile {out}: must end in .gguf")
    outputs = {"--outfile": out, "Modelfile": out.with_suffix(".Modelfile"),
               "f16 file for llama-quantize": out.with_name(out.stem + ".f16.gguf") if keep_f16 else None}
    for path in filter(None, outputs.values()):
        if path.exists() and not args.force:
            raise ExportError(f"{path} exists; choose another --outfile or pass --force to replace it")
    inputs = {"--model": source.path, "the base GGUF": source.base_gguf}
    inputs.update({f"--model file {f.name}": f for f in source.path.iterdir() if f.is_file()})
    try:
        check_outputs(inputs, outputs)
    except DataError as exc:
        raise ExportError(str(exc)) from exc
    for name, path in filter(lambda item: item[1] is not None, outputs.items()):
        for folder in model_folders(args, source):
            if path_overlap(path, folder) == "lies inside":
                raise ExportError(f"{name} {path} lies inside {folder}, which the export reads the model from: "
                                  "writing there would change that model; choose another --outfile")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, outputs["Modelfile"], outputs["f16 file for llama-quantize"]


def load_merged(args, source):
    from nli_finetune.modeling import load_for_inference
    model, tokenizer, _ = load_for_inference(str(source.path), device="cpu", load_in_4bit=False, dtype="float32",
                                             base_model=args.base_model)
    return model, tokenizer


def k_quant_target(outtype: str, source) -> str | None:
    """llama-quantize's type name when the export needs it: a K-quant asked for, or `same` on a K-quant base."""
    if outtype in K_QUANTS:
        return outtype.upper()
    if outtype == "same" and source.base_gguf is not None:
        from gguf import LlamaFileType

        from nli_finetune.gguf_header import read_gguf_header
        file_type = read_gguf_header(source.base_gguf).metadata.get("general.file_type")
        name = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else ""
        if "_K" in name:
            return name
    return None


def quantize_with_llama_cpp(quantizer: str, model, tokenizer, source, out: Path, target: str, **export_options):
    """The f16 file in a temp folder beside `out` (never an existing file, never an input), quantized there
    by llama-quantize and renamed to `out`: a failure or a kill leaves nothing a rerun keeps."""
    with temp_beside(out, folder=True) as work:
        summary = export_model(model, tokenizer, source, work / "f16.gguf", "f16", **export_options)
        subprocess.run([quantizer, str(work / "f16.gguf"), str(work / out.name), target], check=True)
        os.replace(work / out.name, out)
    return summary


def same_note(summary: dict, changed_type: str) -> str:
    """The one line saying what `same` did: which tensors kept the base's type and which went finer."""
    changed = len(summary["changed"])
    kept = sum(summary["tensor_types"].values()) - summary["tensor_types"].get("F32", 0) - changed  # matrices
    if not changed:
        return f"same: all {kept} matrices are the base's own blocks (the fine-tune changed none of them)"
    return (f"same: {kept} matrices the fine-tune left alone keep the base's types; the {changed} it changed are "
            f"{changed_type.upper()}, because re-quantizing them to the base's 4/5-bit blocks would round the "
            "fine-tune away (docs/gguf.md)")


def export(args) -> str:
    started = time.time()
    source = describe(args.model, args.base_model, args.allow_other_base)
    if args.adapter_only and not source.adapter:
        raise ExportError(f"{source.path}: --adapter-only needs a LoRA adapter folder (adapter_config.json)")
    target = k_quant_target(args.outtype, source) if not args.adapter_only else None
    quantizer = shutil.which("llama-quantize") if target else None
    # without llama-quantize the f16 file is what the user gets (and quantizes): an output like --outfile
    out, modelfile, kept_f16 = check_paths(args, source, keep_f16=bool(target) and quantizer is None)
    written = kept_f16 or out
    for path in {out, written}:  # what an export of these files killed mid-write left
        remove_stale_temps(path)
    note = ""
    if args.adapter_only:
        from nli_finetune.modeling import load_tokenizer
        tokenizer = load_tokenizer(str(source.path))
        summary = export_adapter(source, out, args.outtype, progress=on_terminal())
    else:
        if args.outtype in COARSE and source.base_gguf is not None:
            print(f"warning: --outtype {args.outtype} re-quantizes every merged weight to 4/5-bit blocks, which rounds "
                  "away much of the fine-tune's change; --outtype same keeps it (docs/gguf.md)", file=sys.stderr)
        model, tokenizer = load_merged(args, source)
        from prompts import chat_template
        options = {"chat_template": chat_template(tokenizer), "progress": on_terminal(),
                   "changed_type": args.changed_type}
        if quantizer:
            summary = quantize_with_llama_cpp(quantizer, model, tokenizer, source, out, target, **options)
            note = f"; quantized to {target} with llama-quantize"
        else:
            summary = export_model(model, tokenizer, source, written, "f16" if target else args.outtype, **options)
        if kept_f16:
            note = (f"; {target} needs llama.cpp's llama-quantize (not on PATH): the f16 file is written and "
                    f"{modelfile.name} names it; for {target} run: llama-quantize {kept_f16} {out} {target}")
        if args.outtype == "same" and not target:
            print(same_note(summary, args.changed_type))
    from prompts import chat_template
    text = modelfile_text(written.name, tokenizer, chat_template(tokenizer), source.trained.get("system_prompt"),
                          adapter=out.name if args.adapter_only else None, base_gguf=source.base_gguf)
    atomic_write_text(modelfile, text)
    types = ", ".join(f"{count} {kind}" for kind, count in summary["tensor_types"].items())
    return (f"export_gguf: {source.path} -> {written} ({args.outtype}: {types}; "
            f"{written.stat().st_size / 1e6:.1f} MB, {time.time() - started:.0f}s); {modelfile.name} beside it{note}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        print(export(args))
    except (ExportError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: llama-quantize exited {exc.returncode} (its output is above); nothing was left behind",
              file=sys.stderr)
        return 1
    except WriteError as exc:
        print(f"error: {exc} (is the disk full? nothing was left behind); free some space or choose another "
              "--outfile", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
