"""Issue 40: the suite leaves the checkout as it found it (tests/conftest.py compares its models/, results/ and
data/ before and after the session), and `make -n` only prints. Issue 41: the Makefile's documented knobs."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, checkout_changes, checkout_snapshot

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="no make on this machine")


def makefile_copy(tmp_path: Path) -> Path:
    """The Makefile in an empty folder with its prerequisites' files, so a make run there touches nothing else."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    for path in [*REPO_ROOT.glob("requirements*.txt"), REPO_ROOT / "pyproject.toml"]:
        (tmp_path / path.name).write_text("")
    return tmp_path


def test_i40_the_suite_check_sees_a_file_added_changed_or_removed(tmp_path):
    for top in ("models", "results", "data"):
        (tmp_path / top).mkdir()
    (tmp_path / "models" / "kept").write_text("a")
    (tmp_path / "data" / "gone").write_text("b")
    (tmp_path / "results" / "edited").write_text("c")
    before = checkout_snapshot(tmp_path)
    (tmp_path / "data" / "gone").unlink()
    (tmp_path / "results" / "edited").write_text("cc")
    (tmp_path / "models" / "demo").mkdir()
    (tmp_path / "models" / "demo" / "adapter.safetensors").write_text("new")
    (tmp_path / "models" / "x.gguf").symlink_to(tmp_path / "nowhere")  # a dangling link counts too
    assert checkout_changes(before, checkout_snapshot(tmp_path)) == [
        "added: models/demo/adapter.safetensors", "added: models/x.gguf", "removed: data/gone",
        "changed: results/edited"]


def test_i40_gguf_conversions_of_the_suite_go_to_its_temp_folder(tmp_path, monkeypatch):
    from nli_finetune.gguf_convert import CONVERTED_DIR, CONVERTED_DIR_ENV, converted_dir_for
    assert not Path(os.environ[CONVERTED_DIR_ENV]).resolve().is_relative_to(REPO_ROOT)  # tests/conftest.py
    monkeypatch.setenv(CONVERTED_DIR_ENV, str(tmp_path / "conversions"))
    assert converted_dir_for(tmp_path / "m.gguf") == tmp_path / "conversions" / "m"
    monkeypatch.delenv(CONVERTED_DIR_ENV)
    assert converted_dir_for(tmp_path / "m.gguf") == CONVERTED_DIR / "m"  # the default: models/converted


@needs_make
def test_i40_make_n_test_prints_the_suite_and_runs_nothing(tmp_path):
    root = makefile_copy(tmp_path)
    marker = tmp_path / "ran"
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake_python.chmod(0o755)
    proc = subprocess.run([MAKE, "-n", "test", f"PY={fake_python}", "CHROMIUM=/bin/sh"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{fake_python} -m pytest -q -n 2" in proc.stdout  # printed ...
    assert not marker.exists() and not (root / ".test-vllm.log").exists()  # ... not run


@needs_make
def test_i41_torch_index_reaches_pip_for_a_cpu_build():
    index = "https://download.pytorch.org/whl/cpu"
    # -n -B: print every install line as if nothing were installed; nothing runs, nothing is downloaded
    proc = subprocess.run([MAKE, "-n", "-B", ".venv/.installed", f"TORCH_INDEX={index}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"pip install --quiet --extra-index-url {index} -r requirements-dev.txt" in proc.stdout
    default = subprocess.run([MAKE, "-n", "-B", ".venv/.installed"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60)
    assert "--extra-index-url" not in default.stdout  # PyPI alone unless asked


@needs_make
def test_i41_chromium_names_another_browser_and_a_missing_one_is_one_line(tmp_path):
    root = makefile_copy(tmp_path)
    missing = tmp_path / "no" / "chromium"
    proc = subprocess.run([MAKE, "--no-print-directory", f"CHROMIUM={missing}", str(missing)], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"error: CHROMIUM={missing} is not a file" in proc.stderr and "make test-fast" in proc.stderr
    printed = subprocess.run([MAKE, "-n", "test", "CHROMIUM=/bin/sh", "PY=true"], cwd=root, capture_output=True,
                             text=True, timeout=60)
    assert "apt-get" not in printed.stdout  # an existing browser: nothing to install


def test_i41_the_demo_places_a_real_model_file_not_a_link_into_the_venv(tmp_path, monkeypatch):
    """A symlink into the host's .venv dangles in the container (models/ is mounted, .venv is not): the demo
    hard-links the packaged file where it can, else copies it, and replaces a link an earlier demo made."""
    from scripts import demo
    source = tmp_path / "site-packages" / "model.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + bytes(1000))
    target = tmp_path / "models" / "model.gguf"
    target.parent.mkdir()
    target.symlink_to(source)  # what the demo used to make
    demo.place_model(source, target)
    assert not target.is_symlink() and target.samefile(source)  # the same filesystem: a hard link
    demo.place_model(source, target)  # again: nothing to do
    assert target.samefile(source)

    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(demo.os, "link", no_links)
    target.unlink()
    demo.place_model(source, target)
    assert not target.is_symlink() and not target.samefile(source) and target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf"]  # no temp file left
