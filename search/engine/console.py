"""What a person watching a search reads: one line per trial, progress, and the final table."""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from search.engine.budgets import Budgets
from search.store import records
from search.store.agreement import agreement, estimated_groups
from search.store.database import display_url
from search.store.records import TrialRecord
from search.store.uncertainty import Estimate, estimate
from search.store.verdict import search_verdict


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


def say(out: TextIO | None, line: str) -> None:
    """Print one line to ``out`` (stdout when None) at once: a search's lines appear as they
    happen, in a terminal, a CI log and a file alike."""
    print(line, file=out or sys.stdout, flush=True)


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def command(module: str, *args: str, storage: str | None = None) -> str:
    """A next command, run by the interpreter that ran this search (a venv's python works even
    when the venv is not on PATH), with ``--storage`` first when given (see
    :func:`storage_word`)."""
    words = [shlex.quote(sys.executable), "-m", module]
    if storage is not None:
        words += ["--storage", storage_word(storage)]
    return " ".join([*words, *(shlex.quote(a) for a in args)])


def storage_word(url: str) -> str:
    """The storage as a printed command names it, never with its password: "$HETNAS_STORAGE"
    where that variable holds the URL (the compose services), else the URL with the password
    shown as *** (to be typed in)."""
    if os.environ.get("HETNAS_STORAGE") == url:
        return '"$HETNAS_STORAGE"'
    return shlex.quote(display_url(url))


class SearchConsole:
    """Prints the search's story to ``out`` (stdout by default), one line at a time: lines stay
    readable in a terminal, a CI log and a file alike."""

    def __init__(self, budgets: Budgets, out: TextIO | None = None,
                 val_images: int | None = None, test_images: int | None = None) -> None:
        self.budgets = budgets
        self.out = out
        self.val_images = val_images
        self.test_images = test_images

    def __getstate__(self) -> dict:
        # Ray Tune pickles the searcher (and so this) into its experiment state; a stream
        # cannot travel, and stdout is looked up when printing anyway.
        return {**self.__dict__, "out": None}

    def print(self, text: str = "") -> None:
        say(self.out, text)

    def trial_line(self, record: TrialRecord) -> str:
        kind = f" ({record.kind})" if record.baseline_part or record.replicate else ""
        latency = ("" if record.latency_ms is None else
                   f"latency {record.latency_ms:.3g} ms"
                   + (f" ({_share(record.latency_ms, self.budgets.latency_ms).strip()})"
                      if self.budgets.latency_ms else "") + "  ")
        return (f"trial {record.number:4d}  {parts_summary(record.parts):<28s} "
                f"MACs {_share(record.paper_macs, self.budgets.macs)}  {latency}"
                f"acc {_accuracy(record.accuracy)}  {record.status}{kind}"
                + (f": {record.divergence}" if record.divergence else ""))

    def summary(self, all_records: list[TrialRecord], storage: str, study: str,
                top: int = 5) -> None:
        """The ``top`` searched architectures and every uniform baseline in rank order, with
        their 95 % intervals, the confirmed ones over seeds, a verdict in words, then what to
        run next."""
        rows = records.top_ranked(all_records, top)
        with_latency = any(r.latency_ms is not None for _, r in rows)
        self.print()
        self.print(f"single runs (validation {self._images(self.val_images)}, test "
                   f"{self._images(self.test_images)}; [95% Wilson interval]):")
        self.print(f"{'rank':>4s}  {'trial':>5s}  {'kind':<12s} {'validation':<24s} "
                   f"{'test':<24s} {'MACs':>10s} {'of budget':>9s}  "
                   + (f"{'latency ms':>10s}  " if with_latency else "") + "parts")
        for rank, record in rows:
            share = (f"{record.paper_macs / self.budgets.macs:9.1%}"
                     if self.budgets.macs and record.paper_macs is not None else f"{'-':>9s}")
            latency = ("" if not with_latency else f"{'-':>10s}  " if record.latency_ms is None
                       else f"{record.latency_ms:10.4g}  ")
            val = self._estimate([record.accuracy], self.val_images)
            test = self._estimate([record.test_accuracy], self.test_images)
            self.print(f"{rank:4d}  {record.number:5d}  {record.kind:<12s} "
                       f"{val.describe() if val else '-':<24s} "
                       f"{test.describe() if test else '-':<24s} {record.paper_macs or 0:10.4g} "
                       f"{share}  {latency}{parts_summary(record.parts)}")
        if not rows:
            self.print("  no trial finished within the budgets")
        groups = records.runs_by_architecture(all_records)
        confirmed = [g for g in groups if g.confirmed]
        if confirmed:
            self.print()
            self.print("confirmed over seeds (mean ± standard deviation; best by validation):")
            for group in confirmed:
                val = self._estimate(group.val_accuracies, self.val_images)
                test = self._estimate(group.test_accuracies, self.test_images)
                self.print(f"  {group.first.number:5d}  {group.first.kind:<12s} "
                           f"{val.describe() if val else '-':<24s} "
                           f"{test.describe() if test else '-':<24s} "
                           f"{group.first.paper_macs or 0:10.4g}  "
                           f"{parts_summary(group.first.parts)}")
        self._estimates(groups)
        line = search_verdict(all_records, self.test_images)
        if line:
            self.print()
            self.print(line)
        counts = Counter(r.status for r in all_records)
        self.print()
        self.print("trials: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)))
        self.print(f"storage: {display_url(storage)}   study: {study}")
        self.print("browse:  " + command("dashboards.browse", storage=storage))
        self.print("report:  " + command("dashboards.report", "--study", study, "--out",
                                         "report.html", storage=storage))
        self.print("export:  " + command("search.export", "--study", study, "--out",
                                         "best.json", "--weights", "best.pt", storage=storage))

    def _estimates(self, groups: list[records.ArchitectureRuns]) -> None:
        """A one-shot search's trained architectures: the supernet's estimate beside the
        stand-alone result, and how well the estimates ordered them."""
        estimated = estimated_groups(groups)
        if not estimated:
            return
        self.print()
        self.print("supernet estimates beside the stand-alone runs (validation):")
        for group in estimated:
            self.print(f"  {group.first.number:5d}  {group.first.kind:<12s} estimate "
                       f"{_accuracy(group.first.estimated_accuracy)}  stand-alone "
                       f"{_accuracy(group.mean_val_accuracy)} ({len(group.runs)} "
                       f"run{'s' if len(group.runs) > 1 else ''})  "
                       f"{parts_summary(group.first.parts)}")
        found = agreement(groups)
        self.print("  " + (found.describe() if found else
                           "rank correlation: needs two or more estimated architectures with "
                           "different results"))

    @staticmethod
    def _images(count: int | None) -> str:
        return "images unknown" if count is None else f"{count} images"

    @staticmethod
    def _estimate(values: Sequence[float | None], images: int | None) -> Estimate | None:
        runs = [v for v in values if v is not None]
        return estimate(runs, images) if runs else None
