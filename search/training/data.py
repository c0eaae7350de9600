"""Data sets as in-memory uint8 tensors with train / validation / test splits.

Every data set comes back as :class:`DataSplits`: images ``uint8 (N, C, S, S)`` at the requested
input size, labels ``int64``. ``C`` is the data set's own channel count: 1 for the grayscale
digits and Fashion-MNIST, 3 for CIFAR and image folders (decoded to RGB). Augmentation is
left to the trainer, per batch on its device (``search.training.augment``), and normalisation to the
network, with the per-channel statistics computed here (or, with ``normalization``, the ones
that pretrained weights expect: ``search.training.normalization``); so the data stay four times
smaller than float. :func:`check_dataset` tells a data set's facts (:class:`DatasetInfo`) without
loading it.

Splits, chosen so that trials are comparable:

* the **test** split never depends on ``seed``: CIFAR's own test batch, Fashion-MNIST's 10,000
  ``t10k`` images, an image folder's ``test/``, or else a fixed stratified 20 % of the data
  (digits, image folders without ``test/``). Every trial of every search is scored on the same
  held-out images;
* the **validation** split is a stratified ``val_fraction`` of what is left (of the training
  images), drawn by ``seed``; an image folder's ``val/`` is used as is;
* **train** is the rest. Normalisation statistics come from the training split only (unless
  ``normalization`` names others).

Sizes: images are resized bilinearly with antialias, except Fashion-MNIST's 28×28 pictures at
input sizes 28..36, which are centred on a zero canvas instead (as LeNet-5 padded MNIST to
32×32): the pixels stay as drawn, with no interpolation blur, and the networks' 32-pixel
designs see the whole garment.

Fashion-MNIST's four IDX files (gzipped or not) come from ``data_dir`` when given, else from
Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), else from
the per-user cache ``$XDG_CACHE_HOME/hetnas/fashion-mnist`` (``~/.cache/hetnas/...``), where
they are downloaded once. Damaged files of any data set are a :class:`ConfigError` naming the
file, the problem and the fix, raised before any training starts.

Each data set lives in its own module of ``search.training.datasets``; this module names them
and checks the arguments before handing over.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from hetconv.errors import ConfigError
from search.training.datasets import cifar, digits, fashion_mnist, imagefolder
from search.training.datasets.splits import DatasetInfo, DataSplits, Loader, training_subset
from search.training.normalization import DATA, normalized
from search.training.seeds import check_seed

__all__ = ["DATASETS", "DataSplits", "DatasetInfo", "cached_dataset", "check_dataset",
           "draw_calibration", "load_dataset"]

_LOADERS: dict[str, Loader] = {
    "digits": digits.DIGITS,
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "imagefolder": imagefolder.IMAGEFOLDER,
    "fashion-mnist": fashion_mnist.FASHION_MNIST,
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, input_size: int, data_dir: str | Path | None = None, seed: int = 0,
                 val_fraction: float = 0.1, download: bool = True,
                 train_images: int | None = None, normalization: str = DATA) -> DataSplits:
    """Load ``name`` at ``input_size`` and split it (see the module docstring).

    ``train_images``: train on about that many of the training images (the same share of
    every class, drawn by ``seed``; validation and test unchanged), for searches that cannot
    afford the whole split; None, or more than there are, keeps them all. ``normalization``:
    what the networks normalise their input by (``search.training.normalization``; default the
    training split's statistics), carried as the splits' ``mean`` and ``std``.

    ``digits`` ignores ``data_dir``; CIFAR looks for the official python batches there and
    Fashion-MNIST for its IDX files (see the module docstring for where without one). Missing
    CIFAR or Fashion-MNIST files are downloaded and md5-checked when ``download`` is true.
    """
    loader = _loader(name)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(f"input size must be a positive integer, got {input_size!r}")
    check_seed(seed, "data seed")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if train_images is not None and (isinstance(train_images, bool)
                                     or not isinstance(train_images, int) or train_images < 1):
        raise ConfigError(f"train_images must be a positive integer, got {train_images!r}")
    data = loader.load(data_dir, input_size, seed, val_fraction, download)
    data = data if train_images is None else training_subset(data, train_images, seed)
    return normalized(data, normalization)


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, input_size: int, data_dir: str | None, seed: int,
                   train_images: int | None = None, normalization: str = DATA) -> DataSplits:
    """The data set a worker process loaded already, else loaded now: Ray trials that reuse a
    worker load it once. Never downloads: the driver fetched it before the trials started."""
    return load_dataset(name, input_size, data_dir, seed=seed, download=False,
                        train_images=train_images, normalization=normalization)


def draw_calibration(data: DataSplits, images: int, seed: int) -> torch.Tensor:
    """``images`` training images (all, when there are fewer) in a seed-drawn order, not
    augmented."""
    count = min(len(data.train_y), images)
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
    return data.train_x[order[:count]]


def check_dataset(name: str, data_dir: str | Path | None, download: bool = True) -> DatasetInfo:
    """Cheap up-front validation for the CLI: raise :class:`ConfigError` naming problem and fix.

    Reads directory listings and file headers only, never whole data sets, and returns what the
    data set is. Files that are absent pass when ``download`` is true (loading fetches them) or
    CIFAR's tarball is in place; CIFAR-100's class names are then unknown (None) until fetched.
    """
    return _loader(name).check(data_dir, download)


def _loader(name: str) -> Loader:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _LOADERS[name]
