"""Every backbone on every kind of data set, and an export that works on its own.

The network's stem takes the data set's channels and its head the data set's classes, whatever
the combination; a one-epoch training completes on a small stand-in of each kind (CIFAR batches
written here in the standard python-batch format, a generated three-class image folder, the real
Fashion-MNIST files cut to a few hundred images). Real Ray searches run on the combinations the
defaults never meet, and the exported network, loaded in a fresh process with the README's own
lines, scores the trial's recorded test accuracy on raw images.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from hetconv.models import BACKBONES
from search.driver import run_search
from search.engine.best import export_best
from search.engine.settings import SearchSettings
from search.store import records
from search.training.data import DataSplits, check_dataset, load_dataset
from search.training.trainer import TrainConfig, train
from space import Architecture
from tests.datasets import write_cifar, write_fashion_mnist, write_imagefolder

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("digits", "cifar10", "cifar100", "imagefolder", "fashion-mnist")
# Small inputs keep the ImageNet-size backbones quick; VGG-16's five pools need 32.
INPUT_SIZE = {"vgg16": 32, "resnet20": 16, "resnet56": 8, "resnet18": 32, "resnet34": 32,
              "resnet50": 32}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, str | None]:
    """A small stand-in of every data-set kind (digits ships with scikit-learn)."""
    root = tmp_path_factory.mktemp("data")
    write_cifar(root / "cifar10", "cifar10", per_batch=12)
    write_cifar(root / "cifar100", "cifar100", per_batch=60)
    write_imagefolder(root / "imagefolder", classes=3, per_class=12)
    write_fashion_mnist(root / "fashion-mnist", train=300, test=200)
    return {kind: None if kind == "digits" else str(root / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def loaded(data_dirs):
    @functools.cache
    def load(kind: str, size: int) -> DataSplits:
        data = load_dataset(kind, size, data_dirs[kind], seed=1)
        return dataclasses.replace(data, train_x=data.train_x[:48], train_y=data.train_y[:48],
                                   val_x=data.val_x[:16], val_y=data.val_y[:16],
                                   test_x=data.test_x[:16], test_y=data.test_y[:16])
    return load


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_the_network_fits_the_data_and_trains_an_epoch(backbone, kind, data_dirs, loaded):
    size = INPUT_SIZE[backbone]
    settings = SearchSettings(budget=1e15, backbone=backbone, dataset=kind,
                              data_dir=data_dirs[kind], input_size=size)
    settings.validate()
    data = loaded(kind, size)
    info = check_dataset(kind, data_dirs[kind])
    assert (info.channels, info.num_classes, info.class_names) \
        == (data.channels, data.num_classes, data.class_names)
    space = settings.space
    assert (space.in_channels, space.num_classes, space.input_size) \
        == (data.channels, data.num_classes, size)
    arch = Architecture.uniform(backbone, 2, space.input_size, space.num_classes,
                                space.in_channels)
    model = arch.build()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert (stem.in_channels, head.out_features) == (data.channels, data.num_classes)
    result = train(arch, data, TrainConfig(epochs=1, batch_size=16, device="cpu"))
    assert result.epochs_trained == 1 and 0.0 <= result.test_accuracy <= 1.0


def _search(data_dirs, tmp_path: Path, storage: str, **options) -> tuple:
    settings = SearchSettings(storage=storage, study=f"kinds-{uuid.uuid4().hex[:8]}",
                              artifacts_dir=str(tmp_path / "artifacts"), epochs=1, trials=1,
                              batch_size=32, max_concurrent=2, seed=1, confirm_top=0,
                              data_dir=data_dirs[options["dataset"]], **options)
    # Just above the cheapest network: only the largest-part baseline fits, so the trials
    # are few.
    space = dataclasses.replace(settings, budget=1.0).space
    settings = dataclasses.replace(settings, budget=space.min_macs * 1.02)
    return run_search(settings), settings


def test_search_on_a_three_class_image_folder(data_dirs, tmp_path, local_ray):
    outcome, _ = _search(data_dirs, tmp_path, f"sqlite:///{tmp_path / 'folder.db'}",
                         backbone="resnet20", dataset="imagefolder", input_size=16)
    trained = [r for r in outcome.records if r.status == records.COMPLETE]
    assert len(trained) == 2 and not [r for r in outcome.records if r.status == records.FAILED]
    for record in trained:
        assert Architecture.from_json(record.architecture).num_classes == 3


@pytest.fixture(scope="module")
def fashion_search(data_dirs, tmp_path_factory, local_ray):
    """VGG-16 on the Fashion-MNIST stand-in: one channel, ten named classes."""
    tmp_path = tmp_path_factory.mktemp("fashion")
    return (*_search(data_dirs, tmp_path, f"sqlite:///{tmp_path / 'fashion.db'}",
                     backbone="vgg16", dataset="fashion-mnist"), tmp_path)


def _readme_loading_lines() -> str:
    """The README's own Python block that loads an exported network."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(block for block in blocks if "Architecture.from_json" in block)


def test_export_loads_in_a_fresh_process_as_the_readme_says(fashion_search, tmp_path):
    outcome, settings, _ = fashion_search
    best = export_best(outcome.storage, outcome.study_name, tmp_path / "best.json",
                       tmp_path / "best.pt")
    document = json.loads((tmp_path / "best.json").read_text())
    assert document["input"]["channels"] == 1 and document["num_classes"] == 10
    assert document["class_names"][0] == "T-shirt/top"
    data = load_dataset("fashion-mnist", 32, settings.data_dir, seed=settings.seed)
    assert document["input"]["mean"] == pytest.approx(list(data.mean))
    torch.save({"images": data.test_x.float() / 255, "labels": data.test_y},
               tmp_path / "test_images.pt")
    script = _readme_loading_lines() + (
        "model.eval()\n"
        "test = torch.load('test_images.pt', weights_only=True)\n"
        "with torch.no_grad():\n"
        "    correct = (model(test['images']).argmax(1) == test['labels']).sum().item()\n"
        "print(correct, len(test['labels']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    correct, total = map(int, done.stdout.split())
    assert total == len(data.test_y) == 200
    assert correct / total == best.test_accuracy


def test_exported_study_records_the_data(fashion_search):
    outcome, settings, _ = fashion_search
    import optuna

    attrs = optuna.load_study(study_name=outcome.study_name, storage=outcome.storage).user_attrs
    info = check_dataset("fashion-mnist", settings.data_dir)
    assert attrs[records.STUDY_IN_CHANNELS] == 1 and attrs[records.STUDY_NUM_CLASSES] == 10
    assert attrs[records.STUDY_CLASS_NAMES] == list(info.class_names)
