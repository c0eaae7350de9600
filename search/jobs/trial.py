"""The Ray Tune trainable: train one architecture and report each epoch.

It runs in a Ray worker. The trial's epoch checkpoint lives in a fixed folder named by the
driver (shared storage on a cluster), so when Ray restarts a trial after its worker died
(``FailureConfig.max_failures``) the new attempt continues from the last finished epoch. A run
that diverges ends normally with a report that says so: it is an outcome of the architecture
and its seed, which a retry would only repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search.jobs.protocol import TrialConfig, TrialReport
from search.store.paired import pack_correct
from search.training.checkpoint import resume_file
from search.training.data import cached_dataset
from search.training.start import start_weights
from search.training.trainer import Diverged, EpochResult, TrainConfig, train
from space import Architecture


def train_trial(ray_config: dict[str, Any]) -> None:
    """Function trainable; ``ray_config`` is what :class:`BudgetedOptunaSearcher` suggested."""
    config = TrialConfig.from_config(ray_config)
    job = config.job
    torch.set_num_threads(max(1, job.threads))
    arch = Architecture.from_json(config.architecture)
    data = cached_dataset(job.dataset, arch.input_size, job.data_dir, job.seed,
                          job.train_images, job.input_normalization)
    train_config = TrainConfig(epochs=job.epochs, batch_size=job.batch_size,
                               seed=config.training_seed)

    node = ray.get_runtime_context().get_node_id()
    last_val = 0.0  # the last finished epoch's validation accuracy

    def report(result: EpochResult) -> None:
        nonlocal last_val
        last_val = result.val_accuracy
        if result.epoch < job.epochs:  # the last epoch is reported with the test accuracy
            tune.report(TrialReport(result.epoch, result.val_accuracy, node,
                                    train_loss=result.train_loss).to_result())

    resume_from = resume_file(config.checkpoint_dir, config.resume_from)
    start = (None if resume_from is not None
             else start_weights(arch, data, supernet=job.init_from, dense=job.dense_from,
                                conversion=job.conversion))
    try:
        outcome = train(arch, data, train_config, checkpoint_dir=Path(config.checkpoint_dir),
                        resume_from=resume_from, on_epoch=report, initial_weights=start)
    except Diverged as error:
        tune.report(TrialReport(error.epoch - 1, last_val, node, diverged=str(error)).to_result())
        return
    tune.report(TrialReport(outcome.epochs_trained, outcome.val_accuracy, node,
                            test_accuracy=outcome.test_accuracy,
                            train_seconds=outcome.seconds, done=True,
                            val_correct=packed(outcome.val_correct),
                            test_correct=packed(outcome.test_correct)).to_result())


def packed(correct: torch.Tensor | None) -> str | None:
    """Per-image correctness as the study keeps it (:func:`search.store.paired.pack_correct`)."""
    return None if correct is None else pack_correct(correct.numpy())
