"""Calibration metrics: does the probability a model puts on "I am right" match how often it is right?

    from nli_finetune.calibration import calibration_error
    calibration_error([0.9] * 100, [1, 0] * 50, p="2", beta=100)   # -> 0.4

`calibration_error` uses adaptive bins: sort by confidence, cut into bins of `beta` consecutive points
(the remainder joins the last bin), weight every bin by its size. Every bin counts: the original code
skipped the last bin, so any run with n <= beta scored 0. n < beta is one bin, not an error.
"""

import math


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
