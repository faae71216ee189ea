"""Imports flow one way: scripts -> train/ or evaluate/ -> the shared layer -> libraries.
The shared layer is one package, `nli_finetune/`, plus `prompts.py` at the root (the design card's place to
add a task); no other module sits at the root, so `pip install -e .` adds two top-level names, not 17.
train/ and evaluate/ never import each other, the shared layer imports neither (and within it, prompts.py
imports no package module), and no script imports another script (a script: a module with a `__main__` block). Tests and benchmarks drive anything; what
both of them share lives in `nli_finetune.testing`."""

import ast
import subprocess

import pytest

from tests.conftest import REPO_ROOT

LAYERED = ("train", "evaluate", "scripts")
SHARED_PACKAGE = "nli_finetune"
ROOT_MODULES = {"prompts"}
# What the repository root may hold: the design card's entries, then docs, tests, benchmarks, locks and
# the project's own files.
ROOT_ENTRIES = {"Dockerfile", "run_training.sh", "run_inference.sh", "train", "evaluate", "scripts", "data", "models",
                "prompts.py", "requirements.txt", SHARED_PACKAGE, "run_serve.sh", "study",
                "docs", "tests", "bench", "locks", "README.md", "Makefile", "pyproject.toml", ".ci", ".gitignore",
                ".dockerignore"}


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if top in LAYERED:
        return top
    if top in ("data", "models"):  # their download scripts
        return "scripts"
    assert top == SHARED_PACKAGE or module in ROOT_MODULES, f"{module} is outside every layer"
    return "shared"


def tracked_modules() -> dict[str, ast.Module]:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    modules = {}
    for path in files:
        if path.startswith(("tests/", "bench/", "study/")) or path.startswith("train/configs/"):  # configs: data
            continue
        name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        modules[name] = ast.parse((REPO_ROOT / path).read_text(), path)
    return modules


def imported(tree: ast.Module) -> set[str]:
    """Every module an import statement names, anywhere in the file (lazy imports included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def is_script(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


def test_imports_flow_one_way():
    modules = tracked_modules()
    scripts = {name for name, tree in modules.items() if is_script(tree)}
    problems = []
    for name, tree in modules.items():
        layer = layer_of(name)
        for target in imported(tree):
            if target not in modules or target == name:
                continue
            target_layer = layer_of(target)
            if layer == "shared" and target_layer in LAYERED:
                problems.append(f"shared module {name} imports {target}")
            elif {layer, target_layer} == {"train", "evaluate"}:
                problems.append(f"{name} imports {target} (train/ and evaluate/ never import each other)")
            elif target in scripts:
                problems.append(f"{name} imports the script {target}")
    assert not problems, "\n".join(sorted(problems))


def test_p5_prompts_imports_nothing_from_the_package_and_owns_the_yes_no_words():
    """prompts.py (the tasks, their yes/no words included) is the shared layer's bottom: a package module
    may import it, it imports no package module (that arrow would run back up)."""
    import prompts
    from nli_finetune import cli
    package = {target for target in imported(tracked_modules()["prompts"]) if target.split(".")[0] == SHARED_PACKAGE}
    assert not package, sorted(package)
    assert "YES_WORDS" in vars(prompts) and prompts.YES_WORDS <= cli.TRUE_WORDS and prompts.NO_WORDS <= cli.FALSE_WORDS


def test_the_checker_sees_lazy_and_from_imports():
    tree = ast.parse("def f():\n    from evaluate.results import summarize\nimport train.sft_data\n")
    assert {"evaluate.results", "evaluate.results.summarize", "train.sft_data"} <= imported(tree)
    assert is_script(ast.parse("if __name__ == '__main__':\n    main()\n"))


def test_no_module_outside_tests_edits_sys_path_and_the_package_lists_every_module():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    editing = [f for f in files if not f.startswith("tests/") and "sys.path" in (REPO_ROOT / f).read_text()]
    assert not editing, editing
    import tomllib
    setup = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top_level = {f.removesuffix(".py") for f in files if "/" not in f and f.endswith(".py")}
    assert set(setup["py-modules"]) == top_level == ROOT_MODULES
    folders = {f.rsplit("/", 1)[0].replace("/", ".") for f in files if f.endswith("/__init__.py")}
    assert set(setup["packages"]) == folders - {"tests"}


def test_the_root_holds_the_design_cards_entries_and_project_files():
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    pinned = {f for f in files if f.startswith("requirements-") and f.endswith(".txt")}  # the other environments
    extra = {f.split("/")[0] for f in files} - ROOT_ENTRIES - pinned
    assert not extra, f"not a root entry (shared code goes in {SHARED_PACKAGE}/): {sorted(extra)}"
    assert not (REPO_ROOT / "metrics.py").exists() and (REPO_ROOT / SHARED_PACKAGE / "metrics.py").exists()


def test_layer_of_places_every_module():
    assert layer_of("nli_finetune.metrics") == layer_of("prompts") == "shared"
    assert layer_of("train.sft_data") == "train" and layer_of("scripts.study") == "scripts"
    with pytest.raises(AssertionError, match="outside every layer"):
        layer_of("metrics")


def test_a_script_runs_from_anywhere_through_the_installed_package(tmp_path):
    """`python scripts/X.py` puts scripts/ first on sys.path, not the repo: the shared modules come from
    the editable install (`pip install -e .`, which the Makefile runs)."""
    import sys
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/split_dataset.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "--ratio" in proc.stdout


# Where a task's name comes in and is looked up once (prompts.get_task, TASKS[...]): a model's contract, a
# results file's settings, a training config, calibrate's --task. Scripts are edges too (their options and
# constants). Every other module is handed the `prompts.Task`.
TASK_EDGES = {"prompts", "nli_finetune.model_contract", "nli_finetune.results", "nli_finetune.teacher_data",
              "nli_finetune.report_page", "evaluate.calibrate", "train.train_sft", "train.preflight"}


def task_lookups(tree: ast.Module) -> list[ast.AST]:
    return [node for node in ast.walk(tree)
            if (isinstance(node, ast.Call) and ast.unparse(node.func) in ("get_task", "TASKS.get"))
            or (isinstance(node, ast.Subscript) and ast.unparse(node.value) == "TASKS")]


def test_a_task_is_looked_up_by_name_only_where_the_name_comes_in():
    """A task travels as its `prompts.Task`: looked up by name once, where the name comes in, never again
    further in (issue 44: it was looked up again at ~28 call sites)."""
    modules = tracked_modules()
    offenders = [f"{module}:{node.lineno}: {ast.unparse(node)}" for module, tree in modules.items()
                 if layer_of(module) != "scripts" and module not in TASK_EDGES for node in task_lookups(tree)]
    assert not offenders, offenders
    assert [edge for edge in sorted(TASK_EDGES) if not task_lookups(modules[edge])] == []  # no stale entry


def test_no_module_but_prompts_branches_on_a_task_name():
    """A task is one `prompts.Task`: code asks it (task.free_text, task.messages(row), ...) and never
    compares a task's name, so adding a task is one instance in prompts.py and a config."""
    from prompts import TASKS
    names = set(TASKS)
    offenders = []
    for module, tree in tracked_modules().items():
        if module == "prompts":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                constants = {c.value for side in sides for c in ast.walk(side) if isinstance(c, ast.Constant)}
                mentions_task = any("task" in ast.unparse(side).lower() for side in sides)
                if mentions_task and constants & names:
                    offenders.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
    for name, task in TASKS.items():
        assert task.name == name
        assert task.free_text or (task.label_field and task.input_fields and task.user_message), name
