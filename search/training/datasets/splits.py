"""What every data set shares: its facts and splits (:class:`DatasetInfo`, :class:`DataSplits`),
the :class:`Loader` each data set module offers, and the splitting, resizing and statistics
that turn decoded images into :class:`DataSplits` (rules: ``search.training.data``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hetconv.errors import ConfigError

TEST_FRACTION = 0.2
"""Share of the data held out for testing where a data set has no test split of its own."""

TEST_SEED = 20190612
"""Fixed seed of that test split, so it is the same for every trial and every search."""

_CHUNK = 2048  # images per resize / statistics chunk: bounds the float working memory

Split = tuple[torch.Tensor, np.ndarray]  # images and their labels


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, known before loading it: enough to build a network for it.

    ``class_names`` is None where the files do not name the classes (CIFAR-100 without its
    ``meta`` file).
    """

    name: str
    channels: int
    num_classes: int
    class_names: tuple[str, ...] | None


@dataclass(frozen=True, eq=False)
class DataSplits:
    """One data set in memory: three disjoint splits and the statistics to normalise them.

    Images are ``uint8`` in ``0..255`` (or float in ``0..1``), shape ``(N, C, S, S)``; labels are
    ``int64`` in ``0..num_classes-1``. ``mean``/``std`` have one entry per channel, on the
    ``0..1`` scale: what every network built for these splits normalises its input by, the
    training split's own unless ``search.training.normalization`` put others. ``hflip`` says
    whether mirroring an image keeps its label.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...] | None
    input_size: int
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Images in (train, val, test)."""
        return len(self.train_y), len(self.val_y), len(self.test_y)

    @property
    def channels(self) -> int:
        """Channels of every image (the ``C`` of ``(N, C, S, S)``)."""
        return self.train_x.shape[1]

    @property
    def info(self) -> DatasetInfo:
        """The facts :func:`check_dataset` reports, as loaded."""
        return DatasetInfo(self.name, self.channels, self.num_classes, self.class_names)


def _stratified_split(labels: np.ndarray, fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(kept, held)``: about ``fraction`` of every class held, drawn by seed.

    Every class keeps at least one image, so a class never vanishes from training.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(round(fraction * members.size), members.size - 1)
        held.append(rng.permutation(members)[:count])
    held_idx = np.sort(np.concatenate(held))
    if held_idx.size == 0:
        raise ConfigError(f"too few images ({labels.size}) to hold out {fraction:.0%} of each "
                          f"class; add images or provide the split as its own folder")
    return np.setdiff1d(np.arange(labels.size), held_idx), held_idx


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale, in chunks to bound memory."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].to(torch.float64) / scale
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, H, W)`` in 0..255 to uint8 ``(N, C, size, size)``, bilinear with antialias."""
    if images.shape[-2:] == (size, size) and images.dtype == torch.uint8:
        return images.contiguous()
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].to(torch.float32)
        if chunk.shape[-2:] != (size, size):
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)
        out[start:start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def assemble(info: DatasetInfo, input_size: int, hflip: bool,
             splits: Sequence[Split]) -> DataSplits:
    """Build :class:`DataSplits` from (images, labels) for train, val and test."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    mean, std = _channel_stats(train_x)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(y, dtype=np.int64))

    return DataSplits(info.name, info.num_classes, info.class_names, input_size, train_x,
                      labels(train_y), val_x, labels(val_y), test_x, labels(test_y), mean, std,
                      hflip)


def training_subset(data: DataSplits, images: int, seed: int) -> DataSplits:
    """``data`` trained on about ``images`` of its training images: the same share of every
    class, drawn by ``seed``; validation and test as they were. The input statistics are
    recomputed from the subset, since it is now the training split."""
    total = len(data.train_y)
    if images >= total:
        return data
    _, kept = _stratified_split(data.train_y.numpy(), images / total, seed)
    index = torch.from_numpy(kept)
    train_x = data.train_x[index]
    mean, std = _channel_stats(train_x)
    return dataclasses.replace(data, train_x=train_x, train_y=data.train_y[index], mean=mean,
                               std=std)


def split_pool(x: torch.Tensor, y: np.ndarray, fraction: float,
               seed: int) -> tuple[Split, Split]:
    """Split images and labels into (kept, held) by :func:`_stratified_split`."""
    kept, held = _stratified_split(y, fraction, seed)
    kept_t, held_t = torch.from_numpy(kept), torch.from_numpy(held)
    return (x[kept_t], y[kept]), (x[held_t], y[held])


@dataclass(frozen=True)
class Loader:
    """One data set's two entry points, which ``search.training.data`` dispatches to by name.

    ``check(data_dir, download)`` reads listings and headers only; ``load(data_dir, input_size,
    seed, val_fraction, download)`` reads and splits the whole data set, its arguments already
    validated. A data set ignores the arguments that do not apply to it.
    """

    check: Callable[[str | Path | None, bool], DatasetInfo]
    load: Callable[[str | Path | None, int, int, float, bool], DataSplits]
