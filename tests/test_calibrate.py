"""Fitted calibration, abstention and risk-coverage (issue #43): calibration.py, evaluate/calibrate.py."""

import os
from pathlib import Path

import numpy as np
import pytest

from nli_finetune.calibration import (
    adaptive_ece,
    aurc,
    calibrated_probs,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    log_prob_rows,
    negative_log_likelihood,
    probability_intervals,
    probability_scores,
    risk_coverage,
    selective_report,
    threshold_for_accuracy,
)
from nli_finetune.metrics import binomial_lower_bound
from prompts import TASKS
from tests.test_report import browser  # noqa: F401  (the headless Chromium fixture)


def synthetic(n=4000, labels=3, temperature=2.5, shift=None, seed=1):
    """(the model's log-probs, gold indices): gold drawn from softmax(z), the model reports
    log_softmax(temperature * z - shift), so T = temperature (and bias = shift) undoes it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, labels))
    true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    gold = np.array([rng.choice(labels, p=p) for p in true])
    raw = temperature * z - (0 if shift is None else np.asarray(shift))
    raw -= np.log(np.exp(raw).sum(axis=1, keepdims=True))
    return raw, gold


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_p1_temperature_recovered_on_synthetic_logits(temperature):
    log_probs, gold = synthetic(temperature=temperature, labels=2)
    fit = fit_temperature(log_probs, gold)
    assert fit["temperature"] == pytest.approx(temperature, rel=0.08)
    assert fit["bias"] is None
    assert negative_log_likelihood(calibrated_probs(log_probs, fit["temperature"]), gold) < \
        negative_log_likelihood(np.exp(log_probs), gold)


def test_p1_binary_fit_is_temperature_only():
    log_probs, gold = synthetic(labels=2, shift=[0.0, 1.0])
    assert fit_calibration(log_probs, gold)["method"] == "temperature"


def test_p1_a_calibrated_model_keeps_its_raw_probabilities_unless_a_fit_wins_on_held_out_folds():
    chosen = []
    for seed in range(10):  # a model already calibrated (T = 1), 300 tuning examples
        fit = fit_calibration(*synthetic(temperature=1.0, labels=2, n=300, seed=seed))
        cv, se = fit["cv_nll"], fit["cv_nll_se"]
        # the raw kept unless the fit's held-out NLL is lower by more than one standard error
        assert (fit["method"] == "none") == (cv["none"] <= cv["temperature"] + se["none"]), fit
        if fit["method"] == "none":
            assert fit["temperature"] == 1.0 and fit["bias"] is None
        chosen.append(fit["method"])
    assert chosen.count("none") >= 9, chosen  # the raw: a fitted T is noise here
    for seed in range(5):  # overconfident by 1.5: the temperature wins on held-out folds
        assert fit_calibration(*synthetic(temperature=1.5, labels=2, n=300, seed=seed))["method"] == "temperature"


def test_p1_the_one_standard_error_rule_by_hand():
    from nli_finetune.calibration import one_standard_error_choice
    # temperature lower on average by 0.05; paired differences (none - temperature) 0.2, -0.1, 0.2, -0.1:
    # sd 0.1732, se 0.0866 > 0.05: the raw probabilities stay
    losses = {"none": [0.5, 0.4, 0.6, 0.3], "temperature": [0.3, 0.5, 0.4, 0.4]}
    method, se = one_standard_error_choice(losses)
    assert method == "none" and se["none"] == pytest.approx(0.0866, abs=1e-4) and se["temperature"] == 0.0
    # the same gain with every difference 0.05: se 0, the temperature is kept
    assert one_standard_error_choice({"none": [0.5, 0.4, 0.6, 0.3], "temperature": [0.45, 0.35, 0.55, 0.25]})[0] \
        == "temperature"
    # three methods: the bias wins by less than its standard error over the temperature: the temperature
    three = {"none": [1.0, 1.0, 1.0, 1.0], "temperature": [0.5, 0.6, 0.5, 0.6], "temperature+bias": [0.3, 0.7, 0.4, 0.7]}
    assert one_standard_error_choice(three)[0] == "temperature"


def test_p1_bias_chosen_when_it_lowers_held_out_nll():
    log_probs, gold = synthetic(shift=[0.0, 1.5, -1.0])
    fit = fit_calibration(log_probs, gold)
    assert fit["method"] == "temperature+bias"
    assert fit["cv_nll"]["temperature+bias"] < fit["cv_nll"]["temperature"]
    assert fit["temperature"] == pytest.approx(2.5, rel=0.1)
    assert fit["bias"][1] - fit["bias"][0] == pytest.approx(1.5 / 2.5, abs=0.15)


def test_p1_bias_left_out_when_it_does_not_help():
    log_probs, gold = synthetic(n=300, seed=3)
    fit = fit_calibration(log_probs, gold)
    assert fit["method"] == "temperature" and fit["bias"] is None


def test_p1_calibrated_probabilities_sum_to_one():
    log_probs, _ = synthetic(n=50)
    for bias in (None, [0.0, 3.0, -2.0]):
        probs = calibrated_probs(log_probs, 0.7, bias)
        assert np.allclose(probs.sum(axis=1), 1.0) and (probs >= 0).all()


def test_p1_zero_probability_is_floored_not_infinite():
    rows = log_prob_rows([{"0": 1.0, "1": 0.0}, {"0": 0.25, "1": 0.75}], [0, 1])
    assert np.isfinite(rows).all() and rows[1, 1] == pytest.approx(np.log(0.75))
    assert np.isfinite(negative_log_likelihood([[1.0, 0.0]], [1]))


def test_p1_risk_coverage_equals_a_hand_computation():
    confidence, correct = [0.9, 0.8, 0.8, 0.6, 0.5], [1, 0, 1, 1, 0]
    curve = risk_coverage(confidence, correct)
    # thresholds rise; ties (0.8) are answered together
    assert [(p["threshold"], p["answered"]) for p in curve] == [(0.5, 5), (0.6, 4), (0.8, 3), (0.9, 1)]
    assert [p["coverage"] for p in curve] == pytest.approx([1.0, 0.8, 0.6, 0.2])
    assert [p["accuracy"] for p in curve] == pytest.approx([3 / 5, 3 / 4, 2 / 3, 1.0])
    # 0.2 of the examples at risk 0, 0.4 more at risk 1/3, 0.2 at 1/4, 0.2 at 2/5
    assert aurc(curve) == pytest.approx(0.2 * 0 + 0.4 / 3 + 0.2 / 4 + 0.2 * 2 / 5)
    assert threshold_for_accuracy(curve, 0.75) == {"threshold": 0.6, "answered": 4, "coverage": 0.8,
                                                   "accuracy": 0.75}
    assert threshold_for_accuracy(curve, 0.9)["threshold"] == 0.9
    report = selective_report(confidence, correct)
    assert report["coverage_at_accuracy"] == {"0.90": 0.2, "0.95": 0.2, "0.99": 0.2}
    assert selective_report([0.9, 0.8], [0, 1])["coverage_at_accuracy"]["0.90"] is None  # unreachable


def test_p1_aurc_without_ties_is_the_mean_error_of_the_k_most_confident():
    confidence, correct = [0.95, 0.9, 0.7, 0.65, 0.6, 0.2], [1, 1, 0, 1, 0, 1]
    expected = np.mean([1 - np.mean(correct[:k]) for k in range(1, 7)])
    assert aurc(risk_coverage(confidence, correct)) == pytest.approx(expected)


def test_p1_ece_definitions_equal_width_and_equal_mass():
    confidence, correct = [0.15, 0.15, 0.95, 0.95, 0.95, 0.55], [0, 1, 1, 1, 0, 1]
    # equal width: bins [0.1,0.2) 2 ex gap |0.15-0.5|, [0.5,0.6) 1 ex gap |0.55-1|, [0.9,1] 3 ex gap |0.95-2/3|
    assert expected_calibration_error(confidence, correct) == pytest.approx(
        2 / 6 * 0.35 + 1 / 6 * 0.45 + 3 / 6 * abs(0.95 - 2 / 3))
    # equal mass, 3 bins of 2: sorted 0.15 0.15 | 0.55 0.95 | 0.95 0.95
    assert adaptive_ece(confidence, correct, n_bins=3) == pytest.approx(
        (abs(0.15 - 0.5) + abs(0.75 - 1.0) + abs(0.95 - 0.5)) / 3)


# --- part 2: python -m evaluate.calibrate ------------------------------------------------------------

DEV = Path(__file__).resolve().parent.parent / "data/sample/dev_300.csv"


def tuning_file(tmp_path, rows=12, name="tune.csv"):
    """The first `rows` pairs of dev_300 (both labels among them)."""
    path = dev_rows(tmp_path, 0, rows, name)
    assert len({line.rsplit(",", 1)[1] for line in path.read_text().splitlines()[1:]}) == 2
    return path


def calibrate(model, calib_file, *extra):
    from evaluate.calibrate import main
    return main(["--model", str(model), "--calib_file", str(calib_file), "--task", "nli_label", "--quiet",
                 "--scores_file", str(Path(calib_file).with_suffix(".scores.json")), *map(str, extra)])


@pytest.fixture(scope="module")
def calibrated(tiny_mistral, tmp_path_factory):
    """(model, tuning file): a copy of the tiny model (calibration.json is written into the model folder)
    calibrated on the first 12 dev pairs for a target accuracy of 0.5. Built once for the module: calibrate
    scores the file in a sample_model process of its own, seconds of imports each time. Tests that change the
    calibration work on a copy."""
    import shutil
    folder = tmp_path_factory.mktemp("calibrated")
    model = Path(shutil.copytree(tiny_mistral, folder / "model"))
    tune = tuning_file(folder)
    assert calibrate(model, tune, "--target_accuracy", "0.5") == 0
    return model, tune


def test_p2_calibrate_writes_calibration_json_into_the_model_folder(calibrated):
    from nli_finetune.calibration_file import read_calibration
    from nli_finetune.data_io import path_fingerprint
    from nli_finetune.modeling import model_fingerprint
    own_model, tune = calibrated
    calibration = read_calibration(own_model)
    assert calibration["method"] in ("none", "temperature") and calibration["bias"] is None  # two labels
    cv = calibration["cross_validation"]  # the simplest method within one standard error of the lowest NLL
    assert cv["rule"] == "one standard error" and set(cv["nll_se"]) == set(cv["nll"]) == {"none", "temperature"}
    assert cv["nll"][calibration["method"]] <= min(cv["nll"].values()) + cv["nll_se"][calibration["method"]]
    assert calibration["method"] == "none" or cv["nll"]["none"] > min(cv["nll"].values()) + cv["nll_se"]["none"]
    assert calibration["method"] != "none" or calibration["temperature"] == 1.0
    assert calibration["temperature"] > 0 and calibration["labels"] == ["0", "1"]
    assert calibration["fitted_on"]["fingerprint"] == path_fingerprint(tune)
    assert calibration["fitted_on"]["size_bytes"] == tune.stat().st_size
    assert calibration["fitted_on"]["examples"] == 12
    assert calibration["model_fingerprint"] == model_fingerprint(own_model)
    before, after = calibration["tuning"]["before"], calibration["tuning"]["after"]
    assert after["nll"] <= before["nll"] + 1e-12  # fitted by NLL on these examples, T = 1 among the candidates
    for key in ("nll", "ece", "adaptive_ece", "brier", "accuracy", "aurc"):
        assert key in before and key in after
    threshold = calibration["threshold"]
    assert threshold["target_accuracy"] == 0.5 and threshold["reached"] and threshold["accuracy"] >= 0.5
    right = round(threshold["accuracy"] * threshold["answered"])
    assert threshold["bound_confidence"] == 0.95
    assert threshold["accuracy_lower_bound"] == binomial_lower_bound(right, threshold["answered"], 0.95)
    assert not list(own_model.glob(".calibration.json.*"))  # no temp file left behind


def test_p2_the_exact_lower_bound_by_hand():
    import math
    assert binomial_lower_bound(12, 12) == pytest.approx(0.05 ** (1 / 12))  # all right: P(X = n) = p^n = 0.05
    assert binomial_lower_bound(1, 1, 0.9) == pytest.approx(0.1)
    assert binomial_lower_bound(0, 7) == 0.0 and binomial_lower_bound(0, 0) is None
    bound = binomial_lower_bound(32, 35)  # label_only's tuning answers at its 90% threshold (docs/inference.md)
    assert sum(math.comb(35, k) * bound ** k * (1 - bound) ** (35 - k) for k in range(32, 36)) == pytest.approx(0.05)
    assert 0.78 < bound < 0.80


def test_p2_calibrate_warns_when_the_threshold_rests_on_too_few_tuning_answers(monkeypatch, capsys):
    import evaluate.calibrate as module
    quality = {"nll": 0.5, "ece": 0.1}
    threshold = {"target_accuracy": 0.9, "threshold": 0.6, "answered": 12, "coverage": 0.04, "accuracy": 11 / 12,
                 "reached": True, "accuracy_lower_bound": binomial_lower_bound(11, 12), "bound_confidence": 0.95}
    data = {"method": "temperature", "temperature": 4.45, "tuning": {"before": quality, "after": quality},
            "threshold": threshold}
    monkeypatch.setattr(module, "calibrate", lambda args: data)
    assert module.main(["--model", "m", "--calib_file", "t.csv"]) == 0
    err = capsys.readouterr().err
    assert "rests on 12 tuning answers" in err and ">= 0.661 at 95% confidence" in err, err
    data["threshold"] = threshold | {"answered": 400, "accuracy": 0.95, "accuracy_lower_bound": 0.93}
    assert module.main(["--model", "m", "--calib_file", "t.csv"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_p2_a_changed_calibration_invalidates_saved_progress(calibrated, tmp_path, capsys):
    import json
    import shutil

    from evaluate.sample_model import main as sample
    own_model = Path(shutil.copytree(calibrated[0], tmp_path / "model"))  # its calibration is changed below
    test = tuning_file(tmp_path, rows=6, name="test.csv")
    out = tmp_path / "scored.json"
    run = ["--model_id", str(own_model), "--test_file", str(test), "--task", "nli_label", "--scoring", "logprob",
           "--output_file", str(out), "--quiet"]
    assert sample(run) == 0
    assert sample(run) == 0  # unchanged: resumes
    calibration = own_model / "calibration.json"
    data = json.loads(calibration.read_text())
    calibration.write_text(json.dumps(data | {"temperature": data["temperature"] * 2}))
    capsys.readouterr()
    assert sample(run) == 2
    err = capsys.readouterr().err.strip()
    assert "other files.calibration than this run" in err and len(err.splitlines()) == 1
    assert sample([*run, "--no_calibration"]) == 2  # a calibration used then, not now: also a change
    assert sample([*run, "--restart"]) == 0
    calibration.unlink()
    assert sample(run) == 2  # removed: a change too


@pytest.mark.parametrize("case", ["one_label", "empty", "header_only", "free_text", "no_labels", "not_a_folder"])
def test_p2_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    from evaluate.calibrate import main
    model = tmp_path / "model"
    model.mkdir()
    tune, task = tmp_path / "tune.csv", "nli_label"
    tune.write_text({"one_label": "premise,hypothesis,label\nA man sleeps.,Someone rests.,1\nA dog.,An animal.,1\n",
                     "empty": "", "header_only": "premise,hypothesis,label\n",
                     "no_labels": "premise,hypothesis\nA man sleeps.,Someone rests.\n"}.get(
        case, "premise,hypothesis,label\nA man sleeps.,Someone rests.,1\nA dog.,A cat.,0\n"))
    if case == "free_text":
        task = "free_text"
    target = str(tmp_path / "hub-id-that-is-no-folder") if case == "not_a_folder" else str(model)
    assert main(["--model", target, "--calib_file", str(tune), "--task", task, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert list(model.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_p2_a_model_folder_that_is_not_writable_is_refused(tmp_path, capsys):
    from evaluate.calibrate import main
    model = tmp_path / "model"
    model.mkdir()
    tune = tmp_path / "tune.csv"
    tune.write_text("premise,hypothesis,label\nA man sleeps.,Someone rests.,1\nA dog.,A cat.,0\n")
    model.chmod(0o555)
    try:
        assert main(["--model", str(model), "--calib_file", str(tune), "--task", "nli_label", "--quiet"]) == 2
    finally:
        model.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert "not writable" in err and len(err.splitlines()) == 1


# --- part 4: the results page draws the risk-coverage curve and reliability before/after calibration ----

def scored_results(path, calibrated=True, abstain_below=None):
    """A sample_model results file of five scored pairs: confidences 0.9 0.8 0.8 0.6 0.5, right 1 0 1 1 0."""
    import json
    confidences, golds = [0.9, 0.8, 0.8, 0.6, 0.5], [1, 0, 1, 1, 0]
    records = []
    for number, (p, gold) in enumerate(zip(confidences, golds)):
        probs = {"1": p, "0": 1 - p}
        record = {"id": str(number), "premise": f"premise {number}", "hypothesis": "h", "raw_output": "", "true_label": gold,
                  "predicted_label": 1, "correct": gold == 1, "extraction_method": "logprob", "stop_reason": "scored",
                  "generated_tokens": 0, "label_probs": probs}
        if calibrated:  # a softer calibration: p -> 0.5 + (p - 0.5) / 2
            record["calibrated_label_probs"] = {"1": 0.5 + (p - 0.5) / 2, "0": 0.5 - (p - 0.5) / 2}
        if abstain_below is not None:
            record["abstained"] = p < abstain_below
        records.append(record)
    path.write_text(json.dumps({"settings": {"task": "nli_label", "model_id": "m"}, "metrics": {}, "timing": {},
                                "records": records}))
    return path


def test_p4_page_data_has_the_risk_coverage_curve_and_calibrated_reliability(tmp_path):
    from nli_finetune.report_page import decode_data, write_report
    page = tmp_path / "report.html"
    write_report([scored_results(tmp_path / "calibrated.json"), scored_results(tmp_path / "raw.json", False)], page,
                 bootstrap=20)
    calibrated, raw = decode_data(page.read_text())["runs"]
    assert [p["threshold"] for p in calibrated["risk_coverage"]] == [0.5, 0.6, 0.8, 0.9]
    assert [p["coverage"] for p in calibrated["risk_coverage"]] == pytest.approx([1.0, 0.8, 0.6, 0.2])
    assert [p["accuracy"] for p in calibrated["risk_coverage"]] == pytest.approx([3 / 5, 3 / 4, 2 / 3, 1.0])
    assert calibrated["aurc"] == pytest.approx(0.4 / 3 + 0.2 / 4 + 0.2 * 2 / 5)
    assert calibrated["coverage_at_accuracy"] == {"0.90": 0.2, "0.95": 0.2, "0.99": 0.2}
    assert calibrated["ece_calibrated"] == pytest.approx(expected_calibration_error([0.7, 0.65, 0.65, 0.55, 0.5],
                                                                                   [1, 0, 1, 1, 0]))
    assert sum(b["size"] for b in calibrated["reliability_calibrated"]) == 5
    assert "reliability_calibrated" not in raw and raw["aurc"] == calibrated["aurc"]
    html = page.read_text()
    assert "function riskCoverage" in html and "reliability_calibrated" in html


def test_p4_abstained_answers_are_marked_and_summarised_on_the_page(tmp_path):
    from nli_finetune.report_page import decode_data, write_report
    page = tmp_path / "report.html"
    write_report([scored_results(tmp_path / "abstaining.json", abstain_below=0.7)], page, bootstrap=20)
    data = decode_data(page.read_text())
    run = data["runs"][0]
    assert run["coverage"] == pytest.approx(0.6) and run["answered_accuracy"] == pytest.approx(2 / 3)
    assert run["parse_rate"] == 1.0 and run["accuracy"] == pytest.approx(0.6)  # abstained: not parse failures
    assert data["examples"]["abstained"] == [[False, False, False, True, True]]


def test_p4_the_curve_drawn_is_thinned_but_keeps_both_ends(tmp_path):
    from nli_finetune.report_page import CURVE_POINTS, selective_summary
    rows = [{"conf": i / 1000, "correct": i % 3 != 0} for i in range(1000)]
    summary = selective_summary(rows)
    assert len(summary["risk_coverage"]) <= CURVE_POINTS + 1
    assert summary["risk_coverage"][0]["coverage"] == 1.0 and summary["risk_coverage"][-1]["threshold"] == 0.999
    assert summary["aurc"] == pytest.approx(aurc(risk_coverage([r["conf"] for r in rows], [r["correct"] for r in rows])))


@pytest.mark.slow
def test_p4_the_page_in_chromium_draws_both_diagrams(tmp_path, browser):  # noqa: F811
    page = tmp_path / "report.html"
    from nli_finetune.report_page import write_report
    write_report([scored_results(tmp_path / "calibrated.json", abstain_below=0.7),
                  scored_results(tmp_path / "raw.json", False)], page, bootstrap=20)
    browser.open(page.as_uri())
    assert browser.evaluate("document.querySelectorAll('#examples .abstained').length") == 2
    assert "abstaining: coverage 0.600" in browser.evaluate("document.getElementById('cards').innerText")
    assert browser.evaluate("document.querySelectorAll('svg[aria-label^=\"risk-coverage curve\"]').length") == 2
    assert browser.evaluate("document.querySelectorAll('polyline.risk-coverage').length") == 2
    assert browser.evaluate("document.querySelectorAll('rect.calibrated').length") > 0
    assert "calibrated: ECE" in browser.evaluate("document.getElementById('cards').innerText")
    assert not browser.errors()


def test_p2_fit_skips_records_that_were_not_scored(tmp_path):
    import json

    from evaluate.calibrate import fit_scores
    scored = [{"true_label": label, "label_probs": {"0": p, "1": 1 - p}} for label, p in [(0, 0.9), (1, 0.2), (0, 0.6)]]
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"records": [*scored, {"true_label": 1, "label_probs": None}, {"true_label": 0}]}))
    fit, log_probs, gold = fit_scores(scores, ["0", "1"], folds=5)
    assert log_probs.shape == (3, 2) and gold.tolist() == [0, 1, 0] and fit["temperature"] > 0


@pytest.mark.parametrize("edit", [{"temperature": -1}, {"method": "platt"}, {"bias": {"0": 0.0}}, "not json"])
def test_p2_a_broken_calibration_file_is_refused_naming_it(tmp_path, edit):
    """sample_model and the fingerprint read it through read_calibration: a DataError is one line, exit 2."""
    import json

    from nli_finetune.calibration_file import read_calibration
    from nli_finetune.data_io import DataError
    model = tmp_path / "model"
    model.mkdir()
    good = {"format_version": 1, "method": "temperature", "labels": ["0", "1"], "temperature": 1.5, "bias": None}
    assert read_calibration(model) is None
    (model / "calibration.json").write_text(json.dumps(good))
    assert read_calibration(model)["temperature"] == 1.5
    (model / "calibration.json").write_text(edit if isinstance(edit, str) else json.dumps(good | edit))
    with pytest.raises(DataError) as error:
        read_calibration(model)
    assert str(model / "calibration.json") in str(error.value) and "\n" not in str(error.value)


# --- part 3: sample_model on a calibrated model; abstention ------------------------------------------

def dev_rows(tmp_path, start, stop, name):
    import csv
    records = list(csv.DictReader(DEV.read_text(encoding="utf-8").splitlines(keepends=True)))[start:stop]
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["premise", "hypothesis", "label"])
        writer.writeheader()
        writer.writerows(records)
    return path


def read_json(path):
    import json
    return json.loads(Path(path).read_text())


def scored_run(model, test, out, *extra):
    import json

    from evaluate.sample_model import main as sample
    code = sample(["--model_id", str(model), "--test_file", str(test), "--task", "nli_label", "--scoring", "logprob",
                   "--output_file", str(out), "--quiet", "--batch_size", "4", *map(str, extra)])
    return code, (json.loads(Path(out).read_text()) if code == 0 else None)


def test_p3_a_calibrated_model_records_raw_and_calibrated_probabilities_and_metrics_for_both(calibrated, tmp_path):
    own_model, test = calibrated[0], dev_rows(tmp_path, 12, 20, "test.csv")
    stored = read_json(own_model / "calibration.json")
    code, result = scored_run(own_model, test, tmp_path / "cal.json")
    assert code == 0
    for record in result["records"]:
        assert sum(record["calibrated_label_probs"].values()) == pytest.approx(1.0)
        assert sum(record["label_probs"].values()) == pytest.approx(1.0)
        raw, cal = record["label_probs"]["1"], record["calibrated_label_probs"]["1"]
        logit = np.log(raw / (1 - raw)) / stored["temperature"]
        assert cal == pytest.approx(1 / (1 + np.exp(-logit)))  # softmax(log p / T) of two labels
    metrics = result["metrics"]
    for key in ("ece", "brier", "nll", "calibrated_ece", "calibrated_brier", "calibrated_nll", "aurc",
                "risk_coverage", "coverage_at_accuracy"):
        assert key in metrics, key
    for key in ("nll", "ece", "brier", "aurc", "calibrated_nll", "calibrated_ece", "calibrated_brier"):
        low, high = metrics[f"{key}_ci"]  # bootstrap intervals, raw and calibrated
        assert 0 <= low <= high, key
    settings = result["settings"]
    assert settings["calibration"]["temperature"] == stored["temperature"]
    assert settings["abstain_below"] == stored["threshold"]["threshold"]  # the stored threshold is used
    assert "coverage" in metrics and "answered_accuracy_ci" in metrics
    # --no_calibration: raw only (and no stored threshold)
    code, raw = scored_run(own_model, test, tmp_path / "raw.json", "--no_calibration")
    assert code == 0 and "calibrated_ece" not in raw["metrics"] and "coverage" not in raw["metrics"]
    assert not any("calibrated_label_probs" in r for r in raw["records"])
    assert raw["metrics"]["aurc"] is not None  # every scored run has the risk-coverage numbers


def test_p3_a_calibration_fitted_on_the_evaluated_file_is_refused(tmp_path, capsys):
    import json
    model = tmp_path / "model"
    model.mkdir()
    test = dev_rows(tmp_path, 0, 6, "test.csv")
    from nli_finetune.data_io import path_fingerprint
    (model / "calibration.json").write_text(json.dumps(
        {"format_version": 1, "method": "temperature", "labels": ["0", "1"], "temperature": 1.5, "bias": None,
         "fitted_on": {"file": str(test), "fingerprint": path_fingerprint(test)}}))
    code, _ = scored_run(model, test, tmp_path / "out.json")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fitted on this very file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_p3_abstained_records_are_not_parse_failures_nor_wrong(tiny_mistral, tmp_path):
    test = dev_rows(tmp_path, 0, 8, "test.csv")
    code, full = scored_run(tiny_mistral, test, tmp_path / "run.json")
    assert code == 0 and "coverage" not in full["metrics"]
    confidences = sorted(max(r["label_probs"].values()) for r in full["records"])
    threshold = (confidences[3] + confidences[4]) / 2  # the four least confident abstain
    code, result = scored_run(tiny_mistral, test, tmp_path / "run.json", "--abstain_below", threshold)
    assert code == 0  # abstention marks finished records: the saved progress is reused
    records, metrics = result["records"], result["metrics"]
    assert sum(r["abstained"] for r in records) == 4 == metrics["abstained"]
    assert all(r["predicted_label"] is not None for r in records)
    assert metrics["parse_rate"] == 1.0 and metrics["accuracy"] == full["metrics"]["accuracy"]
    answered = [r for r in records if not r["abstained"]]
    assert metrics["coverage"] == 0.5
    assert metrics["answered_accuracy"] == sum(r["correct"] for r in answered) / 4
    low, high = metrics["answered_accuracy_ci"]
    assert 0 <= low <= metrics["answered_accuracy"] <= high <= 1


def test_p3_abstention_needs_scored_labels(tiny_mistral, tmp_path, capsys):
    from evaluate.sample_model import main as sample
    assert sample(["--model_id", str(tiny_mistral), "--test_file", str(DEV), "--task", "nli_label",
                   "--abstain_below", "0.7", "--output_file", str(tmp_path / "o.json")]) == 2
    assert "--abstain_below needs --scoring logprob" in capsys.readouterr().err


@pytest.mark.parametrize("n, labels", [(1, 2), (7, 3), (300, 2), (300, 3)])
def test_p3_the_bootstraps_scores_equal_the_definitions_ties_included(n, labels):
    rng = np.random.default_rng(n + labels)
    logits = rng.normal(size=(n, labels)) * 2
    logits[: n // 3] = np.round(logits[: n // 3])  # tied confidences: grouped as risk_coverage groups them
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    gold = rng.integers(0, labels, n)
    confidence, correct = probs.max(axis=1).tolist(), (probs.argmax(axis=1) == gold).tolist()
    scores = probability_scores(probs, gold)
    assert scores["nll"] == pytest.approx(negative_log_likelihood(probs, gold), abs=1e-12)
    assert scores["ece"] == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-12)
    assert scores["brier"] == pytest.approx(np.mean((np.array(confidence) - correct) ** 2), abs=1e-12)
    assert scores["aurc"] == pytest.approx(aurc(risk_coverage(confidence, correct)), abs=1e-12)


def test_p3_bootstrap_intervals_are_seeded_hold_the_estimate_and_narrow_with_n():
    rng = np.random.default_rng(0)

    def widths(n):
        probs = rng.uniform(0.5, 1.0, n)
        gold = (rng.uniform(size=n) > probs).astype(int)  # calibrated: right with probability p
        rows = np.stack([probs, 1 - probs], axis=1)
        intervals = probability_intervals(rows, gold, samples=300)
        assert intervals == probability_intervals(rows, gold, samples=300)  # the same seed, the same interval
        for key, value in probability_scores(rows, gold).items():
            assert intervals[key][0] <= value <= intervals[key][1], key
        return {key: high - low for key, (low, high) in intervals.items()}
    small, large = widths(200), widths(3200)
    assert all(large[key] < small[key] / 2 for key in small), (small, large)  # ~1/sqrt(n): a quarter


def test_p3_wilson_interval_and_scored_metrics_by_hand():
    from nli_finetune.metrics import wilson_interval
    from nli_finetune.results import summarize
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None
    records = [{"predicted_label": 1, "true_label": gold, "correct": gold == 1, "json_objects": 1,
                "stop_reason": "scored", "generated_tokens": 0, "label_probs": {"0": 1 - p, "1": p},
                "abstained": p < 0.7}
               for p, gold in [(0.9, 1), (0.8, 0), (0.8, 1), (0.6, 1), (0.5, 0)]]
    metrics = summarize(records, TASKS["nli_label"], True)
    assert metrics["parse_rate"] == 1.0 and metrics["accuracy"] == 0.6
    assert metrics["coverage"] == 0.6 and metrics["answered_accuracy"] == pytest.approx(2 / 3)
    assert metrics["abstained"] == 2 and metrics["aurc"] == pytest.approx(0.4 / 3 + 0.2 / 4 + 0.2 * 2 / 5)
    assert metrics["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.8, 0.6, 0.5])))


def test_p2_an_output_over_the_models_calibration_is_refused(tmp_path, capsys):
    from evaluate.sample_model import main as sample
    model = tmp_path / "model"
    model.mkdir()
    (model / "calibration.json").write_text("{}")
    assert sample(["--model_id", str(model), "--test_file", str(DEV), "--task", "nli_label", "--no_calibration",
                   "--scoring", "logprob", "--output_file", str(model / "calibration.json")]) == 2
    assert "is the same file as the model's calibration" in capsys.readouterr().err
    assert (model / "calibration.json").read_text() == "{}"
