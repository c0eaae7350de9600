"""How sure an accuracy is: the one home of intervals and of "is A better than B beyond noise".

An accuracy measured on ``n`` images is a binomial proportion; its 95 % interval is Wilson's
score interval, which stays inside [0, 1] and is honest at the 100 % a small validation split
often shows. Where an architecture was trained with several seeds, the spread over seeds is the
larger noise (two seeds of one ResNet-20 on Fashion-MNIST differed by up to 1.35 points), so a
comparison then uses the seeds' spread (Welch's t); with one run each, Newcombe's interval for
the difference of two proportions, built from the two Wilson intervals. The dashboards, the
console and the export all read these, so they agree on what is noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(accuracy: float, images: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``accuracy`` observed on ``images`` trials."""
    if images <= 0:
        return 0.0, 1.0
    p, n = min(max(accuracy, 0.0), 1.0), images
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Estimate:
    """An architecture's accuracy: every run's value (one per seed) on ``images`` images."""

    runs: tuple[float, ...]
    images: int | None  # images each run was scored on; None where the study did not say

    @property
    def mean(self) -> float:
        return statistics.fmean(self.runs)

    @property
    def spread(self) -> float | None:
        """Sample standard deviation over seeds; None with a single run."""
        return statistics.stdev(self.runs) if len(self.runs) > 1 else None

    @property
    def mean_variance(self) -> float | None:
        """Variance of the mean. Over seeds, never below the binomial variance of the images:
        seeds that happen to agree (accuracies on a few hundred images are coarse) are no
        certainty. One run: the binomial variance alone; None when the images are unknown."""
        binomial = None if not self.images else self.mean * (1 - self.mean) / self.images
        if len(self.runs) > 1:
            seeds = (self.spread or 0.0) ** 2
            return max(seeds, binomial or 0.0) / len(self.runs)
        return binomial

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % interval of the mean, inside [0, 1]: Student's t over the seeds with several,
        Wilson's with one run; None when the image count is unknown and there is one run."""
        if len(self.runs) > 1:
            half = t95(len(self.runs) - 1) * math.sqrt(self.mean_variance or 0.0)
            return max(0.0, self.mean - half), min(1.0, self.mean + half)
        if self.images is None:
            return None
        return wilson_interval(self.mean, self.images)

    def describe(self) -> str:
        """``97.20% [94.1, 98.8]`` or ``97.20% ± 0.45 (3 seeds)``."""
        text = f"{self.mean:.2%}"
        if len(self.runs) > 1:
            return f"{text} ± {100 * (self.spread or 0.0):.2f} ({len(self.runs)} seeds)"
        interval = self.interval
        if interval is None:
            return text
        return f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def t95(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # imported on use: only comparisons with seeds need it

    return float(t.ppf(0.975, df))


def difference_interval(a: Estimate, b: Estimate) -> tuple[tuple[float, float], str] | None:
    """95 % interval of ``a.mean - b.mean`` and how it was formed; None when there is nothing
    to judge the noise by.

    One run each: Newcombe's interval from the two Wilson intervals. Otherwise Welch's t: each
    side's variance of the mean (:attr:`Estimate.mean_variance`), the degrees of freedom from
    the sides with seeds (a single run's binomial variance counts as known).
    """
    if len(a.runs) == 1 and len(b.runs) == 1:
        if a.images is None or b.images is None:
            return None
        (la, ua), (lb, ub) = (wilson_interval(a.mean, a.images),
                              wilson_interval(b.mean, b.images))
        d = a.mean - b.mean
        return ((d - math.sqrt((a.mean - la) ** 2 + (ub - b.mean) ** 2),
                 d + math.sqrt((ua - a.mean) ** 2 + (b.mean - lb) ** 2)),
                "Newcombe, one run each")
    va, vb = a.mean_variance, b.mean_variance
    if va is None or vb is None:
        return None
    shares = sum(v * v / (len(e.runs) - 1) for v, e in ((va, a), (vb, b)) if len(e.runs) > 1)
    df = (va + vb) ** 2 / shares if shares > 0 else math.inf
    half = (Z95 if math.isinf(df) else t95(df)) * math.sqrt(va + vb)
    d = a.mean - b.mean
    return (d - half, d + half), f"Welch's t over {len(a.runs)} and {len(b.runs)} runs"


def verdict(a: Estimate, b: Estimate, a_name: str, b_name: str, split: str) -> str:
    """One sentence: whether ``a`` beats ``b`` beyond noise on ``split``, the runs taken as
    independent samples (see :mod:`search.store.paired` for networks scored on the same
    images)."""
    return judge(a.mean - b.mean, difference_interval(a, b), a_name, b_name, split)


def judge(difference: float, found: tuple[tuple[float, float], str] | None, a_name: str,
          b_name: str, split: str) -> str:
    """The one wording of a verdict: ``difference`` (a − b) with its 95 % interval and how it
    was formed (None: the noise cannot be judged)."""
    gap = 100 * difference
    if found is None:
        return (f"{a_name} vs {b_name}: {gap:+.2f} points on {split}; the image count is "
                f"unknown, so noise cannot be judged")
    (low, high), how = found
    span = (f"{gap:+.2f} points on {split}, 95% interval [{100 * low:+.2f}, {100 * high:+.2f}] "
            f"({how})")
    if low > 0:
        return f"{a_name} beats {b_name} beyond noise: {span}"
    if high < 0:
        return f"{a_name} is worse than {b_name} beyond noise: {span}"
    return f"{a_name} is not distinguishable from {b_name}: {span}"


def estimate(runs: Sequence[float], images: int | None) -> Estimate:
    return Estimate(tuple(float(r) for r in runs), images)
