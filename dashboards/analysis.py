"""What the figures show, computed on a :class:`StudyTable` with vectorised numpy.

Kept apart from plotting so tests (and other tools) can check the numbers without a figure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from dashboards.data import StudyTable
from search.store import records
from search.store.uncertainty import estimate, wilson_interval

if TYPE_CHECKING:  # the module loads scipy.stats; it is imported where τ is computed
    from search.store.agreement import Agreement

# The cost columns of a StudyTable a scatter and its front can be drawn against.
Cost = Literal["paper_macs", "latency_ms"]


def cost_column(table: StudyTable, cost: Cost) -> np.ndarray:
    """The column named ``cost``; any other name is a programming error, not a user's."""
    if cost not in ("paper_macs", "latency_ms"):
        raise ValueError(f"unknown cost column {cost!r}")
    return getattr(table, cost)


@dataclass(frozen=True)
class ScatterGroups:
    """Trial indices of each group an accuracy-cost scatter tells apart."""

    searched: np.ndarray  # complete (trained to the end, within budget), not a baseline
    baselines: np.ndarray  # uniform-P networks of the paper that have an accuracy
    early_stopped: np.ndarray  # stopped by the scheduler; partial accuracy
    rejected: np.ndarray  # over budget, never trained: no accuracy, only a cost
    estimates: np.ndarray  # one-shot candidates: the supernet's estimate, never trained


def scatter_groups(table: StudyTable, cost: Cost = "paper_macs") -> ScatterGroups:
    """Split the finished trials that have a ``cost``; running, queued and failed trials are
    left out. Supernet estimates are a group of their own, never ``searched``."""
    has_cost = ~np.isnan(cost_column(table, cost))
    has_accuracy = ~np.isnan(table.accuracy) & has_cost
    is_baseline = table.baseline_part > 0
    complete = table.own_runs(records.COMPLETE) & has_accuracy
    early = table.own_runs(records.EARLY_STOPPED) & has_accuracy
    return ScatterGroups(
        searched=np.flatnonzero(complete & ~is_baseline),
        baselines=np.flatnonzero((complete | early) & is_baseline),
        early_stopped=np.flatnonzero(early & ~is_baseline),
        rejected=np.flatnonzero(table.mask(records.REJECTED) & has_cost),
        estimates=np.flatnonzero(table.mask(records.ESTIMATED) & has_accuracy))


def pareto_front(table: StudyTable, cost: Cost = "paper_macs") -> np.ndarray:
    """Indices of the complete trials no other complete trial beats on accuracy and ``cost``
    (paper MACs, or predicted latency).

    Higher accuracy and a lower cost are better; a trial must be strictly more accurate than
    every cheaper (or equally cheap) one. Sorted by cost, cheapest first; among identical
    points the lowest trial number stands for them.
    """
    costs = cost_column(table, cost)
    candidates = np.flatnonzero(table.own_runs(records.COMPLETE) & ~np.isnan(table.accuracy)
                                & ~np.isnan(costs))
    if not candidates.size:
        return candidates
    accuracy = table.accuracy[candidates]
    order = np.lexsort((table.number[candidates], -accuracy, costs[candidates]))
    sorted_accuracy = accuracy[order]
    best_before = np.concatenate(([-np.inf], np.maximum.accumulate(sorted_accuracy)[:-1]))
    return candidates[order][sorted_accuracy > best_before]


@dataclass(frozen=True)
class Progress:
    """Best complete accuracy so far, against trial number and against completion time."""

    numbers: np.ndarray  # trial numbers of the complete trials, ascending
    accuracy: np.ndarray  # each of those trials' own accuracy
    best_by_number: np.ndarray
    times: np.ndarray  # completion times of the complete trials, ascending (datetime64)
    best_by_time: np.ndarray


def progress(table: StudyTable) -> Progress:
    """Running maxima of the complete trials' accuracy, in number order and in time order."""
    complete = table.own_runs(records.COMPLETE) & ~np.isnan(table.accuracy)
    by_number = np.flatnonzero(complete)
    by_number = by_number[np.argsort(table.number[by_number], kind="stable")]
    timed = np.flatnonzero(complete & ~np.isnat(table.completed_at))
    timed = timed[np.argsort(table.completed_at[timed], kind="stable")]
    return Progress(
        numbers=table.number[by_number], accuracy=table.accuracy[by_number],
        best_by_number=_running_max(table.accuracy[by_number]),
        times=table.completed_at[timed],
        best_by_time=_running_max(table.accuracy[timed]))


def _running_max(values: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(values) if values.size else values


def parts_matrix(table: StudyTable, rows: np.ndarray) -> np.ndarray:
    """The part vectors of trials ``rows`` as a 2-D array (layers across); short rows padded 0."""
    vectors = [table.records[i].parts for i in rows]
    width = max((len(v) for v in vectors), default=0)
    matrix = np.zeros((len(vectors), width), dtype=np.int64)
    for row, vector in enumerate(vectors):
        matrix[row, :len(vector)] = vector
    return matrix


def parts_summary(parts: tuple[int, ...]) -> str:
    """``P2×4 P4×6``: how many layers got each part."""
    counts = Counter(parts)
    return " ".join(f"P{part}×{counts[part]}" for part in sorted(counts))


@dataclass(frozen=True)
class TopRow:
    """One line of the top-architectures table."""

    rank: int  # 1 = best complete accuracy in the study
    number: int
    kind: str  # "searched" or "uniform P4"
    accuracy: float
    test_accuracy: float | None
    paper_macs: float
    budget_share: float | None  # paper MACs / budget
    params: float | None
    latency_ms: float | None  # predicted; None when the study has no latency table
    parts: tuple[int, ...]
    on_front: bool
    accuracy_interval: tuple[float, float] | None = None  # 95 % Wilson, from the image count
    test_interval: tuple[float, float] | None = None
    estimated_accuracy: float | None = None  # a one-shot supernet's estimate of it

    @property
    def parts_summary(self) -> str:
        return parts_summary(self.parts)


def top_architectures(table: StudyTable, limit: int = 10) -> list[TopRow]:
    """The rows of :func:`search.store.records.top_ranked` (the first is the best), as in the
    search's own summary. Complete, within-budget trials only: never a supernet
    estimate, which shows only as the ``estimated_accuracy`` of the architecture it was
    trained for."""
    front = {int(table.number[i]) for i in pareto_front(table)}
    budget = table.budget
    return [TopRow(rank=rank, number=r.number,
                   kind=f"uniform P{r.baseline_part}" if r.baseline_part else "searched",
                   accuracy=r.accuracy or 0.0, test_accuracy=r.test_accuracy,
                   paper_macs=float(r.paper_macs or 0),
                   budget_share=(r.paper_macs or 0) / budget if budget else None,
                   params=None if r.params is None else float(r.params),
                   latency_ms=None if r.latency_ms is None else float(r.latency_ms),
                   parts=r.parts, on_front=r.number in front,
                   accuracy_interval=_interval(r.accuracy, table.val_images),
                   test_interval=_interval(r.test_accuracy, table.test_images),
                   estimated_accuracy=r.estimated_accuracy)
            for rank, r in records.top_ranked(table.records, limit)]


def _interval(accuracy: float | None, images: int | None) -> tuple[float, float] | None:
    if accuracy is None or not images:
        return None
    return wilson_interval(accuracy, images)


@dataclass(frozen=True)
class ConfirmedRow:
    """An architecture the search trained again with more seeds: its mean and spread."""

    number: int  # the search's own run
    trials: tuple[int, ...]  # every run, the search's own first
    kind: str  # "searched" or "uniform P4"
    accuracy_mean: float
    accuracy_sd: float | None
    test_mean: float | None
    test_sd: float | None
    paper_macs: float
    parts: tuple[int, ...]
    estimated_accuracy: float | None = None  # a one-shot supernet's estimate of it

    @property
    def runs(self) -> int:
        return len(self.trials)

    @property
    def parts_summary(self) -> str:
        return parts_summary(self.parts)


def confirmed_architectures(table: StudyTable) -> list[ConfirmedRow]:
    """The architectures with confirmation runs, best mean validation accuracy first: shown
    apart from the single runs, since their figures carry the seed noise."""
    rows = []
    for group in records.runs_by_architecture(table.records):
        if not group.confirmed:
            continue
        val = estimate(group.val_accuracies, table.val_images)
        test = estimate(group.test_accuracies, table.test_images) \
            if group.test_accuracies else None
        rows.append(ConfirmedRow(
            number=group.first.number, trials=tuple(r.number for r in group.runs),
            kind=group.first.kind, accuracy_mean=val.mean, accuracy_sd=val.spread,
            test_mean=None if test is None else test.mean,
            test_sd=None if test is None else test.spread,
            paper_macs=float(group.first.paper_macs or 0), parts=group.first.parts,
            estimated_accuracy=group.first.estimated_accuracy))
    return rows


def estimate_agreement(table: StudyTable) -> Agreement | None:
    """Kendall's τ between the supernet's estimates and the stand-alone mean validation
    accuracy of the trained architectures that have both; None with fewer than two (or no
    spread). The one computation the search's console prints too."""
    from search.store.agreement import agreement

    return agreement(records.runs_by_architecture(table.records))
