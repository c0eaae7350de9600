"""The single-trial trainer: it learns, checkpoints, resumes exactly, and reloads its weights."""

from __future__ import annotations

import dataclasses
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from hetconv import ConfigError
from search.training.checkpoint import CHECKPOINT_FILE, load_weights
from search.training.data import DataSplits, load_dataset
from search.training.trainer import EpochResult, TrainConfig, evaluate, learning_rate, train
from space import Architecture

# Small HetConv network (every searchable layer at part 2) that trains in seconds on 8x8 digits.
SMALL = Architecture.uniform("resnet20", 2, 8, 10, 1)  # digits: one channel


@pytest.fixture(scope="module")
def digits8() -> DataSplits:
    return load_dataset("digits", 8)


def _subset(data: DataSplits, train: int, val: int, test: int) -> DataSplits:
    return dataclasses.replace(data, train_x=data.train_x[:train], train_y=data.train_y[:train],
                               val_x=data.val_x[:val], val_y=data.val_y[:val],
                               test_x=data.test_x[:test], test_y=data.test_y[:test])


def test_training_learns_digits(digits8):
    epochs: list[EpochResult] = []
    result = train(SMALL, digits8, TrainConfig(epochs=3, batch_size=64, device="cpu"),
                   on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert result.history == tuple(epochs) and result.epochs_trained == 3
    assert result.val_accuracy == epochs[-1].val_accuracy
    assert result.test_accuracy > 0.6, result  # chance is 0.1; 0.90-0.96 over data seeds 0-5
    assert epochs[-1].train_loss < epochs[0].train_loss / 2
    assert result.seconds >= sum(e.seconds for e in epochs) > 0


@pytest.fixture(scope="module")
def vgg_run(tmp_path_factory):
    """VGG-16 (it has dropout, so resuming must restore the random state too), 3 epochs."""
    data = _subset(load_dataset("digits", 32), 64, 32, 32)
    arch = Architecture.uniform("vgg16", 1, 32, 10, 1)
    config = TrainConfig(epochs=3, batch_size=32, device="cpu", seed=3)
    root = tmp_path_factory.mktemp("vgg")
    seen = []

    def on_epoch(result: EpochResult) -> None:
        saved = torch.load(root / "straight" / CHECKPOINT_FILE, weights_only=True)
        seen.append((result.epoch, saved["epoch"]))
        if result.epoch == 2:
            shutil.copy(root / "straight" / CHECKPOINT_FILE, root / "after-epoch-2.pt")

    result = train(arch, data, config, checkpoint_dir=root / "straight", on_epoch=on_epoch)
    return SimpleNamespace(data=data, arch=arch, config=config, root=root, seen=seen,
                           result=result)


def test_checkpoint_is_written_before_on_epoch(vgg_run):
    assert vgg_run.seen == [(1, 1), (2, 2), (3, 3)]
    assert sorted(p.name for p in (vgg_run.root / "straight").iterdir()) == [CHECKPOINT_FILE]


def test_resume_ends_exactly_where_the_uninterrupted_run_ends(vgg_run):
    seen: list[EpochResult] = []
    resumed = train(vgg_run.arch, vgg_run.data, vgg_run.config,
                    checkpoint_dir=vgg_run.root / "resumed",
                    resume_from=vgg_run.root / "after-epoch-2.pt", on_epoch=seen.append)
    assert [e.epoch for e in seen] == [3]
    straight = vgg_run.result
    assert resumed.epochs_trained == 3
    assert (resumed.val_accuracy, resumed.test_accuracy) == \
        (straight.val_accuracy, straight.test_accuracy)
    assert [(e.epoch, e.train_loss, e.val_accuracy) for e in resumed.history] == \
        [(e.epoch, e.train_loss, e.val_accuracy) for e in straight.history]
    a = torch.load(vgg_run.root / "straight" / CHECKPOINT_FILE, weights_only=True)
    b = torch.load(vgg_run.root / "resumed" / CHECKPOINT_FILE, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"]) == (6, 3)
    for key, state in a["optimizer"]["state"].items():
        other = b["optimizer"]["state"][key]
        assert torch.equal(state["momentum_buffer"], other["momentum_buffer"])


def test_load_weights_round_trip(vgg_run):
    model = load_weights(vgg_run.root / "straight", vgg_run.arch)  # the folder works too
    assert not model.training
    accuracy = evaluate(model, vgg_run.data.test_x, vgg_run.data.test_y)
    assert accuracy == vgg_run.result.test_accuracy


@pytest.mark.parametrize("other, message", [
    (Architecture.uniform("vgg16", 2, 32, 10, 1), r"trained for vgg16 with parts \[1, 1,"),
    (Architecture.uniform("vgg16", 1, 32, 7, 1), "10 classes, not vgg16 .* 7 classes"),
    (Architecture.uniform("resnet20", 1, 32, 10, 1), "not resnet20 with parts"),
])
def test_other_architecture_is_refused(vgg_run, other, message):
    with pytest.raises(ConfigError, match=message):
        load_weights(vgg_run.root / "straight" / CHECKPOINT_FILE, other)
    data = dataclasses.replace(vgg_run.data, num_classes=other.num_classes)
    with pytest.raises(ConfigError, match=message):
        train(other, data, vgg_run.config, resume_from=vgg_run.root / "after-epoch-2.pt")


def test_resume_refuses_other_settings_or_data(vgg_run):
    checkpoint = vgg_run.root / "after-epoch-2.pt"
    changes = r"other training settings \(lr: 0.1 -> 0.2, seed: 3 -> 0\)"
    with pytest.raises(ConfigError, match=changes):
        train(vgg_run.arch, vgg_run.data, TrainConfig(epochs=3, batch_size=32, lr=0.2),
              resume_from=checkpoint)
    with pytest.raises(ConfigError, match="trained on 'digits', not 'imagefolder'"):
        train(vgg_run.arch, dataclasses.replace(vgg_run.data, name="imagefolder"),
              vgg_run.config, resume_from=checkpoint)
    other_split = dataclasses.replace(vgg_run.data, train_y=vgg_run.data.train_y.flip(0))
    with pytest.raises(ConfigError, match="other digits splits .* same data seed"):
        train(vgg_run.arch, other_split, vgg_run.config, resume_from=checkpoint)


def test_unreadable_checkpoints_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(tmp_path / "nothing.pt", SMALL)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        load_weights(garbage, SMALL)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ConfigError, match="is not a HetNAS checkpoint"):
        load_weights(foreign, SMALL)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "hetnas/checkpoint", "payload": SimpleNamespace(a=1)}, unsafe)
    with pytest.raises(ConfigError, match="cannot read checkpoint .*unsafe.pt"):
        load_weights(unsafe, SMALL)  # weights_only refuses arbitrary objects


def test_stopping_in_on_epoch_keeps_the_checkpoint_and_the_caller_state(digits8, tmp_path):
    data = _subset(digits8, 128, 32, 32)
    config = TrainConfig(epochs=2, batch_size=64, device="cpu")
    rng, threads = torch.get_rng_state(), torch.get_num_threads()

    def stop(result: EpochResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SMALL, data, config, checkpoint_dir=tmp_path, on_epoch=stop)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"] == 1
    result = train(SMALL, data, config, checkpoint_dir=tmp_path, resume_from=tmp_path)
    assert result.epochs_trained == 2 and [e.epoch for e in result.history] == [1, 2]
    finished = train(SMALL, data, config, resume_from=tmp_path)  # nothing left to train
    assert finished.test_accuracy == result.test_accuracy and finished.history == result.history
    assert torch.equal(torch.get_rng_state(), rng)


def test_architecture_must_fit_the_data(digits8):
    with pytest.raises(ConfigError, match="expects 1x16px inputs and 10 classes but dataset "
                                          "'digits' has 1x8px and 10"):
        train(Architecture.uniform("resnet20", 1, 16, 10, 1), digits8, TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="expects 3x8px inputs"):
        train(Architecture.uniform("resnet20", 1, 8, 10, 3), digits8, TrainConfig(epochs=1))


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"lr": -0.1}, r"lr must be > 0"),
    ({"lr": math.nan}, r"lr must be > 0"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"weight_decay": -1}, "weight_decay must be >= 0"),
    ({"label_smoothing": 1}, "label_smoothing must be in"),
    ({"warmup_epochs": 5}, r"warmup_epochs must be in \[0, epochs\]"),
    ({"seed": -2}, "seed must be an integer from 0 to"),
    ({"seed": 2**32}, "seed must be an integer from 0 to 4294967295, got 4294967296"),
    ({"momentum": 0.0}, "nesterov needs momentum > 0"),
])
def test_bad_train_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**({"epochs": 2} | kwargs))


def test_bad_device(digits8):
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        train(SMALL, digits8, TrainConfig(epochs=1, device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(SMALL, digits8, TrainConfig(epochs=1, device="cuda"))


def test_learning_rate_scales_with_batch_and_follows_a_cosine():
    config = TrainConfig(epochs=4, batch_size=256)
    rates = [learning_rate(config, step, 40, 10) for step in range(40)]
    assert rates[0] == pytest.approx(0.2)
    assert rates[20] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)) and 0 < rates[-1] < 1e-3
    warm = TrainConfig(epochs=4, warmup_epochs=1)
    assert [learning_rate(warm, s, 40, 10) for s in (0, 9, 10)] == \
        pytest.approx([0.01, 0.1, 0.1])
