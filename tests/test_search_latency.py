"""Search under a latency budget: predicted latencies screen proposals and form an objective.

The proposer-level tests use a hand-made latency model (no measuring); the end-to-end test runs
a real, tiny latency-budgeted search (real profiling in eager mode, real Ray, real training).
"""

from __future__ import annotations

import uuid

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.driver import run_search
from search.engine.budgets import Budgets
from search.engine.proposer import BudgetedProposer
from search.engine.settings import SearchSettings
from search.profiling.profiler import latency_model
from search.store import objectives, records
from space import Architecture, LatencyModel, LatencySpec, SearchSpace

BACKBONE, INPUT_SIZE = "resnet20", 8


def _linear_latency(space: SearchSpace) -> LatencyModel:
    """A latency model in which layer l at part p costs (l + 1) / p ms: easy to reason about."""
    rows = [{p: (i + 1) / p for p in layer.allowed_parts} for i, layer in enumerate(space.layers)]
    return LatencyModel.from_rows(rows, remainder_ms=1.0, backbone=space.backbone)


def _proposer(budgets: Budgets, objective: str = "accuracy") -> BudgetedProposer:
    chosen = objectives.objective_named(objective)
    study = optuna.create_study(directions=chosen.directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    return BudgetedProposer(study, SearchSpace(BACKBONE, INPUT_SIZE), budgets, chosen)


def test_latency_budget_alone_brings_proposals_within_the_predicted_latency() -> None:
    space = SearchSpace(BACKBONE, INPUT_SIZE)
    latency = _linear_latency(space)
    budget_ms = float(latency.predict_ms(np.array(space.uniform_parts(4))))
    proposer = _proposer(Budgets(latency_ms=budget_ms, latency=latency))
    proposals = [proposer.propose() for _ in range(5)]
    assert proposer.rejected == 0
    for trial in proposer.study.get_trials(deepcopy=False):
        predicted = float(latency.predict_ms(np.array(trial.user_attrs[records.PARTS])))
        assert trial.user_attrs[records.LATENCY] == pytest.approx(predicted)
        assert trial.user_attrs[records.LATENCY_CONSTRAINT] == pytest.approx(predicted - budget_ms)
        assert records.BUDGET_CONSTRAINT not in trial.user_attrs
        assert predicted <= budget_ms
    # Random suggestions at uniform P4's latency are mostly over it, and were brought within.
    requested = [t.user_attrs[records.REQUESTED_PARTS] for t in proposer.study.trials
                 if records.REQUESTED_PARTS in t.user_attrs]
    assert requested and all(float(latency.predict_ms(np.array(r))) > budget_ms
                             for r in requested)
    assert all(p.trial.user_attrs[records.LATENCY] <= budget_ms for p in proposals)


def test_both_budgets_reject_an_architecture_over_either() -> None:
    space = SearchSpace(BACKBONE, INPUT_SIZE)
    latency = _linear_latency(space)
    macs = Architecture.uniform(BACKBONE, 2, INPUT_SIZE).macs
    budget_ms = float(latency.predict_ms(np.array(space.uniform_parts(8))))
    proposer = _proposer(Budgets(macs=macs, latency_ms=budget_ms, latency=latency))
    for _ in range(4):
        proposer.propose()
    for trial in proposer.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        over_macs = trial.user_attrs[records.BUDGET_CONSTRAINT] > 0
        over_latency = trial.user_attrs[records.LATENCY_CONSTRAINT] > 0
        assert over_macs or over_latency  # only rejections are complete at this point
    queued = proposer.enqueue_baselines()
    assert queued == [p for p in space.uniform_choices()
                      if Architecture.uniform(BACKBONE, p, INPUT_SIZE).macs <= macs
                      and latency.predict_ms(np.array(space.uniform_parts(p))) <= budget_ms]


def test_pareto_latency_objective_reports_accuracy_and_latency() -> None:
    space = SearchSpace(BACKBONE, INPUT_SIZE)
    latency = _linear_latency(space)
    proposer = _proposer(Budgets(macs=space.max_macs, latency=latency), "pareto-latency")
    proposal = proposer.propose()
    proposer.complete(proposal, 0.5, 0.4, epochs=1, planned_epochs=1, finished=True)
    trial = proposer.study.trials[proposal.number]
    assert trial.values == [0.5, pytest.approx(trial.user_attrs[records.LATENCY])]


def test_budgets_need_a_limit_and_a_model_for_latency() -> None:
    with pytest.raises(ValueError, match="MACs budget, a latency budget, or both"):
        Budgets()
    with pytest.raises(ValueError, match="latency model"):
        Budgets(latency_ms=1.0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tiny_latency_budgeted_search(local_ray, tmp_path, request, backend) -> None:
    storage = (f"sqlite:///{tmp_path / 'latency.db'}" if backend == "sqlite"
               else request.getfixturevalue("postgres_url"))
    space = SearchSpace(BACKBONE, INPUT_SIZE, 10, 1)  # the digits: one channel
    spec = LatencySpec.current("cpu", batch=1, runtime="eager")
    # Profile first (the search reuses the table) to set a budget between fastest and slowest.
    model = latency_model(storage, space, spec, report=lambda line: None)
    budget_ms = (model.min_ms + model.max_ms) / 2
    settings = SearchSettings(
        latency_budget=budget_ms, latency_runtime="eager", objective="pareto-latency",
        backbone=BACKBONE, input_size=INPUT_SIZE, trials=3, epochs=1, batch_size=64,
        sampler="random", storage=storage, study=f"latency-{uuid.uuid4().hex[:8]}",
        artifacts_dir=str(tmp_path / "artifacts"), max_concurrent=2, seed=1, confirm_top=0)
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    outcome = run_search(settings, out=Lines())
    text = "".join(lines)
    study = optuna.load_study(study_name=outcome.study_name, storage=storage)
    assert study.metric_names == [objectives.ACCURACY_METRIC, objectives.LATENCY_METRIC]
    assert study.user_attrs[records.STUDY_LATENCY_BUDGET] == budget_ms
    assert study.user_attrs[records.STUDY_BUDGET] is None
    assert LatencySpec.from_json(study.user_attrs[records.STUDY_LATENCY_SPEC]) == spec
    complete = [r for r in outcome.records if r.status == records.COMPLETE]
    assert len(complete) == settings.trials + len(outcome.baselines)  # baselines on top
    for record in outcome.records:
        if record.status in (records.COMPLETE, records.REJECTED):
            predicted = float(model.predict_ms(np.array(record.parts)))
            assert record.latency_ms == pytest.approx(predicted)
            assert (record.status == records.REJECTED) == (predicted > budget_ms)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        if trial.user_attrs[records.STATUS] == records.COMPLETE:
            assert trial.values == [trial.user_attrs[records.VAL_ACCURACY],
                                    pytest.approx(trial.user_attrs[records.LATENCY])]
    assert "latency ms" in text  # the closing table has the latency column
