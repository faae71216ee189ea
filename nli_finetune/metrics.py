"""Classification metrics where a parse failure (prediction None) counts as wrong and is reported too.

    from nli_finetune.metrics import classification_metrics
    classification_metrics([1, 0, 1], [1, None, 0], labels=[0, 1])
"""

import math


def classification_metrics(y_true: list, y_pred: list, labels: list) -> dict:
    """Accuracy, macro precision/recall/F1, per-class report, confusion matrix, parse-failure rate.
    Predictions of None are failures: wrong for accuracy and recall, and a column of their own
    ("null") in the confusion matrix."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    n = len(y_true)
    failures = sum(p is None for p in y_pred)
    correct = sum(t == p for t, p in zip(y_true, y_pred) if p is not None)
    per_class, precisions, recalls, f1s = {}, [], [], []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
        predicted = sum(p == label for p in y_pred)
        support = sum(t == label for t in y_true)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(label)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(f1)
    columns = [str(label) for label in labels] + ["null"]
    confusion = {str(t): {c: 0 for c in columns} for t in labels}
    for t, p in zip(y_true, y_pred):
        if str(t) in confusion:
            confusion[str(t)]["null" if p is None else str(p)] += 1
    k = len(labels) or 1
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "precision_macro": sum(precisions) / k,
        "recall_macro": sum(recalls) / k,
        "f1_macro": sum(f1s) / k,
        "parse_failures": failures,
        "parse_failure_rate": failures / n if n else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def roc_auc(scores: list[float], positive: list[bool]) -> float | None:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count half);
    None when one class is absent."""
    pos = sum(positive)
    neg = len(positive) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks, i = [0.0] * len(scores), 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, is_pos in zip(ranks, positive) if is_pos)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def probability_metrics(y_true: list, label_probs: list[dict], labels: list) -> dict:
    """Calibration of scored labels ({label as str: probability} per example, `label_scoring.py`): ECE and
    Brier score of the predicted label's probability against being right (calibration.py; for two labels
    this Brier score is the usual binary one), and ROC AUC (one-vs-rest, averaged over the labels that
    have both classes; for two labels the plain binary AUC)."""
    from nli_finetune.calibration import brier_score, expected_calibration_error
    confidence = [max(probs[str(label)] for label in labels) for probs in label_probs]
    predicted = [max(labels, key=lambda label: probs[str(label)]) for probs in label_probs]
    correct = [p == t for p, t in zip(predicted, y_true)]
    aucs = [roc_auc([probs[str(label)] for probs in label_probs], [t == label for t in y_true]) for label in labels]
    aucs = [a for a in aucs if a is not None]
    return {"ece": expected_calibration_error(confidence, correct), "brier": brier_score(confidence, correct),
            "roc_auc": sum(aucs) / len(aucs) if aucs else None,
            "mean_confidence": sum(confidence) / len(confidence)}


def text_metrics(predictions: list[str], references: list[str]) -> dict:
    """Exact match (after trimming whitespace) and mean ROUGE-L F1, computed by the rouge-score package."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    n = len(references) or 1
    exact = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references))
    return {"exact_match": exact / n, "rouge_l": rouge / n}


def bootstrap_intervals(y_true: list, y_pred: list, labels: list, *, samples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of accuracy and macro-F1: {"accuracy": [lo, hi], "f1_macro": [lo, hi]}.
    Examples are resampled with replacement `samples` times (seeded, so a rerun prints the same interval).
    Each resample's accuracy and macro-F1 are classification_metrics' own, counted over the picks with numpy
    (the same draws and the same arithmetic, so the same numbers; ~3x faster on 1,000 pairs, the draws now the
    slower half)."""
    import random

    import numpy as np
    rng = random.Random(seed)
    n = len(y_true)
    picks = np.array([[rng.randrange(n) for _ in range(n)] for _ in range(samples)], dtype=np.int64).reshape(samples, n)

    def counts(flags: list[bool]) -> np.ndarray:  # per resample: how many of its picks have the flag
        return np.asarray(flags, dtype=np.int64)[picks].sum(axis=1)
    accuracy = counts([p is not None and t == p for t, p in zip(y_true, y_pred)]) / n if n else np.zeros(samples)
    f1_sum = np.zeros(samples)
    for label in labels:
        tp = counts([t == label and p == label for t, p in zip(y_true, y_pred)])
        predicted, support = counts([p == label for p in y_pred]), counts([t == label for t in y_true])
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
            recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1_sum = f1_sum + f1
    scores = {"accuracy": accuracy.tolist(), "f1_macro": (f1_sum / (len(labels) or 1)).tolist()}
    tail = (1 - level) / 2
    return {key: [sorted(values)[int(tail * samples)], sorted(values)[min(samples - 1, int((1 - tail) * samples))]]
            for key, values in scores.items()}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """The Wilson score interval of a proportion (95% by default); None for n = 0. Used for abstention's
    coverage and accuracy of the answered examples, where a bootstrap of a share adds nothing."""
    if n == 0:
        return None
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]


def binomial_lower_bound(successes: int, n: int, confidence: float = 0.95) -> float | None:
    """The exact one-sided (Clopper-Pearson) lower confidence bound of a proportion: the p at which seeing
    `successes` or more of n has probability 1 - confidence; None for n = 0. With few examples it says how
    little a high share proves: 12 of 12 right is >= 0.78 at 95%."""
    if n == 0:
        return None
    if successes == 0:
        return 0.0

    def tail(p: float) -> float:  # P(X >= successes) for X ~ Bin(n, p), rising in p
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                            + k * math.log(p) + (n - k) * math.log1p(-p)) for k in range(successes, n + 1))
    low, high = 0.0, successes / n
    for _ in range(60):  # bisection: the tail is monotone in p
        middle = (low + high) / 2
        low, high = (middle, high) if tail(middle) < 1 - confidence else (low, middle)
    return low


def paired_difference(correct_a: list[bool] | dict, correct_b: list[bool] | dict, *, samples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """How much more often B is right than A on the same examples: the accuracy difference (B - A), its
    paired percentile bootstrap interval (both resampled with the same picks, seeded) and McNemar's
    exact p (two-sided binomial test on the examples only one of them gets right). Given {id: correct}
    dicts, both must hold the same ids (a ValueError names the others): pairs of other examples are no pairs."""
    import random
    if isinstance(correct_a, dict) or isinstance(correct_b, dict):
        correct_a, correct_b = _paired_by_id(dict(correct_a), dict(correct_b))
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError(f"paired results need the same examples: {len(correct_a)} vs {len(correct_b)}")
    n = len(correct_a)
    delta = [int(bool(b)) - int(bool(a)) for a, b in zip(correct_a, correct_b)]
    rng = random.Random(seed)
    diffs = sorted(sum(delta[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    tail = (1 - level) / 2
    only_b, only_a = delta.count(1), delta.count(-1)
    return {"difference": sum(delta) / n,
            "interval": [diffs[int(tail * samples)], diffs[min(samples - 1, int((1 - tail) * samples))]],
            "mcnemar_p": mcnemar_p(only_a, only_b), "only_baseline_right": only_a, "only_arm_right": only_b}


def _paired_by_id(correct_a: dict, correct_b: dict) -> tuple[list, list]:
    only_a, only_b = [i for i in correct_a if i not in correct_b], [i for i in correct_b if i not in correct_a]
    if only_a or only_b:
        def some(ids):
            return ", ".join(map(str, ids[:5])) + (f" (and {len(ids) - 5} more)" if len(ids) > 5 else "") or "-"
        raise ValueError(f"paired results need the same examples: only in the first: {some(only_a)}; "
                         f"only in the second: {some(only_b)}")
    return [correct_a[i] for i in correct_a], [correct_b[i] for i in correct_a]


# Two-sided 95% quantiles of Student's t by degrees of freedom (a few seeds are a small sample).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}


def mean_over_seeds(values: list[float], bounds: tuple[float, float] | None = None) -> dict:
    """Mean, sample standard deviation and 95% t interval of one score measured once per seed: the
    seed-to-seed spread, not the sampling of examples (a single seed has no interval). `bounds`: the
    range the score can take (accuracy: 0 to 1), which the interval is clipped to."""
    import math
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "interval": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T_975[max(df for df in T_975 if df <= n - 1)] if n - 1 <= 30 else 1.96
    half = t * sd / math.sqrt(n)
    low, high = bounds or (-math.inf, math.inf)
    return {"n": n, "mean": mean, "sd": sd, "interval": [max(low, mean - half), min(high, mean + half)]}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p: under no difference the discordant examples split like fair coin flips."""
    from math import comb
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def majority_baseline(y_true: list) -> float:
    """Accuracy of always answering the most frequent true label."""
    from collections import Counter
    return Counter(y_true).most_common(1)[0][1] / len(y_true) if y_true else 0.0


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the smallest raw p times m, the next times
    m - 1, ..., each at least the one before it (so the order never flips) and at most 1. Comparing many arms
    with one baseline, an adjusted p below 0.05 keeps the chance of any false claim among them below 0.05."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def pooled_paired_difference(seed_pairs: list[tuple[list[bool], list[bool]]], *, samples: int = 1000,
                             seed: int = 0, level: float = 0.95) -> dict:
    """One paired comparison over several seeds, using every seed's examples at once.

    seed_pairs: per seed, (baseline right?, arm right?) on the same examples, aligned (example i of every seed
    is the same pair). The difference is the mean over seeds of each seed's accuracy difference; its interval
    is a bootstrap that resamples the examples, the same picks in every seed, so it covers the examples'
    sampling with the seeds' variation held in. The p is the stratified (Mantel-Haenszel) McNemar test: under
    no difference every discordant example, in any seed, is a fair coin, so the exact binomial test on the
    discordant counts summed over seeds (for one seed, McNemar's own)."""
    import random
    sizes = {len(a) for a, _ in seed_pairs} | {len(b) for _, b in seed_pairs}
    if not seed_pairs or len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every seed needs the same examples: sizes {sorted(sizes)}")
    n, k = sizes.pop(), len(seed_pairs)
    delta = [[int(bool(b)) - int(bool(a)) for a, b in zip(base, arm)] for base, arm in seed_pairs]
    per_example = [sum(d[i] for d in delta) / k for i in range(n)]  # mean over seeds of example i's delta
    rng = random.Random(seed)
    diffs = sorted(sum(per_example[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    tail = (1 - level) / 2
    only_arm = sum(d.count(1) for d in delta)
    only_baseline = sum(d.count(-1) for d in delta)
    return {"seeds": k, "n": n, "difference": sum(per_example) / n,
            "interval": [diffs[int(tail * samples)], diffs[min(samples - 1, int((1 - tail) * samples))]],
            "mcnemar_p": mcnemar_p(only_baseline, only_arm), "only_baseline_right": only_baseline,
            "only_arm_right": only_arm}


# One-sided 80% quantiles of Student's t by degrees of freedom (for the power of a t test over seeds).
T_80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879,
        15: 0.866, 20: 0.860, 30: 0.854}


def pairs_needed(effect: float, discordant_rate: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Evaluation pairs needed for a two-sided McNemar test at `alpha` to detect an accuracy difference of
    `effect` with `power`, when a fraction `discordant_rate` of the pairs is right for one model only
    (Connor 1987: n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2)."""
    import math
    from statistics import NormalDist
    if not 0 < abs(effect) <= discordant_rate <= 1:
        raise ValueError(f"need 0 < |effect| <= discordant rate <= 1: effect {effect}, rate {discordant_rate}")
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    psi, d = discordant_rate, abs(effect)
    return math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - d * d)) ** 2 / (d * d))


def seeds_needed(effect: float, seed_sd: float, *, max_seeds: int = 1000) -> int | None:
    """Seeds needed for a two-sided t test over per-seed differences (alpha 0.05) to detect `effect` with 80%
    power, when the difference varies from seed to seed with standard deviation `seed_sd`: the smallest k
    with (t_0.975 + t_0.80, k - 1 degrees of freedom) * sd / sqrt(k) <= effect. None past max_seeds."""
    import math
    if seed_sd <= 0:
        return 2  # no seed-to-seed spread: two seeds already show it (one has no spread estimate)
    for k in range(2, max_seeds + 1):
        df = k - 1
        t_a = T_975[max(d for d in T_975 if d <= df)] if df <= 30 else 1.96
        t_b = T_80[max(d for d in T_80 if d <= df)] if df <= 30 else 0.842
        if (t_a + t_b) * seed_sd / math.sqrt(k) <= abs(effect):
            return k
    return None
