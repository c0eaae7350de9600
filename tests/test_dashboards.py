"""The dashboards on real studies (SQLite and PostgreSQL): figures, report, live server, errors.

The study is the known one of ``test_dashboards_support`` (written through Optuna's API with
the record keys); one test also draws a study made by a tiny real search.
"""

from __future__ import annotations

import base64
import html
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from scipy import stats
from test_dashboards_support import (
    BASELINE_LABELS,
    BEST_SO_FAR,
    BUDGET,
    ESTIMATED_ACCURACY,
    ESTIMATES,
    FRONT,
    GROUP_COUNTS,
    LATENCY_BUDGET,
    LATENCY_FRONT,
    LATENCY_MS,
    LATENCY_STATUS_COUNTS,
    ONESHOT_TAU,
    STATUS_COUNTS,
    TRIALS,
    free_port,
    parts_of,
    write_oneshot_study,
    write_study,
)

from dashboards import (
    all_figures,
    load_table,
    make_server,
    progress,
    render_report,
    study_json,
    top_architectures,
    write_report,
)
from dashboards.analysis import (
    confirmed_architectures,
    estimate_agreement,
    pareto_front,
    scatter_groups,
)
from dashboards.figures import COLORS, FIGURE_IDS
from dashboards.page import estimates_text
from search.store import records
from search.store.uncertainty import wilson_interval

EVIL = "<script>alert(1)</script>"


def _traces(figure: dict) -> dict[str, dict]:
    """A figure's traces by name, without the count suffix: ``complete (5)`` -> ``complete``."""
    return {re.sub(r" \(\d+\)$", "", t.get("name", "")): t for t in figure["data"]}


def _decode(array: object) -> list:
    """A plotly JSON array, plain or as ``{"dtype", "bdata"}`` (plotly's typed-array encoding)."""
    if isinstance(array, dict):
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        shape = [int(n) for n in str(array.get("shape", len(values))).split(",")]
        return values.reshape(shape).tolist()
    return list(array)


def _check_figures(figures: dict[str, dict], latency: bool = False,
                   macs_budget: bool = True) -> None:
    """The known study's content, read back from the figures' JSON as a browser gets it.

    ``latency``: the study of ``write_study(latency=True)``, which also gets the latency
    scatter; ``macs_budget``: whether the study has a MACs budget to draw.
    """
    expected_ids = [key for key in FIGURE_IDS if latency or key != "latency"]
    assert list(figures) == expected_ids
    if latency:
        _check_latency_figure(figures["latency"])
    traces = _traces(figures["pareto"])
    names = [t["name"] for t in figures["pareto"]["data"]]
    rejected_macs = [75e6, 120e6, 150e6] if latency else [120e6, 150e6]
    assert names == [f"complete ({GROUP_COUNTS['searched']})",
                     f"early-stopped ({GROUP_COUNTS['early_stopped']})",
                     f"uniform baseline ({GROUP_COUNTS['baselines']})",
                     f"Pareto front ({len(FRONT)})",
                     f"rejected: over budget ({len(rejected_macs)})"]
    assert traces["uniform baseline"]["text"] == BASELINE_LABELS
    front = traces["Pareto front"]
    assert [int(row[0]) for row in _decode(front["customdata"])] == FRONT
    assert front["line"]["shape"] == "hv"
    assert _decode(front["x"]) == [30e6, 40e6, 50e6, 80e6]
    assert "latency" not in front["hovertemplate"]  # the MACs scatter is as it always was
    rejected = traces["rejected: over budget"]
    assert sorted(_decode(rejected["x"])) == rejected_macs
    assert rejected["yaxis"] == "y2"  # the rug strip under the scatter, not an accuracy
    assert figures["pareto"]["layout"]["xaxis2"]["title"]["text"] == "paper MACs per image"
    shapes = figures["pareto"]["layout"].get("shapes", [])
    if macs_budget:
        budget_lines = [s for s in shapes if s["x0"] == BUDGET]
        assert budget_lines and all(s["x1"] == BUDGET for s in budget_lines)
    else:
        assert shapes == [] and not figures["pareto"]["layout"].get("annotations")
    heat = figures["parts"]["data"][0]
    assert heat["type"] == "heatmap"
    assert [label.split(" ")[0] for label in heat["y"]] == [f"#{n}" for n in FRONT]
    assert _decode(heat["text"]) == [[str(p) for p in parts_of(n)] for n in FRONT]
    best = [t for t in figures["progress"]["data"] if t.get("name") == "best so far"]
    assert _decode(best[0]["x"]) == list(BEST_SO_FAR)
    assert _decode(best[0]["y"]) == list(BEST_SO_FAR.values())
    assert len(_decode(best[1]["y"])) == len(BEST_SO_FAR)  # against wall time


def _check_latency_figure(figure: dict, budget: float | None = LATENCY_BUDGET,
                          axis: str = "predicted latency (ms) · cpu, batch 1") -> None:
    """The latency scatter of ``write_study(latency=True)``: the same groups at their
    latencies, the front on latency, the latency budget line, the spec in the axis title."""
    traces = _traces(figure)
    assert [t["name"] for t in figure["data"]] == [
        f"complete ({GROUP_COUNTS['searched']})",
        f"early-stopped ({GROUP_COUNTS['early_stopped']})",
        f"uniform baseline ({GROUP_COUNTS['baselines']})", f"Pareto front ({len(LATENCY_FRONT)})",
        "rejected: over budget (3)"]
    for name, trace in traces.items():  # every point sits at its own trial's latency
        numbers = [int(row[0]) for row in _decode(trace["customdata"])]
        assert _decode(trace["x"]) == [LATENCY_MS[n] for n in numbers], name
        assert [row[2] for row in _decode(trace["customdata"])] == \
            [TRIALS[n][1] * 1e6 if n < len(TRIALS) else 75e6 for n in numbers], name
        if name != "rejected: over budget":
            assert _decode(trace["y"]) == [TRIALS[n][2] for n in numbers], name
    assert sorted(int(r[0]) for r in _decode(traces["complete"]["customdata"])) == [3, 4, 5, 12,
                                                                                   13]
    assert [int(r[0]) for r in _decode(traces["early-stopped"]["customdata"])] == [8]
    assert traces["uniform baseline"]["text"] == BASELINE_LABELS
    front = traces["Pareto front"]
    assert [int(row[0]) for row in _decode(front["customdata"])] == LATENCY_FRONT
    assert _decode(front["x"]) == [3.0, 3.5, 4.0, 6.0] and front["line"]["shape"] == "hv"
    assert "latency %{x" in front["hovertemplate"]
    rejected = traces["rejected: over budget"]
    assert sorted(_decode(rejected["x"])) == [12.0, 14.0, 16.0] and rejected["yaxis"] == "y2"
    layout = figure["layout"]
    assert layout["title"]["text"] == "Accuracy against predicted latency"
    assert layout["xaxis2"]["title"]["text"] == axis
    shapes = layout.get("shapes", [])
    if budget is None:
        assert shapes == [] and not layout.get("annotations")
    else:
        assert shapes and all(s["x0"] == s["x1"] == budget for s in shapes)
        assert [a["text"] for a in layout["annotations"]] == [f"budget {budget:.1f} ms"]


def _latency_cells(page: str) -> dict[int, str]:
    """The top table's latency column by trial number (the cell after the params)."""
    rows = re.findall(r"<tr><td>\d+</td><td>(\d+)</td>(?:<td[^>]*>[^<]*</td>){6}<td>([^<]*)</td>",
                      page)
    return {int(number): cell for number, cell in rows}


def _embedded_figures(page: str) -> dict[str, dict]:
    blocks = re.findall(r'<script type="application/json" class="figure-data" '
                        r'data-target="([a-z]+)">(.*?)</script>', page, re.S)
    return {key: json.loads(text) for key, text in blocks}


def test_figures_show_groups_front_baselines_and_progress(storage_url: str,
                                                          study_name: str) -> None:
    write_study(storage_url, study_name)
    table = load_table(storage_url, study_name)
    assert table.counts == STATUS_COUNTS
    _check_figures({key: json.loads(fig.to_json()) for key, fig in all_figures(table).items()})
    assert "latency" not in json.loads(study_json(table))["figures"]
    run = progress(table)
    assert np.all(np.diff(run.times.astype("int64")) >= 0)
    assert run.best_by_time[-1] == pytest.approx(0.91)


def test_report_is_one_offline_file_with_figures_and_table(storage_url: str, study_name: str,
                                                           tmp_path: Path) -> None:
    write_study(storage_url, study_name, objective="pareto")
    out = tmp_path / "report.html"
    table = write_report(storage_url, study_name, out)
    page = out.read_text(encoding="utf-8")
    _check_figures(_embedded_figures(page))
    # Self-contained: plotly.js inlined, nothing to fetch, and a policy that forbids fetching.
    assert "<script src" not in page and "<link" not in page
    assert "Plotly.newPlot" in page and "default-src 'none'" in page
    # The table: in rank order, the baselines among the searched, with the front marked.
    rows = top_architectures(table)
    assert [r.number for r in rows] == [5, 12, 0, 3, 4, 1, 2, 13]
    assert [r.rank for r in rows] == list(range(1, 9))
    assert [r.kind for r in rows if r.kind != "searched"] == \
        ["uniform P2", "uniform P4", "uniform P8"]
    # A limit keeps the best searched ones and every baseline, each at its own rank.
    assert [(r.rank, r.number) for r in top_architectures(table, 2)] == \
        [(1, 5), (2, 12), (3, 0), (6, 1), (7, 2)]
    assert {r.number for r in rows if r.on_front} == set(FRONT)
    cells = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td><td class=kind>([^<]*)</td>", page)
    assert [(int(rank), int(n), kind) for rank, n, kind in cells] == \
        [(r.rank, r.number, r.kind) for r in rows]
    assert "8 complete, 2 rejected, 1 early-stopped, 1 failed, 1 running, 1 queued" in page
    # Without latencies: no latency column, fact or note.
    assert "<th>params</th><th>front</th>" in page and "latency (ms)" not in page
    assert "<b>latency" not in page and "predicted latency" not in page


@pytest.mark.parametrize("macs_budget", [True, False])
def test_latency_axis_is_drawn_when_trials_have_latencies(storage_url: str, study_name: str,
                                                          macs_budget: bool) -> None:
    """A study with a latency table: the latency scatter in the report and the live JSON, and
    a latency column; with only a latency budget (no MACs budget) everything still renders."""
    write_study(storage_url, study_name, "pareto-latency", latency=True, macs_budget=macs_budget)
    table = load_table(storage_url, study_name)
    assert table.counts == LATENCY_STATUS_COUNTS
    page = render_report(table)
    _check_figures(_embedded_figures(page), latency=True, macs_budget=macs_budget)
    assert "<th>params</th><th>latency (ms)</th><th>front</th>" in page
    rows = top_architectures(table)
    assert [r.number for r in rows] == [5, 12, 0, 3, 4, 1, 2, 13]
    assert [r.latency_ms for r in rows] == [LATENCY_MS[r.number] for r in rows]
    assert _latency_cells(page) == {r.number: f"{LATENCY_MS[r.number]:.2f}" for r in rows}
    assert "<span><b>latency budget</b> 10.0 ms</span>" in page
    assert "<span><b>latency on</b> device cpu, batch 1, dtype float32" in page
    assert ("<span><b>budget</b> 100M paper MACs</span>" in page) == macs_budget
    if not macs_budget:
        assert all(r.budget_share is None for r in rows)
    live = json.loads(study_json(table))
    assert live["latency"] is True
    _check_figures(live["figures"], latency=True, macs_budget=macs_budget)
    assert [row["latency_ms"] for row in live["top"]] == [LATENCY_MS[r.number] for r in rows]
    assert ["latency budget", "10.0 ms"] in live["facts"]


def test_latency_axis_without_budget_or_spec(tmp_path: Path, study_name: str) -> None:
    """Latencies but no latency budget and no spec: the scatter, with no budget line and a
    plain axis title."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name, latency=True, attrs={records.STUDY_LATENCY_BUDGET: None,
                                                         records.STUDY_LATENCY_SPEC: None})
    page = render_report(load_table(storage, study_name))
    figures = _embedded_figures(page)
    _check_latency_figure(figures["latency"], budget=None, axis="predicted latency (ms)")
    assert "latency budget" not in page and "<b>latency on" not in page


def test_stored_text_is_escaped_in_the_report(tmp_path: Path, study_name: str) -> None:
    storage = f"sqlite:///{tmp_path / 'evil.db'}"
    name = f"{study_name}{EVIL}"
    write_study(storage, name, latency=True, attrs={
        records.STUDY_BACKBONE: EVIL, records.STUDY_DATASET: '"><img src=x onerror=alert(2)>',
        records.STUDY_LATENCY_SPEC: {"device": EVIL, "batch": EVIL}})
    page = render_report(load_table(storage, name))
    assert EVIL not in page and "<img src=x" not in page
    assert html.escape(EVIL) in page  # shown as text: title, heading, facts
    figures = _embedded_figures(page)
    assert "latency" in figures
    for figure in figures.values():  # figures carry no stored text at all
        assert "alert" not in json.dumps(figure)
    assert figures["latency"]["layout"]["xaxis2"]["title"]["text"] == "predicted latency (ms)"


def test_report_of_a_study_made_by_a_real_search(tiny_search: tuple[str, str],
                                                 tmp_path: Path) -> None:
    storage, name = tiny_search
    table = write_report(storage, name, tmp_path / "report.html")
    ranked = records.ranked(table.records)
    figures = _embedded_figures((tmp_path / "report.html").read_text(encoding="utf-8"))
    traces = _traces(figures["pareto"])
    complete = [r for r in table.records if r.status == records.COMPLETE]
    shown = len(_decode(traces["complete"]["x"])) + len(_decode(traces["uniform baseline"]["x"]))
    assert shown == len(complete) >= 4  # at least the 4 trials asked for: more baselines fit
    assert traces["uniform baseline"]["text"] == [f"P{r.baseline_part}" for r in table.records
                                                  if r.baseline_part]
    assert ranked[0].number in [int(row[0]) for row in _decode(traces["Pareto front"]
                                                               ["customdata"])]
    assert table.metric_names == ["accuracy"]


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory: pytest.TempPathFactory, local_ray) -> tuple[str, str]:
    """A real search: resnet20 on 8×8 digits, 4 trials of 1 epoch (about half a minute)."""
    from search.driver import run_search
    from search.engine.settings import SearchSettings
    from space import Architecture

    folder = tmp_path_factory.mktemp("search")
    storage = f"sqlite:///{folder / 'search.db'}"
    settings = SearchSettings(budget=Architecture.uniform("resnet20", 2, 8).macs,
                              backbone="resnet20", input_size=8, trials=0, epochs=1,
                              sampler="random", storage=storage, study="tiny",
                              artifacts_dir=str(folder / "artifacts"), max_concurrent=2)
    with open(folder / "search.log", "w") as quiet:
        run_search(settings, out=quiet)
    return storage, "tiny"


# ---------------------------------------------------------------- the live server


@pytest.fixture
def live(storage_url: str, study_name: str) -> Iterator[tuple[str, optuna.Study]]:
    """The live server on a free loopback port, in a thread, serving the known study."""
    study = write_study(storage_url, study_name)
    server = make_server(storage_url, study_name, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url, study
    server.shutdown()
    server.server_close()


def _get(url: str, host: str | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def test_live_server_lists_studies_and_serves_figures_that_follow_new_trials(live) -> None:
    url, study = live
    status, body, headers = _get(url)
    assert status == 200 and "Content-Security-Policy" in headers
    assert b'src="/static/plotly.min.js"' in body and b"https://" not in body
    status, body, _ = _get(url + "static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and b"plotly.js" in body[:200]
    listing = json.loads(_get(url + "api/studies")[1])
    assert listing["default"] == study.study_name
    assert study.study_name in [s["name"] for s in listing["studies"]]
    first = json.loads(_get(url + "api/study?name=" + urllib.request.quote(study.study_name))[1])
    assert first["trials"] == sum(STATUS_COUNTS.values())
    _check_figures(first["figures"])
    assert first["latency"] is False
    # A trial finishes: the version changes and the figures include it.
    trial = optuna.create_trial(value=0.95, user_attrs={
        records.STATUS: records.COMPLETE, records.PARTS: [1] * 6, records.PAPER_MACS: 99_000_000,
        records.VAL_ACCURACY: 0.95, records.PARAMS: 1}, constraints={records.BUDGET_CONSTRAINT: -1})
    study.add_trial(trial)
    second = json.loads(_get(url + "api/study")[1])
    assert second["version"] != first["version"]
    assert _traces(second["figures"]["pareto"])["Pareto front"]["name"] == "Pareto front (5)"
    assert second["top"][0]["number"] == 14


def test_live_server_refuses_unknown_studies_and_foreign_hosts(live) -> None:
    url, _ = live
    status, body, _ = _get(url + "api/study?name=nope")
    assert status == 404 and "no study named 'nope'" in json.loads(body)["error"]
    assert _get(url + "api/studies", host="attacker.example:80")[0] == 403
    assert _get(url + "nothing-here")[0] == 404


def test_live_server_binds_ipv6_loopback(storage_url: str, study_name: str) -> None:
    write_study(storage_url, study_name)
    server = make_server(storage_url, study_name, "::1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.url.startswith("http://[::1]:")
        assert _get(server.url + "api/studies")[0] == 200  # Host: [::1]:port
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- command lines and errors


def _cli(module: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_report_command_writes_the_file(tmp_path: Path, study_name: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name)
    result = _cli("dashboards.report", "--storage", storage, "--study", study_name,
                  "--out", "r.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"study {study_name}: 14 trials -> r.html"
    assert (tmp_path / "r.html").stat().st_size > 1_000_000


@pytest.fixture(scope="module")
def broken_storages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "notes.txt").write_text("not a database\n" * 100)
    empty = f"sqlite:///{folder / 'empty.db'}"
    optuna.create_study(storage=empty, study_name="empty")
    write_study(empty, "full")
    return {"text": f"sqlite:///{folder / 'notes.txt'}", "missing": f"sqlite:///{folder / 'x.db'}",
            "studies": empty}


CASES = {
    "empty study": ("studies", ["--study", "empty"], "study 'empty' has no trials yet"),
    "unknown study": ("studies", ["--study", "nope"], "no study named 'nope'"),
    "text file": ("text", [], "file is not a database"),
    "missing file": ("missing", [], "no such database file"),
}


@pytest.mark.parametrize("module", ["dashboards.report", "dashboards.serve", "dashboards.browse"])
def test_commands_reject_bad_input_in_one_line(module: str, broken_storages: dict[str, str],
                                               tmp_path: Path) -> None:
    """Each case gives exit status 2 and one line naming the problem; nothing is written.

    The servers get a port that is already taken: they must find the bad input before binding.
    """
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = [] if module == "dashboards.report" else ["--port", str(busy.getsockname()[1])]
        runs = {case: subprocess.Popen(
            [sys.executable, "-m", module, "--storage", broken_storages[storage], *args, *port],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for case, (storage, args, _) in CASES.items()}
        for case, process in runs.items():
            _, err = process.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert process.returncode == 2, (case, err[-2000:])
            assert len(lines) == 1 and CASES[case][2] in lines[0], (case, err)
            assert lines[0].startswith(f"python -m {module}: error: ")
    assert list(tmp_path.iterdir()) == []
    assert not Path(broken_storages["missing"].removeprefix("sqlite:///")).exists()


EXPOSED = "makes the page reachable from other machines"
LISTEN_CASES = {
    "every interface": (["--host", "0.0.0.0"], f"--host 0.0.0.0 {EXPOSED}: add --allowed-hosts "
                                              f"with the names it is reached by"),
    "empty host": (["--host", ""], f"--host '' {EXPOSED}"),
    "ipv6 wildcard": (["--host", "::"], f"--host :: {EXPOSED}"),
    "an interface": (["--host", "192.0.2.7"], f"--host 192.0.2.7 {EXPOSED}"),
    "a port in the list": (["--host", "0.0.0.0", "--allowed-hosts", "dash.example:8050"],
                           "argument --allowed-hosts: 'dash.example:8050' is not a host name"),
    "an empty name": (["--host", "0.0.0.0", "--allowed-hosts", "a,,b"],
                      "argument --allowed-hosts: '' is not a host name"),
    "not ascii": (["--allowed-hosts", "dásh.example"], "'dásh.example' is not a host name"),
}


@pytest.mark.parametrize("module", ["dashboards.serve", "dashboards.browse"])
def test_exposed_bind_without_allowed_hosts_is_refused(module: str, tmp_path: Path) -> None:
    """A bind beyond loopback needs --allowed-hosts: one line, exit status 2, found before the
    storage is opened (a missing file, not reported and not made) or the port is bound (a busy
    one, not reported)."""
    storage = f"sqlite:///{tmp_path / 'missing.db'}"
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        runs = {case: subprocess.Popen(
            [sys.executable, "-m", module, "--storage", storage, "--port", port, *args],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for case, (args, _) in LISTEN_CASES.items()}
        for case, process in runs.items():
            out, err = process.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert process.returncode == 2, (case, err[-2000:])
            assert len(lines) == 1 and LISTEN_CASES[case][1] in lines[0], (case, err)
            assert lines[0].startswith(f"python -m {module}: error: ") and out == ""
    assert list(tmp_path.iterdir()) == []


def _raw_status(port: int, head: bytes) -> int:
    """The status a server on loopback ``port`` answers to ``head`` (request line and headers,
    sent as they are)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head + b"Connection: close\r\n\r\n")
        answer = connection.makefile("rb").readline()
    return int(answer.split()[1])


def _start(argv: list[str], port: int) -> subprocess.Popen:
    """A dashboard command, once its server accepts connections on ``port``."""
    process = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{argv[0]} did not start: {process.communicate()}")
            time.sleep(0.2)


GOOD_HOSTS = [b"dash.example", b"DASH.Example:8050", b"192.0.2.7", b"localhost:1", b"[::1]:1"]
FOREIGN_HOSTS = [b"attacker.example", b"dash.example.attacker.example", b"10.0.0.1:80"]
MALFORMED_HOSTS = [b"[::1", b"a:b:c]", b":99999", "dásh.example".encode(), b"",
                   b"localhost@attacker.example", b"[localhost]", b"dash.example:port"]


@pytest.mark.parametrize(("module", "path"), [("dashboards.serve", b"/api/studies"),
                                              ("dashboards.browse", b"/api/meta")])
def test_exposed_servers_answer_allowed_hosts_only(module: str, path: bytes, tmp_path: Path,
                                                   study_name: str) -> None:
    """Bound to every interface with --allowed-hosts: a warning line on stderr; the listed
    names and loopback are answered, other names get 403, malformed Host headers (and none)
    400, and the server keeps serving without printing a traceback."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name)
    port = free_port()
    process = _start([module, "--storage", storage, "--host", "0.0.0.0", "--port", str(port),
                      "--allowed-hosts", "dash.example, 192.0.2.7"], port)
    try:
        statuses = {host: _raw_status(port, b"GET " + path + b" HTTP/1.1\r\nHost: " + host +
                                      b"\r\n")
                    for host in GOOD_HOSTS + FOREIGN_HOSTS + MALFORMED_HOSTS}
        statuses[b"(none)"] = _raw_status(port, b"GET " + path + b" HTTP/1.1\r\n")
        statuses[b"bad target"] = _raw_status(port, b"GET //[ HTTP/1.1\r\nHost: localhost\r\n")
        assert _raw_status(port, b"GET " + path + b" HTTP/1.1\r\nHost: dash.example\r\n") == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert statuses == {**dict.fromkeys(GOOD_HOSTS, 200), **dict.fromkeys(FOREIGN_HOSTS, 403),
                        **dict.fromkeys(MALFORMED_HOSTS, 400), b"(none)": 400,
                        b"bad target": 404}
    warning = err.splitlines()[0]
    assert warning == (f"python -m {module}: warning: --host 0.0.0.0 {EXPOSED}, with no "
                       f"authentication; it answers Host 127.0.0.1, 192.0.2.7, ::1, "
                       f"dash.example, localhost only")
    assert "Traceback" not in err and "Error" not in err, err[-3000:]
    if module == "dashboards.serve":
        assert err.splitlines() == [warning]


def _request(url: str, method: str = "GET", body: bytes | None = None,
             timeout: float = 30) -> tuple[int, bytes]:
    """Status and body of one request, error statuses included."""
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_browse_is_read_only_unless_writes_are_allowed(tmp_path: Path, study_name: str) -> None:
    """optuna-dashboard's API renames and deletes studies with no login: by default browse
    answers such requests 405 and the study stays; --allow-writes lets them through."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name)
    for allow_writes in (False, True):
        port = free_port()
        process = _start(["dashboards.browse", "--storage", storage, "--port", str(port),
                          *(["--allow-writes"] if allow_writes else [])], port)
        url = f"http://127.0.0.1:{port}"
        try:
            status, listing = _request(f"{url}/api/studies")
            assert status == 200
            study_id = next(s["study_id"] for s in json.loads(listing)["study_summaries"]
                            if s["study_name"] == study_name)
            rename = _request(f"{url}/api/studies/{study_id}/rename", "POST",
                              json.dumps({"study_name": "renamed"}).encode())
            if rename[0] == 201:  # optuna-dashboard renames by copying to a new study
                study_id = json.loads(rename[1])["study_id"]
            delete = _request(f"{url}/api/studies/{study_id}", "DELETE")
        finally:
            process.terminate()
            out, err = process.communicate(timeout=60)
        if allow_writes:
            assert (rename[0], delete[0]) == (201, 204), (rename, delete)
            assert optuna.get_all_study_names(storage) == []
        else:
            assert rename == delete == (405, b"this dashboard is read-only; start it with "
                                             b"--allow-writes to change studies")
            assert optuna.get_all_study_names(storage) == [study_name]
            assert "(read-only)" in out
        assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("module", ["dashboards.serve", "dashboards.browse"])
def test_an_idle_connection_blocks_no_other_request(module: str, tmp_path: Path,
                                                    study_name: str) -> None:
    """A client that connects and sends nothing (a browser's spare connection) must not hold
    the server: other requests are answered meanwhile."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name)
    port = free_port()
    process = _start([module, "--storage", storage, "--port", str(port)], port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing more
            started = time.monotonic()
            status, _ = _request(f"http://127.0.0.1:{port}/", timeout=20)
            assert status == 200 and time.monotonic() - started < 20
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_serve_says_once_when_its_storage_is_lost_and_when_it_is_back(
        fresh_postgres_url: str, study_name: str) -> None:
    """The database stops taking connections under a running live page: one line on stderr,
    503s with a one-line error for the page meanwhile, one line when it is back, no
    traceback; the page is served again."""
    write_study(fresh_postgres_url, study_name)
    database = sqlalchemy.engine.make_url(fresh_postgres_url).database
    admin = sqlalchemy.create_engine(fresh_postgres_url.rsplit("/", 1)[0] + "/postgres",
                                      isolation_level="AUTOCOMMIT")

    def accept_connections(allow: bool) -> None:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}'))
            if not allow:
                connection.execute(sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{database}'"))

    port = free_port()
    process = _start(["dashboards.serve", "--storage", fresh_postgres_url, "--port",
                      str(port)], port)
    study = f"http://127.0.0.1:{port}/api/study?name={study_name}"
    try:
        assert _request(study)[0] == 200
        accept_connections(False)
        lost = [_request(study) for _ in range(3)]
        accept_connections(True)
        back = _request(study)
    finally:
        accept_connections(True)
        admin.dispose()
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert [status for status, _ in lost] == [503] * 3
    error = json.loads(lost[0][1])["error"]
    assert error.startswith("the storage cannot be read (") and "\n" not in error
    assert back[0] == 200 and json.loads(back[1])["name"] == study_name
    lines = err.splitlines()
    assert len(lines) == 2, err[-3000:]
    assert lines[0].startswith("python -m dashboards.serve: the storage cannot be read (")
    assert lines[1] == "python -m dashboards.serve: the storage can be read again"


def test_dashboards_never_import_training_code() -> None:
    code = ("import sys, dashboards, dashboards.report, dashboards.serve, dashboards.browse; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_intervals_and_confirmed_runs_are_shown_apart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'confirmed.db'}"
    study = write_study(storage, "confirmed", attrs={records.STUDY_VAL_IMAGES: 143,
                                                     records.STUDY_TEST_IMAGES: 359})
    # Trial 5 (searched, 0.91) and trial 0 (uniform P2, 0.90) each get one more seed.
    for number, accuracy in ((5, 0.89), (0, 0.86)):
        attrs = {**study.trials[number].user_attrs, records.REPLICATE: 1,
                 records.VAL_ACCURACY: accuracy, records.TEST_ACCURACY: accuracy - 0.02}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE,
                                                  values=[accuracy], user_attrs=attrs))
    table = load_table(storage, "confirmed")
    rows = top_architectures(table)
    assert 5 in {r.number for r in rows}
    assert not {t.number for t in study.trials[-2:]} & {r.number for r in rows}  # single runs
    best = next(r for r in rows if r.number == 5)
    assert best.accuracy_interval == pytest.approx(wilson_interval(0.91, 143))
    assert best.test_interval == pytest.approx(wilson_interval(0.90, 359))
    confirmed = confirmed_architectures(table)
    assert [(r.number, r.runs, r.kind) for r in confirmed] == [(5, 2, "searched"),
                                                               (0, 2, "uniform P2")]
    assert confirmed[0].accuracy_mean == pytest.approx(0.90)
    assert confirmed[0].accuracy_sd == pytest.approx(0.0141421, abs=1e-6)  # sd of 0.91, 0.89
    # The scatter, the front and the progress show the search's own runs only.
    assert not {14, 15} & set(progress(table).numbers.tolist())
    assert not {14, 15} & set(table.number[pareto_front(table)].tolist())
    groups = scatter_groups(table)
    shown = np.concatenate([groups.searched, groups.baselines, groups.early_stopped])
    assert not {14, 15} & set(table.number[shown].tolist())
    page = render_report(table)
    assert "Confirmed over seeds" in page and "2 (trials 5, 14)" in page
    assert "91.00%<br><small>[85.2, 94.7]</small>" in page  # Wilson at 143 images, by hand
    payload = json.loads(study_json(table))
    assert [row["trials"] for row in payload["confirmed"]] == [[5, 14], [0, 15]]


# ---------------------------------------------------------------- one-shot studies


def _estimate_cells(page: str, confirmed: bool = False) -> dict[int, str]:
    """The supernet-estimate column by trial number: the cell after the accuracy in the top
    table, after the mean ± sd in the confirmed table."""
    if confirmed:
        rows = re.findall(r"<tr><td>(\d+)</td><td class=kind>[^<]*</td><td>\d+ \(trials[^<]*"
                          r"</td><td>[^<]*</td><td>([^<]*)</td>", page)
    else:
        rows = re.findall(r"<tr><td>\d+</td><td>(\d+)</td><td class=kind>[^<]*</td>"
                          r"<td>[^<]*</td><td>([^<]*)</td>", page)
    return {int(number): cell for number, cell in rows}


def test_supernet_estimates_are_drawn_apart_and_never_a_result(storage_url: str,
                                                               study_name: str) -> None:
    """A one-shot study: its estimates (better and cheaper than every trained trial) are a
    trace of their own, and never on the front, in the progress or in the top rows; the
    trained architectures show their estimate beside their accuracy, and τ below."""
    study = write_oneshot_study(storage_url, study_name, "pareto")
    # Trial 5 gets a second seed (0.93): its mean, 0.92, still ranks it first. As in a search,
    # the confirmation run carries no estimate of its own.
    attrs = {**study.trials[5].user_attrs, records.REPLICATE: 1, records.VAL_ACCURACY: 0.93}
    del attrs[records.ESTIMATED_ACCURACY]
    study.add_trial(optuna.trial.create_trial(values=[0.93, 80e6], user_attrs=attrs))
    estimates = list(range(len(TRIALS), len(TRIALS) + len(ESTIMATES)))
    table = load_table(storage_url, study_name)
    assert table.oneshot
    assert table.counts == {**STATUS_COUNTS, records.COMPLETE: 9,
                            records.ESTIMATED: len(ESTIMATES)}
    assert table.number[table.estimate].tolist() == estimates
    known = ~np.isnan(table.estimated_accuracy)
    assert dict(zip(table.number[known].tolist(), table.estimated_accuracy[known].tolist(),
                    strict=True)) == ESTIMATED_ACCURACY
    page = render_report(table)
    live = json.loads(study_json(table))
    for figures in (_embedded_figures(page), live["figures"]):
        data = figures["pareto"]["data"]
        assert data[0]["name"] == f"supernet estimate ({len(ESTIMATES)})"  # beneath the rest
        shown = data[0]
        assert [int(row[0]) for row in _decode(shown["customdata"])] == estimates
        assert _decode(shown["y"]) == [value for _, value in ESTIMATES]
        assert _decode(shown["x"]) == [macs * 1e6 for macs, _ in ESTIMATES]
        assert "supernet estimate" in shown["hovertemplate"]
        others = data[1:]
        assert shown["marker"]["symbol"] not in {t["marker"].get("symbol", "circle")
                                                 for t in others}
        assert shown["marker"]["color"] == COLORS["estimate"] not in {t["marker"]["color"]
                                                                      for t in others}
        # Everything else, the front, the parts of the front and the progress included, is
        # exactly the standard study's.
        _check_figures({**figures, "pareto": {**figures["pareto"], "data": others}})
    rows = top_architectures(table)
    assert [r.number for r in rows] == [5, 12, 0, 3, 4, 1, 2, 13]
    assert {r.number: r.estimated_accuracy for r in rows
            if r.estimated_accuracy is not None} == ESTIMATED_ACCURACY
    assert [row["number"] for row in live["top"]] == [r.number for r in rows]
    assert [row["estimated_accuracy"] for row in live["top"]] == \
        [r.estimated_accuracy for r in rows]
    # The report: an estimate column beside the accuracy, in both tables.
    assert "<th>accuracy</th><th>supernet estimate</th><th>test</th>" in page
    assert _estimate_cells(page) == {r.number: f"{ESTIMATED_ACCURACY[r.number]:.2%}"
                                     if r.number in ESTIMATED_ACCURACY else "–" for r in rows}
    assert "</th><th>supernet estimate</th><th>test, mean ± sd</th>" in page
    assert _estimate_cells(page, confirmed=True) == {5: "55.00%"}
    assert [(row["number"], row["estimated_accuracy"]) for row in live["confirmed"]] == \
        [(5, 0.55)]
    # τ over trials 0, 1, 3 and 5 (5 at its mean over seeds), as scipy computes it.
    trained = {0: 0.90, 1: 0.85, 3: 0.88, 5: 0.92}
    expected = stats.kendalltau([ESTIMATED_ACCURACY[n] for n in trained],
                                list(trained.values())).statistic
    assert expected == pytest.approx(ONESHOT_TAU)
    found = estimate_agreement(table)
    assert found is not None and found.architectures == 4
    assert found.tau == pytest.approx(expected)
    note = estimates_text(table)
    assert note is not None and f"Kendall tau {ONESHOT_TAU:+.2f} " in note
    assert "over 4 architectures" in note and f"{len(ESTIMATES)} candidates" in note
    assert f"<h2>Supernet estimates</h2>\n<p>{html.escape(note)}</p>" in page
    assert live["oneshot"] is True and live["estimates"] == note
    assert "<span><b>strategy</b> one-shot</span>" in page
    assert "<span><b>supernet</b> 3 epochs, largest network 71.25%</span>" in page
    assert f"9 complete, {len(ESTIMATES)} estimated, 2 rejected" in page


def test_tau_waits_for_two_estimated_architectures(tmp_path: Path, study_name: str) -> None:
    """One trained architecture with an estimate: its estimate shows, τ does not (yet)."""
    storage = f"sqlite:///{tmp_path / 'oneshot.db'}"
    write_oneshot_study(storage, study_name, estimated={5: 0.55})
    table = load_table(storage, study_name)
    assert estimate_agreement(table) is None
    page = render_report(table)
    assert _estimate_cells(page)[5] == "55.00%"
    assert {cell for number, cell in _estimate_cells(page).items() if number != 5} == {"–"}
    assert "Kendall tau needs two trained architectures" in page
    assert "Kendall tau +" not in page and "Kendall tau -" not in page
    assert json.loads(study_json(table))["estimates"] == estimates_text(table)


def test_a_standard_study_has_no_estimate_column_or_tau(tmp_path: Path, study_name: str) -> None:
    storage = f"sqlite:///{tmp_path / 'standard.db'}"
    write_study(storage, study_name, attrs={records.STUDY_STRATEGY: "standard"})
    table = load_table(storage, study_name)
    assert not table.oneshot and not table.estimate.any()
    assert np.isnan(table.estimated_accuracy).all() and estimates_text(table) is None
    page = render_report(table)
    assert "supernet" not in page.lower()
    assert "Kendall" not in page and "<b>strategy</b>" not in page
    live = json.loads(study_json(table))
    assert live["oneshot"] is False and live["estimates"] is None
    assert all(row["estimated_accuracy"] is None for row in live["top"])


def test_serve_wait_holds_on_until_a_search_writes_its_study(tmp_path: Path,
                                                            study_name: str) -> None:
    """The cluster's live page starts before any search: with --wait it says why it waits,
    creates nothing, and serves once a study with trials exists (instead of exiting, which a
    restarting container repeats every second)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "dashboards.serve", "--storage", storage,
                              "--wait", "0.2", "--port", str(port)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = serve.stdout.readline()
        assert "waiting for a search's study" in waiting and "no such database file" in waiting
        assert not (tmp_path / "study.db").exists()
        write_study(storage, study_name)
        line = serve.stdout.readline()
        while line.startswith("waiting"):  # e.g. the study exists, its trials not yet
            line = serve.stdout.readline()
        assert f"serving study {study_name}" in line
        status, body, _ = _get(f"http://127.0.0.1:{port}/api/study?name={study_name}")
        assert status == 200 and study_name in body.decode()
    finally:
        serve.terminate()
        _, stderr = serve.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
