"""The driver-trial protocol and the objective type: what one side writes, the other reads."""

from __future__ import annotations

import pytest

from hetconv.errors import ConfigError
from search.jobs.protocol import (
    DONE,
    EPOCH,
    VAL_ACCURACY,
    TrainingJob,
    TrialConfig,
    TrialReport,
    continued_after,
)
from search.store.objectives import LATENCY_METRIC, MACS_METRIC, OBJECTIVES, objective_named

JOB = TrainingJob(dataset="digits", data_dir=None, epochs=3, batch_size=16, seed=7, threads=2)


def test_trial_config_survives_rays_plain_dict() -> None:
    config = TrialConfig(JOB, '{"backbone": "resnet20"}', 12, "/ck/trial-00012", "/ck/old.pt")
    plain = config.to_config()
    assert all(isinstance(key, str) for key in plain)
    assert plain["epochs"] == 3 and plain["trial_number"] == 12
    assert TrialConfig.from_config(plain) == config


def test_epoch_report_leaves_out_what_it_lacks_and_reads_back() -> None:
    epoch = TrialReport(2, 0.75, "node-a", train_loss=0.4)
    result = epoch.to_result()
    assert DONE not in result and "test_accuracy" not in result
    assert TrialReport.from_result(result) == epoch
    final = TrialReport(3, 0.8, "node-a", test_accuracy=0.79, train_seconds=1.5, done=True)
    assert TrialReport.from_result(final.to_result()) == final


def test_results_without_an_accuracy_are_no_report() -> None:
    assert TrialReport.from_result(None) is None
    assert TrialReport.from_result({EPOCH: 1}) is None


@pytest.mark.parametrize(("since_restore", "epoch", "expected"),
                         [(1, 3, 2), (1, 1, None), (2, 3, None), (None, 3, None)])
def test_a_restarted_attempt_that_continued_is_recognised(since_restore, epoch, expected) -> None:
    result = {EPOCH: epoch, VAL_ACCURACY: 0.5}
    if since_restore is not None:
        result["iterations_since_restore"] = since_restore
    assert continued_after(result, TrialReport.from_result(result)) == expected


def test_objectives_form_their_values_and_names() -> None:
    assert objective_named("accuracy").values(0.9, 100, None) == [0.9]
    assert objective_named("pareto").values(0.9, 100, None) == [0.9, 100.0]
    assert objective_named("pareto-latency").values(0.9, 100, 2.5) == [0.9, 2.5]
    assert objective_named("pareto").metric_names == ["accuracy", MACS_METRIC]
    assert objective_named("pareto-latency").metric_names == ["accuracy", LATENCY_METRIC]
    assert [len(o.directions) for o in OBJECTIVES.values()] == [1, 2, 2]
    with pytest.raises(ValueError, match="needs a predicted latency"):
        objective_named("pareto-latency").values(0.9, 100, None)


def test_an_unknown_objective_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="accuracy, pareto, pareto-latency.*'best'"):
        objective_named("best")
