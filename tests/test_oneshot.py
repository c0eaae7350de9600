"""The one-shot strategy: the sandwich recipe, batch-norm re-estimation, fine-tuning from the
supernet, data-parallel supernet training with Ray Train, and whole one-shot searches with real
Ray on SQLite and PostgreSQL, including a driver killed while it estimates.

ResNet-20 on the bundled digits at their native 8×8 size keeps it fast.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hetconv.errors import ConfigError
from hetconv.supernet import set_parts
from search.driver import run_search
from search.engine.best import export_best
from search.engine.budgets import Budgets
from search.engine.proposer import BudgetedProposer
from search.engine.settings import OneShotSettings, SearchSettings
from search.engine.study import recover_interrupted
from search.jobs.protocol import SupernetTrialConfig, TrainingJob
from search.oneshot.estimates import (
    SupernetEvaluator,
    draw_calibration,
    recalibrate_batch_norm,
)
from search.oneshot.sandwich import (
    NEAR_BUDGET,
    SandwichRecipe,
    SupernetRun,
    distillation_loss,
    largest_only,
    recipe_for,
    smallest_parts,
    supernet_architecture,
)
from search.oneshot.strategy import enqueue_finalists
from search.oneshot.supernet_trial import train_data_parallel
from search.store import records
from search.store.agreement import agreement
from search.training.checkpoint import read_checkpoint
from search.training.data import load_dataset
from search.training.start import build_supernet, supernet_start
from search.training.trainer import TrainConfig, train, trained_architecture
from space import Architecture, SearchSpace
from tests.processes import search_process

BACKBONE, SIZE = "resnet20", 8
SPACE = SearchSpace(BACKBONE, SIZE, 10, 1)
BUDGET = Architecture.uniform(BACKBONE, 4, SIZE, 10, 1).macs


@pytest.fixture(scope="module")
def digits():
    """The digits with a quarter of their training images: the recipe's tests need no more."""
    data = load_dataset("digits", SIZE, seed=0)
    return dataclasses.replace(data, train_x=data.train_x[:320], train_y=data.train_y[:320])


def _recipe(random_subnets: int = 2, draw: str = "sandwich") -> SandwichRecipe:
    return recipe_for(SPACE, Budgets(macs=BUDGET), draw, random_subnets, seed=0, pool_size=64)


class _Stop(Exception):
    pass


def _train_supernet(data, folder: Path, epochs: int, resume: bool = False,
                    stop_after: int | None = None, recipe: SandwichRecipe | None = None,
                    **options):
    """Train a supernet (the sandwich unless ``recipe``); ``stop_after`` epochs stands for a
    run killed after that epoch."""
    def on_epoch(result) -> None:
        if result.epoch == stop_after:
            raise _Stop

    factory = functools.partial(SupernetRun, recipe=recipe or _recipe(**options))
    try:
        return train(supernet_architecture(SPACE), data,
                     TrainConfig(epochs=epochs, batch_size=64), checkpoint_dir=folder,
                     resume_from=folder if resume else None, run_factory=factory,
                     on_epoch=on_epoch)
    except _Stop:
        return None


@pytest.fixture(scope="module")
def supernet(digits, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("supernet")
    _train_supernet(digits, folder, epochs=2, recipe=largest_only())
    return folder / "checkpoint.pt"


def _macs(parts: tuple[int, ...]) -> int:
    return Architecture(BACKBONE, parts, SIZE, 10, 1).macs


@pytest.mark.parametrize("part", [4, 16])
def test_the_pool_lies_within_the_budget_and_near_it(part: int) -> None:
    # At uniform P16's MACs hardly a random vector fits as drawn: the pool is projected there.
    budget = Architecture.uniform(BACKBONE, part, SIZE, 10, 1).macs
    pool = recipe_for(SPACE, Budgets(macs=budget), "strata", 2, seed=0, pool_size=64).pool
    costs = [_macs(parts) for parts in pool]
    assert len(pool) == 64 and len(set(pool)) == 64
    assert costs == sorted(costs) and max(costs) <= budget
    assert sum(c >= NEAR_BUDGET * budget for c in costs) >= 48  # most in the top quarter


def test_a_budget_just_above_the_cheapest_network_still_has_a_pool() -> None:
    # As drawn, no random vector fits here, and the sandwich used to be refused; projected,
    # the draws whose share of the budget reaches the cheapest network land within it.
    budget = 1.001 * SPACE.min_macs
    pool = recipe_for(SPACE, Budgets(macs=budget), "sandwich", 2, seed=0).pool
    assert pool and all(_macs(parts) <= budget for parts in pool)


def test_each_step_trains_the_smallest_then_random_subnets_from_the_pool(digits) -> None:
    recipe = _recipe(random_subnets=3)
    run = SupernetRun(supernet_architecture(SPACE), digits, TrainConfig(epochs=1),
                      torch.device("cpu"), recipe)
    steps = [run.step_architectures() for _ in range(20)]
    assert all(step[0] == smallest_parts(SPACE) and len(step) == 4 for step in steps)
    assert all(parts in recipe.pool for step in steps for parts in step[1:])
    assert len({parts for step in steps for parts in step[1:]}) > 10  # drawn, not fixed


def test_a_strata_step_trains_one_network_from_each_cost_stratum(digits) -> None:
    recipe = _recipe(random_subnets=4, draw="strata")
    run = SupernetRun(supernet_architecture(SPACE), digits, TrainConfig(epochs=1),
                      torch.device("cpu"), recipe)
    for _ in range(20):
        step = run.step_architectures()
        assert [recipe.pool.index(parts) // 16 for parts in step] == [0, 1, 2, 3]


def test_a_fair_step_trains_every_part_of_every_layer_once(digits) -> None:
    recipe = _recipe(draw="fair")
    run = SupernetRun(supernet_architecture(SPACE), digits, TrainConfig(epochs=1),
                      torch.device("cpu"), recipe)
    widest = max(len(layer.allowed_parts) for layer in SPACE.layers)
    steps = [run.step_architectures() for _ in range(5)]
    for step in steps:
        assert len(step) == widest
        for index, layer in enumerate(SPACE.layers):
            taken = [parts[index] for parts in step]
            assert set(taken) == set(layer.allowed_parts)
            if len(layer.allowed_parts) == widest:
                assert sorted(taken) == sorted(layer.allowed_parts)
    assert len({tuple(step) for step in steps}) == 5  # a new order every step


def test_the_default_recipe_trains_the_largest_network_alone(digits) -> None:
    run = SupernetRun(supernet_architecture(SPACE), digits, TrainConfig(epochs=1),
                      torch.device("cpu"), largest_only())
    assert run.step_architectures() == []
    assert SearchSettings().oneshot.supernet_recipe == "largest"


def test_distillation_from_a_one_hot_teacher_is_cross_entropy() -> None:
    logits = torch.randn(5, 10)
    labels = torch.tensor([1, 3, 5, 7, 9])
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(distillation_loss(logits, one_hot),
                               torch.nn.functional.cross_entropy(logits, labels))


def test_a_resumed_supernet_ends_where_the_uninterrupted_one_does(digits, tmp_path) -> None:
    whole = _train_supernet(digits, tmp_path / "whole", epochs=2)
    _train_supernet(digits, tmp_path / "split", epochs=2, stop_after=1)
    assert read_checkpoint(tmp_path / "split")["epoch"] == 1
    with pytest.raises(ConfigError, match="other training settings.*random_subnets"):
        _train_supernet(digits, tmp_path / "split", epochs=2, resume=True, random_subnets=1)
    resumed = _train_supernet(digits, tmp_path / "split", epochs=2, resume=True)
    # The same subnets, batches and losses.
    assert [(r.train_loss, r.val_accuracy) for r in resumed.history] \
        == [(r.train_loss, r.val_accuracy) for r in whole.history]
    for key, value in read_checkpoint(tmp_path / "whole")["model"].items():
        assert torch.equal(value, read_checkpoint(tmp_path / "split")["model"][key]), key


def test_batch_norm_is_re_estimated_exactly_on_the_calibration_images(digits, supernet) -> None:
    saved = read_checkpoint(supernet)
    model = build_supernet(Architecture.from_json(saved["architecture"]), digits, saved["model"])
    set_parts(model, SPACE.uniform_parts(8))
    images = draw_calibration(digits, images=128, seed=0)
    captured: list[torch.Tensor] = []
    first_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    hook = first_norm.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
    recalibrate_batch_norm(model, images, batch_size=64)
    hook.remove()
    inputs = torch.cat(captured)
    torch.testing.assert_close(first_norm.running_mean, inputs.mean(dim=(0, 2, 3)),
                               rtol=1e-4, atol=1e-5)
    assert not model.training and first_norm.momentum == 0.1  # left as it was found


def test_estimates_rank_by_architecture_and_the_largest_is_the_supernets(digits, supernet):
    saved = read_checkpoint(supernet)
    evaluator = SupernetEvaluator(saved["architecture"], digits, saved["model"], 256, 64, 0)
    largest = evaluator.estimate(SPACE.uniform_parts(1))
    assert largest > 0.25  # trained: above the 10 % of chance beyond its noise (143 images)
    assert evaluator.estimate(SPACE.uniform_parts(1)) == largest  # deterministic
    assert len({evaluator.estimate(SPACE.uniform_parts(p)) for p in (1, 4, 16, 64)}) > 1


def test_fine_tuning_starts_from_the_architecture_inside_the_supernet(digits, supernet) -> None:
    arch = Architecture(BACKBONE, SPACE.uniform_parts(4), SIZE, 10, 1)
    weights = supernet_start(arch, digits, str(supernet))
    saved = read_checkpoint(supernet)
    sup = build_supernet(Architecture.from_json(saved["architecture"]), digits, saved["model"])
    set_parts(sup, arch.parts)
    model = trained_architecture(arch, digits).build()
    model.load_state_dict(weights)
    # Same weights, same batch-norm statistics: the same function.
    torch.testing.assert_close(model.eval()(digits.val_x[:32].float() / 255),
                               sup.eval()(digits.val_x[:32].float() / 255), rtol=0, atol=1e-5)
    tuned = train(arch, digits, TrainConfig(epochs=1, batch_size=64), initial_weights=weights)
    scratch = train(arch, digits, TrainConfig(epochs=1, batch_size=64))
    assert tuned.val_accuracy != scratch.val_accuracy  # the start point changed the run


def test_data_parallel_supernet_on_two_ray_train_workers(local_ray, digits, tmp_path) -> None:
    """Two CPU workers on gloo, each on half of every batch, gradients averaged each step."""
    recipe = _recipe(random_subnets=1)
    config = SupernetTrialConfig(
        TrainingJob("digits", None, epochs=1, batch_size=64, seed=0, threads=1),
        supernet_architecture(SPACE).to_json(), str(tmp_path / "supernet"), recipe.pool, 1, True,
        256, workers=2)
    metrics = train_data_parallel(config, max_failures=0, storage_path=str(tmp_path / "ray"))
    assert metrics[records.VAL_ACCURACY] > 0.1 and metrics["done_training"]
    saved = read_checkpoint(tmp_path / "supernet")
    assert saved["epoch"] == 1
    # Each worker took half of each batch: the step count is the full batches', not doubled.
    full = load_dataset("digits", SIZE, seed=0)
    assert saved["step"] == len(full.train_y) // 64


def _oneshot(storage: str, artifacts: Path, study: str, **overrides) -> SearchSettings:
    """A tiny one-shot search; ``overrides`` may name one-shot options too."""
    oneshot = dict(supernet_epochs=1, candidates=100, finalists=2)
    for name in [name for name in overrides if name in OneShotSettings.__dataclass_fields__]:
        oneshot[name] = overrides.pop(name)
    options = dict(budget=BUDGET, backbone=BACKBONE, input_size=SIZE, strategy="oneshot",
                   oneshot=OneShotSettings(**oneshot), epochs=1, baselines="near",
                   confirm_top=1, confirm_seeds=2, batch_size=64, sampler="tpe",
                   storage=storage, study=study, artifacts_dir=str(artifacts),
                   max_concurrent=2, seed=5)
    options.update(overrides)
    return SearchSettings(**options)


@pytest.mark.parametrize(("backend", "recipe"), [("sqlite", "strata"),
                                               ("postgresql", "largest")])
def test_a_oneshot_search_end_to_end(backend, recipe, request, local_ray, tmp_path) -> None:
    storage = (f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite"
               else request.getfixturevalue("postgres_url"))
    settings = _oneshot(storage, tmp_path, f"oneshot-{backend}-{uuid.uuid4().hex[:8]}",
                        supernet_recipe=recipe)
    out = io.StringIO()
    outcome = run_search(settings, out=out)
    text = out.getvalue()
    by_status: dict[str, list[records.TrialRecord]] = {}
    for record in outcome.records:
        by_status.setdefault(record.status, []).append(record)
    estimates = by_status[records.ESTIMATED]
    assert len(estimates) == 100 and all(r.estimate for r in estimates)
    assert all(r.paper_macs is not None and r.paper_macs <= BUDGET for r in estimates)
    assert all(r.epochs_trained == 0 and r.test_accuracy is None for r in estimates)
    study = optuna.load_study(study_name=outcome.study_name, storage=storage)
    supernet = study.user_attrs[records.STUDY_SUPERNET]
    assert Path(supernet["checkpoint"]).is_file() and supernet["epochs"] == 1
    assert supernet["recipe"] == recipe
    assert ("one architecture from each of 2 cost strata" in text) == (recipe == "strata")
    assert study.user_attrs[records.STUDY_STRATEGY] == "oneshot"
    # The finalists are the two best estimates, trained stand-alone with their estimates kept.
    trained = by_status[records.COMPLETE]
    finalists = [r for r in trained if not r.baseline_part and not r.replicate]
    best_first = sorted(estimates, key=lambda r: (-(r.accuracy or 0), -(r.paper_macs or 0),
                                                  r.number))
    best_two = list(dict.fromkeys(r.parts for r in best_first))[:2]
    assert sorted(r.parts for r in finalists) == sorted(best_two)
    for record in finalists:
        estimate = next(r for r in estimates if r.parts == record.parts)
        assert record.estimated_accuracy == estimate.accuracy
        assert record.epochs_trained == 1 and record.test_accuracy is not None
    assert all(r.estimated_accuracy is not None for r in trained
               if r.baseline_part and not r.replicate)
    assert any(r.replicate for r in trained)  # the confirmation stage ran
    assert "supernet epoch 1/1" in text and "estimates: 100/100" in text
    assert "supernet estimates beside the stand-alone runs" in text
    groups = records.runs_by_architecture(outcome.records)
    found = agreement(groups)
    assert found is None or found.architectures >= 3
    # The export picks from stand-alone results, never from an estimate.
    exported = export_best(storage, outcome.study_name, tmp_path / "best.json")
    assert exported.number in {r.number for r in trained}
    # More candidates once the finalists are chosen would score them as estimates: refused.
    more = dataclasses.replace(settings, resume=True,
                               oneshot=dataclasses.replace(settings.oneshot, candidates=150))
    with pytest.raises(ConfigError, match="estimates ended at 100 candidates.*--candidates 100"):
        run_search(more, out=io.StringIO())
    assert len(study.get_trials()) == len(outcome.records)


def test_the_samplers_learn_from_the_estimates(local_ray, tmp_path) -> None:
    settings = _oneshot(f"sqlite:///{tmp_path / 's.db'}", tmp_path, "learn", candidates=30,
                        finalists=1, confirm_top=0, baselines="none")
    outcome = run_search(settings, out=io.StringIO())
    study = optuna.load_study(study_name=outcome.study_name, storage=settings.storage)
    told = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if t.user_attrs.get(records.STATUS) == records.ESTIMATED]
    assert len(told) == 30
    assert all(t.values == [t.user_attrs[records.VAL_ACCURACY]] for t in told)


def test_a_finalist_that_failed_is_queued_again_and_only_it() -> None:
    proposer = BudgetedProposer(optuna.create_study(), SPACE, Budgets(macs=BUDGET))
    for accuracy in (0.5, 0.9, 0.7, 0.8):
        proposer.complete_estimate(proposer.propose(estimate=True), accuracy)
    assert enqueue_finalists(proposer.study, proposer, 2) == 2
    assert enqueue_finalists(proposer.study, proposer, 2) == 0  # queued once, not twice
    queued = proposer.study.get_trials(states=(TrialState.WAITING,))
    best = {0.9, 0.8}
    assert {t.user_attrs[records.ESTIMATED_ACCURACY] for t in queued} == best
    failed = proposer.study.ask()
    proposer.study.tell(failed, state=TrialState.FAIL)
    assert enqueue_finalists(proposer.study, proposer, 2) == 1
    again = proposer.study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs[records.FINALIST_OF] for t in again) \
        == sorted(t.user_attrs[records.FINALIST_OF] for t in queued)
    assert enqueue_finalists(proposer.study, proposer, 3) == 1  # a third, when asked for


def test_a_finalist_left_running_by_a_killed_driver_is_queued_again_once() -> None:
    """A resume re-queues the finalist a killed driver left running; choosing finalists again
    finds it among the queued trials (it used to lack its parts there and was queued twice)."""
    proposer = BudgetedProposer(optuna.create_study(), SPACE, Budgets(macs=BUDGET))
    for accuracy in (0.5, 0.9):
        proposer.complete_estimate(proposer.propose(estimate=True), accuracy)
    assert enqueue_finalists(proposer.study, proposer, 1) == 1
    running = proposer.propose()  # the driver asked for the finalist, then was killed
    assert recover_interrupted(proposer.study) == [running.number]
    assert enqueue_finalists(proposer.study, proposer, 1) == 0
    [queued] = proposer.study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs[records.PARTS] == list(running.architecture.parts)


def _command(storage: str, artifacts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--strategy", "oneshot", "--budget",
            str(BUDGET), "--backbone", BACKBONE, "--input-size", str(SIZE), "--epochs", "1",
            "--supernet-epochs", "1", "--candidates", "150", "--finalists", "1",
            "--baselines", "none", "--confirm-top", "0", "--max-concurrent", "1",
            "--storage", storage, "--study", "killed", "--artifacts-dir", str(artifacts),
            "--seed", "1", *extra]


def _estimates(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    except KeyError:
        return []
    return [t for t in trials if t.user_attrs.get(records.ESTIMATE)
            and t.user_attrs.get(records.STATUS) not in (records.REJECTED, records.REPEATED)]


def test_resume_after_the_driver_is_killed_mid_evaluation(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    with search_process(_command(storage, tmp_path), tmp_path, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) as driver:
        deadline = time.monotonic() + 300
        while len([t for t in _estimates(storage) if t.state == TrialState.COMPLETE]) < 20:
            assert time.monotonic() < deadline, "the search never reached its estimates"
            assert driver.poll() is None, "the search ended before it could be killed"
            time.sleep(0.2)
    before = {t.number: t for t in _estimates(storage)}
    told = {n: t for n, t in before.items() if t.state == TrialState.COMPLETE}
    supernet = optuna.load_study(study_name="killed", storage=storage).user_attrs[
        records.STUDY_SUPERNET]
    checkpoint_time = os.stat(supernet["checkpoint"]).st_mtime

    resumed = subprocess.run(_command(storage, tmp_path, "--resume"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "supernet: trained already" in resumed.stdout
    assert os.stat(supernet["checkpoint"]).st_mtime == checkpoint_time  # not trained again
    after = {t.number: t for t in _estimates(storage)}
    # Every estimate told before is kept as it was; the count goes on to 150 exactly.
    for number, trial in told.items():
        assert after[number].values == trial.values
    scored = [t for t in after.values() if t.state == TrialState.COMPLETE]
    assert len(scored) == 150
    # Estimates left running failed and were scored again; none was scored twice otherwise.
    for trial in before.values():
        if trial.state == TrialState.RUNNING:
            assert after[trial.number].state == TrialState.FAIL
            assert any(t.params == trial.params and t.number > max(before) for t in scored)
    assert f"({len(told)} scored already)" in resumed.stdout
