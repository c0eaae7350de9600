"""The supernet's Ray trial: one Tune trial, or data-parallel over Ray Train workers.

Alone, the trial trains :class:`~search.oneshot.sandwich.SupernetRun` and reports every epoch,
like any trial. With ``workers > 1`` a Ray Train job runs instead (``search.jobs.ray_train``), whose
workers each train on their share of every batch (``search.training.parallel``). Either way the
checkpoint lives in the trial's fixed folder (rank 0 writes it), so a restarted trial, or a
resumed search, continues from the last finished epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search.jobs.protocol import SupernetTrialConfig, TrialReport
from search.jobs.ray_train import fit_data_parallel, worker_rank
from search.oneshot.sandwich import SandwichRecipe, SupernetRun
from search.training.checkpoint import resume_file
from search.training.data import DataSplits, cached_dataset
from search.training.parallel import DataParallel
from search.training.start import start_weights
from search.training.trainer import EpochResult, RunFactory, TrainConfig, TrainResult, train
from space import Architecture


class DistributedSupernetRun(DataParallel, SupernetRun):
    """A supernet run that is one of ``world`` data-parallel processes."""


def _recipe(config: SupernetTrialConfig) -> SandwichRecipe:
    return SandwichRecipe(config.pool, config.random_subnets, config.distill,
                          config.calibration_images, config.smallest, config.draw)


def train_supernet(config: SupernetTrialConfig, data: DataSplits, rank: int = 0,
                   world: int = 1,
                   on_epoch: Callable[[EpochResult], None] | None = None) -> TrainResult:
    """Train (or continue) the supernet of ``config`` as process ``rank`` of ``world``."""
    job = config.job
    torch.set_num_threads(max(1, job.threads))
    factory: RunFactory = functools.partial(SupernetRun, recipe=_recipe(config))
    if world > 1:
        factory = functools.partial(DistributedSupernetRun, recipe=_recipe(config), rank=rank,
                                    world=world)
    arch = Architecture.from_json(config.architecture)
    resume_from = resume_file(config.checkpoint_dir)
    # --init-from: the supernet starts as the trained dense network, which holds every part.
    start = None if resume_from is not None else start_weights(arch, data, dense=job.dense_from)
    return train(arch, data,
                 TrainConfig(epochs=job.epochs, batch_size=job.batch_size, seed=job.seed),
                 checkpoint_dir=Path(config.checkpoint_dir) if rank == 0 else None,
                 resume_from=resume_from, on_epoch=on_epoch, initial_weights=start,
                 run_factory=factory)


def _data(config: SupernetTrialConfig) -> DataSplits:
    job = config.job
    return cached_dataset(job.dataset, Architecture.from_json(config.architecture).input_size,
                          job.data_dir, job.seed, job.train_images, job.input_normalization)


def supernet_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's loop on each worker: its share of the supernet's training. Returns the
    final report (Ray Train hands rank 0's back to the driver)."""
    config = SupernetTrialConfig.from_config(loop_config)
    rank, world = worker_rank()

    def report(result: EpochResult) -> None:
        ray.train.report(TrialReport(result.epoch, result.val_accuracy,
                                     train_loss=result.train_loss).to_result())

    outcome = train_supernet(config, _data(config), rank, world, report)
    return TrialReport(outcome.epochs_trained, outcome.val_accuracy,
                       train_seconds=outcome.seconds, done=True).to_result()


def train_data_parallel(config: SupernetTrialConfig, max_failures: int,
                        storage_path: str) -> dict[str, Any]:
    """Train the supernet over ``config.workers`` Ray Train workers; rank 0's final report.

    Ray Train retries the whole worker group up to ``max_failures`` times; each attempt
    continues from the checkpoint in ``config.checkpoint_dir``."""
    return fit_data_parallel(supernet_worker, config.to_config(), workers=config.workers,
                             use_gpu=config.use_gpu, cpus_per_worker=config.job.threads,
                             name=Path(config.checkpoint_dir).parent.name + "-supernet",
                             storage_path=storage_path, max_failures=max_failures)


def train_supernet_trial(ray_config: dict[str, Any]) -> None:
    """Function trainable of the supernet trial."""
    config = SupernetTrialConfig.from_config(ray_config)
    node = ray.get_runtime_context().get_node_id()

    def report(result: EpochResult) -> None:
        if result.epoch < config.job.epochs:
            tune.report(TrialReport(result.epoch, result.val_accuracy, node,
                                    train_loss=result.train_loss).to_result())

    outcome = train_supernet(config, _data(config), on_epoch=report)
    tune.report(TrialReport(outcome.epochs_trained, outcome.val_accuracy, node,
                            train_seconds=outcome.seconds, done=True).to_result())
