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
from collections.abc import Iterator
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
