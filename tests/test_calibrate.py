"""Fitted calibration, abstention and risk-coverage (issue #43): calibration.py, evaluate/calibrate.py."""

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
    risk_coverage,
    selective_report,
    threshold_for_accuracy,
)


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
