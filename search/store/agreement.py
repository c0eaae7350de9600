"""How well a one-shot supernet's estimates rank the architectures that were then trained.

A supernet is only worth its estimates if it orders architectures as stand-alone training
does; the order, not the level, matters (estimates run below stand-alone accuracy). Kendall's
τ over the architectures that have both (the finalists and the uniform baselines) says so in
one number: 1 is the same order, 0 no relation. The console and the dashboards read it here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats

from search.store.records import ArchitectureRuns


@dataclass(frozen=True)
class Agreement:
    """Kendall's τ between estimates and stand-alone mean validation accuracy."""

    tau: float
    architectures: int

    def describe(self) -> str:
        return (f"Kendall tau {self.tau:+.2f} between the supernet's estimates and the "
                f"stand-alone validation accuracy over {self.architectures} architectures "
                f"(1: the same order)")


def estimated_groups(groups: Iterable[ArchitectureRuns]) -> list[ArchitectureRuns]:
    """The trained architectures that carry a supernet estimate."""
    return [g for g in groups if g.first.estimated_accuracy is not None]


def agreement(groups: Iterable[ArchitectureRuns]) -> Agreement | None:
    """τ over the estimated, trained architectures; None with fewer than two, or when either
    side has no spread (τ is undefined)."""
    pairs = [(g.first.estimated_accuracy, g.mean_val_accuracy) for g in estimated_groups(groups)]
    if len(pairs) < 2:
        return None
    estimates, trained = zip(*pairs, strict=True)
    tau = stats.kendalltau(estimates, trained).statistic
    return None if tau != tau else Agreement(float(tau), len(pairs))  # NaN: no spread
