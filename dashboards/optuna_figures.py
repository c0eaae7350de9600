"""Attach the dashboard figures to a study so optuna-dashboard shows them beside its own plots.

This is the one place where the dashboards write to a storage, and they write only what
optuna-dashboard reads for custom figures (study system attributes under ``dashboard:``, through
its own ``save_plotly_graph_object``), plus the objective names when a study lacks them. Trials
and user attributes are never touched. The figures are a snapshot, drawn again by
:class:`FigureRefresher` (``browse --refresh``) whenever a study's trials change.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import optuna

from dashboards.data import StudyTable, check_not_empty, list_studies, table_from_study
from dashboards.figures import FIGURE_IDS, all_figures, figure_ids
from hetconv.errors import ConfigError
from search.store import records
from search.store.database import STORAGE_ERRORS, storage_reason
from search.store.objectives import ACCURACY_METRIC, MACS_METRIC, OBJECTIVES, PARETO_MACS
from search.store.storage import open_existing
from search.store.studies import open_study

GRAPH_PREFIX = "hetnas-"  # optuna-dashboard ids of the attached figures: hetnas-pareto, ...


def graph_ids(table: StudyTable | None = None) -> list[str]:
    """The ids under which the figures of ``table`` appear in optuna-dashboard (every id a
    study may get when ``table`` is None; hetnas-latency only with predicted latencies)."""
    keys = FIGURE_IDS if table is None else figure_ids(table)
    return [GRAPH_PREFIX + key for key in keys]


def _metric_names(table: StudyTable, objectives: int) -> list[str]:
    """Names for a study's values when the search did not set them: those of its recorded
    objective, or accuracy then MACs when it records none."""
    recorded = OBJECTIVES.get(str(table.attrs.get(records.STUDY_OBJECTIVE)), PARETO_MACS)
    return [ACCURACY_METRIC, recorded.cost_metric or MACS_METRIC][:objectives]


def attach_to_study(study: optuna.Study) -> StudyTable:
    """Draw the study's figures and save them where optuna-dashboard looks; returns the table."""
    # Imported here: optuna-dashboard takes seconds to import and only this needs it.
    from optuna_dashboard import save_plotly_graph_object

    table = table_from_study(study)
    check_not_empty(table)
    with warnings.catch_warnings():  # metric names are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names is None:
            study.set_metric_names(_metric_names(table, len(study.directions)))
    for key, figure in all_figures(table).items():
        save_plotly_graph_object(study, figure, graph_object_id=GRAPH_PREFIX + key)
    return table


def attach_figures(storage_url: str, study_name: str | None = None) -> list[StudyTable]:
    """Attach figures to ``study_name``, or to every non-empty study when it is ``None``."""
    return _attach(open_existing(storage_url, writable=True), study_name)


def _attach(storage: optuna.storages.BaseStorage, study_name: str | None,
            drawn: dict[str, tuple] | None = None) -> list[StudyTable]:
    """Attach figures to the study (every non-empty study), skipping those whose trials are as
    they were when last drawn (``drawn``: study name -> trial states, updated here)."""
    studies = [open_study(storage, study_name)] if study_name is not None else None
    if studies is None:
        open_study(storage, None)  # the storage holds at least one study, or a clear error
        studies = [optuna.load_study(study_name=listing.name, storage=storage)
                   for listing in list_studies(storage)]
    attached = []
    for study in studies:
        trials = study.get_trials(deepcopy=False)
        states = tuple((trial.number, trial.state) for trial in trials)
        if (study_name is None and not trials) or \
                (drawn is not None and drawn.get(study.study_name) == states):
            continue
        attached.append(attach_to_study(study))
        if drawn is not None:
            drawn[study.study_name] = states
    return attached


class FigureRefresher:
    """Keeps the figures current while optuna-dashboard serves a running search: every
    ``every_s`` seconds, the studies whose trials changed (one started, finished or failed) are
    drawn again. The database may not exist yet (a cluster's dashboard starts before its first
    search): :meth:`storage` waits for it rather than creating tables."""

    def __init__(self, storage_url: str, study_name: str | None, every_s: float,
                 report: Callable[[str], None] = print) -> None:
        self.storage_url = storage_url
        self.study_name = study_name
        self.every_s = every_s
        self.report = report
        self._drawn: dict[str, tuple] = {}

    def storage(self) -> optuna.storages.BaseStorage:
        """The storage, once a search has created it (checking every ``every_s`` seconds)."""
        waiting = None
        while True:
            try:
                return open_existing(self.storage_url, writable=True)
            except ConfigError as error:
                if str(error) != waiting:
                    self.report(f"waiting for a search's study: {error}")
                    waiting = str(error)
            time.sleep(self.every_s)

    def refresh(self, storage: optuna.storages.BaseStorage) -> list[StudyTable]:
        """Draw again what changed; nothing (and no error) while no study has trials."""
        try:
            return _attach(storage, self.study_name, self._drawn)
        except ConfigError:
            return []

    def start(self, storage: optuna.storages.BaseStorage) -> None:
        """Refresh in a background thread until the process ends; a database hiccup is said
        once and retried at the next round."""
        def loop() -> None:
            while True:
                time.sleep(self.every_s)
                try:
                    self.refresh(storage)
                except STORAGE_ERRORS as error:
                    self.report(f"figures not refreshed: {storage_reason(error)}")

        threading.Thread(target=loop, name="hetnas-figures", daemon=True).start()
