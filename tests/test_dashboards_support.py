"""A known study for the dashboard tests, written through Optuna's own API with the record keys.

The other ``test_dashboards*`` modules import :func:`write_study` and the expectations below;
the tests here check that the study reads back as a search would have left it.

Trials (paper MACs in millions, validation accuracy), budget 100 M:

    0 P2 baseline 90 .90   1 P4 baseline 60 .85   2 P8 baseline 40 .78
    3 searched    50 .88   4 searched    70 .86   5 searched    80 .91
    6 rejected   120       7 rejected   150       8 early-stopped 65 .70
    9 failed     10 running 11 queued             12 searched   95 .91   13 searched 30 .60

The Pareto front (max accuracy, min MACs) is 13, 2 (P8), 3, 5: P4 loses to 3, P2 and 12 to 5.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from dashboards import load_table, pareto_front, scatter_groups
from search import records

BUDGET = 100e6
LAYERS = 6
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
FRONT = [13, 2, 3, 5]  # by MACs, cheapest first
BASELINE_LABELS = ["P2", "P4", "P8"]
GROUP_COUNTS = {"searched": 5, "baselines": 3, "early_stopped": 1, "rejected": 2}
STATUS_COUNTS = {records.COMPLETE: 8, records.REJECTED: 2, records.EARLY_STOPPED: 1,
                 records.FAILED: 1, records.RUNNING: 1, records.QUEUED: 1}
# (status, MACs in millions, accuracy, baseline part); finished ones complete at T0 + n minutes.
TRIALS = [
    (records.COMPLETE, 90, 0.90, 2), (records.COMPLETE, 60, 0.85, 4),
    (records.COMPLETE, 40, 0.78, 8), (records.COMPLETE, 50, 0.88, None),
    (records.COMPLETE, 70, 0.86, None), (records.COMPLETE, 80, 0.91, None),
    (records.REJECTED, 120, None, None), (records.REJECTED, 150, None, None),
    (records.EARLY_STOPPED, 65, 0.70, None), (records.FAILED, 55, None, None),
    (records.RUNNING, 45, None, None), (records.QUEUED, None, None, None),
    (records.COMPLETE, 95, 0.91, None), (records.COMPLETE, 30, 0.60, None),
]
# Best complete accuracy after each complete trial, in number order.
BEST_SO_FAR = {0: 0.90, 1: 0.90, 2: 0.90, 3: 0.90, 4: 0.90, 5: 0.91, 12: 0.91, 13: 0.91}


def parts_of(number: int) -> list[int]:
    """A distinct, recognisable part vector per trial (baselines uniform)."""
    status, _, _, baseline = TRIALS[number]
    if baseline:
        return [baseline] * LAYERS
    return [2 ** ((number + layer) % 4) for layer in range(LAYERS)]


def _trial(number: int, objective: str) -> optuna.trial.FrozenTrial:
    status, macs_m, accuracy, baseline = TRIALS[number]
    macs = int(macs_m * 1e6)
    over = float(macs - BUDGET)
    attrs = {records.PARTS: parts_of(number), records.PAPER_MACS: macs,
             records.EXECUTED_MACS: int(macs * 1.1), records.PARAMS: macs // 100,
             records.BUDGET_CONSTRAINT: over, records.STATUS: status}
    if baseline:
        attrs[records.BASELINE_PART] = baseline
    values = None
    state = {records.COMPLETE: TrialState.COMPLETE, records.REJECTED: TrialState.COMPLETE,
             records.EARLY_STOPPED: TrialState.PRUNED, records.FAILED: TrialState.FAIL,
             records.RUNNING: TrialState.RUNNING}[status]
    if status == records.REJECTED:
        values = [0.0] if objective == "accuracy" else [0.0, float(macs)]
        attrs[records.EPOCHS_TRAINED] = 0
    if accuracy is not None:
        attrs.update({records.VAL_ACCURACY: accuracy, records.EPOCHS_TRAINED: 2,
                      records.EPOCHS_PLANNED: 2})
    if status == records.COMPLETE:
        attrs[records.TEST_ACCURACY] = accuracy - 0.01
        values = [accuracy] if objective == "accuracy" else [accuracy, float(macs)]
    trial = optuna.create_trial(state=state, values=values, user_attrs=attrs,
                                constraints={records.BUDGET_CONSTRAINT: over})
    trial.datetime_start = T0 + datetime.timedelta(minutes=number)
    trial.datetime_complete = None if status == records.RUNNING else \
        trial.datetime_start + datetime.timedelta(seconds=50)
    return trial


def write_study(storage: str, name: str, objective: str = "accuracy",
                attrs: dict | None = None) -> optuna.Study:
    """The study described above, as a search would write it (``attrs`` overrides settings)."""
    directions = ["maximize"] if objective == "accuracy" else ["maximize", "minimize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([records.ACCURACY_METRIC, records.MACS_METRIC][:len(directions)])
    settings = {records.STUDY_BACKBONE: "resnet20", records.STUDY_DATASET: "digits",
                records.STUDY_BUDGET: BUDGET, records.STUDY_INPUT_SIZE: 8,
                records.STUDY_OBJECTIVE: objective, records.STUDY_EPOCHS: 2, **(attrs or {})}
    for key, value in settings.items():
        study.set_user_attr(key, value)
    for number, (status, *_rest) in enumerate(TRIALS):
        if status == records.QUEUED:
            study.enqueue_trial({}, user_attrs={records.PARTS: parts_of(number)})
        else:
            study.add_trial(_trial(number, objective))
    return study


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium_path() -> str:
    """Debian's chromium; skip without it, except under CI (``CI=true``), where it must exist."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required under CI (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


@pytest.mark.parametrize("objective", ["accuracy", "pareto"])
def test_the_written_study_reads_back_as_a_search_leaves_it(storage_url: str, study_name: str,
                                                            objective: str) -> None:
    write_study(storage_url, study_name, objective)
    table = load_table(storage_url, study_name)
    assert table.counts == STATUS_COUNTS
    assert table.metric_names == ["accuracy", "MACs"][:1 if objective == "accuracy" else 2]
    assert [int(table.number[i]) for i in pareto_front(table)] == FRONT
    groups = scatter_groups(table)
    assert {k: getattr(groups, k).size for k in GROUP_COUNTS} == GROUP_COUNTS
    # Optuna's own front (which honours the budget constraint) agrees with the dashboards'.
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    if objective == "pareto":
        assert {t.number for t in study.best_trials} == set(FRONT)
    else:
        assert study.best_trial.number in (5, 12)
