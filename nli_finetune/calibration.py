"""Calibration metrics: does the probability a model puts on "I am right" match how often it is right?

    from nli_finetune.calibration import calibration_error
    calibration_error([0.9] * 100, [1, 0] * 50, p="2", beta=100)   # -> 0.4

`calibration_error` uses adaptive bins: sort by confidence, cut into bins of `beta` consecutive points
(the remainder joins the last bin), weight every bin by its size. Every bin counts: the original code
skipped the last bin, so any run with n <= beta scored 0. n < beta is one bin, not an error.
"""

import math

import numpy as np


def _validate(confidence, correct) -> tuple[list[float], list[float]]:
    confidence, correct = [float(c) for c in confidence], [float(c) for c in correct]
    if len(confidence) != len(correct):
        raise ValueError(f"{len(confidence)} confidences but {len(correct)} correctness values")
    if not confidence:
        raise ValueError("no samples")
    if any(not 0.0 <= c <= 1.0 for c in confidence):
        raise ValueError("confidences must lie in [0, 1]")
    return confidence, correct


def adaptive_bins(confidence, correct, beta: int = 100) -> list[dict]:
    """Bins of `beta` consecutive points by confidence (the remainder joins the last bin)."""
    confidence, correct = _validate(confidence, correct)
    if beta < 1:
        raise ValueError("beta must be >= 1")
    order = sorted(range(len(confidence)), key=lambda i: confidence[i])
    n_bins = max(1, len(order) // beta)
    bins = []
    for b in range(n_bins):
        members = order[b * beta:] if b == n_bins - 1 else order[b * beta:(b + 1) * beta]
        conf = sum(confidence[i] for i in members) / len(members)
        acc = sum(correct[i] for i in members) / len(members)
        bins.append({"size": len(members), "confidence": conf, "accuracy": acc, "gap": abs(conf - acc)})
    return bins


def calibration_error(confidence, correct, p: str = "2", beta: int = 100) -> float:
    """Adaptive-binning calibration error: p="1" weighted mean gap, "2" sqrt of the weighted mean squared
    gap, "infty" the largest gap."""
    bins = adaptive_bins(confidence, correct, beta)
    n = sum(b["size"] for b in bins)
    if p == "1":
        return sum(b["size"] * b["gap"] for b in bins) / n
    if p == "2":
        return math.sqrt(sum(b["size"] * b["gap"] ** 2 for b in bins) / n)
    if p == "infty":
        return max(b["gap"] for b in bins)
    raise ValueError(f"p must be '1', '2' or 'infty', got {p!r}")


def expected_calibration_error(confidence, correct, n_bins: int = 10) -> float:
    """The standard ECE: equal-width confidence bins, weighted by size (empty bins contribute nothing)."""
    confidence, correct = _validate(confidence, correct)
    total, n = 0.0, len(confidence)
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        members = [i for i, c in enumerate(confidence) if low <= c < high or (b == n_bins - 1 and c == 1.0)]
        if members:
            conf = sum(confidence[i] for i in members) / len(members)
            acc = sum(correct[i] for i in members) / len(members)
            total += len(members) / n * abs(conf - acc)
    return total


def brier_score(confidence, correct) -> float:
    confidence, correct = _validate(confidence, correct)
    return sum((c - y) ** 2 for c, y in zip(confidence, correct)) / len(confidence)


def calibration_report(confidence, correct, beta: int = 100) -> dict:
    return {"l1": calibration_error(confidence, correct, "1", beta), "l2": calibration_error(confidence, correct, "2", beta),
            "infty": calibration_error(confidence, correct, "infty", beta),
            "ece": expected_calibration_error(confidence, correct), "brier": brier_score(confidence, correct),
            "bins": adaptive_bins(confidence, correct, beta)}


def plot_reliability(report: dict, path, title: str = "reliability") -> None:
    """A reliability diagram (adaptive bins: mean confidence vs accuracy) as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = report["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label="model")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean p(confident)", ylabel="accuracy",
           title=f"{title}  (l2 {report['l2']:.3f}, ECE {report['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- Fitted calibration and selective prediction (issue #43) ------------------------------------------
#
# The ECE of this project, one definition: top-label ECE with 10 equal-width bins weighted by count.
# Each example's confidence is the probability of its predicted (most probable) label; bin b holds the
# confidences in [b/10, (b+1)/10) (1.0 goes in the last bin); ECE = sum over bins of
# (examples in the bin / all examples) * |mean confidence - accuracy| (`expected_calibration_error`).
# Beside it, `adaptive_ece`: the same with 10 equal-mass bins (sorted by confidence, cut into 10 bins of
# as equal a count as possible), less sensitive to where the confidences happen to cluster.
#
# Temperature scaling: calibrated probabilities are softmax(log p / T + b) over a record's labels, where p
# are the scored label probabilities (label_scoring.py), T > 0 one scalar and b a per-label bias (the
# first label's bias is 0; None: no bias). Fitted by minimising the negative log-likelihood (NLL) of the
# gold labels. The NLL is convex in (1/T, b), so Newton's method finds the optimum.

LOG_FLOOR = math.log(1e-12)  # a label probability of 0 (float underflow) counts as 1e-12: finite log-likelihoods


def log_prob_rows(label_probs: list[dict], labels: list) -> np.ndarray:
    """[examples, labels] log-probabilities from `label_probs` records ({label as str: p}), floored at 1e-12."""
    rows = np.array([[float(probs[str(label)]) for label in labels] for probs in label_probs], dtype=float)
    return np.maximum(np.log(np.maximum(rows, 0.0), where=rows > 0, out=np.full(rows.shape, LOG_FLOOR)), LOG_FLOOR)


def calibrated_probs(log_probs, temperature: float, bias=None) -> np.ndarray:
    """softmax(log p / T + b) per row: probabilities that sum to 1."""
    z = np.asarray(log_probs, dtype=float) / temperature + (0.0 if bias is None else np.asarray(bias, dtype=float))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def example_nll(probs, gold) -> np.ndarray:
    """-log p(gold label) of each row of label probabilities (gold: column indices), floored at 1e-12."""
    probs = np.asarray(probs, dtype=float)
    picked = probs[np.arange(len(gold)), np.asarray(gold, dtype=int)]
    return -np.maximum(np.log(np.maximum(picked, 1e-300)), LOG_FLOOR)


def negative_log_likelihood(probs, gold) -> float:
    """Mean -log p(gold label) over rows of label probabilities (gold: column indices), floored at 1e-12."""
    return float(np.mean(example_nll(probs, gold)))


def _features(log_probs, with_bias: bool) -> np.ndarray:
    """[examples, labels, parameters]: the logit z_ik = theta . phi_ik with theta = (1/T, b_1, ..., b_K-1)."""
    n, k = log_probs.shape
    phi = [log_probs[:, :, None]]
    if with_bias:
        phi.append(np.broadcast_to(np.eye(k)[None, :, 1:], (n, k, k - 1)))
    return np.concatenate(phi, axis=2)


def _nll_of(theta, phi, gold) -> float:
    z = phi @ theta
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(gold)), gold]))


def _newton(phi, gold, iterations: int = 100) -> np.ndarray:
    """The theta minimising the NLL (convex): Newton steps with backtracking, 1/T kept positive."""
    theta = np.zeros(phi.shape[2])
    theta[0] = 1.0  # T = 1, no bias: the raw probabilities
    rows = np.arange(len(gold))
    loss = _nll_of(theta, phi, gold)
    for _ in range(iterations):
        z = phi @ theta
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        mean_phi = np.einsum("nk,nkd->nd", p, phi)
        grad = np.mean(mean_phi - phi[rows, gold], axis=0)
        hess = np.einsum("nk,nkd,nke->de", p, phi, phi) / len(gold) - mean_phi.T @ mean_phi / len(gold)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(theta)), grad)
        scale = 1.0
        while scale > 1e-10:
            candidate = theta - scale * step
            candidate[0] = max(candidate[0], 1e-6)
            new_loss = _nll_of(candidate, phi, gold)
            if new_loss <= loss:
                break
            scale /= 2
        else:
            break
        theta, improvement, loss = candidate, loss - new_loss, new_loss
        if improvement < 1e-12:
            break
    return theta


def fit_temperature(log_probs, gold, with_bias: bool = False) -> dict:
    """{"temperature": T, "bias": [b per label] or None} minimising the NLL of `gold` (label indices)."""
    log_probs, gold = np.asarray(log_probs, dtype=float), np.asarray(gold, dtype=int)
    theta = _newton(_features(log_probs, with_bias), gold)
    return {"temperature": float(1.0 / theta[0]), "bias": [0.0, *map(float, theta[1:])] if with_bias else None}


def held_out_losses(log_probs, gold, with_bias: bool, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each example's NLL under a fit on the other folds (k folds, a seeded shuffle)."""
    log_probs, gold = np.asarray(log_probs, dtype=float), np.asarray(gold, dtype=int)
    order = np.random.default_rng(seed).permutation(len(gold))
    losses = np.empty(len(gold))
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        fit = fit_temperature(log_probs[rest], gold[rest], with_bias)
        losses[held] = example_nll(calibrated_probs(log_probs[held], fit["temperature"], fit["bias"]), gold[held])
    return losses


def one_standard_error_choice(losses: dict) -> tuple[str, dict]:
    """(the first method, in the dict's order of simplicity, whose mean loss is within one standard error of
    the lowest mean, {method: that standard error}): the error is that of the paired per-example difference
    from the lowest, sd / sqrt(n)."""
    best = min(losses, key=lambda method: np.mean(losses[method]))
    se = {method: float(np.std(np.subtract(loss, losses[best]), ddof=1) / np.sqrt(len(loss)))
          for method, loss in losses.items()}
    return next(m for m in losses if np.mean(losses[m]) <= np.mean(losses[best]) + se[m]), se


def fit_calibration(log_probs, gold, folds: int = 5, seed: int = 0) -> dict:
    """The simplest calibration whose held-out NLL (a k-fold cross-validation on these examples) is within one
    standard error of the lowest (Breiman's one-standard-error rule; the error is that of the paired
    per-example difference): "none" (the raw probabilities, T = 1), then temperature scaling fitted by NLL,
    then, with more than two labels, temperature and a per-label bias. A fit is kept only where it clearly
    beats the raw probabilities: fitted on a few hundred examples of a model that is already calibrated, a
    temperature moves them away from 1 by noise (docs/inference.md: the fine-tuned SmolLM2's T 1.22 won
    by 0.002 nats, a third of its standard error, on 288 tuning pairs, and made the test ECE worse).
    {"method", "temperature", "bias", "cv_nll": {method: NLL}, "cv_nll_se": {method: standard error of its
    difference from the lowest}}."""
    log_probs = np.asarray(log_probs, dtype=float)
    gold = np.asarray(gold, dtype=int)
    folds = min(folds, len(gold))
    if folds < 2:  # nothing to hold out: the temperature alone, as before the cross-validation
        return {"method": "temperature", **fit_temperature(log_probs, gold), "cv_nll": {}, "cv_nll_se": {}}
    losses = {"none": example_nll(calibrated_probs(log_probs, 1.0), gold)}  # nothing fitted: no folds
    methods = ("temperature", "temperature+bias") if log_probs.shape[1] > 2 else ("temperature",)
    losses |= {method: held_out_losses(log_probs, gold, method == "temperature+bias", folds, seed) for method in methods}
    method, se = one_standard_error_choice(losses)
    cv = {m: float(loss.mean()) for m, loss in losses.items()}
    if method == "none":
        return {"method": "none", "temperature": 1.0, "bias": None, "cv_nll": cv, "cv_nll_se": se}
    return {"method": method, **fit_temperature(log_probs, gold, method == "temperature+bias"), "cv_nll": cv,
            "cv_nll_se": se}


def adaptive_ece(confidence, correct, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: sorted by confidence, cut into `n_bins` bins of as equal a count as
    possible (fewer when there are fewer examples), weighted by count."""
    confidence, correct = _validate(confidence, correct)
    order = sorted(range(len(confidence)), key=lambda i: confidence[i])
    bins = min(n_bins, len(order))
    total = 0.0
    for b in range(bins):
        members = order[b * len(order) // bins:(b + 1) * len(order) // bins]
        gap = sum(confidence[i] - correct[i] for i in members) / len(members)
        total += len(members) / len(order) * abs(gap)
    return total


def risk_coverage(confidence, correct) -> list[dict]:
    """The risk-coverage curve: for each distinct confidence t (rising), answer the examples whose
    confidence is >= t and abstain on the rest. Each point: threshold, answered, coverage (answered / all)
    and accuracy of the answered examples. Tied confidences are answered or abstained together."""
    confidence, correct = _validate(confidence, correct)
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    points, answered, right = [], 0, 0.0
    for position, i in enumerate(order):
        answered, right = answered + 1, right + correct[i]
        if position + 1 == len(order) or confidence[order[position + 1]] != confidence[i]:
            points.append({"threshold": confidence[i], "answered": answered, "coverage": answered / len(order),
                           "accuracy": right / answered})
    return points[::-1]


def aurc(curve: list[dict]) -> float:
    """Area under the risk-coverage curve (risk = 1 - accuracy of the answered): each group of tied
    confidences adds its share of the examples times the risk once it is answered. Without ties this is
    the usual mean over k of the error rate of the k most confident examples; lower is better."""
    total, covered = 0.0, 0.0
    for point in sorted(curve, key=lambda p: p["coverage"]):
        total += (point["coverage"] - covered) * (1.0 - point["accuracy"])
        covered = point["coverage"]
    return total


def threshold_for_accuracy(curve: list[dict], target: float) -> dict | None:
    """The lowest threshold whose answered examples reach `target` accuracy (the largest coverage that
    does): {"threshold", "coverage", "accuracy", "answered"}; None when no threshold reaches it."""
    reached = [point for point in curve if point["accuracy"] >= target]
    return dict(max(reached, key=lambda p: p["coverage"])) if reached else None


COVERAGE_TARGETS = (0.90, 0.95, 0.99)


def selective_report(confidence, correct) -> dict:
    """What every scored run reports of abstention: the risk-coverage curve, AURC, and the coverage at
    90/95/99% accuracy (None where unreachable)."""
    curve = risk_coverage(confidence, correct)
    return {"risk_coverage": curve, "aurc": aurc(curve),
            "coverage_at_accuracy": {f"{target:.2f}": (threshold_for_accuracy(curve, target) or {}).get("coverage")
                                     for target in COVERAGE_TARGETS}}


def probability_scores(probs, gold) -> dict:
    """NLL, ECE (equal-width, top-label), Brier (top-label) and AURC of label probabilities [examples, labels]
    against gold column indices: the definitions above, in numpy, so a bootstrap can afford 1,000 of them."""
    probs, gold = np.asarray(probs, dtype=float), np.asarray(gold, dtype=int)
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == gold).astype(float)
    edges = np.arange(11) / 10  # the same floats as expected_calibration_error's b / n_bins
    bins = np.minimum(np.searchsorted(edges, confidence, side="right") - 1, 9)
    counts = np.bincount(bins, minlength=10)
    gaps = np.abs(np.bincount(bins, confidence - correct, minlength=10))  # |sum(conf - acc)| per bin
    order = np.argsort(-confidence, kind="stable")
    right = np.cumsum(correct[order])
    ends = np.flatnonzero(np.append(confidence[order][1:] != confidence[order][:-1], True))  # tied groups end
    coverage = (ends + 1) / len(order)
    risk = 1.0 - right[ends] / (ends + 1)
    return {"nll": negative_log_likelihood(probs, gold),
            "ece": float(gaps[counts > 0].sum() / len(order)), "brier": float(np.mean((confidence - correct) ** 2)),
            "aurc": float(np.sum(np.diff(coverage, prepend=0.0) * risk))}


def probability_intervals(probs, gold, *, samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of probability_scores' NLL, ECE, Brier and AURC: examples resampled
    with replacement, seeded (a rerun prints the same interval): {"nll": [lo, hi], ...}."""
    probs, gold = np.asarray(probs, dtype=float), np.asarray(gold, dtype=int)
    rng = np.random.default_rng(seed)
    drawn = [probability_scores(probs[picks], gold[picks])
             for picks in (rng.integers(0, len(gold), len(gold)) for _ in range(samples))]
    tail = (1 - level) / 2
    return {key: [float(np.quantile([d[key] for d in drawn], tail)), float(np.quantile([d[key] for d in drawn], 1 - tail))]
            for key in drawn[0]}
