"""nli_finetune/resume.py: the one comparison behind "resume never reuses stale work" (issue 44 part 4)."""
import ast
from pathlib import Path

from nli_finetune.resume import changes, file_fingerprints, fingerprint, refusal, unknown_origin

REPO = Path(__file__).resolve().parents[1]


def test_p4_changes_names_nested_keys_on_both_sides():
    saved = {"settings": {"max_steps": 200, "lr": 1e-4, "gone": 1}, "files": {"train.jsonl": "aa", "base": "bb"},
             "same": [1, 2]}
    wanted = {"settings": {"max_steps": 400, "lr": 1e-4, "new": 2}, "files": {"train.jsonl": "cc", "base": "bb"},
              "same": (1, 2)}  # a tuple now, a list as read back from JSON: no change
    assert changes(saved, wanted) == ["files.train.jsonl", "settings.gone", "settings.max_steps", "settings.new"]
    assert changes(saved, saved) == []
    assert changes({"a": None}, {}) == []  # absent and None are the same
    assert changes({"a": {"b": 1}}, {"a": "x"}) == ["a"]  # a dict replaced by a value: the key itself
    assert changes(None, {"a": 1}) == [""] and changes(1, 1) == []


def test_p4_fingerprint_and_refusal(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    before = fingerprint({"max_steps": 2, "targets": ("q", "v")}, {"train_data": data, "tokenizer": None})
    assert before["settings"] == {"max_steps": 2, "targets": ["q", "v"]} and list(before["files"]) == ["train_data"]
    assert file_fingerprints({"train_data": data}) == before["files"]
    data.write_text("{}\n{}\n")
    now = fingerprint({"max_steps": 3, "targets": ["q", "v"]}, {"train_data": data})
    changed = changes({k: before[k] for k in ("settings", "files")}, {k: now[k] for k in ("settings", "files")})
    assert changed == ["files.train_data", "settings.max_steps"]
    message = refusal(tmp_path / "out", changed, "start fresh in another --output_dir", what="the checkpoint")
    assert message == (f"{tmp_path / 'out'}: the checkpoint was computed from other files.train_data, "
                       "settings.max_steps than this run; start fresh in another --output_dir")
    assert "has no readable x.json" in unknown_origin("f", "x.json", "rerun with --restart")


CALLERS = ["train/run_config.py", "evaluate/sample_model.py", "nli_finetune/job_runner.py", "scripts/study.py"]


def test_p4_the_four_resume_checks_go_through_nli_finetune_resume():
    """The promise is written once: each caller imports the module (and none keeps its own comparer)."""
    for caller in CALLERS:
        tree = ast.parse((REPO / caller).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "nli_finetune.resume" in imported, caller
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert not defined & {"changed_keys", "changes", "refusal"}, caller
