"""A known study for the dashboard tests, written through Optuna's own API with the record keys.

The other ``test_dashboards*`` modules import :func:`write_study` and the expectations below;
the tests here check that the study reads back as a search would have left it.

Trials (paper MACs in millions, validation accuracy), budget 100 M:

    0 P2 baseline 90 .90   1 P4 baseline 60 .85   2 P8 baseline 40 .78
    3 searched    50 .88   4 searched    70 .86   5 searched    80 .91
    6 rejected   120       7 rejected   150       8 early-stopped 65 .70
    9 failed     10 running 11 queued             12 searched   95 .91   13 searched 30 .60

The Pareto front (max accuracy, min MACs) is 13, 2 (P8), 3, 5: P4 loses to 3, P2 and 12 to 5.

With ``latency=True`` every trial but the queued one also has a predicted latency (ms), the
study a latency budget of 10 ms and a latency spec, and a 15th trial is rejected for its latency
alone (75 M MACs, within the MACs budget, 12 ms):

    0 P2 9.0   1 P4 5.0   2 P8 6.5   3 4.0   4 3.5   5 7.0   6 14.0   7 16.0   8 5.5
    9 5.2     10 4.5     12 6.0     13 3.0   14 12.0 (rejected)

The front on latency is 13, 4, 3, 12: P4 loses to 3, P8 to 12, 5 ties 12 on accuracy but is
slower, P2 is slower than 12 and less accurate.

:func:`write_oneshot_study` is the same study as a one-shot search leaves it: four supernet
estimates follow (trials 14 to 17, all within budget and better than any trained trial, so any
leak into the front or the best rows shows), and trials 0, 1, 3 and 5 carry the supernet's
estimate of their architecture (``ESTIMATED_ACCURACY``). Ranked by estimate they are 1, 0, 3, 5,
by stand-alone accuracy 1, 3, 0, 5: one discordant pair of six, Kendall τ 2/3.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import socket
import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dashboards import load_table, pareto_front, scatter_groups
from search.store import objectives, records

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
# The latency study (``latency=True``): one more trial, rejected for its latency only.
LATENCY_REJECTED = (records.REJECTED, 75, None, None)
LATENCY_MS = {0: 9.0, 1: 5.0, 2: 6.5, 3: 4.0, 4: 3.5, 5: 7.0, 6: 14.0, 7: 16.0, 8: 5.5, 9: 5.2,
              10: 4.5, 12: 6.0, 13: 3.0, 14: 12.0}
LATENCY_BUDGET = 10.0
LATENCY_SPEC = {"device": "cpu", "batch": 1, "dtype": "float32", "runtime": "compiled",
                "torch": "2.13.0+cpu"}
LATENCY_FRONT = [13, 4, 3, 12]  # by latency, fastest first
LATENCY_STATUS_COUNTS = {**STATUS_COUNTS, records.REJECTED: 3}
LATENCY_GROUP_COUNTS = {**GROUP_COUNTS, "rejected": 3}
# The one-shot study: (paper MACs in millions, estimate) of the estimates, trials 14 to 17,
# and the estimates of trained architectures, by trial.
ESTIMATES = [(30, 0.99), (45, 0.95), (85, 0.97), (99, 0.98)]
ESTIMATED_ACCURACY = {0: 0.53, 1: 0.45, 3: 0.54, 5: 0.55}
ONESHOT_TAU = 2 / 3
SUPERNET = {"checkpoint": "/runs/supernet/checkpoint.pt", "epochs": 3, "sandwich": 2,
            "val_accuracy": 0.7125, "seconds": 60.0, "workers": 1}
# Best complete accuracy after each complete trial, in number order.
BEST_SO_FAR = {0: 0.90, 1: 0.90, 2: 0.90, 3: 0.90, 4: 0.90, 5: 0.91, 12: 0.91, 13: 0.91}


def parts_of(number: int) -> list[int]:
    """A distinct, recognisable part vector per trial (baselines uniform)."""
    status, _, _, baseline = [*TRIALS, LATENCY_REJECTED][number]
    if baseline:
        return [baseline] * LAYERS
    return [2 ** ((number + layer) % 4) for layer in range(LAYERS)]


def _trial(number: int, objective: str, latency: bool, macs_budget: bool,
           estimated: dict[int, float]) -> optuna.trial.FrozenTrial:
    status, macs_m, accuracy, baseline = [*TRIALS, LATENCY_REJECTED][number]
    macs = int(macs_m * 1e6)
    attrs = {records.PARTS: parts_of(number), records.PAPER_MACS: macs,
             records.EXECUTED_MACS: int(macs * 1.1), records.PARAMS: macs // 100,
             records.STATUS: status}
    if number in estimated:
        attrs[records.ESTIMATED_ACCURACY] = estimated[number]
    constraints = {}
    if macs_budget:
        constraints[records.BUDGET_CONSTRAINT] = float(macs - BUDGET)
    if latency:
        attrs[records.LATENCY] = LATENCY_MS[number]
        constraints[records.LATENCY_CONSTRAINT] = LATENCY_MS[number] - LATENCY_BUDGET
    attrs.update(constraints)
    if baseline:
        attrs[records.BASELINE_PART] = baseline
    cost = float(LATENCY_MS[number]) if objective == "pareto-latency" else float(macs)
    values = None
    state = {records.COMPLETE: TrialState.COMPLETE, records.REJECTED: TrialState.COMPLETE,
             records.EARLY_STOPPED: TrialState.PRUNED, records.FAILED: TrialState.FAIL,
             records.RUNNING: TrialState.RUNNING}[status]
    if status == records.REJECTED:
        values = [0.0] if objective == "accuracy" else [0.0, cost]
        attrs[records.EPOCHS_TRAINED] = 0
    if accuracy is not None:
        attrs.update({records.VAL_ACCURACY: accuracy, records.EPOCHS_TRAINED: 2,
                      records.EPOCHS_PLANNED: 2})
    if status == records.COMPLETE:
        attrs[records.TEST_ACCURACY] = accuracy - 0.01
        values = [accuracy] if objective == "accuracy" else [accuracy, cost]
    trial = optuna.create_trial(state=state, values=values, user_attrs=attrs,
                                constraints=constraints)
    trial.datetime_start = T0 + datetime.timedelta(minutes=number)
    trial.datetime_complete = None if status == records.RUNNING else \
        trial.datetime_start + datetime.timedelta(seconds=50)
    return trial


def write_study(storage: str | optuna.storages.BaseStorage, name: str, objective: str = "accuracy",
                attrs: dict | None = None, latency: bool = False,
                macs_budget: bool = True, estimated: dict[int, float] | None = None
                ) -> optuna.Study:
    """The study described above, as a search would write it (``attrs`` overrides settings).

    ``objective`` is ``accuracy``, ``pareto`` (accuracy and MACs) or ``pareto-latency``
    (accuracy and latency, which needs ``latency``); ``latency`` adds the latencies, the
    latency budget and spec, and the trial rejected for latency; without ``macs_budget`` the
    study has no MACs budget (attribute None) and no trial a MACs constraint; ``estimated``
    gives trials a supernet's estimate of their architecture.
    """
    directions = ["maximize"] if objective == "accuracy" else ["maximize", "minimize"]
    second = objectives.LATENCY_METRIC if objective == "pareto-latency" else objectives.MACS_METRIC
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objectives.ACCURACY_METRIC, second][:len(directions)])
    settings = {records.STUDY_BACKBONE: "resnet20", records.STUDY_DATASET: "digits",
                records.STUDY_BUDGET: BUDGET if macs_budget else None,
                records.STUDY_INPUT_SIZE: 8, records.STUDY_OBJECTIVE: objective,
                records.STUDY_EPOCHS: 2}
    if latency:
        settings.update({records.STUDY_LATENCY_BUDGET: LATENCY_BUDGET,
                         records.STUDY_LATENCY_SPEC: LATENCY_SPEC})
    settings.update(attrs or {})
    for key, value in settings.items():
        study.set_user_attr(key, value)
    rows = [*TRIALS, LATENCY_REJECTED] if latency else TRIALS
    for number, (status, *_rest) in enumerate(rows):
        if status == records.QUEUED:
            study.enqueue_trial({}, user_attrs={records.PARTS: parts_of(number)})
        else:
            study.add_trial(_trial(number, objective, latency, macs_budget, estimated or {}))
    return study


def write_oneshot_study(storage: str, name: str, objective: str = "accuracy",
                        estimated: dict[int, float] | None = None) -> optuna.Study:
    """The study as a one-shot search leaves it (see above); ``estimated`` replaces the
    trained trials' estimates."""
    study = write_study(storage, name, objective,
                        attrs={records.STUDY_STRATEGY: "oneshot", records.STUDY_SUPERNET: SUPERNET},
                        estimated=ESTIMATED_ACCURACY if estimated is None else estimated)
    for k, (macs_m, value) in enumerate(ESTIMATES):
        macs = int(macs_m * 1e6)
        constraints = {records.BUDGET_CONSTRAINT: float(macs - BUDGET)}
        trial = optuna.create_trial(
            values=[value] if objective == "accuracy" else [value, float(macs)],
            constraints=constraints, user_attrs={
                records.PARTS: [2 ** ((k + layer) % 3) for layer in range(LAYERS)],
                records.PAPER_MACS: macs, records.EXECUTED_MACS: int(macs * 1.1),
                records.PARAMS: macs // 100, records.ESTIMATE: True,
                records.STATUS: records.ESTIMATED, records.VAL_ACCURACY: value,
                records.EPOCHS_TRAINED: 0, **constraints})
        trial.datetime_start = T0 + datetime.timedelta(minutes=len(TRIALS) + k)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=2)
        study.add_trial(trial)
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


@pytest.mark.parametrize("macs_budget", [True, False])
def test_the_latency_study_reads_back_with_its_latencies_and_front(
        storage_url: str, study_name: str, macs_budget: bool) -> None:
    write_study(storage_url, study_name, "pareto-latency", latency=True, macs_budget=macs_budget)
    table = load_table(storage_url, study_name)
    assert table.counts == LATENCY_STATUS_COUNTS
    assert table.metric_names == ["accuracy", "latency_ms"]
    assert table.has_latency
    assert table.budget == (BUDGET if macs_budget else None)
    assert table.latency_budget == LATENCY_BUDGET
    assert table.latency_spec == LATENCY_SPEC
    known = ~np.isnan(table.latency_ms)
    latencies = zip(table.number[known].tolist(), table.latency_ms[known].tolist(), strict=True)
    assert dict(latencies) == LATENCY_MS
    assert table.number[~known].tolist() == [11]  # the queued trial has none
    assert [int(table.number[i]) for i in pareto_front(table, "latency_ms")] == LATENCY_FRONT
    assert [int(table.number[i]) for i in pareto_front(table)] == FRONT  # MACs front unchanged
    groups = scatter_groups(table, "latency_ms")
    assert {k: getattr(groups, k).size for k in LATENCY_GROUP_COUNTS} == LATENCY_GROUP_COUNTS
    assert sorted(table.number[groups.rejected].tolist()) == [6, 7, 14]
    # Optuna's own front on accuracy and latency (honouring the constraints) agrees.
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    assert {t.number for t in study.best_trials} == set(LATENCY_FRONT)


def test_a_study_without_latency_has_no_latency_axis(tmp_path, study_name: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    write_study(storage, study_name)
    table = load_table(storage, study_name)
    assert not table.has_latency and np.isnan(table.latency_ms).all()
    assert table.latency_budget is None and table.latency_spec == {}
    assert table.budget == BUDGET
    # Budgets that are absent, null, junk or not positive read as "no budget"; a spec may be
    # stored as JSON text; anything else reads as unknown.
    for value in (None, 0, -5, "many", [1], float("nan")):
        odd = dataclasses.replace(table, attrs={records.STUDY_BUDGET: value,
                                                records.STUDY_LATENCY_BUDGET: value})
        assert odd.budget is None and odd.latency_budget is None, value
    assert dataclasses.replace(table, attrs={}).budget is None
    spec = dataclasses.replace(table, attrs={records.STUDY_LATENCY_SPEC: json.dumps(LATENCY_SPEC)})
    assert spec.latency_spec == LATENCY_SPEC
    for junk in ("{not json", "[1, 2]", 7):
        assert dataclasses.replace(
            table, attrs={records.STUDY_LATENCY_SPEC: junk}).latency_spec == {}, junk


def test_the_facts_name_the_input_shape_and_classes(tmp_path, study_name: str) -> None:
    from dashboards.page import facts

    storage = f"sqlite:///{tmp_path / 'facts.db'}"
    write_study(storage, study_name, attrs={records.STUDY_IN_CHANNELS: 1,
                                            records.STUDY_NUM_CLASSES: 10})
    labels = dict(facts(load_table(storage, study_name)))
    assert (labels["input"], labels["classes"]) == ("1×8×8", "10")
    write_study(storage, study_name + "-old")  # an older study: the size alone
    labels = dict(facts(load_table(storage, study_name + "-old")))
    assert labels["input"] == "8×8" and "classes" not in labels
