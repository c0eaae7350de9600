"""Wire the search together: storage, Ray, the Optuna study, the searcher and the trainable."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna
import torch
from ray import tune
from ray.tune import ResultGrid
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from search.cluster import check_local_resources, connect_ray, trial_slots, wait_for_room
from search.engine.budgets import Budgets
from search.engine.confirmation import confirmation_plan
from search.engine.console import SearchConsole, duration, say
from search.engine.proposer import BudgetedProposer
from search.engine.searcher import BudgetedOptunaSearcher
from search.engine.settings import SearchSettings, check_study_name
from search.engine.study import (
    RESUME,
    START_WITHOUT_RESUME,
    TrialCounts,
    create_study,
    default_study_name,
    load_for_resume,
    recover_interrupted,
    startup_trials,
    trial_counts,
)
from search.jobs.protocol import EPOCH, VAL_ACCURACY, TrialReport
from search.jobs.trial import train_trial
from search.oneshot.strategy import (
    SupernetEstimator,
    SupernetRecord,
    enqueue_finalists,
    estimate_stage,
    supernet_recipe,
    train_supernet_stage,
)
from search.profiling.profiler import latency_model
from search.store import records
from search.store.database import STORAGE_ERRORS, display_url, storage_reason
from search.store.lease import DriverLease
from search.store.objectives import objective_named
from search.store.records import TrialRecord
from search.store.storage import open_storage
from search.store.studies import find_study
from search.training.data import DataSplits, load_dataset
from search.training.normalization import describe_normalization
from search.training.start import dense_accuracy
from space import Architecture
from space.networks import check_trains_and_deploys, is_factory


class SearchFailed(RuntimeError):
    """The search ran but produced no result (not a user-input error: exit status 1)."""


def storage_failed(error: BaseException) -> SearchFailed:
    """The one line for a storage that failed mid-search (a full disk, a database gone)."""
    return SearchFailed(f"the study's storage failed mid-search ({storage_reason(error)}); "
                        f"free the space or bring the database back, then continue with "
                        f"--resume (it queues again the trials left unrecorded)")


@dataclass(frozen=True)
class SearchOutcome:
    """What a finished (or already complete) search left in the study."""

    study_name: str
    storage: str
    records: list[TrialRecord]
    rejected: int
    baselines: list[int]
    recovered: list[int]


def _max_concurrent(settings: SearchSettings, console: SearchConsole) -> int:
    """``--max-concurrent``, or as many trials as the cluster holds once workers have joined."""
    if settings.max_concurrent:
        return settings.max_concurrent
    wait_for_room(settings.cpus_per_trial, settings.gpus_per_trial, console.print)
    return trial_slots(settings.cpus_per_trial, settings.gpus_per_trial)


def _scheduler(settings: SearchSettings) -> TrialScheduler:
    if settings.scheduler == "asha":
        return ASHAScheduler(time_attr=EPOCH, max_t=settings.epochs, grace_period=1,
                             reduction_factor=2)
    return FIFOScheduler()


def _study_name(storage: optuna.storages.BaseStorage, settings: SearchSettings) -> str:
    if not settings.resume:
        return settings.study or default_study_name(settings)
    name = settings.study or find_study(storage, None, RESUME, START_WITHOUT_RESUME)
    check_study_name(name, "--resume: the latest study,")
    return name


def _open_study(storage: optuna.storages.BaseStorage, settings: SearchSettings,
                data: DataSplits, name: str) -> tuple[optuna.Study, list[int]]:
    if settings.resume:
        study = load_for_resume(storage, name, settings, data)
        return study, recover_interrupted(study)
    return create_study(storage, name, settings, data), []


OWN_NETWORK_BATCH = 8  # images in the own-network check's step: any batch above one shows a
# forward written for one image, and the step runs on the driver's CPU, before any trial


def _check_own_network(settings: SearchSettings) -> None:
    """A user's network must train and deploy as its trials and the export will (a network of
    the search's own kind, parts 2 where its layers take them), before anything is written."""
    space = settings.space
    arch = Architecture.uniform(space.backbone, 2, space.input_size, space.num_classes,
                                space.in_channels)
    with torch.random.fork_rng(devices=[]):
        network = arch.build()
    check_trains_and_deploys(network, space.backbone, space.num_classes, space.in_channels,
                             space.input_size, min(settings.batch_size, OWN_NETWORK_BATCH))


def _budgets(settings: SearchSettings, out: TextIO | None) -> Budgets:
    """The search's budgets; measures what the latency table lacks before Ray starts, so the
    measurement has the machine to itself."""
    latency = None
    if settings.needs_latency:
        latency = latency_model(settings.storage, settings.space, settings.latency_spec,
                                report=functools.partial(say, out))
        if settings.latency_budget is not None:
            latency.check_budget(settings.latency_budget)
    return Budgets(settings.budget, settings.latency_budget, latency)


def run_search(settings: SearchSettings, out: TextIO | None = None,
               trainable: Callable[[dict[str, Any]], None] = train_trial) -> SearchOutcome:
    """Run (or resume) a search to ``settings.trials`` trained architectures.

    Every check that can fail on user input runs before the study is created or touched.
    ``trainable`` is replaceable so ``bench/search_overhead.py`` can time the orchestration
    alone.
    """
    started = time.monotonic()
    settings.validate()
    # Ctrl-C (and a lost lease, which interrupts this process) stops the search instead of
    # Tune ending the stage as if it finished; the trials left running are queued again by
    # --resume.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if is_factory(settings.space.backbone):
        _check_own_network(settings)
    say(out, f"loading {settings.dataset} and starting Ray ...")
    # The whole data set is read once here (downloaded where it may be), so a corrupt file is
    # one line before anything is written, and the study can record the input statistics.
    data = load_dataset(settings.dataset, settings.space.input_size, settings.data_dir,
                        seed=settings.seed, train_images=settings.train_images,
                        normalization=settings.input_normalization)
    # What only the cluster or the machine can refuse (authentication, resources), before the
    # storage file is even created: a cluster is joined now, a local Ray starts after the
    # latency measurement, which needs the machine to itself.
    if settings.ray_address:
        connect_ray(settings.ray_address)
        wait_for_room(settings.cpus_per_trial, settings.gpus_per_trial,
                      functools.partial(say, out))
    else:
        check_local_resources(settings.cpus_per_trial, settings.gpus_per_trial,
                              settings.oneshot.supernet_workers if settings.is_oneshot else 1)
    storage = open_storage(settings.storage)
    name = _study_name(storage, settings)
    # Before the study is touched: a second driver would re-queue this one's running trials.
    with DriverLease(storage.engine, name, report=functools.partial(say, out)):
        budgets = _budgets(settings, out)
        if settings.is_oneshot:
            supernet_recipe(settings, budgets)  # a sandwich needs architectures in the budgets
        connect_ray(settings.ray_address)
        study, recovered = _open_study(storage, settings, data, name)
        sizes = _split_sizes(data)
        dense = (None if settings.init_from is None
                 else dense_accuracy(settings.space, settings.init_from, data))
        del data  # trials load their own copy; the driver keeps none for the whole search
        try:
            return _drive(settings, study, recovered, budgets, sizes, dense, out, trainable,
                          started)
        except STORAGE_ERRORS as error:
            raise storage_failed(error) from None


def _drive(settings: SearchSettings, study: optuna.Study, recovered: list[int],
           budgets: Budgets, sizes: str, dense: tuple[float, int] | None, out: TextIO | None,
           trainable: Callable[[dict[str, Any]], None], started: float) -> SearchOutcome:
    """The search proper, on its opened study, while this driver holds the study's lease."""
    space = settings.space
    console = SearchConsole(budgets, out, study.user_attrs.get(records.STUDY_VAL_IMAGES),
                            study.user_attrs.get(records.STUDY_TEST_IMAGES))
    proposer = BudgetedProposer(study, space, budgets, objective_named(settings.objective),
                                report=console.print, startup=startup_trials(settings),
                                seed=settings.seed)
    baselines = ([part for part, _ in proposer.baselines_within()] if settings.is_oneshot
                 else proposer.enqueue_baselines(settings.baselines))
    console.print(f"study {study.study_name} in {display_url(settings.storage)}: "
                  f"{settings.backbone} on "
                  f"{settings.dataset} ({space.in_channels}x{space.input_size}x"
                  f"{space.input_size} input, {space.num_classes} classes; {sizes}"
                  f"), budget {budgets.describe()} (MACs: cheapest "
                  f"{space.min_macs:.4g}, standard {space.max_macs:.4g}"
                  f"{_latency_range(budgets)})")
    if dense is not None:
        accuracy, images = dense
        console.print(f"every run starts from the dense weights {settings.dense_weights}, which "
                      f"score {accuracy:.1%} on {images} validation images fed as the trials "
                      f"feed them (normalised by "
                      f"{describe_normalization(settings.input_normalization)})"
                      + "".join(f"; {note}" for note in settings.dense_notes)
                      + f"; kernels converted by --conversion {settings.conversion}")
    if recovered:
        console.print(f"resumed: trials {recovered} were left running and are queued again")
    progress = _Progress(console, proposer, settings.epochs, started)
    if settings.is_oneshot:
        console.print(_oneshot_plan_line(settings))
        baselines = _oneshot_stages(settings, study, proposer, console)
        counts = trial_counts(study)
        stage = counts.queued_baselines + counts.queued_searched + counts.queued_confirmations
    else:
        counts = trial_counts(study)
        searched_left = max(0, settings.trials - counts.searched)
        console.print(_plan_line(settings, baselines, counts, searched_left))
        # study.ask() hands out queued trials first, whatever their role: count them all.
        stage = (counts.queued_baselines + counts.queued_confirmations
                 + max(searched_left, counts.queued_searched))
    failure = None
    if stage > 0:
        failure = _fit(settings, study, proposer, progress, stage, trainable, study.study_name,
                       _scheduler(settings))
    if settings.confirm_top:
        confirm_failure = _confirm(settings, study, proposer, progress, trainable)
        failure = failure or confirm_failure
    all_records = records.read_records(study)
    console.summary(all_records, settings.storage, study.study_name)
    if failure is not None:
        console.print(f"first failed trial: {failure}")
    done = trial_counts(study)
    estimated = (f", {done.estimates} candidates estimated by the supernet"
                 if settings.is_oneshot else "")
    console.print(f"finished in {duration(time.monotonic() - started)}: {done.trained} trained "
                  f"({done.baselines} uniform baselines, {done.searched} "
                  f"{'finalists' if settings.is_oneshot else 'searched'}, "
                  f"{done.confirmations} "
                  f"confirmation runs){estimated}, {proposer.rejected} proposals rejected over "
                  f"the budgets, {proposer.repeated} repeated proposals answered from the "
                  f"record")
    if not records.ranked(all_records) and any(r.status == records.FAILED for r in all_records):
        raise SearchFailed("every trial failed" + (f"; the first: {failure}" if failure else
                           f"; the trials' errors are in the Ray logs under "
                           f"{Path(settings.artifacts_dir).resolve() / 'ray'}"))
    diverged = [r for r in all_records if r.status == records.DIVERGED]
    if not records.ranked(all_records) and diverged:
        raise SearchFailed(f"no trial trained to a result: {len(diverged)} diverged; the "
                           f"first: {diverged[0].divergence}")
    return SearchOutcome(study.study_name, settings.storage, all_records, proposer.rejected,
                         baselines, recovered)


def _plan_line(settings: SearchSettings, baselines: list[int], counts: TrialCounts,
               searched_left: int) -> str:
    """What this run will train, said before it starts."""
    queued = counts.queued_baselines
    chosen = " ".join(f"P{p}" for p in baselines) or "none within the budgets"
    text = (f"will train {queued} uniform baselines first ({settings.baselines}: {chosen}"
            f"{'; the others are trained already' if queued < len(baselines) else ''}), then "
            f"{searched_left} searched architectures (--trials {settings.trials}"
            f"{f', {counts.searched} trained already' if counts.searched else ''}), "
            f"{settings.epochs} epochs each")
    if settings.confirm_top:
        text += (f"; then confirmation: the best {settings.confirm_top} searched and the "
                 f"uniform baselines nearest them in cost, {settings.confirm_seeds} seeds each")
    return text


def _oneshot_plan_line(settings: SearchSettings) -> str:
    options = settings.oneshot
    text = (f"one-shot: will train a supernet for {options.training_epochs(settings.epochs)} "
            f"epochs, score {options.candidates} candidates with it, then train the best "
            f"{options.finalists} and the uniform baselines ({settings.baselines}) "
            f"stand-alone for {settings.epochs} epochs each, "
            + ("fine-tuned from the supernet" if options.finalist_init == "supernet"
               else "from scratch"))
    if settings.confirm_top:
        text += (f"; then confirmation: the best {settings.confirm_top} and the uniform "
                 f"baselines nearest them in cost, {settings.confirm_seeds} seeds each")
    return text


def _oneshot_stages(settings: SearchSettings, study: optuna.Study, proposer: BudgetedProposer,
                    console: SearchConsole) -> list[int]:
    """Supernet, estimates, then the finalists and the baselines queued; the baselines' parts."""
    supernet = train_supernet_stage(settings, study, proposer, console)
    with SupernetEstimator(settings, proposer, supernet,
                           lambda: _max_concurrent(settings, console)) as estimator:
        estimate_stage(settings, study, proposer, estimator, console)
        baselines = proposer.enqueue_baselines(settings.baselines, estimator.estimate)
    queued = enqueue_finalists(study, proposer, settings.oneshot.finalists)
    if queued:
        console.print(f"finalists: the best {queued} estimates queued for stand-alone training")
    return baselines


def _confirm(settings: SearchSettings, study: optuna.Study, proposer: BudgetedProposer,
             progress: _Progress, trainable: Callable[[dict[str, Any]], None]) -> str | None:
    """Queue and train the confirmation runs (those not done or queued already)."""
    for run in confirmation_plan(records.read_records(study), settings.confirm_top,
                                 settings.confirm_seeds):
        proposer.enqueue_confirmation(run.parts, run.baseline_part, run.replicate)
    queued = trial_counts(study).queued
    if not queued:
        return None
    progress.console.print(f"confirmation: {queued} more runs (seeds) of the best "
                           f"{settings.confirm_top} searched architectures and their nearest "
                           f"uniform baselines")
    # Every confirmation run trains all its epochs: ASHA would stop the seeds it exists to add.
    return _fit(settings, study, proposer, progress, queued, trainable,
                f"{study.study_name}-confirmation", FIFOScheduler())


def _split_sizes(data: DataSplits) -> str:
    train, val, test = data.sizes
    return f"{train} training, {val} validation, {test} test images"


def _latency_range(budgets: Budgets) -> str:
    if budgets.latency is None:
        return ""
    return (f"; latency: fastest {budgets.latency.min_ms:.4g} ms, slowest "
            f"{budgets.latency.max_ms:.4g} ms")


class _Progress:
    """Prints a line per finished epoch and per finished trial, with the time spent and an
    estimate of the time left in the current stage (search or confirmation)."""

    def __init__(self, console: SearchConsole, proposer: BudgetedProposer, epochs: int,
                 started: float) -> None:
        self.console = console
        self.proposer = proposer
        self.epochs = epochs
        self.started = started
        self.best: TrialRecord | None = None
        self.start_stage(0)

    def start_stage(self, trials: int) -> None:
        self.stage_trials, self.stage_done = trials, 0
        self.stage_started, self.stage_epochs = time.monotonic(), 0

    def _clock(self) -> str:
        now = time.monotonic()
        text = (f"{self.stage_done}/{self.stage_trials} trials, "
                f"{duration(now - self.started)} elapsed")
        planned = self.stage_trials * self.epochs
        if self.stage_epochs and planned > self.stage_epochs:
            per_epoch = (now - self.stage_started) / self.stage_epochs
            text += f", ~{duration(per_epoch * (planned - self.stage_epochs))} left in this stage"
        return text

    def epoch_finished(self, number: int, report: TrialReport) -> None:
        self.stage_epochs += 1
        self.console.print(f"  epoch {report.epoch}/{self.epochs} of trial {number}: "
                           f"val {report.val_accuracy:6.2%}   [{self._clock()}]")

    def trial_finished(self, record: TrialRecord) -> None:
        self.stage_done += 1
        # A trial stopped early frees the epochs it did not train.
        self.stage_epochs += max(0, self.epochs - record.epochs_trained)
        self.console.print(self.console.trial_line(record))
        if record.is_full_result and record.accuracy is not None and not record.replicate \
                and (self.best is None or record.accuracy > (self.best.accuracy or 0.0)):
            self.best = record
        best = "none yet" if self.best is None else (
            f"{self.best.accuracy:.2%} (trial {self.best.number})")
        self.console.print(f"  progress: {self._clock()}, {self.proposer.rejected} proposals "
                           f"rejected over the budgets, best {best}")


def _error_line(error: BaseException) -> str:
    """``ConfigError: message``: the exception a trial raised, from Ray's wrapped traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        name, sep, message = line.partition(": ")
        if sep and name.replace(".", "").replace("_", "").isalnum():
            return f"{name.rsplit('.', 1)[-1]}: {message}"
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def _first_failure(grid: ResultGrid) -> str | None:
    """The first errored trial's exception in one line, and where its full log is."""
    for index in range(len(grid)):
        result = grid[index]
        if result.error is not None:
            log = Path(result.path) / "error.txt"
            return f"{_error_line(result.error)} (full log: {log})"
    return None


def _fit(settings: SearchSettings, study: optuna.Study, proposer: BudgetedProposer,
         progress: _Progress, remaining: int, trainable: Callable[[dict[str, Any]], None],
         experiment: str, scheduler: TrialScheduler) -> str | None:
    """Train ``remaining`` trials as the Ray experiment ``experiment``; the first failure's
    one-line description, if any failed."""
    artifacts = Path(settings.artifacts_dir).resolve()
    progress.start_stage(remaining)
    supernet = SupernetRecord.of(study)
    job = settings.training_job(init_from=supernet.checkpoint if supernet and
                                settings.oneshot.finalist_init == "supernet" else None)
    searcher = BudgetedOptunaSearcher(
        proposer, job, str(artifacts / "checkpoints" / study.study_name),
        progress.trial_finished, progress.epoch_finished,
        on_exhausted=lambda why: progress.console.print(f"stopping the search: {why}"))
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(metric=VAL_ACCURACY, mode="max", search_alg=searcher,
                                    scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=_max_concurrent(settings,
                                                                          progress.console),
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=experiment, storage_path=str(artifacts / "ray"),
                                  failure_config=tune.FailureConfig(settings.max_failures),
                                  verbose=0, log_to_file=True))
    grid = tuner.fit()
    if searcher.storage_error is not None:
        raise storage_failed(searcher.storage_error)
    return _first_failure(grid)
