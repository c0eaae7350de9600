"""Load a study from a storage URL into columns, with one trial query, for figures and tables.

Everything a trial means is read through :mod:`search.store.records` (statuses, user-attribute
keys), so the dashboards never spell a key the search writes. Nothing here writes to the storage.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from hetconv.errors import ConfigError
from search.store import records
from search.store.records import TrialRecord
from search.store.storage import open_existing
from search.store.studies import newest_first, open_study

# Statuses in the order the dashboards list them; the first seven are finished trials.
STATUSES = (records.COMPLETE, records.ESTIMATED, records.REJECTED, records.REPEATED,
            records.EARLY_STOPPED, records.DIVERGED, records.FAILED, records.RUNNING,
            records.QUEUED)
FINISHED = STATUSES[:7]


@dataclass(frozen=True)
class StudyListing:
    """One study of a storage, as the live page lists it (no trial is read for it)."""

    name: str
    backbone: str | None
    dataset: str | None
    budget: float | None


@dataclass(frozen=True)
class StudyTable:
    """Every trial of one study as parallel columns (index ``i`` is one trial).

    ``accuracy`` is the last validation accuracy (NaN when never trained), ``paper_macs``,
    ``params`` and ``latency_ms`` (predicted; only studies with a latency table have it) are
    NaN when unknown, ``baseline_part`` is 0 for searched trials, ``replicate`` is 0 for the
    search's own runs and k for confirmation run k (another seed), and ``completed_at`` is NaT
    while a trial is unfinished. ``estimate`` marks a one-shot search's candidates, whose
    ``accuracy`` is the supernet's estimate; ``estimated_accuracy`` is that estimate on the
    trained finalists and baselines (NaN elsewhere), to set beside what training gave.
    """

    name: str
    attrs: dict[str, Any]
    metric_names: list[str] | None
    records: tuple[TrialRecord, ...]
    number: np.ndarray
    status: np.ndarray
    accuracy: np.ndarray
    paper_macs: np.ndarray
    params: np.ndarray
    latency_ms: np.ndarray
    baseline_part: np.ndarray
    replicate: np.ndarray
    estimate: np.ndarray
    estimated_accuracy: np.ndarray
    completed_at: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def budget(self) -> float | None:
        """The MACs budget of the search (paper MACs); None when the search had none (a
        latency budget only) or the study does not record it."""
        return _positive(self.attrs.get(records.STUDY_BUDGET))

    @property
    def val_images(self) -> int | None:
        """Images each validation accuracy was measured on (None in studies before 0.3)."""
        return self.attrs.get(records.STUDY_VAL_IMAGES)

    @property
    def test_images(self) -> int | None:
        return self.attrs.get(records.STUDY_TEST_IMAGES)

    @property
    def latency_budget(self) -> float | None:
        """The latency budget of the search in milliseconds, when it had one."""
        return _positive(self.attrs.get(records.STUDY_LATENCY_BUDGET))

    @property
    def has_latency(self) -> bool:
        """Whether any trial has a predicted latency: only then do the pages show that axis."""
        return bool(np.any(~np.isnan(self.latency_ms)))

    @property
    def latency_spec(self) -> dict[str, Any]:
        """What the latencies were measured on (device, batch, ...); empty when unknown.

        Stored as a mapping, or as its JSON text; anything else reads as unknown rather than
        failing the page.
        """
        spec = self.attrs.get(records.STUDY_LATENCY_SPEC)
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError:
                return {}
        return dict(spec) if isinstance(spec, dict) else {}

    def mask(self, status: str) -> np.ndarray:
        """Which trials have ``status``."""
        return self.status == status

    def own_runs(self, status: str) -> np.ndarray:
        """Which of the search's own runs (not confirmation runs) have ``status``: the scatter,
        the front and the progress show the search; confirmed results have their own table."""
        return self.mask(status) & (self.replicate == 0)

    @property
    def oneshot(self) -> bool:
        """A one-shot search's study: the pages then set the supernet's estimates beside the
        stand-alone results, even before any finalist is trained."""
        return self.attrs.get(records.STUDY_STRATEGY) == "oneshot"

    @property
    def version(self) -> str:
        """Changes whenever a trial is added or finishes: lets the live page skip redraws."""
        finished = self.completed_at[~np.isnat(self.completed_at)]
        latest = str(finished.max()) if finished.size else "-"
        return f"{len(self)}/{sum(self.counts.get(s, 0) for s in FINISHED)}/{latest}"


def _positive(value: object) -> float | None:
    """A budget as a float; None when absent, not a number, or not positive (no budget)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _column(values: list, dtype: type) -> np.ndarray:
    """``values`` with None as NaN (floats) or 0 (ints)."""
    fill = np.nan if dtype is float else 0
    return np.array([fill if v is None else v for v in values], dtype=dtype)


def table_from_study(study: optuna.Study) -> StudyTable:
    """Read the study's trials once (no deep copy) and turn them into columns."""
    with _collector_paused():
        trials = study.get_trials(deepcopy=False)
        recs = tuple(records.to_record(t) for t in trials)
    completed = [t.datetime_complete for t in trials]
    with warnings.catch_warnings():  # metric_names is marked experimental; reading is safe
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        metric_names = study.metric_names
    return StudyTable(
        name=study.study_name, attrs=dict(study.user_attrs), metric_names=metric_names,
        records=recs,
        number=np.array([r.number for r in recs], dtype=np.int64),
        status=np.array([r.status for r in recs], dtype=np.str_),
        accuracy=_column([r.accuracy for r in recs], float),
        paper_macs=_column([r.paper_macs for r in recs], float),
        params=_column([r.params for r in recs], float),
        latency_ms=_column([r.latency_ms for r in recs], float),
        baseline_part=_column([r.baseline_part for r in recs], int).astype(np.int64),
        replicate=np.array([r.replicate for r in recs], dtype=np.int64),
        estimate=np.array([r.estimate for r in recs], dtype=bool),
        estimated_accuracy=_column([r.estimated_accuracy for r in recs], float),
        completed_at=np.array([np.datetime64("NaT") if c is None else _utc_naive(c)
                               for c in completed], dtype="datetime64[ms]"),
        counts=dict(Counter(r.status for r in recs)))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while reading many trials.

    Building thousands of ORM rows and frozen trials (none of them garbage) sets off repeated
    full collections that scan them all: about half the read time of a 10,000-trial study.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _utc_naive(moment: datetime.datetime) -> np.datetime64:
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return np.datetime64(moment, "ms")


def list_studies(storage: optuna.storages.BaseStorage) -> list[StudyListing]:
    """The studies of a storage, newest first, read without touching their trials."""
    return [StudyListing(name=s.study_name, backbone=s.user_attrs.get(records.STUDY_BACKBONE),
                         dataset=s.user_attrs.get(records.STUDY_DATASET),
                         budget=s.user_attrs.get(records.STUDY_BUDGET))
            for s in newest_first(storage)]


def load_table(storage_url: str, study_name: str | None = None) -> StudyTable:
    """Open the storage (it must exist), then read one study; empty studies are an error."""
    storage = open_existing(storage_url)
    table = table_from_study(open_study(storage, study_name))
    check_not_empty(table)
    return table


def check_not_empty(table: StudyTable) -> None:
    """A study without a single trial has nothing to draw: say so instead of blank plots."""
    if not len(table):
        raise ConfigError(f"study {table.name!r} has no trials yet; wait for the search to "
                          f"propose some, or pick another study with --study")
