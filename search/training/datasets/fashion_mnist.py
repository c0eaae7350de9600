"""Fashion-MNIST: its four IDX files (gzipped or not) from the data directory, Debian's package
or the per-user cache (downloaded and md5-checked there), headers checked before loading; small
input sizes pad the 28×28 pictures instead of resizing them."""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch
import torch.nn.functional as F

from hetconv.errors import ConfigError
from search.training.datasets.downloads import cache_root, data_root, download_file, existing_dir
from search.training.datasets.splits import (
    DatasetInfo,
    DataSplits,
    Loader,
    Split,
    assemble,
    resize,
    split_pool,
)

_FASHION = DatasetInfo("fashion-mnist", 1, 10, (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot"))

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Where torchvision fetches the files. S3 website endpoints serve plain HTTP only (https://
there does not answer); the md5 below is what vouches for each file."""

_FASHION_MD5 = {  # of the official gzipped files; Debian's are re-gzipped, same content
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

_FASHION_SPLITS = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                   ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))

_FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""

_PAD_UP_TO = 36
"""Largest input size 28×28 pictures are padded to rather than resized: at most a 4-pixel frame,
beyond which the garment would shrink to a small part of its canvas."""


@dataclass(frozen=True)
class _IdxKind:
    """What an IDX file holds: its magic number and the shape of one item."""

    what: str
    magic: int
    item_shape: tuple[int, ...]

    @property
    def header_bytes(self) -> int:
        return 4 * (2 + len(self.item_shape))  # magic, count, item dimensions


_IDX_KINDS = (_IdxKind("images", 0x00000803, (28, 28)), _IdxKind("labels", 0x00000801, ()))


def _idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The Fashion-MNIST files present in ``folder`` (plain or ``.gz``), and the ones missing."""
    present, missing = {}, []
    for stem in _FASHION_MD5:
        found = [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()]
        if found:
            present[stem] = found[0]
        else:
            missing.append(stem)
    return present, missing


def _fashion_folder(data_dir: str | Path | None) -> Path:
    """``data_dir`` when given, else Debian's folder when complete, else the per-user cache."""
    if data_dir is not None:
        return data_root("fashion-mnist", data_dir)
    if not _idx_files(_FASHION_SYSTEM_DIR)[1]:
        return _FASHION_SYSTEM_DIR
    return cache_root() / "fashion-mnist"


def _missing_fashion_message(folder: Path, missing: Sequence[str], problem: str) -> str:
    names = ", ".join(f"{stem}[.gz]" for stem in missing)
    return (f"fashion-mnist: {names} missing in {folder} and {problem}; install Debian's package "
            f"(apt-get install dataset-fashion-mnist, used when no data directory is given) or "
            f"download them from {_FASHION_URL} into {folder}")


def _fashion_fix(path: Path) -> str:
    stem = path.name.removesuffix(".gz")
    return (f"replace it with {_FASHION_URL}{stem}.gz (or apt-get install "
            f"dataset-fashion-mnist and pass no data directory)")


def _fashion_files(folder: Path, download: bool) -> dict[str, Path]:
    """Each file's path in ``folder``, downloading the missing ones (md5 checked) if allowed."""
    present, missing = _idx_files(folder)
    if missing and not download:
        raise ConfigError(_missing_fashion_message(folder, missing, "download is off"))
    explain = functools.partial(_missing_fashion_message, folder, missing)
    for stem in missing:
        present[stem] = folder / f"{stem}.gz"
        download_file(f"{_FASHION_URL}{stem}.gz", present[stem], _FASHION_MD5[stem], explain)
    return present


def _check(data_dir: str | Path | None, download: bool) -> DatasetInfo:
    """Headers only: each file's magic, item shape, plain length, and image/label counts."""
    folder = (existing_dir("fashion-mnist", data_dir) if data_dir is not None
              else _fashion_folder(None))
    present, missing = _idx_files(folder)
    if missing and not download:
        raise ConfigError(_missing_fashion_message(folder, missing, "download is off"))
    for pair in _FASHION_SPLITS:
        counts = [(present[stem], _idx_count(present[stem], kind))
                  for stem, kind in zip(pair, _IDX_KINDS, strict=True) if stem in present]
        if len(counts) == 2:
            _check_counts(*counts)
    return _FASHION


@contextmanager
def _idx_opened(path: Path, kind: _IdxKind) -> Iterator[tuple[IO[bytes], int]]:
    """``path`` opened past its checked header, with the item count it declares.

    Gzip is told by the first bytes, not the name; a file that cannot be read or decompressed
    (a truncated ``.gz``) is a :class:`ConfigError` naming it.
    """
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        with cast(IO[bytes], gzip.open(path, "rb") if gzipped else path.open("rb")) as file:
            head = file.read(kind.header_bytes)
            if len(head) < kind.header_bytes:
                raise ConfigError(f"{path} is truncated: {len(head)} bytes, shorter than an IDX "
                                  f"header; {_fashion_fix(path)}")
            magic, count, *shape = struct.unpack(f">{len(head) // 4}I", head)
            if magic != kind.magic:
                raise ConfigError(f"{path} is not an IDX {kind.what} file (magic 0x{magic:08x}, "
                                  f"expected 0x{kind.magic:08x}); {_fashion_fix(path)}")
            if tuple(shape) != kind.item_shape:
                raise ConfigError(f"{path} holds {kind.what} of shape {tuple(shape)}, "
                                  f"Fashion-MNIST's are {kind.item_shape}; {_fashion_fix(path)}")
            yield file, count
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError(f"{path} cannot be read ({type(error).__name__}: {error}); "
                          f"{_fashion_fix(path)}") from None


def _check_length(path: Path, kind: _IdxKind, count: int, body_bytes: int) -> None:
    expected = count * math.prod(kind.item_shape)
    if body_bytes != expected:
        problem = "truncated" if body_bytes < expected else "longer than its header says"
        raise ConfigError(f"{path} is {problem}: {body_bytes} bytes of {kind.what} after the "
                          f"header, {expected} expected for {count} {kind.what}; "
                          f"{_fashion_fix(path)}")


def _idx_count(path: Path, kind: _IdxKind) -> int:
    """The header's item count. A plain file's length is checked too; a gzipped one's needs
    decompressing, so loading checks it."""
    with _idx_opened(path, kind) as (file, count):
        gzipped = isinstance(file, gzip.GzipFile)
    if not gzipped:
        _check_length(path, kind, count, path.stat().st_size - kind.header_bytes)
    return count


def _read_idx(path: Path, kind: _IdxKind) -> np.ndarray:
    """All of an IDX file's items, ``uint8 (count, *item_shape)``, its length checked."""
    with _idx_opened(path, kind) as (file, count):
        body = file.read()
    _check_length(path, kind, count, len(body))
    return np.frombuffer(body, dtype=np.uint8).reshape(count, *kind.item_shape).copy()


def _check_counts(images: tuple[Path, int], labels: tuple[Path, int]) -> None:
    if images[1] != labels[1]:
        raise ConfigError(f"{images[0]} holds {images[1]} images but {labels[0]} holds "
                          f"{labels[1]} labels; use both files of one release: "
                          f"{_fashion_fix(labels[0])}")


def _read_idx_split(files: dict[str, Path], pair: tuple[str, str]) -> Split:
    """One split's images ``uint8 (N, 1, 28, 28)`` and labels, checked against each other."""
    images_path, labels_path = files[pair[0]], files[pair[1]]
    images_kind, labels_kind = _IDX_KINDS
    images, labels = _read_idx(images_path, images_kind), _read_idx(labels_path, labels_kind)
    _check_counts((images_path, len(images)), (labels_path, len(labels)))
    if labels.max(initial=0) >= _FASHION.num_classes:
        raise ConfigError(f"{labels_path} holds label {labels.max()}, but Fashion-MNIST's are "
                          f"0..{_FASHION.num_classes - 1}; {_fashion_fix(labels_path)}")
    return torch.from_numpy(images).unsqueeze(1), labels.astype(np.int64)


def _pad_or_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre small pictures on a zero ``size``×``size`` canvas, their pixels untouched, when
    ``size`` lies between their side and :data:`_PAD_UP_TO`; else :func:`resize` them."""
    height, width = images.shape[-2:]
    if not max(height, width) <= size <= _PAD_UP_TO:
        return resize(images, size)
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top))


def _load(data_dir: str | Path | None, input_size: int, seed: int, val_fraction: float,
          download: bool) -> DataSplits:
    """The 60,000 training images split by seed into train and val; the 10,000 ``t10k`` test."""
    files = _fashion_files(_fashion_folder(data_dir), download)
    (train_x, train_y), test = (_read_idx_split(files, pair) for pair in _FASHION_SPLITS)
    train, val = split_pool(train_x, train_y, val_fraction, seed)
    splits = [(_pad_or_resize(x, input_size), y) for x, y in (train, val, test)]
    return assemble(_FASHION, input_size, True, splits)


FASHION_MNIST = Loader(_check, _load)


def write_idx(path: Path, items: np.ndarray, magic: int) -> None:
    """``items`` (uint8, first axis the count) as an IDX file, gzipped when ``path`` ends in .gz."""
    content = struct.pack(f">{1 + items.ndim}I", magic, *items.shape) + items.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, mtime=0) if path.suffix == ".gz" else content)


def write_prefix(root: Path, train: int, test: int, source: Path | None = None,
                 gz: bool = True) -> dict[str, np.ndarray]:
    """The first ``train`` training and ``test`` t10k images and labels of Fashion-MNIST, as the
    four IDX files in ``root`` (``.gz`` when ``gz``): a smaller data set in the same format, for
    a quick search (``--data-dir root``), the tests and the benchmarks.

    Reads only the prefix it needs of the files in ``source`` (default: where the loader looks
    without a data directory), through the loader's header checks. Returns each file's items by
    name (``train-images-idx3-ubyte``: ``uint8 (train, 28, 28)``).
    """
    folder = _fashion_folder(None) if source is None else source
    present = _fashion_files(folder, download=False)
    written = {}
    for pair, count in zip(_FASHION_SPLITS, (train, test), strict=True):
        for stem, kind in zip(pair, _IDX_KINDS, strict=True):
            with _idx_opened(present[stem], kind) as (file, total):
                if count > total:
                    raise ConfigError(f"{present[stem]} holds only {total} {kind.what}, not "
                                      f"{count}")
                body = file.read(count * math.prod(kind.item_shape))
            items = np.frombuffer(bytearray(body), dtype=np.uint8).reshape(count, *kind.item_shape)
            write_idx(root / (f"{stem}.gz" if gz else stem), items, kind.magic)
            written[stem] = items
    return written
