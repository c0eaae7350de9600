"""The plotly figures of a study: accuracy against MACs, parts of the front, search progress.

Figures carry numbers only (trial numbers, parts, MACs, accuracies) and fixed titles: no study
name or other stored text goes into them, so nothing a study holds can inject markup into a
page that embeds them. Over-budget (rejected) trials were never trained and have no accuracy;
they are drawn as a rug of ticks in a strip under the scatter, on the same MACs axis.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.analysis import pareto_front, parts_matrix, progress, scatter_groups
from dashboards.data import StudyTable

PARETO, PARTS, PROGRESS = "pareto", "parts", "progress"
FIGURE_IDS = (PARETO, PARTS, PROGRESS)  # also the ids of the pages' figure elements

COLORS = {"searched": "#1f77b4", "baseline": "#ff7f0e", "early_stopped": "#9e9e9e",
          "rejected": "#d62728", "front": "#2ca02c", "budget": "#d62728"}

_HOVER = ("trial %{customdata[0]}<br>parts %{hovertext}<br>paper MACs %{x:.4s}"
          "<br>params %{customdata[1]:.4s}<br>accuracy %{y:.2%}<extra>%{fullData.name}</extra>")
_REJECTED_HOVER = ("trial %{customdata[0]}<br>parts %{hovertext}<br>paper MACs %{x:.4s}"
                   "<br>params %{customdata[1]:.4s}<br>over budget: not trained<extra></extra>")
_LAYOUT = {"template": "plotly_white", "margin": {"l": 70, "r": 30, "t": 60, "b": 50}}


def si(value: float) -> str:
    """``1.5e8`` -> ``150M``: MACs and parameters as people read them (G, M, k)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def all_figures(table: StudyTable) -> dict[str, go.Figure]:
    """Every dashboard figure of the study, keyed by a short id usable as an HTML id."""
    return {PARETO: pareto_figure(table), PARTS: parts_heatmap(table),
            PROGRESS: progress_figure(table)}


def _parts_text(table: StudyTable, rows: np.ndarray, per_line: int = 20) -> list[str]:
    """Each trial's part vector, ``per_line`` layers to a hover line."""
    texts = []
    for i in rows:
        parts = [str(p) for p in table.records[i].parts]
        texts.append("<br>".join(" ".join(parts[s:s + per_line])
                                 for s in range(0, len(parts), per_line)) or "-")
    return texts


def _custom(table: StudyTable, rows: np.ndarray) -> np.ndarray:
    return np.column_stack((table.number[rows].astype(float), table.params[rows]))


def _points(table: StudyTable, rows: np.ndarray, name: str, marker: dict,
            mode: str = "markers", **extra: object) -> go.Scatter:
    return go.Scatter(x=table.paper_macs[rows], y=table.accuracy[rows], mode=mode,
                      name=f"{name} ({rows.size})", marker=marker,
                      customdata=_custom(table, rows), hovertext=_parts_text(table, rows),
                      hovertemplate=_HOVER, **extra)


def pareto_figure(table: StudyTable) -> go.Figure:
    """Accuracy against paper MACs: groups told apart, the front, the budget, the baselines."""
    groups = scatter_groups(table)
    front = pareto_front(table)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.88, 0.12],
                        vertical_spacing=0.03)
    fig.add_trace(_points(table, groups.searched, "complete",
                          {"color": COLORS["searched"], "size": 7, "opacity": 0.8}), 1, 1)
    fig.add_trace(_points(table, groups.early_stopped, "early-stopped",
                          {"color": COLORS["early_stopped"], "size": 7,
                           "symbol": "circle-open"}), 1, 1)
    labels = [f"P{p}" for p in table.baseline_part[groups.baselines]]
    fig.add_trace(_points(table, groups.baselines, "uniform baseline",
                          {"color": COLORS["baseline"], "size": 11, "symbol": "diamond",
                           "line": {"width": 1, "color": "#333"}},
                          mode="markers+text", text=labels, textposition="top center"), 1, 1)
    fig.add_trace(go.Scatter(
        x=table.paper_macs[front], y=table.accuracy[front], mode="lines+markers",
        line={"shape": "hv", "color": COLORS["front"], "width": 2},
        marker={"symbol": "circle-open", "size": 13, "color": COLORS["front"],
                "line": {"width": 2}},
        name=f"Pareto front ({front.size})", customdata=_custom(table, front),
        hovertext=_parts_text(table, front), hovertemplate=_HOVER), 1, 1)
    rejected = groups.rejected
    fig.add_trace(go.Scatter(
        x=table.paper_macs[rejected], y=np.zeros(rejected.size), mode="markers",
        name=f"rejected: over budget ({rejected.size})",
        marker={"symbol": "line-ns-open", "size": 14, "color": COLORS["rejected"],
                "opacity": 0.6},
        customdata=_custom(table, rejected), hovertext=_parts_text(table, rejected),
        hovertemplate=_REJECTED_HOVER), 2, 1)
    if table.budget is not None:
        fig.add_vline(x=table.budget, row="all", col=1, line={"dash": "dash", "width": 2,
                      "color": COLORS["budget"]})
        fig.add_annotation(x=table.budget, y=1, yref="paper", text=f"budget {si(table.budget)}",
                           showarrow=False, xanchor="right", yanchor="bottom",
                           font={"color": COLORS["budget"]})
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="over<br>budget", showticklabels=False, showgrid=False,
                     zeroline=False, range=[-1, 1], row=2, col=1)
    fig.update_xaxes(title_text="paper MACs per image", row=2, col=1)
    fig.update_layout(title="Accuracy against paper MACs", height=560,
                      legend={"orientation": "h", "y": -0.15}, hovermode="closest", **_LAYOUT)
    return fig


def parts_heatmap(table: StudyTable) -> go.Figure:
    """Parts chosen per layer (across) by each Pareto-optimal architecture (down, cheapest
    first): dark cells are heavy layers (small P: more K×K kernels)."""
    front = pareto_front(table)
    fig = go.Figure()
    if not front.size:
        return _empty(fig, "Parts of the Pareto-optimal architectures",
                      "no complete trial within budget yet")
    matrix = parts_matrix(table, front)
    labels = [f"#{table.number[i]} · {table.accuracy[i]:.1%} · {si(table.paper_macs[i])}"
              + (f" · P{table.baseline_part[i]}" if table.baseline_part[i] else "")
              for i in front]
    exponents = np.where(matrix > 0, np.log2(np.maximum(matrix, 1)), np.nan)
    top = int(np.nanmax(exponents)) if matrix.size else 0
    fig.add_trace(go.Heatmap(
        z=exponents, x=[f"L{j}" for j in range(matrix.shape[1])], y=labels,
        text=matrix.astype(str), colorscale="Viridis", zmin=0, zmax=max(top, 1),
        colorbar={"title": {"text": "part"}, "tickvals": list(range(max(top, 1) + 1)),
                  "ticktext": [f"P{2 ** e}" for e in range(max(top, 1) + 1)]},
        hovertemplate="trial %{y}<br>layer %{x}: P%{text}<extra></extra>", xgap=1, ygap=1))
    fig.update_yaxes(title_text="trial · accuracy · paper MACs", autorange="reversed",
                     type="category")
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_layout(title="Parts of the Pareto-optimal architectures (cheapest on top)",
                      height=max(260, 120 + 28 * len(labels)), **_LAYOUT)
    return fig


def progress_figure(table: StudyTable) -> go.Figure:
    """Best complete accuracy so far, against trial number (left) and wall time (right)."""
    run = progress(table)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("against trial number", "against wall time"))
    step = {"shape": "hv", "color": COLORS["front"], "width": 2}
    dots = {"color": COLORS["searched"], "size": 5, "opacity": 0.35}
    numbers = run.numbers.astype(float)
    fig.add_trace(go.Scatter(x=numbers, y=run.accuracy, mode="markers", marker=dots,
                             name="complete trial", legendgroup="dots",
                             hovertemplate="trial %{x}<br>accuracy %{y:.2%}<extra></extra>"),
                  1, 1)
    fig.add_trace(go.Scatter(x=numbers, y=run.best_by_number, mode="lines", line=step,
                             name="best so far", legendgroup="best",
                             hovertemplate="after trial %{x}<br>best %{y:.2%}<extra></extra>"),
                  1, 1)
    fig.add_trace(go.Scatter(x=run.times, y=run.best_by_time, mode="lines", line=step,
                             name="best so far", legendgroup="best", showlegend=False,
                             hovertemplate="%{x}<br>best %{y:.2%}<extra></extra>"), 1, 2)
    fig.update_yaxes(title_text="best validation accuracy", tickformat=".1%", col=1)
    fig.update_yaxes(tickformat=".1%", col=2)
    fig.update_xaxes(title_text="trial number", col=1)
    fig.update_xaxes(title_text="trial completed at (UTC)", col=2)
    fig.update_layout(title="Search progress", height=380, **_LAYOUT)
    if not run.numbers.size:
        fig.add_annotation(text="no complete trial within budget yet", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def _empty(fig: go.Figure, title: str, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=260, **_LAYOUT)
    return fig
