"""The main job on the embedded default: tiny local model + bundled sample data, CPU only.

    make demo                  (creates .venv, installs, runs this)
    python scripts/demo.py

Stage 1 builds the tiny model; later stages (data, training, inference, comparison) are added as the
training and inference scripts land.
"""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from modeling import load_for_inference  # noqa: E402
from prompts import encode_prompt, example_messages  # noqa: E402
from data_io import read_records  # noqa: E402

MODEL_DIR = REPO_ROOT / "models" / "tiny-mistral"


def main():
    subprocess.run([sys.executable, "scripts/make_tiny_model.py", "--arch", "mistral", "--out", str(MODEL_DIR)],
                   cwd=REPO_ROOT, check=True)
    import torch
    model, tokenizer, _ = load_for_inference(str(MODEL_DIR), device="cpu")
    rows = read_records(REPO_ROOT / "data" / "sample" / "sample.csv")[:3]
    for row in rows:
        ids = torch.tensor([encode_prompt(tokenizer, example_messages(row))])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
        print("untrained output:", repr(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
    print(f"demo: built {MODEL_DIR.relative_to(REPO_ROOT)} and generated for {len(rows)} sample prompts")


if __name__ == "__main__":
    main()
