"""The Ray Tune trainable: train one architecture and report each epoch.

It runs in a Ray worker. The trial's epoch checkpoint lives in a fixed folder named by the
driver (shared storage on a cluster), so when Ray restarts a trial after its worker died
(``FailureConfig.max_failures``) the new attempt continues from the last finished epoch.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search.searcher import (
    DONE,
    EPOCH,
    NODE_ID,
    TEST_ACCURACY,
    TRAIN_SECONDS,
    VAL_ACCURACY,
)
from search.training.data import DataSplits, load_dataset
from search.training.trainer import CHECKPOINT_FILE, EpochResult, TrainConfig, train
from space import Architecture


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str, input_size: int, data_dir: str | None, seed: int) -> DataSplits:
    """Trials reusing a worker process load their data set once."""
    return load_dataset(name, input_size, data_dir, seed=seed, download=False)


def training_seed(search_seed: int, arch: Architecture) -> int:
    """One seed per architecture, so a retried trial can continue the first one's checkpoint."""
    return (search_seed + zlib.crc32(arch.to_json().encode())) % 2**31


def _resume_file(config: dict[str, Any]) -> Path | None:
    own = Path(config["checkpoint_dir"]) / CHECKPOINT_FILE
    if own.exists():
        return own
    earlier = config.get("resume_from")
    if earlier and Path(earlier).exists():
        return Path(earlier)
    return None


def train_trial(config: dict[str, Any]) -> None:
    """Function trainable; ``config`` is what :class:`BudgetedOptunaSearcher` suggested."""
    torch.set_num_threads(max(1, int(config["threads"])))
    arch = Architecture.from_json(config["architecture"])
    data = _cached_dataset(config["dataset"], arch.input_size, config["data_dir"],
                           int(config["seed"]))
    epochs = int(config["epochs"])
    train_config = TrainConfig(epochs=epochs, batch_size=int(config["batch_size"]),
                               seed=training_seed(int(config["seed"]), arch))

    node = ray.get_runtime_context().get_node_id()

    def report(result: EpochResult) -> None:
        if result.epoch < epochs:  # the last epoch is reported with the test accuracy below
            tune.report({EPOCH: result.epoch, VAL_ACCURACY: result.val_accuracy,
                         "train_loss": result.train_loss, NODE_ID: node})

    outcome = train(arch, data, train_config, checkpoint_dir=Path(config["checkpoint_dir"]),
                    resume_from=_resume_file(config), on_epoch=report)
    tune.report({EPOCH: outcome.epochs_trained, VAL_ACCURACY: outcome.val_accuracy,
                 TEST_ACCURACY: outcome.test_accuracy, TRAIN_SECONDS: outcome.seconds,
                 NODE_ID: node, DONE: True})
