"""Comparisons on the same images, and how well two rankings agree.

Two networks scored on one validation split are paired: most images are right (or wrong) for
both, and only the images they disagree on say which is better. Tests that ignore the pairing
(:func:`search.store.uncertainty.difference_interval`) count the shared noise twice and call
real gaps noise. Here the per-image correctness is kept (packed into a short string an Optuna
user attribute can hold) and compared as pairs: McNemar's exact test and Newcombe's paired
interval for one run each, a bootstrap over images and seeds for several. Rankings (a supernet's
estimates against stand-alone training) get Kendall's τ or Spearman's ρ with a bootstrap
interval over the items, and the noise ceiling: how well the seeds rank like each other, the
best an estimator can be seen to do. numpy and scipy only; scipy is imported on use.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from search.store.uncertainty import Z95, judge, t95, wilson_interval

_CELLS = 1 << 22  # bootstrap counts held at once (32 MiB of int64), whatever the pattern count


def _span(value: float, interval: tuple[float, float] | None, scale: float = 1.0,
          unit: str = "") -> str:
    """``+1.23 points [+0.40, +2.05]``: a signed figure, its unit and its interval, scaled
    (100 for points)."""
    text = f"{scale * value:+.2f}{unit}"
    if interval is None:
        return text
    return f"{text} [{scale * interval[0]:+.2f}, {scale * interval[1]:+.2f}]"


def _p(p_value: float, draws: int | None = None) -> str:
    """A p-value in two significant figures; a bootstrap's zero is "below one draw in N"."""
    return f"p < {1 / draws:.2g}" if draws and p_value == 0 else f"p = {p_value:.2g}"


def _correctness(values: ArrayLike, name: str, ndim: int) -> NDArray[np.bool_]:
    """``values`` as a boolean array of ``ndim`` dimensions with at least one image (and seed).

    Booleans only: accuracies or scores passed by mistake would otherwise count as right."""
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be booleans (right or wrong per image), got {array.dtype}")
    if array.ndim != ndim or 0 in array.shape:
        shape = "images" if ndim == 1 else "seeds x images"
        raise ValueError(f"{name} must be a non-empty {shape} array, got shape {array.shape}")
    return array


# -- per-image correctness as text ----------------------------------------------------------

def pack_correct(correct: ArrayLike) -> str:
    """One bit per image, base64: 10,000 images take 1,668 ASCII characters, small enough for
    a JSON string in an Optuna user attribute. The image count is kept elsewhere (the trial
    records it); :func:`unpack_correct` needs it because the last byte is padded with zeros."""
    array = np.asarray(correct)
    if array.dtype != np.bool_ or array.ndim != 1:
        raise ValueError(f"correctness must be a 1-D boolean array, got {array.dtype} of shape "
                         f"{array.shape}")
    return base64.b64encode(np.packbits(array).tobytes()).decode("ascii")


def unpack_correct(text: str, images: int) -> NDArray[np.bool_]:
    """The boolean array :func:`pack_correct` wrote for ``images`` images.

    A ValueError when ``text`` is not base64, holds another number of bytes, or sets padding
    bits (packed for more images than ``images`` within the same byte)."""
    if images < 0:
        raise ValueError(f"image count must be at least 0, got {images}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as error:
        raise ValueError(f"packed correctness is not base64 text: {error}") from None
    needed = (images + 7) // 8
    if len(raw) != needed:
        raise ValueError(f"packed correctness holds {len(raw)} bytes; {images} images need "
                         f"{needed}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[images:].any():
        raise ValueError(f"packed correctness has bits set past image {images}: it was packed "
                         f"for more images")
    return bits[:images].astype(np.bool_)


# -- one run each: McNemar ------------------------------------------------------------------

@dataclass(frozen=True)
class McNemar:
    """Two single runs on the same images: the discordant counts, the exact test and the
    95 % interval of the accuracy difference (a minus b)."""

    images: int
    b01: int  # images a got wrong and b right
    b10: int  # images a got right and b wrong
    difference: float  # accuracy of a minus accuracy of b, (b10 - b01) / images
    p_value: float  # exact two-sided McNemar test: binomial on the b01 + b10 discordant images
    interval: tuple[float, float]  # Newcombe's paired interval (method 10)

    def describe(self) -> str:
        """``+1.23 points [+0.40, +2.05] on 10000 images (Newcombe, paired); ...``."""
        gap = _span(self.difference, self.interval, 100, " points")
        return (f"{gap} on {self.images} images (Newcombe, paired); right only for a on "
                f"{self.b10}, only for b on {self.b01}; McNemar exact {_p(self.p_value)}")


def _newcombe_paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[float, float]:
    """Newcombe's square-and-add interval for a difference of paired proportions, method 10 of
    Newcombe (1998), Statistics in Medicine 17:2635: the two Wilson intervals combined with
    the estimated correlation φ of the pair, which is shrunk towards 0 by n/2 when positive.
    One of the intervals Fagerland, Lydersen & Laake (2014, Statistics in Medicine 33:2850)
    recommend; unlike the Wald interval it keeps its coverage where few images are
    discordant."""
    n = both + only_a + only_b + neither
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    (l1, u1), (l2, u2) = wilson_interval(p1, n), wilson_interval(p2, n)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    d = p1 - p2
    low = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return d - low, d + high


def mcnemar(a_correct: ArrayLike, b_correct: ArrayLike) -> McNemar:
    """McNemar's test of two networks scored once on the same images (McNemar 1947), the test
    Dietterich (1998, Neural Computation 10:1895) recommends when each can be trained once:
    only the images the two disagree on count. The p-value is the exact binomial one (half of
    the discordant images each way under the null), the interval Newcombe's paired one."""
    from scipy.stats import binomtest  # imported on use, as in search.store.uncertainty

    a = _correctness(a_correct, "a_correct", 1)
    b = _correctness(b_correct, "b_correct", 1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must be scored on the same images: {a.size} against {b.size}")
    both, only_a = int(np.sum(a & b)), int(np.sum(a & ~b))
    only_b, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    discordant = only_a + only_b
    p_value = binomtest(only_a, discordant).pvalue if discordant else 1.0
    return McNemar(images=a.size, b01=only_b, b10=only_a, difference=(only_a - only_b) / a.size,
                   p_value=float(p_value),
                   interval=_newcombe_paired(both, only_a, only_b, neither))


# -- several seeds: a bootstrap over images and seeds ---------------------------------------

@dataclass(frozen=True)
class PairedDifference:
    """Mean-over-seeds accuracy of a minus that of b, on the same images, with a bootstrap
    95 % interval and p-value over both images and seeds."""

    difference: float
    interval: tuple[float, float]  # percentile interval of the bootstrap draws
    p_value: float  # twice the share of draws past zero, away from the difference (at most 1)
    images: int
    a_seeds: int
    b_seeds: int
    draws: int

    def describe(self) -> str:
        """``+1.23 points [+0.40, +2.05] (paired bootstrap ...), p = 0.0031``."""
        gap = _span(self.difference, self.interval, 100, " points")
        return (f"{gap} (paired bootstrap over {self.images} images and {self.a_seeds} vs "
                f"{self.b_seeds} seeds, {self.draws} draws), {_p(self.p_value, self.draws)}")


def paired_bootstrap(a_runs: ArrayLike, b_runs: ArrayLike, draws: int = 10_000,
                     seed: int = 0) -> PairedDifference:
    """Bootstrap of the mean-over-seeds accuracy difference of a and b (seeds x images each).

    Images and seeds are crossed: every seed is scored on every image. Each draw resamples the
    images once, the same for a and b (which keeps the pairing: an image both get right adds
    to both sides), and each side's seeds independently, both with replacement; the two-level
    bootstrap Bouthillier et al. (2021, MLSys, "Accounting for variance in machine learning
    benchmarks") use to count both sources of noise. No bootstrap of a crossed design is exact
    (McCullagh 2000, Bernoulli 6:285): resampling both factors counts their interaction (an
    image one seed gets right and another wrong) twice, which leans wide, while with few seeds
    the seed part is narrow by a factor (seeds - 1) / seeds in variance.

    Fast because a draw's image resample is only a count per distinct correctness pattern (the
    seeds' right/wrong bits of an image, at most 2 ** (a seeds + b seeds) of them, at most the
    image count): a multinomial over the patterns gives exactly the counts resampling every
    image would, and each seed's accuracy is those counts times the pattern bits.

    ``p_value`` is twice the share of draws at or past zero on the side away from the observed
    difference (draws at exactly zero count half), capped at 1: about the smallest α whose
    (1 - α) percentile interval reaches zero. A rough guide, not an exact test; 0 means fewer
    than one draw in ``draws``.
    """
    a = _correctness(a_runs, "a_runs", 2)
    b = _correctness(b_runs, "b_runs", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be scored on the same images: {a.shape[1]} against "
                         f"{b.shape[1]}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    (sa, images), sb = a.shape, b.shape[0]
    patterns, counts = np.unique(np.concatenate([a, b]).T, axis=0, return_counts=True)
    weights = patterns.astype(np.float64)
    rng = np.random.default_rng(seed)
    a_seeds = rng.multinomial(sa, np.full(sa, 1 / sa), size=draws) / (sa * images)
    b_seeds = rng.multinomial(sb, np.full(sb, 1 / sb), size=draws) / (sb * images)
    differences = np.empty(draws)
    step = max(1, _CELLS // len(counts))
    for start in range(0, draws, step):
        stop = min(draws, start + step)
        right = rng.multinomial(images, counts / images, size=stop - start) @ weights
        differences[start:stop] = (np.sum(right[:, :sa] * a_seeds[start:stop], axis=1)
                                   - np.sum(right[:, sa:] * b_seeds[start:stop], axis=1))
    observed = float(a.mean() - b.mean())
    if observed == 0:
        p_value = 1.0
    else:
        beyond = differences < 0 if observed > 0 else differences > 0
        share = (np.count_nonzero(beyond) + 0.5 * np.count_nonzero(differences == 0)) / draws
        p_value = min(1.0, 2 * share)
    low, high = np.quantile(differences, [0.025, 0.975])
    return PairedDifference(difference=observed, interval=(float(low), float(high)),
                            p_value=p_value, images=images, a_seeds=sa, b_seeds=sb, draws=draws)


# -- rank agreement --------------------------------------------------------------------------

@dataclass(frozen=True)
class RankAgreement:
    """A rank coefficient over ``items`` paired values, with a bootstrap 95 % interval over the
    items; None where undefined (fewer than two items, or a side without spread)."""

    method: str  # "Kendall tau" (tau-b) or "Spearman rho"
    coefficient: float | None
    interval: tuple[float, float] | None
    items: int

    def describe(self) -> str:
        """``Kendall tau +0.62 [+0.31, +0.84] over 24 items``."""
        if self.coefficient is None:
            return (f"{self.method} undefined over {self.items} items (fewer than two, or no "
                    f"spread)")
        return f"{self.method} {_span(self.coefficient, self.interval)} over {self.items} items"


def _item_counts(items: int, draws: int, seed: int) -> NDArray[np.float64]:
    """How often each item appears in each bootstrap draw (draws x items), as floats so the
    quadratic forms below run as matrix products."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(items, np.full(items, 1 / items), size=draws).astype(np.float64)


def _form(counts: NDArray[np.float64], matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """cᵀ M c for every draw's counts c."""
    return np.sum((counts @ matrix) * counts, axis=1)


def _kendall_draws(x: NDArray[np.float64], y: NDArray[np.float64],
                   counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Kendall's tau-b of every resample, NaN where a side has no spread.

    A resample repeats item k c_k times, so its pair sums are quadratic forms in the counts:
    concordant minus discordant pairs ½ cᵀ(Sx∘Sy)c with S the sign matrices of the pairwise
    differences, pairs tied in x ½(cᵀ[Sx = 0]c - m) (a repeated item ties with itself). Exactly
    scipy's tau-b of the expanded resample, for all draws in a few matrix products."""
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    m = counts.sum(axis=1)
    pairs = m * (m - 1) / 2
    untied_x = pairs - (_form(counts, (sx == 0).astype(np.float64)) - m) / 2
    untied_y = pairs - (_form(counts, (sy == 0).astype(np.float64)) - m) / 2
    score = _form(counts, sx * sy) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((untied_x > 0) & (untied_y > 0),
                        score / np.sqrt(untied_x * untied_y), np.nan)


def _spearman_draws(x: NDArray[np.float64], y: NDArray[np.float64],
                    counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Spearman's rho of every resample, NaN where a side has no spread.

    Item k's mid-rank in a resample is the count of resampled values below it plus half of
    (its tie group's size + 1), both counts times 0/1 matrices; rho is the Pearson correlation
    of the ranks weighted by the counts (the mean rank is (m + 1) / 2)."""
    centre = (counts.sum(axis=1, keepdims=True) + 1) / 2

    def ranks(v: NDArray[np.float64]) -> NDArray[np.float64]:
        below = (v[None, :] < v[:, None]).astype(np.float64)  # [k, l]: v_l below v_k
        ties = (v[None, :] == v[:, None]).astype(np.float64)
        return counts @ below.T + (counts @ ties + 1) / 2 - centre

    rx, ry = ranks(x), ranks(y)
    vx, vy = np.sum(counts * rx * rx, axis=1), np.sum(counts * ry * ry, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((vx > 0) & (vy > 0),
                        np.sum(counts * rx * ry, axis=1) / np.sqrt(vx * vy), np.nan)


def _percentiles(values: NDArray[np.float64]) -> tuple[float, float] | None:
    """95 % percentile interval of the defined draws; None when no draw is defined."""
    kept = values[np.isfinite(values)]
    if kept.size == 0:
        return None
    low, high = np.quantile(kept, [0.025, 0.975])
    return float(low), float(high)


KENDALL, SPEARMAN = "Kendall tau", "Spearman rho"
_Draws = Callable[[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
                  NDArray[np.float64]]
_DRAWS: dict[str, _Draws] = {
    KENDALL: _kendall_draws, SPEARMAN: _spearman_draws}


def _coefficient(method: str, x: NDArray[np.float64], y: NDArray[np.float64]) -> float | None:
    """scipy's tau-b or rho; None without two items or without spread on a side, where scipy
    gives NaN (and warns about constant input)."""
    from scipy import stats  # imported on use, as in search.store.uncertainty

    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    found = stats.kendalltau(x, y) if method == KENDALL else stats.spearmanr(x, y)
    return float(found.statistic)


def _paired_values(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two equally long 1-D float arrays, without the items missing (NaN) on either side."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x and y must be 1-D and equally long, got shapes {xs.shape} and "
                         f"{ys.shape}")
    kept = np.isfinite(xs) & np.isfinite(ys)
    return xs[kept], ys[kept]


def _rank_agreement(method: str, x: ArrayLike, y: ArrayLike, draws: int,
                    seed: int) -> RankAgreement:
    xs, ys = _paired_values(x, y)
    coefficient = _coefficient(method, xs, ys)
    interval = None
    if coefficient is not None:
        interval = _percentiles(_DRAWS[method](xs, ys, _item_counts(xs.size, draws, seed)))
    return RankAgreement(method, coefficient, interval, int(xs.size))


def kendall_tau(x: ArrayLike, y: ArrayLike, draws: int = 2000, seed: int = 0) -> RankAgreement:
    """Kendall's tau-b of paired values (items missing on either side dropped), with a
    percentile interval over ``draws`` resamples of the items (draws where a side has no
    spread are skipped). The coefficient is scipy's; the resamples use the same tau-b in
    matrix form (:func:`_kendall_draws`), whose items x items matrices suit up to a few
    thousand items (architectures, not images)."""
    return _rank_agreement(KENDALL, x, y, draws, seed)


def spearman(x: ArrayLike, y: ArrayLike, draws: int = 2000, seed: int = 0) -> RankAgreement:
    """Spearman's rho, as :func:`kendall_tau` in every other respect."""
    return _rank_agreement(SPEARMAN, x, y, draws, seed)


@dataclass(frozen=True)
class NoiseCeiling:
    """How well stand-alone seeds rank the items like each other (Kendall tau-b): the most
    agreement an estimator can be seen to reach against such runs.

    ``between_seeds`` is the mean tau over all pairs of seeds: what a single retraining scores
    against another, the bar for an estimator judged against one seed. ``held_out`` is the
    mean over the seeds of tau between that seed and the mean of the others: the bar for an
    estimator judged against a mean of seeds (it uses one seed fewer than the full mean, so it
    is a little low, as the lower noise ceiling of Nili et al. 2014, PLoS Comput Biol
    10:e1003553). An estimator near these ranks as well as retraining does; one above them is
    within the reference's noise of them, not better."""

    between_seeds: RankAgreement
    held_out: RankAgreement
    seeds: int

    def describe(self) -> str:
        return (f"noise ceiling over {self.seeds} seeds: seed against seed "
                f"{self.between_seeds.describe()}; one seed against the mean of the others "
                f"{self.held_out.describe()}")


def noise_ceiling(runs: ArrayLike, draws: int = 2000, seed: int = 0) -> NoiseCeiling:
    """The :class:`NoiseCeiling` of ``runs`` (items x seeds, e.g. each architecture's accuracy
    per seed), items with a missing value dropped, each figure with a percentile interval
    over ``draws`` resamples of the items (the same resamples for both; draws where a pair has
    no spread are skipped)."""
    values = np.asarray(runs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"runs must be items x seeds with at least two seeds, got shape "
                         f"{values.shape}")
    values = values[np.isfinite(values).all(axis=1)]
    seeds = values.shape[1]
    pairs = [(values[:, i], values[:, j]) for i, j in combinations(range(seeds), 2)]
    held = [(values[:, s], np.delete(values, s, axis=1).mean(axis=1)) for s in range(seeds)]
    return NoiseCeiling(_mean_tau(pairs, draws, seed), _mean_tau(held, draws, seed), seeds)


def _mean_tau(pairs: list[tuple[NDArray[np.float64], NDArray[np.float64]]], draws: int,
              seed: int) -> RankAgreement:
    """Mean tau-b over ``pairs`` of columns, with its interval over the item resamples that
    ``seed`` draws (the same ones in every call); undefined if any pair's tau is (a mean over
    the defined ones would quietly change what it averages)."""
    items = len(pairs[0][0])
    taus = [tau for x, y in pairs if (tau := _coefficient(KENDALL, x, y)) is not None]
    if len(taus) < len(pairs):
        return RankAgreement(KENDALL, None, None, items)
    counts = _item_counts(items, draws, seed)
    resampled = np.mean([_kendall_draws(x, y, counts) for x, y in pairs], axis=0)
    return RankAgreement(KENDALL, float(np.mean(taus)), _percentiles(resampled), items)


# -- verdicts: pairing and seeds together -----------------------------------------------------

@dataclass(frozen=True)
class SeedNoise:
    """The spread of accuracy over training seeds, pooled over every architecture a study ran
    more than once: what one run of an architecture does not show."""

    variance: float  # pooled within-architecture variance of an accuracy (squared proportion)
    df: int  # its degrees of freedom: runs minus architectures
    architectures: int


def pooled_seed_noise(runs: Iterable[Sequence[float]]) -> SeedNoise | None:
    """:class:`SeedNoise` from each architecture's accuracies over seeds (those with one run
    add nothing); None when no architecture has two."""
    repeated = [np.asarray(r, dtype=np.float64) for r in runs if len(r) > 1]
    if not repeated:
        return None
    df = sum(r.size - 1 for r in repeated)
    squares = sum(float(np.sum((r - r.mean()) ** 2)) for r in repeated)
    return SeedNoise(squares / df, df, len(repeated))


def paired_interval(a_runs: ArrayLike, b_runs: ArrayLike, noise: SeedNoise | None,
                    draws: int = 10_000) -> tuple[tuple[float, float], str] | None:
    """95 % interval of a's mean-over-seeds accuracy minus b's, both scored on the same
    images (seeds x images each), and how it was formed; None where seed noise cannot be
    judged (a side with one run and no repeated runs to pool).

    Two runs or more on each side: :func:`paired_bootstrap` over images and seeds. Otherwise the
    images are paired (the variance of the per-image difference of the seed-mean correctness)
    and each side's seed noise comes from ``noise``, as Student's t on its degrees of freedom.
    """
    a = _correctness(a_runs, "a_runs", 2)
    b = _correctness(b_runs, "b_runs", 2)
    if len(a) > 1 and len(b) > 1:
        boot = paired_bootstrap(a, b, draws)
        return boot.interval, (f"paired bootstrap over {boot.images} images and {len(a)} vs "
                               f"{len(b)} seeds")
    if noise is None:
        return None
    per_image = a.mean(axis=0) - b.mean(axis=0)
    variance = (per_image.var(ddof=1) / per_image.size
                + noise.variance * (1 / len(a) + 1 / len(b)))
    half = (Z95 if noise.df > 1_000 else t95(noise.df)) * math.sqrt(variance)
    difference = float(per_image.mean())
    return ((difference - half, difference + half),
            f"paired over {per_image.size} images, {len(a)} vs {len(b)} runs, seed spread "
            f"pooled from {noise.architectures} architectures run more than once")


def paired_verdict(a_runs: ArrayLike, b_runs: ArrayLike, noise: SeedNoise | None, a_name: str,
                   b_name: str, split: str) -> str:
    """One sentence, as :func:`search.store.uncertainty.verdict` words it, from networks scored
    on the same images; with one run on a side and no seed spread to pool, it says that one run
    cannot tell the architecture from its seed (McNemar's test on the images alone beside)."""
    a = _correctness(a_runs, "a_runs", 2)
    b = _correctness(b_runs, "b_runs", 2)
    difference = float(a.mean() - b.mean())
    found = paired_interval(a, b, noise)
    if found is not None:
        return judge(difference, found, a_name, b_name, split)
    images = mcnemar(a[0], b[0])
    return (f"{a_name} vs {b_name}: {100 * difference:+.2f} points on {split}; one run each "
            f"cannot separate the architecture from its training seed (the images alone: "
            f"{images.describe()}); confirm over seeds (--confirm-top) to decide")
