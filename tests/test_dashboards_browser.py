"""The report and the live page in headless Chromium: the plots must really render.

Each page is loaded twice: once to dump the DOM after scripts ran (plotly draws ``svg.main-svg``
elements; a study name that is markup must not have run), once for a screenshot that must
show the figures' colours, not a blank or text-only page. Without chromium these skip, except
under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from test_dashboards_support import (
    ESTIMATED_ACCURACY,
    ESTIMATES,
    FRONT,
    LATENCY_MS,
    ONESHOT_TAU,
    chromium_path,
    write_oneshot_study,
    write_study,
)

from dashboards import make_server, write_report
from dashboards.figures import COLORS

# A study name that marks the page if any part of it ever runs as markup.
PAYLOAD = ("<script>document.documentElement.dataset.pwned='script'</script>"
           "<img src=x onerror=\"document.documentElement.dataset.pwned='img'\">")
FIGURES = 3


def _chromium(path: str, url: str, profile: Path, *mode: str) -> str:
    command = [path, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *mode, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _check_renders(url: str, tmp_path: Path, figures: int = FIGURES) -> str:
    """Load ``url``, check the plots rendered and nothing injected ran; returns the DOM."""
    chromium = chromium_path()
    dom = _chromium(chromium, url, tmp_path / "profile", "--dump-dom")
    assert len(re.findall(r'<svg[^>]*class="main-svg"', dom)) >= 2 * figures, dom[-3000:]
    assert "pwned" not in re.search(r"<html[^>]*>", dom).group(0)
    assert len(re.findall(r'class="point"', dom)) >= len(FRONT)  # markers were drawn
    shot = tmp_path / "page.png"
    _chromium(chromium, url, tmp_path / "profile", f"--screenshot={shot}",
              "--window-size=1280,2000")
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "blank or nearly uniform screenshot"
    present = {tuple(int(COLORS[k][i:i + 2], 16) for i in (1, 3, 5)) for k in ("front",
                                                                          "baseline")}
    seen = {rgb for _, rgb in colours}
    assert present <= seen, "the front and the baselines are not on the screenshot"
    return dom


def test_report_renders_in_chromium(tmp_path: Path, study_name: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name + PAYLOAD)
    report = tmp_path / "report.html"
    write_report(storage, None, report)
    dom = _check_renders(report.as_uri(), tmp_path)
    assert "P8" in dom and "Top architectures" in dom


def _latency_box(dom: str) -> str:
    """The opening tag of the live page's latency figure element."""
    return re.search(r'<div[^>]*id="latency"[^>]*>', dom).group(0)


@pytest.fixture
def live_url(tmp_path: Path, study_name: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The live server in a thread on a free loopback port (both storages are covered by
    test_dashboards; the browser only sees HTTP). Indirect parameter: the kind of study,
    ``standard`` (the default), ``latency`` (with predicted latencies) or ``oneshot``."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    kind = getattr(request, "param", "standard")
    if kind == "oneshot":
        write_oneshot_study(storage, study_name + PAYLOAD)
    else:
        latency = kind == "latency"
        write_study(storage, study_name + PAYLOAD, "pareto-latency" if latency else "accuracy",
                    latency=latency)
    server = make_server(storage, None, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


def test_live_page_renders_in_chromium(live_url: str, tmp_path: Path) -> None:
    dom = _check_renders(live_url, tmp_path)
    assert re.search(r'<body[^>]*data-version="14/', dom), "the page never drew the study"
    assert "uniform P8" in dom  # the top-architectures table was filled in
    # No latencies: no latency column, and the latency figure's element stays hidden, empty.
    assert "latency (ms)" not in dom
    box = _latency_box(dom)
    assert "hidden" in box and "js-plotly-plot" not in box
    # A standard study: no estimate column, and the one-shot section stays hidden.
    assert "supernet estimate" not in dom
    assert "hidden" in re.search(r'<section[^>]*id="oneshot"[^>]*>', dom).group(0)


@pytest.mark.parametrize("live_url", ["oneshot"], indirect=True)
def test_live_page_shows_supernet_estimates_in_chromium(live_url: str, tmp_path: Path) -> None:
    dom = _check_renders(live_url, tmp_path)
    assert re.search(r'<body[^>]*data-version="18/', dom), "the page never drew the study"
    assert f"supernet estimate ({len(ESTIMATES)})" in dom  # the scatter's legend
    header = re.search(r"<tr><th>rank</th>.*?</tr>", dom).group(0)
    titles = re.findall(r"<th[^>]*>([^<]*)</th>", header)
    assert titles[titles.index("accuracy") + 1] == "supernet estimate"
    # Trial 5 is the best (rank 1): its estimate follows its accuracy.
    row = re.search(r"<tr><td>1</td><td>5</td>.*?</tr>", dom).group(0)
    cells = re.findall(r"<td[^>]*>([^<]*)", row)
    assert cells[cells.index("91.00%") + 1] == f"{ESTIMATED_ACCURACY[5]:.2%}"
    assert "hidden" not in re.search(r'<section[^>]*id="oneshot"[^>]*>', dom).group(0)
    assert f"Kendall tau {ONESHOT_TAU:+.2f} " in dom


@pytest.mark.parametrize("live_url", ["latency"], indirect=True)
def test_live_page_shows_the_latency_axis_and_column_in_chromium(live_url: str,
                                                                 tmp_path: Path) -> None:
    dom = _check_renders(live_url, tmp_path, figures=FIGURES + 1)
    assert re.search(r'<body[^>]*data-version="15/', dom), "the page never drew the study"
    box = _latency_box(dom)
    assert "hidden" not in box and "js-plotly-plot" in box  # shown, and plotly drew into it
    assert "Accuracy against predicted latency" in dom
    assert "predicted latency (ms) · cpu, batch 1" in dom
    header = re.search(r"<tr><th>rank</th>.*?</tr>", dom).group(0)
    titles = re.findall(r"<th[^>]*>([^<]*)</th>", header)
    assert titles[titles.index("params") + 1] == "latency (ms)"
    # Trial 5 is the best (rank 1): its latency cell follows its params cell (800k).
    row = re.search(r"<tr><td>1</td><td>5</td>.*?</tr>", dom).group(0)
    cells = re.findall(r"<td[^>]*>([^<]*)", row)
    assert cells[cells.index("800k") + 1] == f"{LATENCY_MS[5]:.2f}"
