"""The confirmation stage: which architectures to train again with more seeds.

One run of an architecture is one draw from its seed noise (two seeds of one ResNet-20 on
Fashion-MNIST differed by up to 1.35 test points, about what a bad allocation costs), so the
search's ranking alone is not worth exporting. After the search, the best ``top`` searched
architectures and, for each, the uniform baselines nearest to it in cost (the costliest at or
below it and the cheapest above it) are trained again until each has ``seeds`` runs. The runs
are ordinary trials of the same study, marked with their replicate number, so they are resumed
like any trial, and the export ranks architectures by their mean over seeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from search.store import records
from search.store.records import TrialRecord

# Runs done or on their way; a run that failed or was stopped early is planned again (one that
# diverged is not: its seed would diverge again).
_PLANNED = (records.COMPLETE, records.DIVERGED, records.RUNNING, records.QUEUED)


@dataclass(frozen=True)
class ConfirmationRun:
    """One more seed of one architecture."""

    parts: tuple[int, ...]
    baseline_part: int | None
    replicate: int  # 1, 2, ...: the search's own run is 0


def confirmed_architectures(all_records: Iterable[TrialRecord],
                            top: int) -> list[TrialRecord]:
    """The search's own runs of the architectures to confirm: the best ``top`` searched ones
    and, for each, the uniform baselines nearest in cost below (or at) and above it."""
    ranked = records.ranked(all_records)
    searched = [r for r in ranked if not r.baseline_part][:top]
    baselines = sorted((r for r in ranked if r.baseline_part),
                       key=lambda r: (r.paper_macs or 0, r.number))
    chosen: dict[tuple[int, ...], TrialRecord] = {}
    for record in searched:
        chosen.setdefault(record.parts, record)
        macs = record.paper_macs or 0
        below = [b for b in baselines if (b.paper_macs or 0) <= macs]
        above = [b for b in baselines if (b.paper_macs or 0) > macs]
        for baseline in below[-1:] + above[:1]:
            chosen.setdefault(baseline.parts, baseline)
    return list(chosen.values())


def confirmation_plan(all_records: Iterable[TrialRecord], top: int,
                      seeds: int) -> list[ConfirmationRun]:
    """The runs still to queue so each confirmed architecture has ``seeds`` runs; runs already
    done, running or queued (a resumed study) are not planned again."""
    all_records = list(all_records)
    present = {(r.parts, r.replicate) for r in all_records if r.status in _PLANNED}
    return [ConfirmationRun(record.parts, record.baseline_part, replicate)
            for record in confirmed_architectures(all_records, top)
            for replicate in range(1, seeds)
            if (record.parts, replicate) not in present]
