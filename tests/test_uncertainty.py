"""Intervals against hand computations, and the verdict's three answers."""

from __future__ import annotations

import math

import pytest

from search.store.uncertainty import (
    Estimate,
    difference_interval,
    verdict,
    wilson_interval,
)


@pytest.mark.parametrize(("correct", "images", "low", "high"), [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_newcombes_published_table(correct, images, low, high) -> None:
    """Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)."""
    got = wilson_interval(correct / images, images)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_stays_inside_zero_and_one() -> None:
    low, high = wilson_interval(1.0, 143)
    assert high == pytest.approx(1.0) and high <= 1.0
    assert low == pytest.approx(143 / (143 + 1.959963984540054 ** 2))  # n / (n + z²) at p = 1
    assert wilson_interval(0.0, 10)[0] == 0.0


def test_seed_spread_gives_a_t_interval_of_the_mean() -> None:
    est = Estimate((0.80, 0.82, 0.84), 10_000)
    assert est.mean == pytest.approx(0.82)
    assert est.spread == pytest.approx(0.02)
    low, high = est.interval
    # t(0.975, 2) = 4.3027; half-width = 4.3027 * 0.02 / sqrt(3)
    assert high - est.mean == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-4)
    assert est.mean - low == pytest.approx(high - est.mean)
    assert est.describe() == "82.00% ± 2.00 (3 seeds)"


def test_seeds_that_agree_keep_the_binomial_noise_and_stay_inside_one() -> None:
    est = Estimate((0.99, 0.99, 0.99), 360)
    low, high = est.interval
    half = 4.3027 * math.sqrt(0.99 * 0.01 / 360 / 3)  # binomial variance, not zero
    assert est.mean - low == pytest.approx(half, rel=1e-4)
    assert high == 1.0
    (dlow, dhigh), how = difference_interval(est, Estimate((0.985,) * 3, 360))
    assert dlow < 0 < dhigh and how == "Welch's t over 3 and 3 runs"


def test_difference_of_single_runs_is_newcombes() -> None:
    a, b = Estimate((0.98,), 1000), Estimate((0.96,), 1000)
    (la, ua), (lb, ub) = wilson_interval(0.98, 1000), wilson_interval(0.96, 1000)
    (low, high), how = difference_interval(a, b)
    assert how == "Newcombe, one run each"
    assert low == pytest.approx(0.02 - math.sqrt((0.98 - la) ** 2 + (ub - 0.96) ** 2))
    assert high == pytest.approx(0.02 + math.sqrt((ua - 0.98) ** 2 + (0.96 - lb) ** 2))
    # Newcombe (1998) Table II, 56/70 - 48/80, method 10: [0.0524, 0.3339].
    (low, high), _ = difference_interval(Estimate((56 / 70,), 70), Estimate((48 / 80,), 80))
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_seeds_against_one_run_count_both_noises() -> None:
    a, b = Estimate((0.90, 0.92, 0.91), 1000), Estimate((0.88,), 1000)
    (low, high), how = difference_interval(a, b)
    va = 0.01 ** 2 / 3  # the seeds' spread (0.01) is above the binomial 0.91 * 0.09 / 1000
    vb = 0.88 * 0.12 / 1000
    df = (va + vb) ** 2 / (va * va / 2)  # a single run's binomial variance counts as known
    from scipy.stats import t
    assert high - 0.03 == pytest.approx(t.ppf(0.975, df) * math.sqrt(va + vb), rel=1e-6)
    assert how == "Welch's t over 3 and 1 runs"


def test_verdict_says_beats_worse_or_not_distinguishable() -> None:
    big = 100_000
    assert verdict(Estimate((0.98,), big), Estimate((0.96,), big), "A", "B", "test") \
        .startswith("A beats B beyond noise: +2.00 points on test")
    assert verdict(Estimate((0.96,), big), Estimate((0.98,), big), "A", "B", "test") \
        .startswith("A is worse than B beyond noise")
    # 143 validation images: one image is 0.7 points, far inside the noise.
    assert verdict(Estimate((0.979,), 143), Estimate((0.972,), 143), "A", "B", "validation") \
        .startswith("A is not distinguishable from B: +0.70 points")
    assert "image count is unknown" in verdict(Estimate((0.9,), None), Estimate((0.8,), None),
                                               "A", "B", "test")
