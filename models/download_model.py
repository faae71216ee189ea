"""Download a base model or a trained adapter from the Hugging Face hub into models/.

    python models/download_model.py --repo-id mistralai/Mistral-7B-v0.3
    python models/download_model.py --repo-id my-org/mistral-7b-nli-cot-ablation2 --out models/ablation2
HF_TOKEN (environment or .env) is used for gated or private repos. Offline, it fails fast with exit status 2.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hub_download import download  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", required=True)
    p.add_argument("--out", default=None, help="default models/<repo name>")
    p.add_argument("--revision", default=None)
    a = p.parse_args()
    sys.exit(download(a.repo_id, Path(a.out or Path(__file__).parent / a.repo_id.split("/")[-1]), "model", a.revision))
