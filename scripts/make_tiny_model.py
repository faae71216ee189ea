"""Build a tiny random-weight causal LM and a locally trained tokenizer (tests, demo, benchmarks).

    python scripts/make_tiny_model.py --arch mistral --out models/tiny-mistral
    python scripts/make_tiny_model.py --arch qwen2 --out models/tiny-qwen2 --hidden-size 128

No download: the byte-level BPE tokenizer is trained with the `tokenizers` library on the bundled
sample text, the weights are random (deterministic for a seed), and the result is saved with
`save_pretrained`, so it loads through the same `from_pretrained` path as a real model. Each
architecture gets the special tokens and chat-template style of its real family (Mistral `[INST]`,
Llama-3 headers, Qwen ChatML) and a pad token distinct from eos.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from nli_finetune import REPO_ROOT

SAMPLE_DIR = REPO_ROOT / "data" / "sample"

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[SYS] ' + message['content'] + ' [/SYS]' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Per family: special tokens (bos/eos/unk/pad), extra control tokens, chat template, model config.
ARCHS = {
    "mistral": dict(bos="<s>", eos="</s>", unk="<unk>", pad="<pad>",
                    extra=["[INST]", "[/INST]", "[SYS]", "[/SYS]"], template=MISTRAL_TEMPLATE,
                    config_class="MistralConfig", tie=False),
    "llama": dict(bos="<|begin_of_text|>", eos="<|eot_id|>", unk=None, pad="<|finetune_right_pad_id|>",
                  extra=["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
                  template=LLAMA3_TEMPLATE, config_class="LlamaConfig", tie=False),
    "qwen2": dict(bos=None, eos="<|im_end|>", unk=None, pad="<|endoftext|>",
                  extra=["<|im_start|>"], template=CHATML_TEMPLATE,
                  config_class="Qwen2Config", tie=True),
}


# The tokenizer's training text: a fixed list, so that adding a data file to data/sample/ never changes
# the tiny models (and the outputs the tests compare).
TOKENIZER_CSVS = ["dev_300.csv", "sample.csv", "teacher_cot_1000.csv", "trial.csv"]
TOKENIZER_JSONLS = ["sample_ft.jsonl", "sample_reflections.jsonl", "sample_thoughts.jsonl"]


def sample_texts() -> list[str]:
    """Every string in the bundled NLI sample files: premises, hypotheses, reasoning, JSON answers."""
    texts = []
    for path in (SAMPLE_DIR / name for name in TOKENIZER_CSVS):
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                texts.extend(str(v) for v in row.values() if v)
    for path in (SAMPLE_DIR / name for name in TOKENIZER_JSONLS):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                texts.append(json.dumps(record, ensure_ascii=False))
                texts.extend(str(v) for v in record.values() if isinstance(v, str))
    if not texts:
        sys.exit(f"error: no sample text found under {SAMPLE_DIR}")
    return texts


def train_tokenizer(arch: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = ARCHS[arch]
    specials = [t for t in (spec["bos"], spec["eos"], spec["unk"], spec["pad"]) if t] + spec["extra"]
    tok = Tokenizer(models.BPE(unk_token=spec["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample_texts(), trainer=trainer)
    if spec["bos"]:  # like the real families, encoding adds bos (a chat template adds it itself)
        from tokenizers.processors import TemplateProcessing
        bos_id = tok.token_to_id(spec["bos"])
        tok.post_processor = TemplateProcessing(single=f"{spec['bos']} $A", pair=f"{spec['bos']} $A $B",
                                                special_tokens=[(spec["bos"], bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"], unk_token=spec["unk"],
        pad_token=spec["pad"], additional_special_tokens=spec["extra"], chat_template=spec["template"],
        padding_side="left", model_max_length=2048)


def build_model(arch: str, tokenizer, hidden_size: int, layers: int, seed: int, init_std: float, head_dim: int = 16):
    import torch
    import transformers

    spec = ARCHS[arch]
    torch.manual_seed(seed)
    heads = max(2, hidden_size // head_dim)
    config = getattr(transformers, spec["config_class"])(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
        head_dim=hidden_size // heads, max_position_embeddings=2048, tie_word_embeddings=spec["tie"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=init_std, dtype="float32")
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def make_tiny_model(arch: str, out: str | Path, hidden_size: int = 64, layers: int = 2,
                    vocab_size: int = 2048, seed: int = 0, init_std: float = 0.2, head_dim: int = 16) -> Path:
    out = Path(out)
    tokenizer = train_tokenizer(arch, vocab_size)
    model = build_model(arch, tokenizer, hidden_size, layers, seed, init_std, head_dim)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # transformers 5 would otherwise rebuild a slow-style Qwen2Tokenizer from vocab/merges for a
    # qwen2 config, with different ids than the tokenizer trained here: pin the fast class.
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="mistral")
    parser.add_argument("--out", default=None, help="output dir (default models/tiny-<arch>)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-std", type=float, default=0.2,
                        help="weight init std; larger lets frozen random embeddings express sharp logits")
    parser.add_argument("--head-dim", type=int, default=16,
                        help="attention head size (vLLM's CPU attention needs 32 or more)")
    args = parser.parse_args()
    out = make_tiny_model(args.arch, args.out or REPO_ROOT / "models" / f"tiny-{args.arch}",
                          args.hidden_size, args.layers, args.vocab_size, args.seed, args.init_std,
                          args.head_dim)
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"tiny {args.arch} model: hidden {args.hidden_size}, {args.layers} layers -> {out} ({size_mb:.1f} MB)")


if __name__ == "__main__":
    main()
