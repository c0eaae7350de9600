"""The driver's side of a one-shot search: train the supernet, estimate the candidates, queue
the finalists.

1. **Supernet**: one Ray Tune trial (:mod:`search.oneshot.supernet_trial`) trains the part-1
   network's supernet with its recipe (``--supernet-recipe``); the study records where its
   checkpoint is, so a resumed search never trains it again.
2. **Estimates**: the budget-screening proposer asks the study's sampler for candidates, as in
   a standard search; each is scored by the supernet (batch norm re-estimated, then validation
   accuracy) on Ray actors that received the weights once through the object store, and told
   back to Optuna as an estimate (``records.ESTIMATED``), so the sampler learns from it and the
   dashboards show it. A resumed search keeps every estimate told and scores again only those
   left running.
3. **Finalists**: the best ``--finalists`` estimates and the uniform baselines (each with its
   estimate beside it) are queued for stand-alone training; the runner trains them and the
   confirmation stage adds seeds, exactly as in a standard search. The export reads only
   stand-alone results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.exceptions
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from hetconv.errors import ConfigError
from search.engine.budgets import Budgets
from search.engine.console import SearchConsole, duration, parts_summary
from search.engine.proposer import BudgetedProposer, Proposal, SpaceExhausted
from search.engine.settings import SearchSettings
from search.engine.study import trial_counts
from search.jobs.protocol import SupernetTrialConfig, TrainingJob, TrialReport
from search.oneshot.estimates import CALIBRATION_IMAGES, SupernetEvaluator
from search.oneshot.sandwich import (
    SandwichRecipe,
    largest_only,
    recipe_for,
    supernet_architecture,
)
from search.oneshot.supernet_trial import train_data_parallel, train_supernet_trial
from search.store import records
from search.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from search.training.data import cached_dataset
from space import Architecture

_IN_FLIGHT_PER_ACTOR = 2  # estimates queued on each actor, so none waits for the driver
_PROGRESS_EVERY_S = 15.0


class SupernetFailed(RuntimeError):
    """The supernet trial failed after its retries (exit status 1, like a failed search)."""


@dataclass(frozen=True)
class SupernetRecord:
    """What the study keeps of its supernet (``records.STUDY_SUPERNET``)."""

    checkpoint: str
    epochs: int
    recipe: str  # OneShotSettings.supernet_recipe
    sandwich: int
    val_accuracy: float
    seconds: float
    workers: int

    @classmethod
    def of(cls, study: optuna.Study) -> SupernetRecord | None:
        stored = study.user_attrs.get(records.STUDY_SUPERNET)
        return cls(**stored) if stored else None


def supernet_recipe(settings: SearchSettings, budgets: Budgets) -> SandwichRecipe:
    """What the supernet trains each step, for ``--supernet-recipe``. The driver builds it once
    before the study is written too: a sandwich needs architectures within the budgets, and a
    budget that holds none is refused there, in one line."""
    if settings.oneshot.supernet_recipe == "largest":
        return largest_only()
    return recipe_for(settings.space, budgets, settings.oneshot.supernet_recipe,
                      settings.oneshot.sandwich, settings.seed)


def train_supernet_stage(settings: SearchSettings, study: optuna.Study,
                         proposer: BudgetedProposer, console: SearchConsole) -> SupernetRecord:
    """The study's trained supernet: trained now (or continued from its checkpoint) unless the
    study has one already."""
    options = settings.oneshot
    done = SupernetRecord.of(study)
    epochs = options.training_epochs(settings.epochs)
    if done is not None:
        if (done.epochs, done.recipe, done.sandwich) \
                != (epochs, options.supernet_recipe, options.sandwich):
            raise ConfigError(f"--resume: the study's supernet was trained for {done.epochs} "
                              f"epochs with --supernet-recipe {done.recipe} and --sandwich "
                              f"{done.sandwich}, not {epochs}, {options.supernet_recipe} and "
                              f"{options.sandwich}; pass the same options")
        console.print(f"supernet: trained already ({done.epochs} epochs, largest network val "
                      f"{done.val_accuracy:.2%}); {done.checkpoint}")
        return done
    space = proposer.space
    artifacts = Path(settings.artifacts_dir).resolve()
    folder = artifacts / "checkpoints" / study.study_name / "supernet"
    recipe = supernet_recipe(settings, proposer.budgets)
    config = SupernetTrialConfig(settings.training_job(epochs),
                                 supernet_architecture(space).to_json(), str(folder),
                                 recipe.pool, recipe.random_subnets, recipe.distill,
                                 recipe.calibration_images, options.supernet_workers,
                                 recipe.smallest, recipe.draw,
                                 use_gpu=settings.gpus_per_trial > 0)
    console.print(f"supernet: training the part-1 network's supernet for {epochs} epochs; each "
                  f"step trains {_step_words(options.supernet_recipe, recipe)}"
                  + (f"; data-parallel over {options.supernet_workers} Ray Train workers"
                     if options.supernet_workers > 1 else ""))
    started = time.monotonic()
    if options.supernet_workers > 1:
        report = _train_data_parallel(config, settings, artifacts)
    else:
        report = _train_in_one_trial(config, settings, study.study_name, artifacts, console,
                                     started)
    done = SupernetRecord(str(folder / CHECKPOINT_FILE), epochs, options.supernet_recipe,
                          options.sandwich, report.val_accuracy, time.monotonic() - started,
                          options.supernet_workers)
    study.set_user_attr(records.STUDY_SUPERNET, done.__dict__)
    console.print(f"supernet: trained in {duration(done.seconds)}; largest network val "
                  f"{done.val_accuracy:.2%}")
    return done


def _step_words(name: str, recipe: SandwichRecipe) -> str:
    """What one supernet step trains, for the console."""
    near = f"near the budgets (from {len(recipe.pool)} drawn)"
    return {"largest": "the largest network alone (masked sub-networks are estimated)",
            "sandwich": f"the largest network, the smallest and {recipe.random_subnets} random "
                        f"architectures {near}, distilled from the largest",
            "strata": f"the largest network and one architecture from each of "
                      f"{recipe.random_subnets} cost strata {near}, distilled from the largest",
            "fair": "the largest network and networks taking every layer's parts once each, "
                    "distilled from the largest"}[name]


def _train_in_one_trial(config: SupernetTrialConfig, settings: SearchSettings, study_name: str,
                        artifacts: Path, console: SearchConsole,
                        started: float) -> TrialReport:
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(train_supernet_trial, resources),
        param_space=config.to_config(),
        tune_config=tune.TuneConfig(num_samples=1, scheduler=FIFOScheduler()),
        run_config=tune.RunConfig(name=f"{study_name}-supernet",
                                  storage_path=str(artifacts / "ray"),
                                  failure_config=tune.FailureConfig(settings.max_failures),
                                  callbacks=[_EpochLines(console, config.job.epochs, started)],
                                  verbose=0, log_to_file=True))
    result = tuner.fit()[0]
    report = TrialReport.from_result(result.metrics)
    if result.error is not None or report is None or not report.done:
        reason = _last_line(result.error) if result.error is not None else "no final report"
        raise SupernetFailed(f"the supernet trial failed: {reason} (full log: "
                             f"{Path(result.path) / 'error.txt'})")
    return report


def _train_data_parallel(config: SupernetTrialConfig, settings: SearchSettings,
                         artifacts: Path) -> TrialReport:
    try:
        metrics = train_data_parallel(config, settings.max_failures, str(artifacts / "ray"))
    except Exception as error:  # Ray Train wraps the workers' errors in its own
        raise SupernetFailed(f"the data-parallel supernet training failed: "
                             f"{_last_line(error)} (logs under {artifacts / 'ray'})") from None
    report = TrialReport.from_result(metrics)
    if report is None or not report.done:
        raise SupernetFailed("the data-parallel supernet training ended without its final "
                             f"report (logs under {artifacts / 'ray'})")
    return report


def _last_line(error: BaseException) -> str:
    """The last line of a (Ray-wrapped) error: where its own message is."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


class _EpochLines(tune.Callback):
    """A line per supernet epoch, as a trial's epochs get."""

    def __init__(self, console: SearchConsole, epochs: int, started: float) -> None:
        self.console, self.epochs, self.started = console, epochs, started

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        report = TrialReport.from_result(result)
        if report is not None:
            self.console.print(f"  supernet epoch {report.epoch}/{self.epochs}: largest "
                               f"network val {report.val_accuracy:6.2%}   "
                               f"[{duration(time.monotonic() - self.started)} elapsed]")


class _EvaluatorActor:
    """A Ray actor around :class:`SupernetEvaluator` that loads its own copy of the data."""

    def __init__(self, job: TrainingJob, arch_json: str, weights: dict[str, torch.Tensor],
                 calibration_images: int) -> None:
        arch = Architecture.from_json(arch_json)
        data = cached_dataset(job.dataset, arch.input_size, job.data_dir, job.seed,
                              job.train_images, job.input_normalization)
        self.evaluator = SupernetEvaluator(arch_json, data, weights, calibration_images,
                                           job.batch_size, job.seed, threads=job.threads)

    def estimate(self, parts: tuple[int, ...]) -> float:
        return self.evaluator.estimate(parts)


class SupernetEstimator:
    """Ray actors holding the trained supernet, started on first use and killed on exit; they
    received its weights once, through the object store."""

    def __init__(self, settings: SearchSettings, proposer: BudgetedProposer,
                 supernet: SupernetRecord, slots: Callable[[], int]) -> None:
        self.settings, self.supernet, self.slots = settings, supernet, slots
        self.arch_json = supernet_architecture(proposer.space).to_json()
        self._actors: list[Any] = []

    def __enter__(self) -> SupernetEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        for actor in self._actors:
            ray.kill(actor)

    def actors(self) -> list[Any]:
        if not self._actors:
            weights = ray.put(read_checkpoint(self.supernet.checkpoint)["model"])
            actor_class = ray.remote(_EvaluatorActor).options(
                num_cpus=self.settings.cpus_per_trial, num_gpus=self.settings.gpus_per_trial)
            job = self.settings.training_job(self.supernet.epochs)
            self._actors = [actor_class.remote(job, self.arch_json, weights,
                                               CALIBRATION_IMAGES)
                            for _ in range(max(1, self.slots()))]
        return self._actors

    def submit(self, index: int, parts: tuple[int, ...]) -> ray.ObjectRef:
        actors = self.actors()
        return actors[index % len(actors)].estimate.remote(parts)

    def estimate(self, parts: tuple[int, ...]) -> float:
        """One architecture's estimate, waited for (the baselines')."""
        try:
            return float(ray.get(self.submit(0, parts)))
        except ray.exceptions.RayError as error:
            raise SupernetFailed(f"estimating {parts_summary(parts)} failed: "
                                 f"{_last_line(error)}") from None


def estimate_stage(settings: SearchSettings, study: optuna.Study, proposer: BudgetedProposer,
                   estimator: SupernetEstimator, console: SearchConsole) -> None:
    """Estimate candidates until the study has ``--candidates`` estimates (and none queued).

    Estimates are proposed by ``study.ask()``, which hands out queued trials first, so the
    stage runs only before the finalists and baselines are queued: once they are, a resumed
    search with more ``--candidates`` is refused rather than scoring them as estimates.
    """
    counts = trial_counts(study)
    left = max(settings.oneshot.candidates - counts.estimates, counts.queued_estimates)
    if left <= 0:
        return
    chosen = [t.number for t in study.get_trials(deepcopy=False)
              if records.FINALIST_OF in t.user_attrs or records.BASELINE_PART in t.user_attrs]
    if chosen:
        raise ConfigError(f"--resume: this study's estimates ended at {counts.estimates} "
                          f"candidates and its finalists were chosen; pass --candidates "
                          f"{counts.estimates}")
    console.print(f"estimates: scoring {left} candidates with the supernet on "
                  f"{len(estimator.actors())} Ray workers"
                  + (f" ({counts.estimates} scored already)" if counts.estimates else ""))
    _estimate_candidates(proposer, estimator, left, counts.estimates, console)


def _estimate_candidates(proposer: BudgetedProposer, estimator: SupernetEstimator, left: int,
                         done_before: int, console: SearchConsole) -> None:
    started = last_line = time.monotonic()
    in_flight = _IN_FLIGHT_PER_ACTOR * len(estimator.actors())
    pending: dict[ray.ObjectRef, Proposal] = {}
    submitted = finished = 0
    best: tuple[float, int, tuple[int, ...]] | None = None
    try:
        while finished < left:
            while submitted < left and len(pending) < in_flight:
                try:
                    proposal = proposer.propose(estimate=True)
                except SpaceExhausted as exhausted:
                    console.print(f"  estimates: stopping at {done_before + submitted}: "
                                  f"{exhausted}")
                    left = submitted
                    break
                pending[estimator.submit(submitted, proposal.architecture.parts)] = proposal
                submitted += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            accuracy = float(ray.get(ready[0]))
            proposal = pending.pop(ready[0])
            proposer.complete_estimate(proposal, accuracy)
            finished += 1
            if best is None or accuracy > best[0]:
                best = (accuracy, proposal.number, proposal.architecture.parts)
            now = time.monotonic()
            if now - last_line >= _PROGRESS_EVERY_S or finished == left:
                last_line = now
                console.print(f"  estimates: {done_before + finished}/{done_before + left} in "
                              f"{duration(now - started)}, {proposer.rejected} proposals "
                              f"rejected over the budgets, best estimate {best[0]:.2%} (trial "
                              f"{best[1]}: {parts_summary(best[2])})")
    except ray.exceptions.RayError as error:
        for proposal in pending.values():  # told failed, so a resume scores them again
            proposer.fail(proposal)
        raise SupernetFailed(f"estimating a candidate failed: {_last_line(error)}") from None


def enqueue_finalists(study: optuna.Study, proposer: BudgetedProposer, finalists: int) -> int:
    """Queue the best ``finalists`` estimated architectures for stand-alone training, those
    not trained, running or queued already (a failed one is queued again); returns how many
    were queued now."""
    trials = study.get_trials(deepcopy=False)
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    present = {tuple(t.user_attrs.get(records.PARTS) or ()) for t in trials
               if records.FINALIST_OF in t.user_attrs and t.state in alive}
    estimates = [records.to_record(t) for t in trials
                 if t.user_attrs.get(records.STATUS) == records.ESTIMATED]
    # Ties go to more MACs: of two networks the supernet cannot tell apart, the costlier one
    # holds more of its taps and, stand-alone, is the better bet within the budget.
    estimates.sort(key=lambda r: (-(r.accuracy or 0.0), -(r.paper_macs or 0), r.number))
    chosen: dict[tuple[int, ...], records.TrialRecord] = {}
    for record in estimates:
        if len(chosen) == finalists:
            break
        chosen.setdefault(record.parts, record)
    missing = [record for parts, record in chosen.items() if parts not in present]
    for record in missing:
        proposer.enqueue_finalist(record.parts, record.number, record.accuracy or 0.0)
    return len(missing)
