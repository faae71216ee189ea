"""Issue 44 part 3: sample_model resolves one frozen InferenceRun from its arguments and the model's contract,
and its three backends (HF, vLLM, an API) share one interface (evaluate/inference_run.Backend)."""

import ast
import dataclasses
import inspect
import subprocess
import sys

import pytest

from nli_finetune.data_io import DataError
from prompts import TASKS
from tests.conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "data/sample/sample.csv"


def assignments_to(tree: ast.AST, name: str) -> list[str]:
    """Every place that sets an attribute of `name`: `name.x = ...`, `name.x += ...`, `setattr(name, ...)`,
    and `getattr(name, ...)` (how code reads an attribute that some other code may have added)."""
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "getattr"):
            if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == name:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == name:
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_p3_sample_model_never_assigns_to_its_parsed_arguments():
    tree = ast.parse((REPO_ROOT / "evaluate/sample_model.py").read_text())
    assert not assignments_to(tree, "args")
    # the checker sees each form
    probe = ast.parse("args.a = 1\nargs.b += 1\nsetattr(args, 'c', 1)\nx = getattr(args, 'd', None)\nrun.e = 2\n")
    assert len(assignments_to(probe, "args")) == 4


def resolve(*argv):
    from evaluate.inference_run import build_parser, resolve_run
    return resolve_run(build_parser().parse_args(["--test_file", str(SAMPLE), *map(str, argv)]))


def test_p3_the_run_is_resolved_once_and_frozen(tiny_mistral, tmp_path):
    run = resolve("--model_id", tiny_mistral, "--output_file", tmp_path / "o.json")
    assert run.task is TASKS["nli"] and run.stop_at_json is True and run.batch_size == 8 and run.contract is None
    assert run.paths["--output_csv"] == tmp_path / "o.csv" and "reliability diagram" not in run.paths
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.batch_size = 1
    api = resolve("--backend", "openai", "--model_name", "m", "--task", "free_text", "--batch_size", 8)
    assert api.batch_size == 1 and api.stop_at_json is False and api.label == "m"  # every answer saved as it arrives
    scored = resolve("--model_id", tiny_mistral, "--task", "nli_label", "--scoring", "logprob", "--abstain_below", 0)
    assert scored.abstain_below is None and scored.paths["reliability diagram"].name.endswith(".reliability.png")


def fake_vllm_generator(monkeypatch):
    """vLLM is not installed in .venv: an engine that answers every prompt at once."""
    import evaluate.vllm_backend as vllm_backend
    from nli_finetune.modeling import load_tokenizer

    class FakeVllm:
        def __init__(self, model_id, **kwargs):
            self.tokenizer = load_tokenizer(str(model_id))

        def generate(self, prompts, *, max_new_tokens, on_batch=None, stop_at_json=True):
            on_batch([(i, {"text": "{}", "stop_reason": "json", "generated_tokens": 1}) for i in range(len(prompts))])

        def close(self):
            pass
    monkeypatch.setattr(vllm_backend, "VllmGenerator", FakeVllm)


def test_p3_each_backend_class_satisfies_the_backend_protocol(tiny_mistral, monkeypatch):
    from evaluate.api_backend import ApiBackend
    from evaluate.backend import SCORING_NEEDS, Backend
    from evaluate.hf_backend import HfBackend
    from evaluate.inference_run import load_backend
    from evaluate.vllm_backend import VllmBackend
    monkeypatch.setenv("API_KEY", "k")
    fake_vllm_generator(monkeypatch)
    protocol = {name: inspect.signature(member) for name, member in vars(Backend).items()
                if callable(member) and not name.startswith("_")}
    assert set(protocol) == {"generate", "score", "close"}
    for kind, cls in (("hf", HfBackend), ("vllm", VllmBackend), ("openai", ApiBackend)):
        for name, signature in protocol.items():
            assert inspect.signature(getattr(cls, name)) == signature, (cls.__name__, name)
        extra = ["--model_id", tiny_mistral] if kind != "openai" else ["--model_name", "m", "--api_base", "http://x/v1"]
        backend = load_backend(resolve("--backend", kind, *extra))
        assert type(backend) is cls and isinstance(backend, Backend)
        assert (backend.tokenizer is None) == (kind == "openai")
        if kind != "hf":  # only the HF backend scores labels; the others say so, as the run's check does
            with pytest.raises(DataError, match="needs --backend hf"):
                backend.score([], lambda batch: None)
        backend.close()
    assert SCORING_NEEDS.startswith("--scoring logprob needs --backend hf")


def test_p3_the_hf_backend_lives_beside_the_others_and_the_entry_script_loads_no_model():
    assert (REPO_ROOT / "evaluate/hf_backend.py").is_file()
    source = (REPO_ROOT / "evaluate/sample_model.py").read_text()
    assert "load_for_inference" not in source and "VllmGenerator" not in source and "ApiGenerator" not in source


def test_p3_serving_resolves_the_contract_as_sample_model_does(monkeypatch, trained_adapter, tmp_path):
    """serve.py and sample_model settle a model's task and base through one function (model_contract.py)."""
    from evaluate import inference_run
    from nli_finetune import model_contract
    from scripts import serve
    seen = []
    real = model_contract.resolve_model_use

    def spy(*args, **kwargs):
        seen.append(args[0])
        return real(*args, **kwargs)
    for module in (serve, inference_run):
        monkeypatch.setattr(module, "resolve_model_use", spy)
    plan = serve.plan_server(str(trained_adapter), "127.0.0.1", 8000, tmp_path / "t.jinja", dry_run=True)
    run = resolve("--model_id", trained_adapter)
    assert seen == [str(trained_adapter)] * 2 and plan.task is run.task is run.contract.trained_task


def test_p3_sample_model_modules_never_import_a_gpu_library_at_import_time():
    """The resolution reads no weights: importing it (serve.py, the study) costs no torch."""
    code = "import sys, evaluate.inference_run, evaluate.hf_backend, evaluate.api_backend; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr

