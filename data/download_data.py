"""Download a data set repository from the Hugging Face hub into data/.

    python data/download_data.py --repo-id my-org/nli-cot-data --out data/nli-cot
HF_TOKEN (environment or .env) is used for private repos. Offline, it fails fast with exit status 2.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hub_download import download  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", required=True)
    p.add_argument("--out", default=None, help="default data/<repo name>")
    p.add_argument("--revision", default=None)
    a = p.parse_args()
    sys.exit(download(a.repo_id, Path(a.out or Path(__file__).parent / a.repo_id.split("/")[-1]), "dataset",
                      a.revision))
