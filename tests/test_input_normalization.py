"""``search.run --init-from dense.pt --input-normalization``: dense weights trained on inputs
normalised otherwise than by the data's statistics (ImageNet's, as timm and torchvision ship
them) start every network of the search, which then normalises its input the same way; the
study, the export, ``search.check`` and a fine-tuning ``search.train`` keep it. Real data files,
real Ray, real training."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from hetconv.errors import ConfigError
from search import check, export, train
from search.driver import run_search
from search.engine.study import create_study, load_for_resume
from search.run import build_parser, settings_from
from search.store import records
from search.store.storage import open_storage
from search.training.augment import unit_range
from search.training.data import load_dataset
from search.training.normalization import PRESETS
from search.training.start import dense_accuracy, dense_start
from search.training.trainer import trained_architecture
from space import Architecture
from space.networks import build_network
from tests.datasets import write_cifar

ROOT = Path(__file__).resolve().parents[1]
SIZE = 8  # CIFAR-format images at 8 px: a ResNet-20 trains in seconds
IMAGENET = PRESETS["imagenet"]
STANDARD = Architecture.uniform("resnet20", 1, SIZE, 10, 3)
BUDGET = Architecture.uniform("resnet20", 4, SIZE, 10, 3).macs


def _dense(in_channels: int, seed: int) -> nn.Module:
    """A dense ResNet-20 as another library would ship it: no input normalisation of its own,
    batch norms with trained-looking running statistics."""
    torch.manual_seed(seed)
    model = build_network("resnet20", None, 10, in_channels, SIZE)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _save_dense(model: nn.Module, path: Path) -> Path:
    torch.save({key: value for key, value in model.state_dict().items()
                if not key.startswith("normalize.")}, path)
    return path


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", per_batch=24)
    return root


@pytest.fixture(scope="module")
def imagenet_dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A dense network that expects ImageNet-normalised three-channel images, and its file."""
    model = _dense(3, seed=1)
    return model, _save_dense(model, tmp_path_factory.mktemp("dense") / "dense.pt")


def test_a_network_from_imagenet_weights_computes_what_the_original_does(cifar, imagenet_dense):
    """The Done-when test: on the same raw image in [0, 1], the search's standard network from
    the weights (search.training.start) gives the original's logits on the ImageNet-normalised
    image; normalised by the data's statistics, as before the option, it does not."""
    original, path = imagenet_dense
    data = load_dataset("cifar10", SIZE, cifar, normalization="imagenet")
    assert (data.mean, data.std) == (IMAGENET.mean, IMAGENET.std)
    x = unit_range(data.val_x)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET.mean, IMAGENET.std))
    with torch.no_grad():
        expected = original((x - mean) / std)

    def logits(normalization: str) -> torch.Tensor:
        splits = load_dataset("cifar10", SIZE, cifar, normalization=normalization)
        model = trained_architecture(STANDARD, splits).build()
        model.load_state_dict(dense_start(STANDARD, splits, str(path)))
        with torch.no_grad():
            return model.eval()(x)

    torch.testing.assert_close(logits("imagenet"), expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits("data"), expected, rtol=1e-2, atol=1e-2)
    # The driver's dense check feeds the validation images the same way.
    accuracy, images = dense_accuracy(STANDARD.space, str(path), data)
    assert images == len(data.val_y)
    assert accuracy == (expected.argmax(1) == data.val_y).sum().item() / images


def test_explicit_statistics_read_like_the_preset(cifar):
    text = ",".join(map(str, IMAGENET.mean)) + ":" + ",".join(map(str, IMAGENET.std))
    data = load_dataset("cifar10", SIZE, cifar, normalization=text)
    assert (data.mean, data.std) == (IMAGENET.mean, IMAGENET.std)
    gray = load_dataset("digits", SIZE, normalization="0.5:0.25")
    assert (gray.mean, gray.std) == ((0.5,), (0.25,))


def test_a_search_records_the_normalisation_and_export_check_and_train_keep_it(
        local_ray, tmp_path, cifar, imagenet_dense, capsys) -> None:
    _, path = imagenet_dense
    storage = f"sqlite:///{tmp_path / 'norm.db'}"
    args = build_parser().parse_args([
        "--budget", str(BUDGET), "--backbone", "resnet20", "--dataset", "cifar10",
        "--data-dir", str(cifar), "--input-size", str(SIZE), "--init-from", str(path),
        "--input-normalization", "imagenet", "--trials", "1", "--epochs", "1",
        "--batch-size", "32", "--sampler", "random", "--baselines", "none", "--confirm-top", "0",
        "--storage", storage, "--study", "norm", "--artifacts-dir", str(tmp_path / "artifacts"),
        "--max-concurrent", "1"])
    out = io.StringIO()
    run_search(settings_from(args), out=out)
    assert "validation images fed as the trials feed them (normalised by " \
           "--input-normalization imagenet)" in out.getvalue()
    study = optuna.load_study(study_name="norm", storage=open_storage(storage))
    attrs = study.user_attrs
    assert attrs[records.STUDY_INIT_FROM]["input_normalization"] == "imagenet"
    assert (attrs[records.STUDY_INPUT_MEAN], attrs[records.STUDY_INPUT_STD]) \
        == (list(IMAGENET.mean), list(IMAGENET.std))

    best, weights = tmp_path / "best.json", tmp_path / "best.pt"
    assert export.main(["--storage", storage, "--study", "norm", "--out", str(best),
                        "--weights", str(weights)]) == 0
    document = json.loads(best.read_text())["input"]
    assert (document["mean"], document["std"]) == (list(IMAGENET.mean), list(IMAGENET.std))
    capsys.readouterr()
    assert check.main([str(best), "--weights", str(weights)]) == 0
    shown = capsys.readouterr().out
    assert "mean (0.4850, 0.4560, 0.4060), std (0.2290, 0.2240, 0.2250) " \
           "(--input-normalization imagenet)" in shown

    # Fine-tuning the exported network keeps the normalisation its weights expect.
    final = tmp_path / "final.pt"
    assert train.main([str(best), "--weights", str(weights), "--epochs", "1", "--out",
                       str(final), "--data-dir", str(cifar), "--batch-size", "32",
                       "--device", "cpu"]) == 0
    tuned = json.loads(final.with_suffix(".json").read_text())["input"]
    assert tuned["mean"] + tuned["std"] == pytest.approx(IMAGENET.mean + IMAGENET.std)


def test_a_study_resumes_only_with_the_normalisation_it_started_with(cifar, imagenet_dense):
    _, path = imagenet_dense
    settings = settings_from(build_parser().parse_args([
        "--budget", str(BUDGET), "--backbone", "resnet20", "--dataset", "cifar10",
        "--data-dir", str(cifar), "--input-size", str(SIZE), "--init-from", str(path),
        "--input-normalization", "imagenet"]))
    data = load_dataset("cifar10", SIZE, cifar, normalization="imagenet")
    storage = optuna.storages.InMemoryStorage()
    create_study(storage, "norm", settings, data)
    resumed = dataclasses.replace(settings, resume=True)
    load_for_resume(storage, "norm", resumed, data)
    with pytest.raises(ConfigError, match="weights with --input-normalization "
                                          "imagenet, not data; its trials would not be "
                                          "comparable: pass --input-normalization imagenet"):
        load_for_resume(storage, "norm", dataclasses.replace(resumed, input_normalization="data"),
                        load_dataset("cifar10", SIZE, cifar))
    # Another --seed draws another validation split; the preset's statistics cannot show it.
    other_split = load_dataset("cifar10", SIZE, cifar, seed=settings.seed + 1,
                               normalization="imagenet")
    assert other_split.mean == data.mean
    with pytest.raises(ConfigError, match=f"--seed {settings.seed}, not {settings.seed + 1}"):
        load_for_resume(storage, "norm", dataclasses.replace(resumed, seed=settings.seed + 1),
                        other_split)


@pytest.mark.parametrize(("options", "fragments"), [
    (["--input-normalization", "imagenet2", "--init-from", "{rgb}"],
     ["--input-normalization 'imagenet2' is no preset nor MEAN,...:STD,...",
      "pass data, imagenet, or MEAN,...:STD,..."]),
    (["--input-normalization", "0.5,0.5:0.2", "--init-from", "{rgb}"],
     ["gives 2 means but 1 stds", "one mean and one std per channel"]),
    (["--input-normalization", "0.5,0.5,0.5:0.2,0,0.2", "--init-from", "{rgb}"],
     ["every std must be positive"]),
    (["--input-normalization", "imagenet"],
     ["--input-normalization imagenet says what input --init-from's dense weights expect",
      "pass --init-from DENSE.pt or leave --input-normalization out"]),
    (["--dataset", "digits", "--input-normalization", "imagenet", "--init-from", "{gray}"],
     ["--input-normalization imagenet gives 3 channels but dataset 'digits' has 1-channel "
      "images", "pass one mean and one std per channel"]),
    (["--dataset", "digits", "--init-from", "{rgb}"],
     ["take 3-channel images but the data set has 1-channel ones: pass weights for 1-channel "
      "images", "has shape (16, 3, 3, 3)", "(16, 1, 3, 3)"]),
])
def test_bad_normalisation_is_one_line_and_writes_nothing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, cifar: Path,
        options: list[str], fragments: list[str]) -> None:
    files = tmp_path_factory.mktemp("weights")
    names = {"rgb": _save_dense(_dense(3, seed=0), files / "rgb.pt"),
             "gray": _save_dense(_dense(1, seed=0), files / "gray.pt")}
    options = [option.format(**names) for option in options]
    dataset = [] if "--dataset" in options else ["--dataset", "cifar10", "--data-dir", str(cifar)]
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "search.run", "--budget", str(BUDGET), "--backbone", "resnet20",
         "--input-size", str(SIZE), *dataset, *options, "--storage",
         f"sqlite:///{tmp_path / 'x.db'}"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert list(tmp_path.iterdir()) == []
