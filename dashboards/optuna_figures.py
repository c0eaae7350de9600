"""Attach the dashboard figures to a study so optuna-dashboard shows them beside its own plots.

This is the one place where the dashboards write to a storage, and they write only what
optuna-dashboard reads for custom figures (study system attributes under ``dashboard:``, through
its own ``save_plotly_graph_object``), plus the objective names when a study lacks them. Trials
and user attributes are never touched. The figures are a snapshot: attach again to refresh.
"""

from __future__ import annotations

import warnings

import optuna

from dashboards.data import StudyTable, check_not_empty, list_studies, open_study, table_from_study
from dashboards.figures import FIGURE_IDS, all_figures, figure_ids
from search.store import records
from search.store.objectives import ACCURACY_METRIC, MACS_METRIC, OBJECTIVES, PARETO_MACS
from search.store.storage import open_existing

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
    storage = open_existing(storage_url, writable=True)
    if study_name is not None:
        return [attach_to_study(open_study(storage, study_name))]
    open_study(storage, None)  # the storage holds at least one study, or a clear error
    attached = []
    for listing in list_studies(storage):
        study = optuna.load_study(study_name=listing.name, storage=storage)
        if study.get_trials(deepcopy=False):
            attached.append(attach_to_study(study))
    return attached
