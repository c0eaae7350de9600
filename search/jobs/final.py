"""Train one exported architecture to the end: what ``python -m search.train`` runs, in this
process or data-parallel over Ray Train workers.

A :class:`FinalJob` says everything a process needs to train its part, so the driver hands the
same job to each Ray Train worker. The workers' epochs come back to the driver through a Ray
queue while the job runs, so a data-parallel run prints the same lines, as they happen, as one
in this process. A user's mistake that only a worker sees (a checkpoint written with other
settings) comes back as the worker's :class:`ConfigError`; anything else that stops the job is
:class:`TrainingFailed`.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hetconv.errors import ConfigError
from search.jobs.ray_train import fit_data_parallel, worker_rank
from search.training.data import DataSplits, cached_dataset
from search.training.exported import load_trained
from search.training.parallel import DataParallel
from search.training.trainer import EpochResult, TrainConfig, TrainResult, train
from space import Architecture


class TrainingFailed(Exception):
    """The data-parallel job stopped for another reason than the user's input."""


@dataclass(frozen=True)
class FinalJob:
    """One architecture's training: what, on which data, how, and where its checkpoint lives.

    Paths are absolute, so workers in other folders find them. ``weights``: the weights file
    to start from (None: from scratch, or continuing the checkpoint when ``resume``).
    """

    architecture: str  # Architecture.to_json() of the file, its normalisation included
    dataset: str
    data_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    seed: int  # the data's split and the training's
    device: str
    threads: int | None  # torch threads per process; None: torch's own choice
    checkpoint_dir: str
    resume: bool
    weights: str | None
    train_images: int | None = None  # about this many training images; None: all of them

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           seed=self.seed, device=self.device)


def train_job(job: FinalJob, data: DataSplits,
              initial_weights: Mapping[str, torch.Tensor] | None = None, rank: int = 0,
              world: int = 1, on_epoch: Callable[[EpochResult], None] | None = None
              ) -> TrainResult:
    """Train (or continue) ``job`` as process ``rank`` of ``world``; rank 0 checkpoints."""
    if job.threads:
        torch.set_num_threads(job.threads)
    arch = Architecture.from_json(job.architecture).as_searched()
    folder = Path(job.checkpoint_dir)
    factory = functools.partial(DataParallel, rank=rank, world=world) if world > 1 else None
    return train(arch, data, job.config, checkpoint_dir=folder if rank == 0 else None,
                 resume_from=folder if job.resume else None, on_epoch=on_epoch,
                 initial_weights=initial_weights, run_factory=factory)


def _worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's loop on each worker: its share of the job. Rank 0 sends each epoch to the
    driver; every rank returns its result, or the user's mistake it found."""
    job, epochs = FinalJob(**loop_config["job"]), loop_config["epochs"]
    rank, world = worker_rank()
    arch = Architecture.from_json(job.architecture)
    try:
        data = cached_dataset(job.dataset, arch.input_size, job.data_dir, job.seed,
                              job.train_images)
        start = load_trained(arch, Path(job.weights)).state_dict() if job.weights else None
        relay = (lambda result: epochs.put(dataclasses.asdict(result))) if rank == 0 else None
        outcome = train_job(job, data, start, rank, world, relay)
    except ConfigError as error:  # every rank sees the same mistake; rank 0's line is shown
        return {"error": error.args[0]}
    # Ray Train refuses tensors in a result: the per-image correctness stays on the worker.
    return {key: value for key, value in dataclasses.asdict(outcome).items()
            if key not in ("history", "val_correct", "test_correct")}


def train_on_workers(job: FinalJob, workers: int, use_gpu: bool,
                     on_epoch: Callable[[EpochResult], None]) -> TrainResult:
    """Train ``job`` data-parallel over ``workers`` Ray Train workers of the Ray this process
    has joined; ``on_epoch`` hears each epoch here, as rank 0 finishes it."""
    from ray.train import TrainingFailedError
    from ray.util.queue import Empty, Queue

    threads = job.threads or 1  # one CPU each unless told
    job = dataclasses.replace(job, threads=threads)
    epochs = Queue(actor_options={"num_cpus": 0})
    finished = threading.Event()

    def relay() -> None:
        while not finished.is_set() or not epochs.empty():
            try:
                on_epoch(EpochResult(**epochs.get(timeout=0.2)))
            except Empty:
                continue

    printer = threading.Thread(target=relay, daemon=True)
    printer.start()
    try:
        outcome = fit_data_parallel(
            _worker, {"job": dataclasses.asdict(job), "epochs": epochs}, workers=workers,
            use_gpu=use_gpu, cpus_per_worker=threads, name="search-train",
            storage_path=str(Path(job.checkpoint_dir) / "ray"))
    except TrainingFailedError as error:
        lines = str(error).strip().splitlines()
        raise TrainingFailed(f"the data-parallel training failed: {lines[-1]} (Ray Train's "
                             f"files: {Path(job.checkpoint_dir) / 'ray'})") from None
    finally:
        finished.set()
    printer.join()  # the last epochs' lines come before the result
    epochs.shutdown()
    if "error" in outcome:
        raise ConfigError(outcome["error"])
    return TrainResult(**outcome)
