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
    def interval(self) -> tuple[float, float] | None:
        """95 % interval of the mean: Wilson's over all runs' images with one run, t over the
        seeds with several; None when the image count is unknown and there is one run."""
        if len(self.runs) > 1:
            half = _t95(len(self.runs) - 1) * (self.spread or 0.0) / math.sqrt(len(self.runs))
            return self.mean - half, self.mean + half
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


def _t95(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # imported on use: only comparisons with seeds need it

    return float(t.ppf(0.975, df))


def difference_interval(a: Estimate, b: Estimate) -> tuple[float, float] | None:
    """95 % interval of ``a.mean - b.mean``; None when there is nothing to judge noise by."""
    if len(a.runs) > 1 and len(b.runs) > 1:
        va, vb = (a.spread or 0.0) ** 2 / len(a.runs), (b.spread or 0.0) ** 2 / len(b.runs)
        if va + vb == 0:
            return a.mean - b.mean, a.mean - b.mean
        df = (va + vb) ** 2 / (va * va / (len(a.runs) - 1) + vb * vb / (len(b.runs) - 1))
        half = _t95(df) * math.sqrt(va + vb)
        return a.mean - b.mean - half, a.mean - b.mean + half
    if a.images is None or b.images is None:
        return None
    (la, ua), (lb, ub) = wilson_interval(a.mean, a.images), wilson_interval(b.mean, b.images)
    d = a.mean - b.mean
    return (d - math.sqrt((a.mean - la) ** 2 + (ub - b.mean) ** 2),
            d + math.sqrt((ua - a.mean) ** 2 + (b.mean - lb) ** 2))


def verdict(a: Estimate, b: Estimate, a_name: str, b_name: str, split: str) -> str:
    """One sentence: whether ``a`` beats ``b`` beyond noise on ``split``."""
    interval = difference_interval(a, b)
    gap = 100 * (a.mean - b.mean)
    how = "over seeds (t)" if len(a.runs) > 1 and len(b.runs) > 1 else "Newcombe, one run each"
    if interval is None:
        return (f"{a_name} vs {b_name}: {gap:+.2f} points on {split}; the image count is "
                f"unknown, so noise cannot be judged")
    low, high = 100 * interval[0], 100 * interval[1]
    span = f"{gap:+.2f} points on {split}, 95% interval [{low:+.2f}, {high:+.2f}] ({how})"
    if low > 0:
        return f"{a_name} beats {b_name} beyond noise: {span}"
    if high < 0:
        return f"{a_name} is worse than {b_name} beyond noise: {span}"
    return f"{a_name} is not distinguishable from {b_name}: {span}"


def estimate(runs: Sequence[float], images: int | None) -> Estimate:
    return Estimate(tuple(float(r) for r in runs), images)
