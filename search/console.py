"""What a person watching a search reads: one line per trial, progress, and the final table."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from search.budgets import Budgets
from search.store import records
from search.store.records import TrialRecord


def parts_summary(parts: Sequence[int]) -> str:
    """``P2×4 P4×6 P8×2``: how many layers got each part."""
    counts = Counter(parts)
    return " ".join(f"P{part}×{counts[part]}" for part in sorted(counts))


def _accuracy(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.2%}"


def _share(value: float | None, budget: float | None) -> str:
    """``95.0% of budget``, or the plain amount when there is no such budget."""
    if value is None:
        return "-"
    return f"{value / budget:6.1%} of budget" if budget else f"{value:.4g}"


class SearchConsole:
    """Prints the search's story to ``out`` (stdout by default)."""

    def __init__(self, budgets: Budgets, total_trials: int, out: TextIO | None = None) -> None:
        self.budgets = budgets
        self.total_trials = total_trials
        self.out = out

    def __getstate__(self) -> dict:
        # Ray Tune pickles the searcher (and so this) into its experiment state; a stream
        # cannot travel, and stdout is looked up when printing anyway.
        return {**self.__dict__, "out": None}

    def print(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def trial_line(self, record: TrialRecord) -> str:
        baseline = f" (uniform P{record.baseline_part})" if record.baseline_part else ""
        latency = ("" if record.latency_ms is None else
                   f"latency {record.latency_ms:.3g} ms"
                   + (f" ({_share(record.latency_ms, self.budgets.latency_ms).strip()})"
                      if self.budgets.latency_ms else "") + "  ")
        return (f"trial {record.number:4d}  {parts_summary(record.parts):<28s} "
                f"MACs {_share(record.paper_macs, self.budgets.macs)}  {latency}"
                f"acc {_accuracy(record.accuracy)}  {record.status}{baseline}")

    def progress_line(self, trained: int, rejected: int, best: TrialRecord | None) -> str:
        best_text = "none yet" if best is None else (
            f"{best.accuracy:.2%} (trial {best.number})")
        return (f"  progress: {trained}/{self.total_trials} trained, {rejected} proposals "
                f"rejected over the budgets, best {best_text}")

    def summary(self, all_records: list[TrialRecord], storage: str, study: str,
                top: int = 5) -> None:
        """The top architectures against the uniform baselines, then what to run next."""
        ranked = records.ranked(all_records)
        baselines = [r for r in ranked if r.baseline_part]
        searched = [r for r in ranked if not r.baseline_part][:top]
        with_latency = any(r.latency_ms is not None for r in ranked)
        self.print()
        self.print(f"{'':2s}{'trial':>5s}  {'kind':<12s} {'accuracy':>8s} {'test':>7s} "
                   f"{'MACs':>10s} {'of budget':>9s}  "
                   + (f"{'latency ms':>10s}  " if with_latency else "") + "parts")
        for record in searched + sorted(baselines, key=lambda r: r.baseline_part or 0):
            kind = f"uniform P{record.baseline_part}" if record.baseline_part else "searched"
            marker = "*" if ranked and record is ranked[0] else " "
            share = (f"{record.paper_macs / self.budgets.macs:9.1%}"
                     if self.budgets.macs and record.paper_macs is not None else f"{'-':>9s}")
            latency = ("" if not with_latency else f"{'-':>10s}  " if record.latency_ms is None
                       else f"{record.latency_ms:10.4g}  ")
            self.print(f"{marker} {record.number:5d}  {kind:<12s} {record.accuracy:8.2%} "
                       f"{_accuracy(record.test_accuracy):>7s} {record.paper_macs:10.4g} "
                       f"{share}  {latency}{parts_summary(record.parts)}")
        if not ranked:
            self.print("  no trial finished within the budgets")
        counts = Counter(r.status for r in all_records)
        self.print()
        self.print("trials: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)))
        self.print(f"storage: {storage}   study: {study}")
        self.print(f"browse:  python -m dashboards.browse --storage {shlex.quote(storage)}")
        self.print(f"report:  python -m dashboards.report --storage {shlex.quote(storage)} "
                   f"--study {shlex.quote(study)} --out report.html")
        self.print(f"export:  python -m search.export --storage {shlex.quote(storage)} "
                   f"--study {shlex.quote(study)} --out best.json --weights best.pt")
