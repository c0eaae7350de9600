"""The self-contained HTML report: figures, a summary and the top architectures in one file.

The file opens offline: plotly.js is inlined and a Content-Security-Policy forbids every fetch.
Every piece of stored text (study name, study attributes) is HTML-escaped, the figures' JSON is
embedded as inert data with ``<``, ``>`` and ``&`` escaped, and the policy lets only the page's
own two scripts run (by hash), so a study named ``<script>…</script>`` stays text.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
from pathlib import Path

import plotly.io
from plotly.offline import get_plotlyjs

from dashboards.analysis import (
    ConfirmedRow,
    TopRow,
    confirmed_architectures,
    estimate_agreement,
    top_architectures,
)
from dashboards.data import STATUSES, StudyTable, load_table
from dashboards.figures import all_figures, ms, si
from hetconv.errors import ConfigError
from search.store import records
from search.store.database import sqlite_file
from search.store.files import check_target, write_atomic
from search.store.verdict import search_verdict

# Draws every figure from its JSON block; the same code runs in the report and the live page.
_BOOT = """
document.querySelectorAll("script.figure-data").forEach(function (block) {
  var spec = JSON.parse(block.textContent);
  Plotly.newPlot(block.dataset.target, spec.data, spec.layout,
                 {responsive: true, displaylogo: false});
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; word-break: break-all; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.facts span { display: inline-block; margin-right: 1.4em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
td.parts, th.parts, td.kind { text-align: left; }
td.parts code { font-size: 0.85em; color: #555; }
.figure { min-height: 260px; }
"""


def safe_json(text: str) -> str:
    """JSON that cannot close the ``<script>`` element it is embedded in."""
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


ESTIMATE_TITLE = "supernet estimate"  # the tables' column of a one-shot study


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """``97.20%`` and, where the image count is known, its 95 % interval beneath."""
    if value is None:
        return "–"
    if interval is None:
        return f"{value:.2%}"
    return (f"{value:.2%}<br><small>[{100 * interval[0]:.1f}, "
            f"{100 * interval[1]:.1f}]</small>")


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2%}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def confirmed_table_html(rows: list[ConfirmedRow], estimates: bool = False) -> str:
    """Architectures trained with several seeds, apart from the single runs; with
    ``estimates`` (a one-shot study) the supernet's estimate beside the mean."""
    if not rows:
        return ("<p>No architecture was trained with more than one seed (the search ran "
                "without its confirmation stage, or it has not reached it).</p>")
    head = ("<tr><th>trial</th><th class=kind>kind</th><th>runs</th><th>accuracy, mean ± sd"
            "</th>" + (f"<th>{ESTIMATE_TITLE}</th>" if estimates else "")
            + "<th>test, mean ± sd</th><th>paper MACs</th><th class=parts>parts</th></tr>")
    body = [f"<tr><td>{row.number}</td><td class=kind>{html.escape(row.kind)}</td>"
            f"<td>{row.runs} (trials {', '.join(str(t) for t in row.trials)})</td>"
            f"<td>{_mean_sd(row.accuracy_mean, row.accuracy_sd)}</td>"
            + (f"<td>{_number(row.estimated_accuracy, '.2%')}</td>" if estimates else "")
            + f"<td>{_mean_sd(row.test_mean, row.test_sd)}</td><td>{si(row.paper_macs)}</td>"
            f"<td class=parts>{html.escape(row.parts_summary)}</td></tr>" for row in rows]
    return f"<table>{head}{''.join(body)}</table>"


def _input_shape(attrs: dict) -> str | None:
    """``1×32×32`` (channels × size × size); older studies recorded the size alone."""
    size, channels = attrs.get(records.STUDY_INPUT_SIZE), attrs.get(records.STUDY_IN_CHANNELS)
    if size is None:
        return None
    return f"{size}×{size}" if channels is None else f"{channels}×{size}×{size}"


def facts(table: StudyTable) -> list[tuple[str, str]]:
    """The study's settings and trial counts, as (label, value) text pairs (not escaped)."""
    attrs = table.attrs
    budget, latency_budget = table.budget, table.latency_budget
    spec = ", ".join(f"{key} {value}" for key, value in table.latency_spec.items())
    pairs = [("backbone", attrs.get(records.STUDY_BACKBONE)),
             ("data set", attrs.get(records.STUDY_DATASET)),
             ("input", _input_shape(attrs)),
             ("classes", attrs.get(records.STUDY_NUM_CLASSES)),
             ("budget", None if budget is None else f"{si(budget)} paper MACs"),
             ("latency budget", None if latency_budget is None else f"{ms(latency_budget)} ms"),
             ("latency on", spec or None),
             ("objective", attrs.get(records.STUDY_OBJECTIVE)),
             ("strategy", "one-shot" if table.oneshot else None),
             ("supernet", _supernet(attrs)),
             ("epochs", attrs.get(records.STUDY_EPOCHS)),
             ("metrics", ", ".join(table.metric_names) if table.metric_names else None)]
    counts = ", ".join(f"{table.counts[s]} {s.replace('_', '-')}" for s in STATUSES
                       if table.counts.get(s))
    pairs.append(("trials", f"{len(table)} ({counts})" if counts else "0"))
    pairs.append(("verdict", search_verdict(table.records, table.test_images)))
    return [(label, str(value)) for label, value in pairs if value is not None]


def _supernet(attrs: dict) -> str | None:
    """``3 epochs, largest network 71.20%``: what a one-shot study's estimates come from; None
    before its supernet is trained (or when what is stored is not numbers)."""
    stored = attrs.get(records.STUDY_SUPERNET)
    if not isinstance(stored, dict):
        return None
    epochs, accuracy = stored.get("epochs"), stored.get("val_accuracy")
    parts = []
    if isinstance(epochs, int):
        parts.append(f"{epochs} epoch" + ("" if epochs == 1 else "s"))
    if isinstance(accuracy, float):
        parts.append(f"largest network {accuracy:.2%}")
    return ", ".join(parts) or None


def estimates_text(table: StudyTable) -> str | None:
    """What a one-shot study's estimates are and how well they ranked the architectures that
    were then trained (Kendall's τ); None for a standard study. Plain text, no markup."""
    if not table.oneshot:
        return None
    scored = (f"{table.counts.get(records.ESTIMATED, 0)} candidates were scored by the "
              "supernet and never trained (purple crosses on the scatter): they are never a "
              "result, never best and never on the front.")
    found = estimate_agreement(table)
    if found is None:
        return (f"{scored} Kendall tau needs two trained architectures with an estimate and "
                "some spread in both; not yet.")
    return f"{scored} {found.describe()}."


def top_table_html(rows: list[TopRow], latency: bool = False, estimates: bool = False) -> str:
    """The top architectures as an HTML table (all cells are numbers or escaped text); with
    ``latency`` (the study has predicted latencies) a latency column after the params, with
    ``estimates`` (a one-shot study) the supernet's estimate beside the accuracy."""
    if not rows:
        return "<p>No trial has finished all its epochs within the budget yet.</p>"
    head = ("<tr><th>rank</th><th>trial</th><th class=kind>kind</th><th>accuracy</th>"
            + (f"<th>{ESTIMATE_TITLE}</th>" if estimates else "")
            + "<th>test</th><th>paper MACs</th><th>of budget</th><th>params</th>"
            + ("<th>latency (ms)</th>" if latency else "")
            + "<th>front</th><th class=parts>parts</th></tr>")
    body = []
    for row in rows:
        vector = " ".join(str(p) for p in row.parts)
        latency_cell = ""
        if latency:
            latency_cell = f"<td>{'–' if row.latency_ms is None else ms(row.latency_ms)}</td>"
        body.append(
            f"<tr><td>{row.rank}</td><td>{row.number}</td>"
            f"<td class=kind>{html.escape(row.kind)}</td>"
            f"<td>{_with_interval(row.accuracy, row.accuracy_interval)}</td>"
            + (f"<td>{_number(row.estimated_accuracy, '.2%')}</td>" if estimates else "")
            + f"<td>{_with_interval(row.test_accuracy, row.test_interval)}</td>"
            f"<td>{si(row.paper_macs)}</td>"
            f"<td>{_number(row.budget_share, '.1%')}</td>"
            f"<td>{'–' if row.params is None else si(row.params)}</td>{latency_cell}"
            f"<td>{'✓' if row.on_front else ''}</td>"
            f"<td class=parts>{html.escape(row.parts_summary)}<br>"
            f"<code>{html.escape(vector)}</code></td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def render_report(table: StudyTable, top: int = 10) -> str:
    """The whole report page for ``table`` as one HTML string."""
    plotlyjs = get_plotlyjs()
    figures = all_figures(table)
    blocks = "\n".join(
        f'<div class="figure" id="{key}"></div>\n<script type="application/json" '
        f'class="figure-data" data-target="{key}">{safe_json(plotly.io.to_json(fig))}</script>'
        for key, fig in figures.items())
    facts_html = "".join(f"<span><b>{html.escape(label)}</b> {html.escape(value)}</span>"
                         for label, value in facts(table))
    policy = (f"default-src 'none'; script-src {_csp_hash(plotlyjs)} {_csp_hash(_BOOT)}; "
              "style-src 'unsafe-inline'; img-src data:; font-src data:")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    latency_note = (" The second scatter shows the same trials against their predicted latency,"
                    " with its own Pareto front." if table.has_latency else "")
    name = html.escape(table.name)
    estimates = estimates_text(table)
    estimates_html = "" if estimates is None else \
        f"<h2>Supernet estimates</h2>\n<p>{html.escape(estimates)}</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>HetNAS study {name}</title>
<style>{STYLE}</style>
<script>{plotlyjs}</script>
</head><body>
<h1>HetNAS study <q>{name}</q></h1>
<p class="facts">{facts_html}</p>
<p>Accuracy is the last validation accuracy. Over-budget proposals were never trained: they
appear as red ticks in the strip under the scatter, at their paper MACs. Early-stopped trials
did not train all their epochs and never count as best.{latency_note} Report written {stamp}.</p>
{blocks}
<h2>Top architectures (single runs; 95% Wilson intervals beneath)</h2>
{top_table_html(top_architectures(table, top), table.has_latency, table.oneshot)}
<h2>Confirmed over seeds</h2>
{confirmed_table_html(confirmed_architectures(table), table.oneshot)}
{estimates_html}
<script>{_BOOT}</script>
</body></html>
"""


def write_report(storage_url: str, study_name: str | None, out: Path, top: int = 10) -> StudyTable:
    """Read the study and write its report to ``out``; returns what was read."""
    if not out.parent.is_dir() or out.is_dir():
        raise ConfigError(f"--out {out}: not a file in an existing folder")
    check_target(out, "--out", {sqlite_file(storage_url): "the study database"})
    table = load_table(storage_url, study_name)
    try:
        text = render_report(table, top)
        write_atomic(out, lambda path: path.write_text(text, encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write it ({error.strerror or error})") from None
    return table
