"""Image folders: ``<data dir>/train/<class>/*.png|*.jpg``, optional ``val/`` and ``test/`` alike,
decoded to RGB by Pillow; every image's header is checked before anything is decoded."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetconv.errors import ConfigError
from search.training.datasets.downloads import existing_dir
from search.training.datasets.splits import (
    TEST_FRACTION,
    TEST_SEED,
    DatasetInfo,
    DataSplits,
    Loader,
    Split,
    assemble,
    split_pool,
)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_MAX_IMAGE_PIXELS = 64_000_000
"""Largest image decoded (64 megapixels, 192 MB as RGB). Anything bigger is a decompression
bomb or a picture far larger than any input size here; it is refused by name, before decoding,
instead of meeting Pillow's warning (over 89 MP) or its error (over 179 MP)."""



def _list_classes(split_dir: Path, min_classes: int = 1,
                  name: str = "imagefolder") -> dict[str, list[Path]]:
    """Class name to its sorted image files, classes sorted by name; errors name the fix."""
    layout = "<data dir>/train/<class>/*.png|*.jpg (optional val/ and test/ alike)"
    if not split_dir.is_dir():
        raise ConfigError(f"{name}: {split_dir} is missing; expected {layout}")
    classes = {}
    for class_dir in sorted(p for p in split_dir.iterdir()
                            if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir()
                       if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{name}: class folder {class_dir} holds no .png or .jpg images; "
                              f"add images or remove the folder")
        classes[class_dir.name] = files
    if len(classes) < min_classes:
        raise ConfigError(f"{name}: {split_dir} has {len(classes)} class folder(s), needs at "
                          f"least {min_classes}; expected {layout}")
    return classes


def _check_subset(classes: dict[str, list[Path]], train: dict[str, list[Path]],
                  split_dir: Path) -> None:
    unknown = sorted(set(classes) - set(train))
    if unknown:
        raise ConfigError(f"imagefolder: {split_dir} has classes {unknown} that train/ lacks; "
                          f"use the same class folder names in every split")


def _imagefolder_info(train_classes: dict[str, list[Path]]) -> DatasetInfo:
    return DatasetInfo("imagefolder", 3, len(train_classes), tuple(train_classes))


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("dataset 'imagefolder' needs Pillow; pip install pillow") from None
    return Image


@contextmanager
def _open_image(file: Path) -> Iterator[Any]:
    """``file`` opened by Pillow, its header read and its pixels not yet decoded.

    A file that is no image, one over :data:`_MAX_IMAGE_PIXELS`, and a decoding failure inside
    the ``with`` block (a truncated PNG or JPEG) are each a :class:`ConfigError` naming the file.
    Pillow's own decompression-bomb warning is silenced for the call only (that size is refused
    here anyway); its global settings are left alone.
    """
    image_module = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            with image_module.open(file) as image:
                width, height = image.size
                if width * height > _MAX_IMAGE_PIXELS:
                    raise ConfigError(
                        f"imagefolder: {file} is {width}×{height} pixels, over the limit of "
                        f"{_MAX_IMAGE_PIXELS // 1_000_000} megapixels (a decompression bomb, or a "
                        f"picture far larger than training needs); shrink or remove it")
                yield image
    except ConfigError:
        raise
    except image_module.DecompressionBombError as error:
        raise ConfigError(f"imagefolder: {file} is too large to decode ({error}); shrink or "
                          f"remove it") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's ways of saying "damaged"
        raise ConfigError(f"imagefolder: cannot read image {file} ({error}); fix or remove "
                          f"it") from None


def _check_image_headers(classes: dict[str, list[Path]]) -> None:
    """Open every image without decoding it: non-images and oversized images fail here."""
    for files in classes.values():
        for file in files:
            with _open_image(file):
                pass


def _read_split(classes: dict[str, list[Path]], index: dict[str, int],
                size: int) -> Split:
    """Decode every image to RGB at ``size``×``size`` (Pillow bilinear, antialiased)."""
    bilinear = _pillow().Resampling.BILINEAR
    images, labels = [], []
    for class_name, files in classes.items():
        for file in files:
            with _open_image(file) as image:
                rgb = image.convert("RGB").resize((size, size), bilinear)
                images.append(np.asarray(rgb, dtype=np.uint8))
            labels.append(index[class_name])
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return stacked, np.asarray(labels, dtype=np.int64)


def _check(data_dir: str | Path | None, download: bool) -> DatasetInfo:
    """Every split's class folders, and every image's header; nothing to download."""
    root = existing_dir("imagefolder", data_dir)
    splits = [_list_classes(root / "train", 2)]
    for split in ("val", "test"):
        if (root / split).is_dir():
            splits.append(_list_classes(root / split))
            _check_subset(splits[-1], splits[0], root / split)
    for classes in splits:
        _check_image_headers(classes)
    return _imagefolder_info(splits[0])


def _load(data_dir: str | Path | None, input_size: int, seed: int, val_fraction: float,
          download: bool) -> DataSplits:
    """``root/train/<class>/*`` plus optional ``val/`` and ``test/``; classes sorted by name."""
    root = existing_dir("imagefolder", data_dir)
    train_classes = _list_classes(root / "train", 2)
    index = {name: i for i, name in enumerate(train_classes)}
    pool = _read_split(train_classes, index, input_size)
    held: dict[str, Split] = {}
    for split in ("test", "val"):
        if (root / split).is_dir():
            classes = _list_classes(root / split)
            _check_subset(classes, train_classes, root / split)
            held[split] = _read_split(classes, index, input_size)
    if "test" not in held:
        pool, held["test"] = split_pool(*pool, TEST_FRACTION, TEST_SEED)
    if "val" not in held:
        pool, held["val"] = split_pool(*pool, val_fraction, seed)
    return assemble(_imagefolder_info(train_classes), input_size, True,
                    (pool, held["val"], held["test"]))


IMAGEFOLDER = Loader(_check, _load)
