"""optuna-dashboard on a HetNAS study: the real server, read back through its HTTP API.

The figures are attached with ``python -m dashboards.browse --attach-only`` (the command the
README shows, minus the server it then starts), then the ``optuna-dashboard`` executable is
started on a free loopback port and asked for the study.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from test_dashboards_support import (
    FRONT,
    LATENCY_FRONT,
    LATENCY_STATUS_COUNTS,
    STATUS_COUNTS,
    free_port,
    write_study,
)

from dashboards import load_table
from dashboards.figures import all_figures
from dashboards.optuna_figures import attach_to_study, graph_ids

OPTUNA_DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


@pytest.fixture
def dashboard(storage_url: str) -> Iterator[str]:
    """optuna-dashboard serving ``storage_url`` on 127.0.0.1; yields its base URL."""
    port = free_port()
    process = subprocess.Popen([str(OPTUNA_DASHBOARD), storage_url, "--host", "127.0.0.1",
                                "--port", str(port), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/meta", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail("optuna-dashboard did not start: " + process.stdout.read())
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.load(answer)


@pytest.mark.parametrize("objective", ["pareto", "pareto-latency"])
def test_optuna_dashboard_shows_the_study_with_our_figures(storage_url: str, study_name: str,
                                                          tmp_path: Path, request,
                                                          objective: str) -> None:
    latency = objective == "pareto-latency"
    write_study(storage_url, study_name, objective=objective, latency=latency)
    trials = sum((LATENCY_STATUS_COUNTS if latency else STATUS_COUNTS).values())
    attach = subprocess.run([sys.executable, "-m", "dashboards.browse", "--storage", storage_url,
                             "--study", study_name, "--attach-only"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert attach.returncode == 0, attach.stderr
    assert f"figures added to {study_name} ({trials} trials)" in attach.stdout
    url = request.getfixturevalue("dashboard")
    studies = _get_json(url + "/api/studies")["study_summaries"]
    ours = [s for s in studies if s["study_name"] == study_name]
    assert len(ours) == 1
    detail = _get_json(f"{url}/api/studies/{ours[0]['study_id']}")
    assert detail["name"] == study_name
    assert detail["objective_names"] == ["accuracy", "latency_ms" if latency else "MACs"]
    assert detail["directions"] == ["maximize", "minimize"]
    assert len(detail["trials"]) == trials
    # optuna-dashboard's own front honours the budget constraints, as ours does.
    assert sorted(t["number"] for t in detail["best_trials"]) == \
        sorted(LATENCY_FRONT if latency else FRONT)
    figures = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    expected = ["hetnas-pareto", "hetnas-parts", "hetnas-progress"] + \
        (["hetnas-latency"] if latency else [])
    assert sorted(figures) == sorted(expected)
    assert sorted(graph_ids(load_table(storage_url, study_name))) == sorted(expected)
    pareto = figures["hetnas-pareto"]
    names = [trace["name"] for trace in pareto["data"]]
    assert f"Pareto front ({len(FRONT)})" in names and "uniform baseline (3)" in names
    assert figures["hetnas-parts"]["data"][0]["type"] == "heatmap"
    if latency:
        names = [trace["name"] for trace in figures["hetnas-latency"]["data"]]
        assert f"Pareto front ({len(LATENCY_FRONT)})" in names
        assert "rejected: over budget (3)" in names
        shapes = figures["hetnas-latency"]["layout"]["shapes"]
        assert shapes and all(shape["x0"] == 10.0 for shape in shapes)


@pytest.mark.parametrize("objective", ["pareto", "pareto-latency"])
def test_attaching_names_the_objectives_a_study_lacks(tmp_path: Path, study_name: str,
                                                     objective: str) -> None:
    """A study whose values have no names gets accuracy and MACs, or accuracy and latency
    for a Pareto search on latency."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name, objective, latency=True)
    bare = optuna.create_study(storage=storage, study_name=study_name + "-bare",
                               directions=["maximize", "minimize"])
    source = optuna.load_study(study_name=study_name, storage=storage)
    for key, value in source.user_attrs.items():
        bare.set_user_attr(key, value)
    for trial in source.get_trials():
        if trial.state.is_finished():
            bare.add_trial(trial)
    assert bare.metric_names is None
    table = attach_to_study(bare)
    assert table.has_latency
    second = "latency_ms" if objective == "pareto-latency" else "MACs"
    reloaded = optuna.load_study(study_name=study_name + "-bare", storage=storage)
    assert reloaded.metric_names == ["accuracy", second]


def _hetnas_figures(url: str, study_name: str) -> dict[str, dict]:
    """The HetNAS figures optuna-dashboard serves for the study ({} while it has none)."""
    studies = _get_json(url + "/api/studies")["study_summaries"]
    ours = [s["study_id"] for s in studies if s["study_name"] == study_name]
    if not ours:
        return {}
    detail = _get_json(f"{url}/api/studies/{ours[0]}")
    return {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]
            if g["id"].startswith("hetnas-")}


def _drawn_now(storage_url: str, study_name: str) -> dict[str, dict]:
    table = load_table(storage_url, study_name)
    return {"hetnas-" + key: json.loads(figure.to_json())
            for key, figure in all_figures(table).items()}


def test_browse_refresh_waits_for_the_search_and_follows_its_trials(tmp_path: Path,
                                                                   study_name: str) -> None:
    """A cluster's optuna-dashboard starts before any search: it waits for the database,
    then draws the figures, and draws them again as trials arrive."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    port = free_port()
    browse = subprocess.Popen([sys.executable, "-m", "dashboards.browse", "--storage", storage,
                               "--refresh", "0.3", "--port", str(port)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        waiting = browse.stdout.readline()
        assert "waiting for a search's study" in waiting and "no such database file" in waiting
        assert not (tmp_path / "study.db").exists()  # waited for, never created
        source = write_study(f"sqlite:///{tmp_path / 'source.db'}", study_name)
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    directions=source.directions)
        for key, value in source.user_attrs.items():
            study.set_user_attr(key, value)
        finished = [t for t in source.get_trials() if t.state.is_finished()]
        for trial in finished[:5]:
            study.add_trial(trial)
        _until(lambda: _hetnas_figures(url, study_name) == _drawn_now(storage, study_name),
               browse)
        before = _drawn_now(storage, study_name)
        for trial in finished[5:]:
            study.add_trial(trial)
        assert _drawn_now(storage, study_name) != before
        _until(lambda: _hetnas_figures(url, study_name) == _drawn_now(storage, study_name),
               browse)
    finally:
        browse.terminate()
        _, stderr = browse.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr


def _until(served: Callable[[], bool], process: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``served()`` holds: the server serves the figures of the trials as they are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if served():
                return
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass  # not up yet, or read while the figures were being written
        time.sleep(0.3)
    raise AssertionError("the served figures never became those of the study's trials")
