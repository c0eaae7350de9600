"""The plotly figures of a study: accuracy against MACs (and against predicted latency when the
trials have one), parts of the front, search progress.

Figures carry numbers only (trial numbers, parts, MACs, latencies, accuracies) and fixed titles:
no study name or other stored text goes into them, so nothing a study holds can inject markup
into a page that embeds them. The one exception, the latency spec's device name in an axis
title, is kept only when it is a plain name (letters, digits, spaces, ``_.:+-``). Over-budget
(rejected) trials were never trained and have no accuracy; they are drawn as a rug of ticks in a
strip under the scatter, on the same cost axis. A one-shot search's candidates, scored by its
supernet and never trained, are a trace of their own (thin purple crosses, drawn beneath the
trained trials); they are never a trained result, so never on the front or in the progress.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.analysis import (
    Cost,
    cost_column,
    pareto_front,
    parts_matrix,
    progress,
    scatter_groups,
)
from dashboards.data import StudyTable

PARETO, LATENCY, PARTS, PROGRESS = "pareto", "latency", "parts", "progress"
# Every figure a page may show, in page order; also the ids of the pages' figure elements.
FIGURE_IDS = (PARETO, LATENCY, PARTS, PROGRESS)

COLORS = {"searched": "#1f77b4", "baseline": "#ff7f0e", "early_stopped": "#9e9e9e",
          "rejected": "#d62728", "front": "#2ca02c", "budget": "#d62728",
          "estimate": "#9467bd"}

_LAYOUT = {"template": "plotly_white", "margin": {"l": 70, "r": 30, "t": 60, "b": 50}}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:+\- ]{1,48}")
_ACCURACY_HOVER = "accuracy %{y:.2%}<extra>%{fullData.name}</extra>"
_REJECTED_HOVER = "over budget: not trained<extra></extra>"
_ESTIMATE_HOVER = "supernet estimate %{y:.2%}: not trained<extra></extra>"


def si(value: float) -> str:
    """``1.5e8`` -> ``150M``: MACs and parameters as people read them (G, M, k)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def ms(value: float) -> str:
    """``12.345`` -> ``12.3``: milliseconds to about three figures, never in exponent form."""
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f}"


def figure_ids(table: StudyTable) -> tuple[str, ...]:
    """The figures drawn for ``table``: the latency scatter only when some trial has a
    latency, so studies without a latency table look as they always did."""
    return tuple(key for key in FIGURE_IDS if key != LATENCY or table.has_latency)


def all_figures(table: StudyTable) -> dict[str, go.Figure]:
    """Every dashboard figure of the study, keyed by a short id usable as an HTML id."""
    draw: dict[str, Callable[[StudyTable], go.Figure]] = {
        PARETO: pareto_figure, LATENCY: latency_figure, PARTS: parts_heatmap,
        PROGRESS: progress_figure}
    return {key: draw[key](table) for key in figure_ids(table)}


@dataclass(frozen=True)
class _Axis:
    """How one cost, paper MACs or predicted latency, is drawn on a scatter's x axis."""

    cost: Cost
    figure_title: str
    title: str
    hover: str  # the hover line of the x value (may read customdata[2])
    budget: float | None
    budget_label: str


def _macs_axis(table: StudyTable) -> _Axis:
    budget = table.budget
    return _Axis(cost="paper_macs", figure_title="Accuracy against paper MACs",
                 title="paper MACs per image", hover="paper MACs %{x:.4s}", budget=budget,
                 budget_label="" if budget is None else f"budget {si(budget)}")


def _latency_axis(table: StudyTable) -> _Axis:
    budget = table.latency_budget
    on = spec_text(table.latency_spec)
    return _Axis(cost="latency_ms", figure_title="Accuracy against predicted latency",
                 title="predicted latency (ms)" + (f" · {on}" if on else ""),
                 hover="latency %{x:.3r} ms<br>paper MACs %{customdata[2]:.4s}", budget=budget,
                 budget_label="" if budget is None else f"budget {ms(budget)} ms")


def spec_text(spec: dict[str, Any]) -> str:
    """``cpu, batch 1``: what a latency was measured on, from the parts safe to draw (a plain
    device name, a positive integer batch); empty when neither is."""
    device, batch = spec.get("device"), spec.get("batch")
    parts = []
    if isinstance(device, str) and _PLAIN_NAME.fullmatch(device):
        parts.append(device.strip())
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
        parts.append(f"batch {batch}")
    return ", ".join(part for part in parts if part)


def _hover(axis: _Axis, last: str) -> str:
    return (f"trial %{{customdata[0]}}<br>parts %{{hovertext}}<br>{axis.hover}"
            f"<br>params %{{customdata[1]:.4s}}<br>{last}")


def _parts_text(table: StudyTable, rows: np.ndarray, per_line: int = 20) -> list[str]:
    """Each trial's part vector, ``per_line`` layers to a hover line."""
    texts = []
    for i in rows:
        parts = [str(p) for p in table.records[i].parts]
        texts.append("<br>".join(" ".join(parts[s:s + per_line])
                                 for s in range(0, len(parts), per_line)) or "-")
    return texts


def _custom(table: StudyTable, rows: np.ndarray, axis: _Axis) -> np.ndarray:
    """Trial number and parameters; the latency scatter also shows each trial's MACs."""
    columns = [table.number[rows].astype(float), table.params[rows]]
    if axis.cost != "paper_macs":
        columns.append(table.paper_macs[rows])
    return np.column_stack(columns)


def _points(table: StudyTable, axis: _Axis, rows: np.ndarray, name: str, marker: dict,
            mode: str = "markers", last: str = _ACCURACY_HOVER, **extra: object) -> go.Scatter:
    return go.Scatter(x=cost_column(table, axis.cost)[rows], y=table.accuracy[rows], mode=mode,
                      name=f"{name} ({rows.size})", marker=marker,
                      customdata=_custom(table, rows, axis), hovertext=_parts_text(table, rows),
                      hovertemplate=_hover(axis, last), **extra)


def pareto_figure(table: StudyTable) -> go.Figure:
    """Accuracy against paper MACs: groups told apart, the front, the budget, the baselines."""
    return _cost_figure(table, _macs_axis(table))


def latency_figure(table: StudyTable) -> go.Figure:
    """Accuracy against predicted latency: the same groups, the front on latency, the latency
    budget; the axis title says what the latency was measured on."""
    return _cost_figure(table, _latency_axis(table))


def _cost_figure(table: StudyTable, axis: _Axis) -> go.Figure:
    groups = scatter_groups(table, axis.cost)
    front = pareto_front(table, axis.cost)
    cost = cost_column(table, axis.cost)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.88, 0.12],
                        vertical_spacing=0.03)
    if groups.estimates.size:  # first, so the trained trials are drawn over them
        fig.add_trace(_points(table, axis, groups.estimates, "supernet estimate",
                              {"color": COLORS["estimate"], "size": 7, "symbol": "x-thin-open",
                               "opacity": 0.6, "line": {"width": 1.5,
                                                        "color": COLORS["estimate"]}},
                              last=_ESTIMATE_HOVER), 1, 1)
    fig.add_trace(_points(table, axis, groups.searched, "complete",
                          {"color": COLORS["searched"], "size": 7, "opacity": 0.8}), 1, 1)
    fig.add_trace(_points(table, axis, groups.early_stopped, "early-stopped",
                          {"color": COLORS["early_stopped"], "size": 7,
                           "symbol": "circle-open"}), 1, 1)
    labels = [f"P{p}" for p in table.baseline_part[groups.baselines]]
    fig.add_trace(_points(table, axis, groups.baselines, "uniform baseline",
                          {"color": COLORS["baseline"], "size": 11, "symbol": "diamond",
                           "line": {"width": 1, "color": "#333"}},
                          mode="markers+text", text=labels, textposition="top center"), 1, 1)
    fig.add_trace(go.Scatter(
        x=cost[front], y=table.accuracy[front], mode="lines+markers",
        line={"shape": "hv", "color": COLORS["front"], "width": 2},
        marker={"symbol": "circle-open", "size": 13, "color": COLORS["front"],
                "line": {"width": 2}},
        name=f"Pareto front ({front.size})", customdata=_custom(table, front, axis),
        hovertext=_parts_text(table, front),
        hovertemplate=_hover(axis, _ACCURACY_HOVER)), 1, 1)
    rejected = groups.rejected
    fig.add_trace(go.Scatter(
        x=cost[rejected], y=np.zeros(rejected.size), mode="markers",
        name=f"rejected: over budget ({rejected.size})",
        marker={"symbol": "line-ns-open", "size": 14, "color": COLORS["rejected"],
                "opacity": 0.6},
        customdata=_custom(table, rejected, axis), hovertext=_parts_text(table, rejected),
        hovertemplate=_hover(axis, _REJECTED_HOVER)), 2, 1)
    if axis.budget is not None:
        fig.add_vline(x=axis.budget, row="all", col=1, line={"dash": "dash", "width": 2,
                      "color": COLORS["budget"]})
        fig.add_annotation(x=axis.budget, y=1, yref="paper", text=axis.budget_label,
                           showarrow=False, xanchor="right", yanchor="bottom",
                           font={"color": COLORS["budget"]})
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="over<br>budget", showticklabels=False, showgrid=False,
                     zeroline=False, range=[-1, 1], row=2, col=1)
    fig.update_xaxes(title_text=axis.title, row=2, col=1)
    fig.update_layout(title=axis.figure_title, height=560,
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
