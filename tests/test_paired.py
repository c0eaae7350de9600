"""Paired comparisons and rank agreement: round trips, hand computations, published values and
synthetic data whose truth is known."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from search.store.paired import (
    _item_counts,
    _kendall_draws,
    _spearman_draws,
    kendall_tau,
    mcnemar,
    noise_ceiling,
    pack_correct,
    paired_bootstrap,
    paired_verdict,
    pooled_seed_noise,
    spearman,
    unpack_correct,
)

POINTS = re.compile(r"^[+-]\d+\.\d\d points \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] ")


def _pair(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of a and b with the given 2 x 2 counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def _runs(seed: int, images: int, accuracies: list[float], shared: float = 0.8) -> np.ndarray:
    """Seeds x images correctness, one run per accuracy. An image's score is its difficulty
    (the same in every call, which pairs the runs) with probability ``shared``, else the run's
    own draw; both uniform, so a run is right with probability its accuracy."""
    difficulty = np.random.default_rng(0).random(images)
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random((len(accuracies), images)) < shared, difficulty,
                      rng.random((len(accuracies), images)))
    return scores < np.array(accuracies)[:, None]


@settings(derandomize=True, max_examples=200)
@given(st.lists(st.booleans(), max_size=300))
def test_packed_correctness_round_trips_for_any_length(bits: list[bool]) -> None:
    correct = np.array(bits, dtype=bool)
    text = pack_correct(correct)
    assert text.isascii() and len(text) == 4 * math.ceil(math.ceil(len(bits) / 8) / 3)
    back = unpack_correct(text, len(bits))
    assert back.dtype == np.bool_ and np.array_equal(back, correct)


def test_ten_thousand_images_pack_into_a_short_string() -> None:
    assert len(pack_correct(np.ones(10_000, dtype=bool))) == 1668


@pytest.mark.parametrize(("text", "images", "message"), [
    (pack_correct(np.ones(16, dtype=bool)), 24, "holds 2 bytes; 24 images need 3"),
    (pack_correct(np.ones(16, dtype=bool)), 8, "holds 2 bytes; 8 images need 1"),
    (pack_correct(np.ones(12, dtype=bool)), 10, "bits set past image 10"),
    ("not base64!", 8, "not base64"),
    ("bépo", 8, "not base64"),
    ("", -1, "at least 0"),
])
def test_wrong_length_or_garbage_is_a_clear_value_error(text: str, images: int,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unpack_correct(text, images)


@pytest.mark.parametrize("correct", [np.array([0.9, 0.8]), np.ones((2, 2), dtype=bool)])
def test_only_one_dimension_of_booleans_packs(correct: np.ndarray) -> None:
    with pytest.raises(ValueError, match="1-D boolean"):
        pack_correct(correct)


def test_mcnemar_matches_the_exact_binomial_by_hand() -> None:
    a, b = _pair(both=30, only_a=9, only_b=2, neither=5)
    result = mcnemar(a, b)
    assert (result.b01, result.b10, result.images) == (2, 9, 46)
    assert result.difference == pytest.approx((9 - 2) / 46)
    # Two-sided: twice P(X <= 2) for X ~ Binomial(11, 1/2).
    assert result.p_value == pytest.approx(2 * sum(math.comb(11, k) for k in range(3)) / 2 ** 11)
    low, high = result.interval
    assert low < result.difference < high
    assert POINTS.match(result.describe())
    assert "right only for a on 9, only for b on 2" in result.describe()


def test_mcnemar_swapped_flips_the_sign_and_keeps_the_p_value() -> None:
    a, b = _pair(both=40, only_a=7, only_b=3, neither=11)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ba.b01, ba.b10) == (ab.b10, ab.b01)
    assert ba.difference == pytest.approx(-ab.difference)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ba.interval == pytest.approx((-ab.interval[1], -ab.interval[0]))


def test_newcombes_paired_interval_matches_the_published_example() -> None:
    """Cavo et al. (2012) in Fagerland, Lydersen & Laake (2014), Stat Med 33:2850: the Newcombe
    square-and-add interval, estimate -0.0621, 95% CI -0.1186 to -0.0046."""
    result = mcnemar(*_pair(both=59, only_a=6, only_b=16, neither=80))
    assert result.difference == pytest.approx(-0.0621, abs=1e-4)
    assert result.interval == pytest.approx((-0.1186, -0.0046), abs=1e-4)


def test_identical_runs_have_no_evidence_and_an_interval_around_zero() -> None:
    a, _ = _pair(both=50, only_a=0, only_b=0, neither=10)
    result = mcnemar(a, a)
    assert result.p_value == 1.0 and result.difference == 0.0
    assert result.interval[0] < 0 < result.interval[1]


def test_mcnemar_refuses_runs_on_different_images() -> None:
    with pytest.raises(ValueError, match="same images"):
        mcnemar(np.ones(5, dtype=bool), np.ones(6, dtype=bool))


def test_bootstrap_covers_a_known_difference_and_excludes_zero() -> None:
    a = _runs(1, 8000, [0.62, 0.63, 0.61])
    b = _runs(2, 8000, [0.58, 0.59, 0.57, 0.58])
    truth = 0.62 - 0.58
    result = paired_bootstrap(a, b)
    low, high = result.interval
    assert 0 < low < truth < high
    assert low < result.difference < high
    assert result.p_value < 0.001
    assert (result.images, result.a_seeds, result.b_seeds) == (8000, 3, 4)
    assert POINTS.match(result.describe())


def test_equal_architectures_with_a_seed_spread_are_not_distinguished() -> None:
    """One architecture trained twice over three seeds whose accuracies spread over 6 points:
    the interval holds 0, and is wider than for seeds that agree."""
    spread = paired_bootstrap(_runs(3, 5000, [0.70, 0.73, 0.76]),
                              _runs(4, 5000, [0.76, 0.70, 0.73]))
    assert spread.interval[0] < 0 < spread.interval[1]
    assert spread.p_value > 0.05
    agreeing = paired_bootstrap(_runs(3, 5000, [0.73] * 3), _runs(4, 5000, [0.73] * 3))
    assert agreeing.interval[0] < 0 < agreeing.interval[1]
    assert (spread.interval[1] - spread.interval[0]
            > 2 * (agreeing.interval[1] - agreeing.interval[0]))


def test_bootstrap_is_determined_by_its_seed() -> None:
    a, b = _runs(5, 2000, [0.8, 0.82]), _runs(6, 2000, [0.79])
    assert paired_bootstrap(a, b, draws=2000, seed=7) == paired_bootstrap(a, b, draws=2000, seed=7)
    assert (paired_bootstrap(a, b, draws=2000, seed=7).interval
            != paired_bootstrap(a, b, draws=2000, seed=8).interval)


def test_bootstrap_of_one_seed_each_agrees_with_mcnemars_interval() -> None:
    a, b = _runs(7, 20_000, [0.81]), _runs(8, 20_000, [0.80])
    boot, exact = paired_bootstrap(a, b), mcnemar(a[0], b[0])
    assert boot.difference == pytest.approx(exact.difference)
    width = exact.interval[1] - exact.interval[0]
    assert boot.interval == pytest.approx(exact.interval, abs=0.05 * width)


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.ones((2, 5), dtype=bool), np.ones((2, 6), dtype=bool), "same images"),
    (np.ones((2, 5)), np.ones((2, 5), dtype=bool), "booleans"),
    (np.ones(5, dtype=bool), np.ones((1, 5), dtype=bool), "seeds x images"),
    (np.ones((0, 5), dtype=bool), np.ones((1, 5), dtype=bool), "seeds x images"),
])
def test_bootstrap_refuses_what_is_not_seeds_by_images_of_booleans(a, b, message) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b)


@pytest.mark.parametrize("measure", [kendall_tau, spearman])
def test_same_order_is_one_and_reversed_minus_one(measure) -> None:
    x = np.arange(12.0)
    same, reversed_ = measure(x, x ** 2), measure(x, -x)
    assert same.coefficient == pytest.approx(1.0) and same.interval == pytest.approx((1.0, 1.0))
    assert reversed_.coefficient == pytest.approx(-1.0)
    assert reversed_.interval == pytest.approx((-1.0, -1.0))


@pytest.mark.parametrize("measure", [kendall_tau, spearman])
def test_rank_interval_holds_the_coefficient(measure) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=40)
    found = measure(x, x + rng.normal(size=40))
    low, high = found.interval
    assert -1 <= low < found.coefficient < high <= 1
    assert found.items == 40 and "over 40 items" in found.describe()


@pytest.mark.parametrize(("draws", "scipy_of"), [
    (_kendall_draws, lambda x, y: stats.kendalltau(x, y).statistic),
    (_spearman_draws, lambda x, y: stats.spearmanr(x, y).statistic),
])
def test_resampled_coefficients_are_scipys_on_the_expanded_resample(draws, scipy_of) -> None:
    """The matrix forms against scipy on each resample written out, ties included."""
    rng = np.random.default_rng(10)
    x, y = rng.integers(0, 8, 25).astype(float), rng.normal(size=25)
    counts = _item_counts(25, 6, seed=11)
    expected = [scipy_of(np.repeat(x, c.astype(int)), np.repeat(y, c.astype(int)))
                for c in counts]
    assert draws(x, y, counts) == pytest.approx(expected)


def test_undefined_agreement_is_none_and_missing_items_are_dropped() -> None:
    flat = kendall_tau([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert flat.coefficient is None and flat.interval is None
    assert "undefined" in flat.describe()
    assert spearman([1.0], [2.0]).coefficient is None
    found = kendall_tau([1.0, 2.0, math.nan, 4.0], [1.0, 2.0, 3.0, math.nan])
    assert found.items == 2 and found.coefficient == pytest.approx(1.0)


def test_noise_ceiling_of_repeatable_seeds_is_one() -> None:
    column = np.random.default_rng(12).normal(size=30)
    ceiling = noise_ceiling(np.stack([column, column, column], axis=1))
    assert ceiling.seeds == 3
    for part in (ceiling.between_seeds, ceiling.held_out):
        assert part.coefficient == pytest.approx(1.0)
        assert part.interval == pytest.approx((1.0, 1.0))


def test_noise_ceiling_of_pure_noise_is_near_zero() -> None:
    ceiling = noise_ceiling(np.random.default_rng(13).normal(size=(300, 3)))
    for part in (ceiling.between_seeds, ceiling.held_out):
        assert abs(part.coefficient) < 0.1
        assert part.interval[0] < 0 < part.interval[1]
    assert "seed against seed Kendall tau" in ceiling.describe()


def test_noise_ceiling_lies_between_noise_and_repeatability() -> None:
    """Seeds that share a true order plus noise: the mean of the others ranks closer to each
    seed than another single seed does."""
    rng = np.random.default_rng(14)
    truth = rng.normal(size=200)
    ceiling = noise_ceiling(truth[:, None] + rng.normal(size=(200, 4)))
    assert 0 < ceiling.between_seeds.coefficient < ceiling.held_out.coefficient < 1


def test_noise_ceiling_needs_two_seeds() -> None:
    with pytest.raises(ValueError, match="at least two seeds"):
        noise_ceiling(np.ones((5, 1)))


# -- verdicts that count the pairing and the seeds ---------------------------------------------

def _seeds(rng: np.random.Generator, difficulty: np.ndarray, shifts: Sequence[float]) -> np.ndarray:
    """Runs (seeds x images) of one architecture: an image is right with its own probability,
    moved by the seed's shift (a seed that trained better gets more right everywhere)."""
    return np.stack([rng.random(difficulty.size) < np.clip(difficulty + s, 0, 1)
                     for s in shifts])


def test_two_equal_architectures_with_a_real_seed_spread_are_not_distinguishable() -> None:
    rng = np.random.default_rng(7)
    difficulty = rng.random(10_000)  # the same images are hard for both
    spread = 0.02  # seeds move accuracy by about 2 points
    a = _seeds(rng, difficulty, rng.normal(0, spread, 3))
    b = _seeds(rng, difficulty, rng.normal(0, spread, 3))
    sentence = paired_verdict(a, b, None, "A", "B", "test")
    assert sentence.startswith("A is not distinguishable from B"), sentence
    # One run each, with the seed spread pooled from repeated runs of other architectures.
    noise = pooled_seed_noise([list(a.mean(axis=1)), list(b.mean(axis=1))])
    assert noise is not None and noise.df == 4 and noise.architectures == 2
    single = paired_verdict(a[:1], b[:1], noise, "A", "B", "test")
    assert single.startswith("A is not distinguishable from B"), single
    assert "seed spread pooled from 2 architectures" in single


def test_one_run_each_without_repeated_runs_says_it_cannot_decide() -> None:
    rng = np.random.default_rng(8)
    difficulty = rng.random(5_000)
    a, b = _seeds(rng, difficulty, [0.05]), _seeds(rng, difficulty, [0.0])
    sentence = paired_verdict(a, b, None, "A", "B", "test")
    assert "cannot separate the architecture from its training seed" in sentence
    assert "McNemar" in sentence or "p =" in sentence  # the images alone, beside


def test_a_real_gap_beats_pooled_seed_noise() -> None:
    rng = np.random.default_rng(9)
    difficulty = rng.random(10_000)
    a, b = _seeds(rng, difficulty, [0.08]), _seeds(rng, difficulty, [0.0])
    noise = pooled_seed_noise([[0.80, 0.81, 0.805], [0.70, 0.705, 0.71]])
    assert paired_verdict(a, b, noise, "A", "B", "test").startswith("A beats B beyond noise")
    assert paired_verdict(b, a, noise, "B", "A", "test").startswith("B is worse than A")


def test_pooled_seed_noise_is_the_within_architecture_variance() -> None:
    noise = pooled_seed_noise([[0.1, 0.3], [0.5], [0.2, 0.4, 0.6]])
    # squares: 0.02 + 0.08 over df 1 + 2
    assert noise is not None and noise.variance == pytest.approx(0.1 / 3)
    assert noise.df == 3 and noise.architectures == 2
    assert pooled_seed_noise([[0.5], [0.7]]) is None


def test_the_search_verdict_is_paired_and_leaves_out_the_run_that_picked_the_winner() -> None:
    """Through the records a study keeps: a searched architecture confirmed over seeds against
    a uniform baseline; the verdict compares the confirmation runs alone, on the same images."""
    from search.store.records import TrialRecord
    from search.store.verdict import search_verdict

    rng = np.random.default_rng(11)
    images = 4_000
    difficulty = rng.random(images)

    def run(number: int, shift: float, baseline: int | None, replicate: int) -> TrialRecord:
        test = rng.random(images) < np.clip(difficulty + shift, 0, 1)
        return TrialRecord(number=number, status="complete", parts=(4, 4) if baseline else (2, 8),
                           accuracy=0.7 + shift, test_accuracy=float(test.mean()),
                           paper_macs=100, executed_macs=100, params=10, latency_ms=None,
                           epochs_trained=1, wall_seconds=1.0, baseline_part=baseline,
                           checkpoint=None, architecture=None, replicate=replicate,
                           test_correct=pack_correct(test))

    # The searched architecture's first run was lucky (+10 points); its seeds are level.
    searched = [run(0, 0.10, None, 0), run(2, 0.0, None, 1), run(3, 0.0, None, 2)]
    uniform = [run(1, 0.0, 4, 0), run(4, 0.0, 4, 1), run(5, 0.0, 4, 2)]
    sentence = search_verdict(searched + uniform, images)
    assert sentence is not None and "its confirmation runs" in sentence
    assert "is not distinguishable from" in sentence and "paired bootstrap" in sentence
