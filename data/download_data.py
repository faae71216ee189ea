"""Download a data set repository from the Hugging Face hub into data/.

    python data/download_data.py --repo-id my-org/nli-cot-data --out data/nli-cot
HF_TOKEN (environment or .env) is used for private repos. Offline, it fails fast with exit status 2.
"""

import sys
from pathlib import Path

from nli_finetune.hub_download import cli

if __name__ == "__main__":
    sys.exit(cli(__doc__, "dataset", Path(__file__).resolve().parent))
