"""What the CUDA image downloads: the size of every locked wheel for Linux x86_64 / CPython 3.12.

    python bench/image_size.py            # needs the package index (one look-up per locked package)

No GPU or Docker engine is needed: the index lists each file's size. Prints a table per environment
(download size, and the largest packages); the installed size is larger (wheels are zip archives),
so the README gives both the measured download and an installed-size estimate.
"""

import json
import os
import re
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

from scripts.lock_envs import LOCKS, pins

REPO = Path(__file__).resolve().parent.parent

INDEX = os.environ.get("UV_INDEX_URL", "https://pypi.org/simple").rstrip("/")
WHEEL_TAGS = re.compile(r"-(cp312|py3|py2\.py3|cp3\d+-abi3)-[^-]+-(manylinux[^.]*x86_64|any|linux_x86_64)\.whl$")
MB = 1e6


def file_size(name: str, version: str) -> tuple[int, str]:
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    stem = re.sub(r"[-_.]+", "_", name).lower()
    candidates = [f for f in files if re.sub(r"[-_.]+", "_", f["filename"].split("-")[0]).lower() == stem
                  and re.match(re.escape(version) + r"(-|\.tar\.gz$|\.zip$)", f["filename"].split("-", 1)[1])]
    wheels = [f for f in candidates if WHEEL_TAGS.search(f["filename"].replace("manylinux_", "manylinux"))]
    chosen = max(wheels or candidates, key=lambda f: "cp312" in f["filename"], default=None)
    if chosen is None:
        return 0, "not found"
    return chosen.get("size") or 0, "wheel" if wheels else "sdist"


def main() -> int:
    sizes = {}
    rows = []
    for lock in LOCKS:
        locked = pins(REPO / lock)
        total = 0
        largest = []
        for name, version in tqdm(sorted(locked.items()), desc=Path(lock).name, mininterval=5,
                                  disable=None):
            if (name, version) not in sizes:
                sizes[(name, version)] = file_size(name, version)
            size, kind = sizes[(name, version)]
            total += size
            largest.append((size, name))
        top = ", ".join(f"{n} {s / MB:.0f}" for s, n in sorted(largest, reverse=True)[:4])
        rows.append((lock, len(locked), total, top))
    print("\n| lock | packages | download (MB) | largest (MB) |\n|---|---|---|---|")
    for lock, count, total, top in rows:
        print(f"| {lock} | {count} | {total / MB:,.0f} | {top} |")
    environments = [lock for lock in LOCKS if "train" in lock or "vllm" in lock]
    shared = sum(size for (name, version), (size, _) in sizes.items()
                 if all(pins(REPO / lock).get(name) == version for lock in environments))
    total = sum(r[2] for r in rows)
    print(f"image_size: {total / MB:,.0f} MB of wheels in all; {shared / MB:,.0f} MB of it is the same files in both "
          f"environments, downloaded once and hard-linked by uv: {(total - shared) / MB:,.0f} MB to fetch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
