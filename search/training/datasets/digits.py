"""scikit-learn's handwritten digits: 1797 grayscale 8×8 images shipped with the library, so
there is nothing to download or check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from search.training.datasets.splits import (
    TEST_FRACTION,
    TEST_SEED,
    DatasetInfo,
    DataSplits,
    Loader,
    assemble,
    resize,
    split_pool,
)

_DIGITS = DatasetInfo("digits", 1, 10, tuple(str(digit) for digit in range(10)))


def _check(data_dir: str | Path | None, download: bool) -> DatasetInfo:
    """The digits' facts; no files to look at."""
    return _DIGITS


def _load(data_dir: str | Path | None, input_size: int, seed: int, val_fraction: float,
          download: bool) -> DataSplits:
    """scikit-learn's 1797 8×8 grayscale digits (values 0..16), upsampled."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    images = resize(images, input_size)
    labels = bunch.target.astype(np.int64)
    pool, test = split_pool(images, labels, TEST_FRACTION, TEST_SEED)
    train, val = split_pool(*pool, val_fraction, seed)
    return assemble(_DIGITS, input_size, False, (train, val, test))


DIGITS = Loader(_check, _load)
