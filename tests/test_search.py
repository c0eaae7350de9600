"""The search end to end: real Ray, real Optuna storage (SQLite and PostgreSQL), real training.

Small settings keep it fast: ResNet-20 on the bundled digits at their native 8×8 size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hetconv.errors import ConfigError
from search.driver import SearchFailed, SearchOutcome, run_search
from search.engine.best import export_best
from search.engine.settings import SearchSettings
from search.engine.study import create_study, load_for_resume
from search.store import objectives, records
from search.store.storage import open_storage
from search.training.data import load_dataset
from search.training.trainer import evaluate
from space import Architecture

BACKBONE, INPUT_SIZE = "resnet20", 8
# Uniform P4: random proposals (mean 1/P about 0.39) mostly land over it, so some get rejected.
BUDGET = Architecture.uniform(BACKBONE, 4, INPUT_SIZE, 10, 1).macs  # digits: 1 channel


def tiny_settings(storage: str, study: str, artifacts: Path, **overrides) -> SearchSettings:
    # Five uniform baselines fit under uniform P4 (P4 ... P64); --trials counts the rest.
    options = dict(budget=BUDGET, backbone=BACKBONE, input_size=INPUT_SIZE, trials=2, epochs=2,
                   batch_size=64, sampler="random", storage=storage, study=study,
                   artifacts_dir=str(artifacts), max_concurrent=2, seed=3, confirm_top=0)
    options.update(overrides)
    return SearchSettings(**options)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def searched(request, tmp_path_factory, local_ray) -> tuple[SearchOutcome, SearchSettings]:
    """One real search per storage backend, shared by the assertions below."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    if request.param == "sqlite":
        storage = f"sqlite:///{artifacts / 'study.db'}"
    else:
        storage = request.getfixturevalue("postgres_url")
    settings = tiny_settings(storage, f"search-{request.param}-{uuid.uuid4().hex[:8]}", artifacts)
    out = io.StringIO()
    outcome = run_search(settings, out=out)
    OUTPUT[outcome.study_name] = out.getvalue()
    return outcome, settings


OUTPUT: dict[str, str] = {}  # what each shared search printed, by study name


def _study(outcome: SearchOutcome) -> optuna.Study:
    return optuna.load_study(study_name=outcome.study_name, storage=outcome.storage)


def test_over_budget_proposals_are_brought_within_the_budget_before_training(searched) -> None:
    outcome, settings = searched
    study = _study(outcome)
    trained = [r for r in outcome.records if r.status == records.COMPLETE]
    assert outcome.rejected == 0 and not [r for r in outcome.records
                                          if r.status == records.REJECTED]
    # --trials counts searched architectures; the uniform baselines come on top.
    assert len([r for r in trained if not r.baseline_part]) == settings.trials
    assert len([r for r in trained if r.baseline_part]) == len(outcome.baselines) == 5
    for record in trained:
        assert record.paper_macs <= settings.budget
        assert Path(record.checkpoint).exists()
    # Random suggestions at uniform P4's budget are mostly over it: what was changed says so.
    by_number = {t.number: t for t in study.get_trials()}
    projected = [by_number[r.number] for r in trained
                 if records.REQUESTED_PARTS in by_number[r.number].user_attrs]
    assert projected
    for trial in projected:
        requested = trial.user_attrs[records.REQUESTED_PARTS]
        assert Architecture(BACKBONE, tuple(requested), INPUT_SIZE, 10, 1).macs > settings.budget
    # Ray launched exactly the trained trials: one checkpoint folder each.
    folders = list((Path(settings.artifacts_dir) / "checkpoints" / outcome.study_name).iterdir())
    assert len(folders) == len(trained)
    # Optuna sees the budget as a constraint, met by every trained architecture.
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.constraints[records.BUDGET_CONSTRAINT] <= 0


def test_uniform_baselines_are_trained_first(searched) -> None:
    outcome, settings = searched
    space = settings.space
    expected = sorted({space.uniform_parts(p) for p in space.uniform_choices()
                       if Architecture(BACKBONE, space.uniform_parts(p), INPUT_SIZE, 10, 1).macs
                       <= settings.budget})
    first = [r for r in outcome.records if r.status != records.REJECTED][:len(expected)]
    assert sorted(r.parts for r in first) == expected
    assert all(r.baseline_part is not None for r in first)
    assert len(outcome.baselines) == len(expected)


def test_every_trial_and_the_study_carry_their_attributes(searched) -> None:
    outcome, settings = searched
    study = _study(outcome)
    assert study.user_attrs[records.STUDY_BACKBONE] == BACKBONE
    assert study.user_attrs[records.STUDY_DATASET] == "digits"
    assert study.user_attrs[records.STUDY_BUDGET] == pytest.approx(settings.budget)
    assert study.user_attrs[records.STUDY_INPUT_SIZE] == INPUT_SIZE
    assert set(study.user_attrs[records.STUDY_VERSIONS]) == {"torch", "optuna", "ray"}
    assert study.metric_names == [objectives.ACCURACY_METRIC]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        arch = Architecture.from_json(attrs[records.ARCHITECTURE])
        assert tuple(attrs[records.PARTS]) == arch.parts
        assert attrs[records.PAPER_MACS] == arch.macs
        assert attrs[records.EXECUTED_MACS] == arch.executed_macs
        assert attrs[records.PARAMS] == arch.params
        assert attrs[records.BUDGET_CONSTRAINT] == arch.macs - settings.budget
        if attrs[records.STATUS] == records.COMPLETE:
            assert attrs[records.EPOCHS_TRAINED] == settings.epochs
            assert attrs[records.WALL_SECONDS] > 0
            assert 0.0 <= trial.value <= 1.0
            assert sorted(trial.intermediate_values) == list(range(1, settings.epochs + 1))


def test_trials_run_in_parallel(searched) -> None:
    outcome, _ = searched
    spans = sorted((t.datetime_start, t.datetime_complete) for t in _study(outcome).get_trials()
                   if t.user_attrs.get(records.STATUS) == records.COMPLETE)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_export_round_trip_rebuilds_the_trained_network(searched, tmp_path) -> None:
    outcome, settings = searched
    out, weights = tmp_path / "best.json", tmp_path / "best.pt"
    best = export_best(outcome.storage, outcome.study_name, out, weights)
    assert best == records.ranked(outcome.records)[0]
    document = json.loads(out.read_text())
    assert document["result"]["trial"] == best.number
    assert document["result"]["paper_macs"] == best.paper_macs
    # The verdict the console printed is the one the file stores and search.check shows.
    stated = document["result"]["verdict"]
    assert stated and stated in OUTPUT[outcome.study_name]
    from search import check

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert check.main([str(out)]) == 0
    assert f"verdict      {stated}" in shown.getvalue()
    arch = Architecture.from_json(out.read_text())
    assert arch.parts == best.parts
    model = arch.build()
    model.load_state_dict(torch.load(weights, weights_only=True))
    data = load_dataset("digits", INPUT_SIZE, seed=settings.seed)
    accuracy = evaluate(model.eval(), data.test_x, data.test_y)
    assert accuracy == pytest.approx(best.test_accuracy, abs=1e-6)


def test_asha_stopped_trials_never_count_as_best(local_ray, tmp_path) -> None:
    settings = tiny_settings(f"sqlite:///{tmp_path / 'asha.db'}", "asha", tmp_path,
                             scheduler="asha", epochs=3, trials=1, max_concurrent=1)
    outcome = run_search(settings)
    stopped = [r for r in outcome.records if r.status == records.EARLY_STOPPED]
    assert stopped, "ASHA stopped no trial; the test needs at least one"
    study = _study(outcome)
    for record in stopped:
        assert record.epochs_trained < settings.epochs
        assert study.trials[record.number].state == TrialState.PRUNED
    ranked = records.ranked(outcome.records)
    assert ranked and all(r.epochs_trained == settings.epochs for r in ranked)
    # Optuna's own best (constraints honoured, pruned trials left out) is HetNAS's best.
    assert study.best_trial.value == ranked[0].accuracy


def test_pareto_objective_with_nsga2(local_ray, tmp_path) -> None:
    settings = tiny_settings(f"sqlite:///{tmp_path / 'pareto.db'}", "pareto", tmp_path,
                             objective="pareto", sampler="nsga2", epochs=1, trials=1)
    outcome = run_search(settings)
    study = _study(outcome)
    assert study.metric_names == [objectives.ACCURACY_METRIC, objectives.MACS_METRIC]
    complete = {r.number: r for r in outcome.records if r.status == records.COMPLETE}
    assert len(complete) == settings.trials + len(outcome.baselines)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        if trial.number in complete:
            assert trial.values == [complete[trial.number].accuracy,
                                    complete[trial.number].paper_macs]
    front = study.best_trials  # Optuna's own front honours the budget constraint
    assert front and all(t.number in complete for t in front)


@pytest.mark.parametrize("sampler", [optuna.samplers.NSGAIISampler, optuna.samplers.TPESampler,
                                     optuna.samplers.RandomSampler])
def test_the_searcher_never_hands_ray_its_locks_or_connections(sampler, tmp_path) -> None:
    """Ray pickles the Tuner's configuration, searcher included; Optuna 5.1's NSGA-II sampler
    holds a lock and the storage a connection pool: neither may reach the pickle."""
    from ray import cloudpickle

    from search.engine.budgets import Budgets
    from search.engine.proposer import BudgetedProposer
    from search.engine.searcher import BudgetedOptunaSearcher, NotRestorable
    from space import SearchSpace

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", sampler=sampler())
    proposer = BudgetedProposer(study, SearchSpace(BACKBONE, INPUT_SIZE, 10, 1),
                                Budgets(macs=BUDGET))
    job = tiny_settings("sqlite:///x.db", "z", tmp_path).training_job()
    pickled = cloudpickle.dumps(BudgetedOptunaSearcher(proposer, job, str(tmp_path)))
    assert b"s.db" not in pickled  # nothing of the study or its storage went along
    with pytest.raises(NotRestorable, match="--resume"):
        cloudpickle.loads(pickled)


def test_failed_trials_are_named_in_one_line_with_their_log(local_ray, tmp_path) -> None:
    def _failing_trainable(config: dict) -> None:  # nested: Ray ships it by value
        raise RuntimeError(f"trial {config['trial_number']} ran out of memory")

    settings = tiny_settings(f"sqlite:///{tmp_path / 'fail.db'}", "fail", tmp_path, trials=1,
                             epochs=1, max_failures=0)
    with pytest.raises(SearchFailed) as info:
        run_search(settings, trainable=_failing_trainable)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"every trial failed; the first: RuntimeError: trial \d+ ran out of memory "
                     r"\(full log: .*error\.txt\)", message), message
    log = Path(re.search(r"full log: (.*error\.txt)\)", message).group(1))
    assert "ran out of memory" in log.read_text()


def test_progress_is_printed_per_epoch_line_by_line(searched) -> None:
    outcome, settings = searched
    text = OUTPUT[outcome.study_name]
    assert "\r" not in text and "\x1b" not in text  # plain lines: a log file reads as a terminal
    assert text.splitlines()[0] == "loading digits and starting Ray ..."
    assert (f"will train 5 uniform baselines first (all: P4 P8 P16 P32 P64), then "
            f"{settings.trials} searched architectures") in text
    trained = [r for r in outcome.records if r.status == records.COMPLETE]
    for record in trained:
        for epoch in range(1, settings.epochs + 1):
            assert f"epoch {epoch}/{settings.epochs} of trial {record.number}: val" in text
    assert re.search(r"\d+/\d+ trials, \d+:\d\d elapsed, ~\d+:\d\d left", text)
    assert re.search(rf"finished in \d+:\d\d: {len(trained)} trained \(5 uniform baselines, "
                     rf"{settings.trials} searched, 0 confirmation runs\), "
                     rf"{outcome.rejected} proposals rejected", text)
    assert f"export:  {sys.executable} -m search.export --storage" in text
    # One run each and no seed repeated in the study: the verdict says it cannot decide.
    assert re.search(r"the best searched architecture \(trial \d+, one run, the one that picked "
                     r"it\) vs the best uniform baseline at or below its cost by validation "
                     r"\(uniform P\d+, trial \d+\): [+-]\d+\.\d\d points on the test split; one "
                     r"run each cannot separate the architecture from its training seed", text)


def test_confirmation_runs_more_seeds_and_export_uses_their_mean(local_ray, tmp_path) -> None:
    settings = tiny_settings(f"sqlite:///{tmp_path / 'confirm.db'}", "confirm", tmp_path,
                             trials=1, epochs=1, baselines="near", confirm_top=1,
                             confirm_seeds=2)
    outcome = run_search(settings)
    complete = [r for r in outcome.records if r.status == records.COMPLETE]
    originals = [r for r in complete if not r.replicate]
    reruns = [r for r in complete if r.replicate]
    assert len([r for r in originals if not r.baseline_part]) == settings.trials
    best_searched = next(r for r in records.ranked(outcome.records) if not r.baseline_part)
    # The best searched architecture and the baselines nearest it in cost got one more seed.
    assert best_searched.parts in {r.parts for r in reruns}
    assert {r.baseline_part for r in reruns} - {None} <= set(outcome.baselines)
    assert all(r.replicate == 1 for r in reruns) and len(reruns) >= 2
    trials = _study(outcome).trials
    for rerun in reruns:
        (original,) = [r for r in originals if r.parts == rerun.parts]
        assert trials[rerun.number].user_attrs[records.SEED] \
            != trials[original.number].user_attrs[records.SEED]
    # The export ranks by the mean over seeds and says so.
    out = tmp_path / "best.json"
    shipped = export_best(outcome.storage, outcome.study_name, out, tmp_path / "best.pt")
    group = records.runs_by_architecture(outcome.records)[0]
    assert group.confirmed and shipped.parts == group.first.parts
    result = json.loads(out.read_text())["result"]
    assert result["confirmed"]["runs"] == 2
    assert result["confirmed"]["trials"] == [r.number for r in group.runs]
    assert result["confirmed"]["accuracy_mean"] == pytest.approx(
        sum(group.val_accuracies) / 2)
    low, high = result["test_accuracy_interval"]
    assert low <= result["test_accuracy"] <= high
    # Resuming a finished study trains nothing more: the confirmation runs are found, not redone.
    again = run_search(dataclasses.replace(settings, resume=True))
    assert len(again.records) == len(outcome.records)


def test_resume_refuses_settings_that_make_trials_incomparable(tmp_path) -> None:
    settings = tiny_settings(f"sqlite:///{tmp_path / 'r.db'}", "r", tmp_path)
    data = load_dataset("digits", INPUT_SIZE, seed=settings.seed)
    storage = open_storage(settings.storage)
    create_study(storage, "r", settings, data)
    for change, message in ((dict(epochs=3), "--epochs 2, not 3; .* pass --epochs 2"),
                            (dict(batch_size=32), "--batch-size 64, not 32"),
                            (dict(sampler="tpe"), "--sampler random, not tpe")):
        with pytest.raises(ConfigError, match=message):
            load_for_resume(storage, "r", dataclasses.replace(settings, **change), data)
    assert load_for_resume(storage, "r", settings, data).study_name == "r"


def test_trials_zero_trains_the_baselines_alone_but_not_nothing(tmp_path) -> None:
    tiny_settings("sqlite:///x.db", "z", tmp_path, trials=0).validate()
    with pytest.raises(ConfigError, match="--trials 0 with --baselines none trains nothing"):
        tiny_settings("sqlite:///x.db", "z", tmp_path, trials=0, baselines="none").validate()
    # Resumed, the same options train what the study has queued.
    tiny_settings("sqlite:///x.db", "z", tmp_path, trials=0, baselines="none",
                  resume=True).validate()


def _record_trial(study: optuna.Study, parts: tuple[int, ...], accuracy: float,
                  **attrs: object) -> None:
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[accuracy],
        user_attrs={records.STATUS: records.COMPLETE, records.PARTS: list(parts),
                    records.VAL_ACCURACY: accuracy, records.TEST_ACCURACY: accuracy,
                    records.PAPER_MACS: 100, **attrs}))


def test_export_choice_survives_re_proposals_and_ranks_by_confirmation_runs() -> None:
    from search.engine.best import _best_in

    study = optuna.create_study()
    a, b = (1, 2, 4), (4, 4, 4)
    _record_trial(study, a, 0.90)
    _record_trial(study, a, 0.93)  # the sampler proposed A again: same seed, no second opinion
    assert _best_in(study).first.number == 0 and not _best_in(study).confirmed
    _record_trial(study, b, 0.91, **{records.BASELINE_PART: 4})
    _record_trial(study, b, 0.89, **{records.BASELINE_PART: 4, records.REPLICATE: 1})
    _record_trial(study, a, 0.85, **{records.REPLICATE: 1})
    # Both confirmed: ranked by the confirmation runs alone (0.89 against 0.85), since A's first
    # run was picked as the best of many on that validation split.
    best = _best_in(study)
    assert best.first.parts == b and [r.number for r in best.runs] == [2, 3]


def _record_diverged(study: optuna.Study, parts: tuple[int, ...], **attrs: object) -> None:
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
        records.STATUS: records.DIVERGED, records.PARTS: list(parts),
        records.DIVERGENCE: "training diverged in epoch 1", **attrs}))


def test_an_architecture_with_a_diverged_run_is_neither_confirmed_again_nor_picked() -> None:
    """A confirmation run that diverged is not queued again on resume (its seed would diverge
    again), and its architecture is not ranked on the seeds that happened not to."""
    from search.engine.best import _best_in
    from search.engine.confirmation import confirmation_plan

    study = optuna.create_study()
    a, b = (1, 2, 4), (4, 4, 4)
    _record_trial(study, a, 0.95)
    _record_trial(study, a, 0.94, **{records.REPLICATE: 1})
    _record_diverged(study, a, **{records.REPLICATE: 2})
    _record_trial(study, b, 0.90)
    read = records.read_records(study)
    assert [r.status for r in read].count(records.DIVERGED) == 1
    planned = {(run.parts, run.replicate) for run in confirmation_plan(read, top=2, seeds=3)}
    assert (a, 2) not in planned and (a, 1) not in planned
    assert _best_in(study).first.parts == b


def test_a_repeat_told_pruned_reads_as_a_repeat() -> None:
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
        records.STATUS: records.REPEATED, records.PARTS: [1, 2, 4], records.REPEAT_OF: 0}))
    assert [r.status for r in records.read_records(study)] == [records.REPEATED]


def test_a_failed_baseline_is_queued_again() -> None:
    from search.engine.budgets import Budgets
    from search.engine.proposer import BudgetedProposer
    from space import SearchSpace

    space = SearchSpace(BACKBONE, INPUT_SIZE, 10, 1)
    proposer = BudgetedProposer(optuna.create_study(), space, Budgets(macs=BUDGET))
    parts = proposer.enqueue_baselines("near")
    assert len(parts) == 2 and proposer.enqueue_baselines("near") == parts
    assert len(proposer.study.trials) == 2  # queued once, not twice
    first = proposer.study.ask()
    proposer.study.tell(first, state=TrialState.FAIL)
    proposer.enqueue_baselines("near")
    waiting = proposer.study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs[records.BASELINE_PART] for t in waiting) == sorted(parts)
