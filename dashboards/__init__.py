"""Read-only views of HetNAS studies: Pareto-front figures, an HTML report and a live page.

The storage is the only input; nothing here imports the training code (torch, Ray). The one
write, on request, is attaching the figures to a study for optuna-dashboard
(:func:`attach_figures`).
"""

from dashboards.analysis import (
    Progress,
    ScatterGroups,
    TopRow,
    pareto_front,
    progress,
    scatter_groups,
    top_architectures,
)
from dashboards.data import StudyListing, StudyTable, list_studies, load_table, table_from_study
from dashboards.figures import (
    all_figures,
    latency_figure,
    pareto_figure,
    parts_heatmap,
    progress_figure,
)
from dashboards.optuna_figures import attach_figures, attach_to_study
from dashboards.page import render_report, write_report
from dashboards.server import DashboardServer, make_server, study_json

__all__ = [
    "DashboardServer",
    "Progress",
    "ScatterGroups",
    "StudyListing",
    "StudyTable",
    "TopRow",
    "all_figures",
    "attach_figures",
    "attach_to_study",
    "latency_figure",
    "list_studies",
    "load_table",
    "make_server",
    "pareto_figure",
    "pareto_front",
    "parts_heatmap",
    "progress",
    "progress_figure",
    "render_report",
    "scatter_groups",
    "study_json",
    "table_from_study",
    "top_architectures",
    "write_report",
]
