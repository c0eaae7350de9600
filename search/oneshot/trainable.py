"""The supernet's Ray trial: one Tune trial, or data-parallel over Ray Train workers.

Alone, the trial trains :class:`~search.oneshot.sandwich.SupernetRun` and reports every epoch,
like any trial. With ``workers > 1`` a Ray Train ``TorchTrainer`` runs instead (straight from
the driver: a Tune trial around it would hold resources its own workers need), whose workers
each train on their share of every batch and average the
gradients once per step with one collective (gloo on CPUs, NCCL on GPUs). The sandwich rule runs
several backward passes per step; ``DistributedDataParallel`` would synchronise after each of
them, so the run sums them locally and reduces once. Either way the checkpoint lives in the
trial's fixed folder (rank 0 writes it), so a restarted trial, or a resumed search, continues
from the last finished epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray import tune

from search.oneshot.sandwich import SandwichRecipe, SupernetRun
from search.protocol import SupernetTrialConfig, TrialReport
from search.trainable import cached_dataset, resume_file
from search.training.data import DataSplits
from search.training.trainer import EpochResult, RunFactory, TrainConfig, TrainResult, train
from space import Architecture


class DistributedSupernetRun(SupernetRun):
    """A supernet run that is one of ``world`` data-parallel processes."""

    def __init__(self, *args: Any, rank: int, world: int, **kwargs: Any) -> None:
        self.rank, self.world = rank, world
        super().__init__(*args, **kwargs)
        with torch.no_grad():  # every process starts from rank 0's initial weights
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, 0)

    def settings(self) -> dict[str, Any]:
        # Batch norm sees each worker's share of a batch: the worker count shapes the result.
        return {**super().settings(), "workers": self.world}

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        return index[self.rank::self.world]

    def reduce_gradients(self) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def _recipe(config: SupernetTrialConfig) -> SandwichRecipe:
    return SandwichRecipe(config.pool, config.random_subnets, config.distill,
                          config.calibration_batches, config.smallest)


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
    return train(Architecture.from_json(config.architecture), data,
                 TrainConfig(epochs=job.epochs, batch_size=job.batch_size, seed=job.seed),
                 checkpoint_dir=Path(config.checkpoint_dir) if rank == 0 else None,
                 resume_from=resume_file(config.checkpoint_dir), on_epoch=on_epoch,
                 run_factory=factory)


def _data(config: SupernetTrialConfig) -> DataSplits:
    job = config.job
    return cached_dataset(job.dataset, Architecture.from_json(config.architecture).input_size,
                          job.data_dir, job.seed)


def supernet_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's loop on each worker: its share of the supernet's training. Returns the
    final report (Ray Train hands rank 0's back to the driver)."""
    config = SupernetTrialConfig.from_config(loop_config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

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
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = config.use_gpu
    # Ray Train v2 (the default) passes the loop's return value back; the stubs are v1's.
    worker: Any = supernet_worker
    trainer = TorchTrainer(
        worker, train_loop_config=config.to_config(),
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": config.job.threads}),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(name=Path(config.checkpoint_dir).parent.name + "-supernet",
                             storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures)))
    result: Any = trainer.fit()
    return dict(result.return_value or {})


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
