"""Fetching data sets, models and adapters from the Hugging Face hub (shared by the download scripts).

The token comes from HF_TOKEN (environment or .env) and is never printed. Without network (or with
HF_HUB_OFFLINE=1) the download fails fast with a clear message instead of retrying for a minute.
"""

import os
import sys
from pathlib import Path

from nli_finetune.cli import ArgumentParser
from nli_finetune.data_io import load_env_file


def download(repo_id: str, out: Path, repo_type: str, revision: str | None = None) -> int:
    load_env_file()
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    from huggingface_hub import snapshot_download
    try:
        path = snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision, local_dir=str(out),
                                 token=os.environ.get("HF_TOKEN") or None)
    except Exception as exc:  # offline mode, no network, auth, missing repo: one clear line for each
        reason = type(exc).__name__
        hint = ("the hub is unreachable or HF_HUB_OFFLINE=1 is set" if "Offline" in reason or "Connect" in reason
                or "Timeout" in reason or os.environ.get("HF_HUB_OFFLINE") == "1"
                else "check the repo id and that HF_TOKEN grants access")
        print(f"error: could not download {repo_type} {repo_id}: {reason} ({hint})", file=sys.stderr)
        return 2
    print(f"downloaded {repo_type} {repo_id} -> {path}")
    return 0


def cli(doc: str, repo_type: str, default_parent: Path) -> int:
    """The command line both download scripts share: --repo-id, --out (default <parent>/<repo name>), --revision."""
    import argparse
    p = ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", required=True)
    p.add_argument("--out", default=None, help=f"default {default_parent.name}/<repo name>")
    p.add_argument("--revision", default=None)
    args = p.parse_args()
    return download(args.repo_id, Path(args.out or default_parent / args.repo_id.split("/")[-1]), repo_type,
                    args.revision)
