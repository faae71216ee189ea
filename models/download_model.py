"""Download a base model or a trained adapter from the Hugging Face hub into models/.

    python models/download_model.py --repo-id mistralai/Mistral-7B-v0.3
    python models/download_model.py --repo-id my-org/mistral-7b-nli-cot-ablation2 --out models/ablation2
HF_TOKEN (environment or .env) is used for gated or private repos. Offline, it fails fast with exit status 2.
"""

import sys
from pathlib import Path

from nli_finetune.hub_download import cli

if __name__ == "__main__":
    sys.exit(cli(__doc__, "model", Path(__file__).resolve().parent))
