"""The exported GGUF run by llama.cpp itself (llama-cpp-python, compiled from its sdist) against the merged
Hugging Face model: greedy answers on held-out pairs, the prompt built from the chat template in the file.

    make llama-cpp-check                       # builds .venv-llama-cpp once (minutes), then runs this
    make llama-cpp-check LLAMA_CPP_ADAPTER=results/study/nli_smollm2/arms/label_only/model   # another adapter
    python bench/gguf_llama_cpp.py --llama-python .venv-llama-cpp/bin/python --adapter /tmp/run --rows 50

Opt-in, not part of `make test`. The q8_0 merged file must give the same answer as HF on >= 96% of the
pairs (exit 1 otherwise); the LoRA-only file on the base GGUF it was trained from (`llama.cpp --lora`) and
the merged f16 file and the `same` file (the base's Q4_1 where the fine-tune changed nothing, Q8_0 where it
did) are measured too. This file runs twice: in the main venv (export, HF answers,
comparison) and, with --worker, in llama.cpp's venv, which needs nothing but llama_cpp and jinja2.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# not nli_finetune.REPO_ROOT: the worker runs in llama.cpp's venv, where this project is not installed
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ADAPTER = REPO_ROOT / "models/smollm2-135m-nli-demo"
NEEDED = 0.96


def llama_cpp_answers(job: dict) -> dict:
    """In llama.cpp's venv: the answers and prompt token ids llama.cpp gives for each chat."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp import Llama
    llm = Llama(model_path=job["gguf"], lora_path=job.get("lora"), n_ctx=1024, n_threads=2, seed=0, verbose=False)
    template = ImmutableSandboxedEnvironment().from_string(llm.metadata["tokenizer.chat_template"])
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    answers, prompts = [], []
    for messages in job["messages"]:
        reply = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, max_tokens=job["max_tokens"])
        answers.append(reply["choices"][0]["message"]["content"] or "")
        text = template.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)
        prompts.append(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"answers": answers, "prompt_ids": prompts}


def run_worker(llama_python: str, job: dict, tmp: Path) -> tuple[dict, float]:
    job_file, result_file = tmp / "job.json", tmp / "result.json"
    job_file.write_text(json.dumps(job))
    started = time.time()
    subprocess.run([llama_python, __file__, "--worker", str(job_file), str(result_file)], check=True)
    return json.loads(result_file.read_text()), time.time() - started


def hf_reference(adapter: Path, messages: list, max_tokens: int) -> dict:
    from nli_finetune.generation import generate_answers
    from nli_finetune.modeling import load_for_inference
    from prompts import encode_prompt
    model, tokenizer, _ = load_for_inference(str(adapter), device="cpu", load_in_4bit=False, dtype="float32")
    prompts = [encode_prompt(tokenizer, m) for m in messages]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=max_tokens, stop_at_json=False,
                               progress=False)
    return {"answers": [a["text"] for a in answers], "prompt_ids": prompts}


def export(adapter: Path, out: Path, *flags: str) -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts/export_gguf.py"), "--model", str(adapter),
                    "--outfile", str(out), *flags], check=True)


def compare(name: str, reference: dict, got: dict, seconds: float) -> dict:
    same = sum(a.strip() == b.strip() for a, b in zip(reference["answers"], got["answers"]))
    prompts = sum(a == b for a, b in zip(reference["prompt_ids"], got["prompt_ids"]))
    n = len(reference["answers"])
    row = {"file": name, "identical answers": f"{same}/{n}", "agreement": same / n,
           "identical prompt ids": f"{prompts}/{n}", "llama.cpp s": seconds}
    print(row, flush=True)
    for a, b in zip(reference["answers"], got["answers"]):  # the first difference, to see what kind it is
        if a.strip() != b.strip():
            print(f"  first different answer: HF {a!r} vs llama.cpp {b!r}", flush=True)
            break
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama-python", default=str(REPO_ROOT / ".venv-llama-cpp/bin/python"))
    p.add_argument("--adapter", default=str(DEMO_ADAPTER))
    p.add_argument("--rows", type=int, default=50, help="held-out pairs of data/sample/dev_300.csv")
    p.add_argument("--max-tokens", type=int, default=12)
    p.add_argument("--worker", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        job = json.loads(Path(args.worker[0]).read_text())
        Path(args.worker[1]).write_text(json.dumps(llama_cpp_answers(job)))
        return 0
    adapter = Path(args.adapter)
    if not (adapter / "adapter_config.json").is_file():
        print(f"error: {adapter}: no adapter there (run `make demo`, or pass --adapter; with make: "
              "LLAMA_CPP_ADAPTER=DIR)", file=sys.stderr)
        return 2
    from nli_finetune.cli import format_table
    from nli_finetune.data_io import read_csv
    from nli_finetune.gguf_export import describe
    from prompts import get_task
    task = get_task("nli_label")
    messages = [task.messages(r) for r in read_csv(REPO_ROOT / "data/sample/dev_300.csv")[:args.rows]]
    reference = hf_reference(adapter, messages, args.max_tokens)
    base_gguf = describe(adapter).base_gguf
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # f16 beside q8_0 tells a quantization effect from an export error: f16 is llama.cpp on the HF weights
        files = {"q8_0": ("merged q8_0", ["--outtype", "q8_0"]), "f16": ("merged f16", ["--outtype", "f16"]),
                 "same": ("merged same (Q4_1 + Q8_0)", ["--outtype", "same"])}
        if base_gguf is not None:
            files["lora"] = ("LoRA f16 on the base GGUF", ["--adapter-only"])
        for key, (name, flags) in files.items():
            out = tmp / f"{key}.gguf"
            export(adapter, out, *flags)
            job = {"gguf": str(out), "messages": messages, "max_tokens": args.max_tokens}
            if key == "lora":
                job.update(gguf=str(base_gguf), lora=str(out))
            got, seconds = run_worker(args.llama_python, job, tmp)
            rows.append(compare(name, reference, got, seconds))
    print(format_table(rows, list(rows[0])))
    if rows[0]["agreement"] < NEEDED:
        print(f"llama-cpp-check: q8_0 agreement {rows[0]['agreement']:.3f} < {NEEDED}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
