"""What the ground-truth table says, from the file alone: the four reports of
``docs/BENCHMARKS.md`` ("Ground truth") as Markdown, and the figure.

    python bench/ground_truth_report.py bench/results/ground_truth.json [--figure gt.html]

1. The noise ceiling: within each band, Kendall τ between independent seeds, and between one
   seed and the mean of the others (95 % bootstrap intervals over architectures). No estimator
   of an architecture's mean accuracy can be judged above it.
2. The achievable gain: the band's best architecture by mean validation accuracy against the
   best uniform network (by mean validation accuracy) at or below the band's upper cost, on
   the test images: means over seeds, the difference paired over images and counting the seeds
   (a paired bootstrap over images and seeds, or with one seed a side the seed spread pooled
   over the table's repeated runs: ``search.store.paired.paired_interval``), and McNemar's test
   on the first seeds' images alone.
3. Each cheap predictor's τ and Spearman ρ against the mean validation accuracy, per band.
4. The figure: mean test accuracy against paper MACs for the pool (uniform networks marked,
   bands shaded) and the per-layer parts of each band's winner.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from ground_truth_table import Entry, GroundTruth, load
from plotly.subplots import make_subplots

from dashboards.figures import COLORS, si
from search.store.paired import (
    kendall_tau,
    mcnemar,
    noise_ceiling,
    paired_interval,
    pooled_seed_noise,
    spearman,
)

GROUP_COLORS = {"uniform": COLORS["baseline"], "aggressive": COLORS["searched"],
                "moderate": COLORS["front"], "structured": COLORS["estimate"]}


def _points(value: float) -> str:
    return f"{100 * value:.2f}"


def noise_report(table: GroundTruth) -> list[str]:
    """Per band, how well one seed ranks the band against another: over the architectures
    with two runs or more, on the seeds they all have (a table still being built has fewer
    for some)."""
    lines = ["| band | architectures (seeds each) | τ between two seeds [95 %] | τ one seed vs "
             "mean of the others [95 %] | sd over seeds (points, median) |",
             "|---|---|---|---|---|"]
    for band in table.bands:
        entries = table.in_band(band.name)
        entries = [e for e in entries if len(e.runs) >= 2]
        if len(entries) < 3:
            continue
        seeds = min(len(e.runs) for e in entries)
        runs = np.array([[r.val_accuracy for r in sorted(e.runs, key=lambda r: r.replicate)]
                         [:seeds] for e in entries])
        ceiling = noise_ceiling(runs)
        spread = np.median(runs.std(axis=1, ddof=1)) * 100
        lines.append(f"| {band.name} | {len(entries)} ({seeds}) | "
                     f"{ceiling.between_seeds.describe()} | {ceiling.held_out.describe()} | "
                     f"{spread:.2f} |")
    return lines


def _winner(entries: Sequence[Entry]) -> Entry:
    return max(entries, key=lambda e: e.mean_val)


def gain_report(table: GroundTruth) -> list[str]:
    """Per band: the best in-band architecture against the best uniform network at or below the
    band's upper cost, both chosen on validation, compared on test."""
    images = table.setting.test_images
    noise = pooled_seed_noise([r.test_accuracy for r in e.runs] for e in table.entries)
    lines = ["| band | best in band (by val) | its MACs | best uniform at or below (by val) | "
             "its MACs | test: in band | test: uniform | difference, paired over images and "
             "counting seeds [95 %] | the first seeds' images alone (McNemar) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for band in table.bands:
        inside = [e for e in table.in_band(band.name) if e.runs]
        rivals = [e for e in table.uniform() if e.runs and e.paper_macs <= band.high]
        if not inside or not rivals:
            continue
        best, uniform = _winner(inside), _winner(rivals)
        a = np.stack([r.test_mask(images) for r in best.runs])
        b = np.stack([r.test_mask(images) for r in uniform.runs])
        found = paired_interval(a, b, noise)
        paired = ("one seed each and no repeated runs yet: cannot separate architecture from "
                  "seed" if found is None else
                  f"{100 * (a.mean() - b.mean()):+.2f} [{100 * found[0][0]:+.2f}, "
                  f"{100 * found[0][1]:+.2f}] ({found[1]})")
        single = mcnemar(a[0], b[0])
        lines.append(f"| {band.name} | {best.label} | {si(best.paper_macs)} | {uniform.label} | "
                     f"{si(uniform.paper_macs)} | {_points(best.mean_test)} "
                     f"({len(best.runs)} seeds) | {_points(uniform.mean_test)} "
                     f"({len(uniform.runs)} seeds) | {paired} | "
                     f"{single.describe()} |")
    return lines


def predictors(table: GroundTruth) -> dict[str, Callable[[Entry], float]]:
    """Every cheap predictor of the table: costs and the zero-cost proxies."""
    found: dict[str, Callable[[Entry], float]] = {
        "paper MACs": lambda e: float(e.paper_macs), "parameters": lambda e: float(e.params)}
    names = sorted({name for e in table.entries for name in e.proxies})
    for name in names:
        found[name] = lambda e, name=name: e.proxies[name]
    return found


def predictor_report(table: GroundTruth) -> list[str]:
    lines = ["| band | predictor | Kendall τ [95 %] | Spearman ρ [95 %] |", "|---|---|---|---|"]
    for band in table.bands:
        entries = [e for e in table.in_band(band.name) if e.runs]
        if len(entries) < 3:
            continue
        truth = [e.mean_val for e in entries]
        for name, score in predictors(table).items():
            values = [score(e) for e in entries]
            tau, rho = kendall_tau(values, truth), spearman(values, truth)
            lines.append(f"| {band.name} | {name} | {tau.describe()} | {rho.describe()} |")
    return lines


def figure(table: GroundTruth) -> go.Figure:
    """Mean test accuracy against paper MACs, with each band's winner's parts below."""
    trained = {band.name: [e for e in table.in_band(band.name) if e.runs] for band in table.bands}
    winners = [(band, _winner(trained[band.name])) for band in table.bands if trained[band.name]]
    fig = make_subplots(rows=2, cols=1, row_heights=[0.68, 0.32], vertical_spacing=0.12,
                        subplot_titles=("Mean test accuracy over seeds against paper MACs",
                                        "Parts per layer of each band's best (by validation)"))
    scores = [100 * e.mean_test for e in table.entries if e.runs]
    low, high = (min(scores), max(scores)) if scores else (0.0, 100.0)
    for band in table.bands:  # each band as a shaded column behind the points
        fig.add_trace(go.Scatter(
            x=[band.low, band.high, band.high, band.low, band.low],
            y=[low, low, high, high, low], fill="toself", mode="lines", line={"width": 0},
            fillcolor=GROUP_COLORS[band.name], opacity=0.12, hoverinfo="skip",
            name=f"{band.name} band"), row=1, col=1)
    for group, color in GROUP_COLORS.items():
        members = [e for e in table.entries if e.group == group and e.runs]
        if not members:
            continue
        spread = [100 * float(np.std([r.test_accuracy for r in e.runs], ddof=1))
                  if len(e.runs) > 1 else 0.0 for e in members]
        fig.add_trace(go.Scatter(
            x=[e.paper_macs for e in members], y=[100 * e.mean_test for e in members],
            error_y={"type": "data", "array": spread, "thickness": 1},
            mode="markers+text" if group == "uniform" else "markers",
            text=[f"P{e.uniform_part}" for e in members] if group == "uniform" else None,
            textposition="top center", name=group,
            marker={"color": color, "size": 10 if group == "uniform" else 7,
                    "symbol": "diamond" if group == "uniform" else "circle"},
            hovertext=[e.label for e in members]), row=1, col=1)
    if winners:
        fig.add_trace(go.Heatmap(
            z=[[np.log2(p) for p in e.parts] for _, e in winners],
            y=[f"{band.name}: {e.label}" for band, e in winners],
            x=[f"L{i + 1}" for i in range(len(winners[0][1].parts))],
            text=[[str(p) for p in e.parts] for _, e in winners], texttemplate="%{text}",
            colorscale="Blues", showscale=False, hovertemplate="%{y}, %{x}: P %{text}"),
            row=2, col=1)
    fig.update_xaxes(type="log", title_text="paper MACs", row=1, col=1)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    setting = table.setting
    fig.update_layout(template="plotly_white", height=760, width=1000,
                      title=(f"Ground truth: {setting.backbone} on {setting.dataset}, "
                             f"{setting.train_images} training images, {setting.epochs} "
                             f"epochs, {setting.seeds} seeds"))
    return fig


def report(table: GroundTruth) -> str:
    setting, made = table.setting, table.made
    head = [f"Table: `{made['command']}` at commit `{made['commit']}`, {made['date']} "
            f"({made['machine']}); {len(table.complete())} of {len(table.entries)} "
            f"architectures with all {setting.seeds} seeds; {setting.backbone} on "
            f"{setting.dataset} at {setting.input_size} px, {setting.train_images} training, "
            f"{setting.val_images} validation and {setting.test_images} test images, "
            f"{setting.epochs} epochs, batch {setting.batch_size}.",
            "", "Bands: " + "; ".join(f"{b.name} {si(b.low)} to {si(b.high)} MACs ({b.rule})"
                                      for b in table.bands)]
    sections = [("1. Noise ceiling (validation accuracy)", noise_report(table)),
                ("2. Achievable gain (test accuracy, points)", gain_report(table)),
                ("3. Cheap predictors against the mean validation accuracy",
                 predictor_report(table))]
    body = [f"**{title}**\n\n" + "\n".join(lines) for title, lines in sections]
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--figure", type=Path, default=None,
                        help="write the figure as a self-contained HTML page")
    args = parser.parse_args(argv)
    table = load(args.table)
    print(report(table))
    if args.figure is not None:
        figure(table).write_html(args.figure, include_plotlyjs=True)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
