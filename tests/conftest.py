"""Shared fixtures: tiny local models built once per test session (no hub access, CPU only)."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `make test` two workers (and the vLLM tests beside them) share the cores: one thread each, in
    # this process and every training or inference subprocess it starts. Two workers of two OpenMP threads
    # each on two cores ran the real-model CoT test in 919 s against 212 s alone (measured).
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"


# The checkout's folders a user's own runs fill (make demo, make study, make gemma): the suite must leave them as
# they were. Every file below them (tracked, untracked or ignored) is compared before and after the session.
CHECKOUT_OUTPUTS = ("models", "results", "data")
_SNAPSHOT, _CHANGES = pytest.StashKey[dict](), pytest.StashKey[list]()


def checkout_snapshot(root: Path = REPO_ROOT) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file or link below the output folders (links not followed)."""
    snapshot = {}
    for top in CHECKOUT_OUTPUTS:
        for folder, dirs, files in os.walk(root / top):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = Path(folder) / name
                try:
                    stat = path.lstat()
                except FileNotFoundError:  # removed between the listing and the stat
                    continue
                snapshot[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


def checkout_changes(before: dict, after: dict) -> list[str]:
    """One line per file the session added, changed or removed."""
    return ([f"added: {p}" for p in sorted(after.keys() - before.keys())]
            + [f"removed: {p}" for p in sorted(before.keys() - after.keys())]
            + [f"changed: {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]])


def pytest_sessionstart(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller sees the whole run; workers see a part
        session.config.stash[_SNAPSHOT] = checkout_snapshot()


def pytest_sessionfinish(session, exitstatus):
    """The suite fails when it wrote into the checkout's models/, results/ or data/ (issue 40)."""
    before = session.config.stash.get(_SNAPSHOT, None)
    if before is None:
        return
    changes = checkout_changes(before, checkout_snapshot())
    session.config.stash[_CHANGES] = changes
    if changes and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    changes = config.stash.get(_CHANGES, [])
    if changes:
        terminalreporter.write_line(f"FAILED: the tests wrote into the checkout ({len(changes)} files under "
                                    f"{', '.join(t + '/' for t in CHECKOUT_OUTPUTS)}; tests write under tmp_path only):", red=True)
        for line in changes[:20]:
            terminalreporter.write_line(f"  {line}")


@pytest.fixture(scope="session", autouse=True)
def conversions_in_a_temp_folder(tmp_path_factory):
    """GGUF files are dequantized into the session's temp folder, not models/converted/ (shared by the xdist
    workers of one run: their common parent folder; the conversion takes a file lock)."""
    from nli_finetune.gguf_convert import CONVERTED_DIR_ENV
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "converted"
    os.environ[CONVERTED_DIR_ENV] = str(root)
    yield root


# The files that took longest under `make test` (docs/benchmarks.md): the real model trains in both.
LONGEST_FILES = ("test_learning.py", "test_real_model.py")
# The files that took longest under `make test-fast` (the slow tests left out), longest first (measured, #44).
LONGEST_FAST_FILES = ("test_train_sft.py", "test_wrappers.py", "test_study.py", "test_calibrate.py",
                      "test_sample_model.py", "test_export_gguf.py", "test_gpu_check.py", "test_serve_plan.py",
                      "test_confidence.py", "test_api_safety.py")


@pytest.hookimpl(trylast=True)  # after `-m "not slow"` has deselected: then no file holds a slow test
def pytest_collection_modifyitems(config, items):
    """The longest files first, then the other files holding a `slow` test, then the rest, the fast suite's
    longest files first within each. `--dist loadfile` hands whole files to the two workers in this order, so
    the minutes-long real-model runs (the longest fast files under make test-fast) overlap the many short files
    instead of ending the run alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def order(item):
        name = item.path.name
        fast_rank = LONGEST_FAST_FILES.index(name) if name in LONGEST_FAST_FILES else len(LONGEST_FAST_FILES)
        return name not in LONGEST_FILES, item.path not in slow_files, fast_rank
    items.sort(key=order)  # stable: the rest keep their collection order


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{arch: path} of freshly built tiny models, one per architecture."""
    from scripts.make_tiny_model import ARCHS, make_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: make_tiny_model(arch, root / f"tiny-{arch}") for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_mistral(tiny_models):
    return tiny_models["mistral"]


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, skipping the test when the checkout has no shared/ beside it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def run_train(model_dir, out_dir, *overrides, train_data=None):
    """train_sft in-process on the tiny model with quick CPU settings; returns (exit code, out_dir)."""
    from train.train_sft import main
    args = ["tiny_cpu.py", "--model_id", str(model_dir), "--output_dir", str(out_dir),
            "--train_data", str(train_data or REPO_ROOT / "data/sample/sample_thoughts.jsonl"),
            "--eval_data", "None", "--max_steps", "12", "--batch_size", "4", "--logging_steps", "4",
            "--save_steps", "6", "--max_train_examples", "32", "--learning_rate", "3e-3", *map(str, overrides)]
    return main(args), Path(out_dir)


@pytest.fixture(scope="session")
def trained_adapter(tiny_mistral, tmp_path_factory):
    """A LoRA adapter trained for a few steps on the real sample thoughts."""
    code, out = run_train(tiny_mistral, tmp_path_factory.mktemp("adapter") / "run")
    assert code == 0
    return out


def patch_fast_retries(setattr=setattr) -> None:
    """ChatClient waits 0.01 s, 0.02 s, ... between attempts instead of 1 s, 2 s, ... backoff_base is a
    dataclass field, whose default __init__ fixed when the class was made: setting the class attribute
    changes nothing (it did nothing here for a while, and the API tests waited out real backoffs)."""
    from nli_finetune.llm_api import ChatClient
    post_init = ChatClient.__post_init__

    def fast(self):
        post_init(self)
        self.backoff_base = min(self.backoff_base, 0.01)
    setattr(ChatClient, "__post_init__", fast)


@pytest.fixture()
def fast_retries(monkeypatch):
    patch_fast_retries(monkeypatch.setattr)


# The data-generation scripts against the local fake endpoint: short timeouts, few attempts.
FAST = ["--api", "local", "--timeout", "1", "--max-attempts", "4", "--max-retries", "2"]


@pytest.fixture()
def server():
    """A local OpenAI-compatible server (nli_finetune/testing/fake_chat_server.py) on 127.0.0.1."""
    from nli_finetune.testing.fake_chat_server import FakeChatServer
    with FakeChatServer(slow_seconds=2.0, retry_after="0") as s:
        yield s
