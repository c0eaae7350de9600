"""The Ray Tune trainable: train one architecture and report each epoch.

It runs in a Ray worker. The trial's epoch checkpoint lives in a fixed folder named by the
driver (shared storage on a cluster), so when Ray restarts a trial after its worker died
(``FailureConfig.max_failures``) the new attempt continues from the last finished epoch.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search.oneshot.estimates import extracted_weights
from search.protocol import TrialConfig, TrialReport
from search.training.checkpoint import CHECKPOINT_FILE
from search.training.data import DataSplits, load_dataset
from search.training.dense_start import dense_start
from search.training.trainer import EpochResult, TrainConfig, train
from space import Architecture


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, input_size: int, data_dir: str | None, seed: int) -> DataSplits:
    """Trials reusing a worker process load their data set once."""
    return load_dataset(name, input_size, data_dir, seed=seed, download=False)


def resume_file(checkpoint_dir: str, earlier: str | None = None) -> Path | None:
    """The checkpoint a (re)started trial continues: its own, else an earlier trial's of the
    same architecture (a re-queued trial), else none."""
    own = Path(checkpoint_dir) / CHECKPOINT_FILE
    if own.exists():
        return own
    if earlier and Path(earlier).exists():
        return Path(earlier)
    return None


def train_trial(ray_config: dict[str, Any]) -> None:
    """Function trainable; ``ray_config`` is what :class:`BudgetedOptunaSearcher` suggested."""
    config = TrialConfig.from_config(ray_config)
    job = config.job
    torch.set_num_threads(max(1, job.threads))
    arch = Architecture.from_json(config.architecture)
    data = cached_dataset(job.dataset, arch.input_size, job.data_dir, job.seed)
    train_config = TrainConfig(epochs=job.epochs, batch_size=job.batch_size,
                               seed=config.training_seed)

    node = ray.get_runtime_context().get_node_id()

    def report(result: EpochResult) -> None:
        if result.epoch < job.epochs:  # the last epoch is reported with the test accuracy
            tune.report(TrialReport(result.epoch, result.val_accuracy, node,
                                    train_loss=result.train_loss).to_result())

    resume_from = resume_file(config.checkpoint_dir, config.resume_from)
    start = None
    if resume_from is None and job.init_from:
        start = extracted_weights(job.init_from, arch, data)
    elif resume_from is None and job.dense_from:
        start = dense_start(arch, data, job.dense_from)
    outcome = train(arch, data, train_config, checkpoint_dir=Path(config.checkpoint_dir),
                    resume_from=resume_from, on_epoch=report, initial_weights=start)
    tune.report(TrialReport(outcome.epochs_trained, outcome.val_accuracy, node,
                            test_accuracy=outcome.test_accuracy,
                            train_seconds=outcome.seconds, done=True).to_result())
