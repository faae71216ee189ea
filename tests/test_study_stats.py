"""The study's statistics beyond one pair of arms (issue #42): Holm, the pooled paired test over seeds, and the
power plan, each against a hand computation."""

import math

import pytest

from nli_finetune.metrics import (
    holm_adjust,
    mcnemar_p,
    paired_difference,
    pairs_needed,
    pooled_paired_difference,
    seeds_needed,
)


def test_holm_equals_the_hand_computation():
    # sorted 0.01, 0.02, 0.03, 0.5 -> 4*0.01, 3*0.02, max(0.06, 2*0.03), max(0.06, 1*0.5); back in input order
    assert holm_adjust([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 * 0.8 capped at 1; 0.9 never below it
    assert holm_adjust([0.2, 0.04]) == pytest.approx([0.2, 0.08])
    assert holm_adjust([0.6, 0.7, 0.8]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm_adjust([]) == []


def test_pooled_over_seeds_sums_the_discordant_pairs():
    # seed 1: arm alone right on 3, baseline alone on 1; seed 2: arm alone on 2, baseline alone on 0
    base1, arm1 = [0, 0, 0, 1, 1, 0], [1, 1, 1, 0, 1, 0]
    base2, arm2 = [0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]
    pooled = pooled_paired_difference([(base1, arm1), (base2, arm2)], samples=200)
    assert (pooled["only_arm_right"], pooled["only_baseline_right"]) == (5, 1)
    assert pooled["mcnemar_p"] == pytest.approx(2 * (1 + 6) / 2 ** 6)  # exact binomial on 6 discordant, k = 1
    assert pooled["difference"] == pytest.approx((2 / 6 + 2 / 6) / 2)
    lo, hi = pooled["interval"]
    assert lo <= pooled["difference"] <= hi


def test_pooled_over_one_seed_is_the_paired_difference():
    base, arm = [0, 1, 1, 0, 1, 0, 0, 1], [1, 1, 0, 1, 1, 1, 0, 1]
    one, pooled = paired_difference(base, arm), pooled_paired_difference([(base, arm)])
    assert pooled["difference"] == one["difference"] and pooled["mcnemar_p"] == one["mcnemar_p"]
    assert pooled["interval"] == one["interval"]  # same seeded picks


def test_pooled_refuses_seeds_on_other_examples():
    with pytest.raises(ValueError, match="same examples"):
        pooled_paired_difference([([0, 1], [1, 1]), ([0], [1])])


def test_pairs_needed_equals_connors_formula():
    # effect 0.03 with 12% discordant pairs: z = 1.95996, 0.84162
    expected = (1.959964 * math.sqrt(0.12) + 0.841621 * math.sqrt(0.12 - 0.0009)) ** 2 / 0.0009
    assert pairs_needed(0.03, 0.12) == math.ceil(expected)
    assert pairs_needed(0.03, 0.12) > pairs_needed(0.06, 0.12)  # a larger effect needs fewer pairs
    with pytest.raises(ValueError, match="discordant"):
        pairs_needed(0.2, 0.1)  # the difference cannot exceed the discordant rate


def test_seeds_needed_is_the_smallest_k_whose_t_power_reaches_the_effect():
    # sd 0.03, effect 0.03: k = 10 gives (2.262 + 0.883) * 0.03 / sqrt(10) = 0.0298 <= 0.03; k = 9 does not
    assert (2.306 + 0.889) * 0.03 / math.sqrt(9) > 0.03
    assert seeds_needed(0.03, 0.03) == 10
    assert seeds_needed(0.03, 0.0) == 2
    assert seeds_needed(0.03, 10.0, max_seeds=50) is None
    assert mcnemar_p(0, 0) == 1.0
