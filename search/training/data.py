"""Data sets as in-memory uint8 tensors with train / validation / test splits.

Every data set comes back as :class:`DataSplits`: images ``uint8 (N, C, S, S)`` at the requested
input size, labels ``int64``. ``C`` is the data set's own channel count: 1 for the grayscale
digits and Fashion-MNIST, 3 for CIFAR and image folders (decoded to RGB). Augmentation is
left to the trainer, per batch on its device (``search.training.augment``), and normalisation to the
network, with the per-channel statistics computed here; so the data stay four times smaller
than float. :func:`check_dataset` tells a data set's facts (:class:`DatasetInfo`) without
loading it.

Splits, chosen so that trials are comparable:

* the **test** split never depends on ``seed``: CIFAR's own test batch, Fashion-MNIST's 10,000
  ``t10k`` images, an image folder's ``test/``, or else a fixed stratified 20 % of the data
  (digits, image folders without ``test/``). Every trial of every search is scored on the same
  held-out images;
* the **validation** split is a stratified ``val_fraction`` of what is left (of the training
  images), drawn by ``seed``; an image folder's ``val/`` is used as is;
* **train** is the rest. Normalisation statistics come from the training split only.

Sizes: images are resized bilinearly with antialias, except Fashion-MNIST's 28×28 pictures at
input sizes 28..36, which are centred on a zero canvas instead (as LeNet-5 padded MNIST to
32×32): the pixels stay as drawn, with no interpolation blur, and the networks' 32-pixel
designs see the whole garment.

Fashion-MNIST's four IDX files (gzipped or not) come from ``data_dir`` when given, else from
Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), else from
the per-user cache ``$XDG_CACHE_HOME/hetnas/fashion-mnist`` (``~/.cache/hetnas/...``), where
they are downloaded once. Damaged files of any data set are a :class:`ConfigError` naming the
file, the problem and the fix, raised before any training starts.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

from hetconv.errors import ConfigError, param
from search.store.files import write_atomic

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagefolder", "fashion-mnist")

TEST_FRACTION = 0.2
"""Share of the data held out for testing where a data set has no test split of its own."""

_TEST_SEED = 20190612
"""Fixed seed of that test split, so it is the same for every trial and every search."""

_CHUNK = 2048  # images per resize / statistics chunk: bounds the float working memory

_Split = tuple[torch.Tensor, np.ndarray]  # images and their labels


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
    ``0..1`` scale, from the training split. ``hflip`` says whether mirroring an image keeps its
    label.
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


def load_dataset(name: str, input_size: int, data_dir: str | Path | None = None, seed: int = 0,
                 val_fraction: float = 0.1, download: bool = True) -> DataSplits:
    """Load ``name`` at ``input_size`` and split it (see the module docstring).

    ``digits`` ignores ``data_dir``; CIFAR looks for the official python batches there and
    Fashion-MNIST for its IDX files (see the module docstring for where without one). Missing
    CIFAR or Fashion-MNIST files are downloaded and md5-checked when ``download`` is true.
    """
    _check_name(name)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(f"input size must be a positive integer, got {input_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"data seed must be a non-negative integer, got {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if name == "digits":
        return _load_digits(input_size, seed, val_fraction)
    if name == "imagefolder":
        return _load_imagefolder(_existing_dir(name, data_dir), input_size, seed, val_fraction)
    if name == "fashion-mnist":
        files = _fashion_files(_fashion_folder(data_dir), download)
        return _load_fashion(files, input_size, seed, val_fraction)
    return _load_cifar(_CIFAR[name], _data_root(name, data_dir), input_size, seed, val_fraction,
                       download)


def check_dataset(name: str, data_dir: str | Path | None, download: bool = True) -> DatasetInfo:
    """Cheap up-front validation for the CLI: raise :class:`ConfigError` naming problem and fix.

    Reads directory listings and file headers only, never whole data sets, and returns what the
    data set is. Files that are absent pass when ``download`` is true (loading fetches them) or
    CIFAR's tarball is in place; CIFAR-100's class names are then unknown (None) until fetched.
    """
    _check_name(name)
    if name == "digits":
        return _DIGITS
    if name == "imagefolder":
        root = _existing_dir(name, data_dir)
        splits = [_list_classes(root / "train", 2)]
        for split in ("val", "test"):
            if (root / split).is_dir():
                splits.append(_list_classes(root / split))
                _check_subset(splits[-1], splits[0], root / split)
        for classes in splits:
            _check_image_headers(classes)
        return _imagefolder_info(splits[0])
    if name == "fashion-mnist":
        _check_fashion(data_dir, download)
        return _FASHION
    spec, root = _CIFAR[name], _existing_dir(name, data_dir)
    if (root / spec.folder).exists():
        for file in (*spec.train_files, *spec.test_files):
            _check_pickle_ends(root / spec.folder / file, spec)
    elif not (root / spec.tarball).is_file() and not download:
        raise ConfigError(_missing_cifar_message(spec, root, "the files are missing"))
    return _cifar_info(spec, root)


# -- splitting and statistics ---------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


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


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
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


def _assemble(info: DatasetInfo, input_size: int, hflip: bool,
              splits: Sequence[_Split]) -> DataSplits:
    """Build :class:`DataSplits` from (images, labels) for train, val and test."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    mean, std = _channel_stats(train_x)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(y, dtype=np.int64))

    return DataSplits(info.name, info.num_classes, info.class_names, input_size, train_x,
                      labels(train_y), val_x, labels(val_y), test_x, labels(test_y), mean, std,
                      hflip)


def _split_pool(x: torch.Tensor, y: np.ndarray, fraction: float,
                seed: int) -> tuple[_Split, _Split]:
    """Split images and labels into (kept, held) by :func:`_stratified_split`."""
    kept, held = _stratified_split(y, fraction, seed)
    kept_t, held_t = torch.from_numpy(kept), torch.from_numpy(held)
    return (x[kept_t], y[kept]), (x[held_t], y[held])


# -- digits -------------------------------------------------------------------------------

_DIGITS = DatasetInfo("digits", 1, 10, tuple(str(digit) for digit in range(10)))


def _load_digits(input_size: int, seed: int, val_fraction: float) -> DataSplits:
    """scikit-learn's 1797 8×8 grayscale digits (values 0..16), upsampled."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    images = _resize(images, input_size)
    labels = bunch.target.astype(np.int64)
    pool, test = _split_pool(images, labels, TEST_FRACTION, _TEST_SEED)
    train, val = _split_pool(*pool, val_fraction, seed)
    return _assemble(_DIGITS, input_size, False, (train, val, test))


# -- image folders ----------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_MAX_IMAGE_PIXELS = 64_000_000
"""Largest image decoded (64 megapixels, 192 MB as RGB). Anything bigger is a decompression
bomb or a picture far larger than any input size here; it is refused by name, before decoding,
instead of meeting Pillow's warning (over 89 MP) or its error (over 179 MP)."""


def _data_root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise ConfigError(f"dataset {name!r} needs a data directory; pass one "
                          f"({param('data_dir')})")
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data directory {root} is a file; pass the directory that holds "
                          f"the {name} data")
    return root


def _existing_dir(name: str, data_dir: str | Path | None) -> Path:
    root = _data_root(name, data_dir)
    if not root.is_dir():
        holds = ("train/<class>/*.png (or .jpg) inside" if name == "imagefolder"
                 else f"the {name} files (or room to download them) inside")
        raise ConfigError(f"data directory {root} does not exist; create it with {holds}, "
                          f"or fix the path")
    return root


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
                size: int) -> _Split:
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


def _load_imagefolder(root: Path, input_size: int, seed: int, val_fraction: float) -> DataSplits:
    """``root/train/<class>/*`` plus optional ``val/`` and ``test/``; classes sorted by name."""
    train_classes = _list_classes(root / "train", 2)
    index = {name: i for i, name in enumerate(train_classes)}
    pool = _read_split(train_classes, index, input_size)
    held: dict[str, _Split] = {}
    for split in ("test", "val"):
        if (root / split).is_dir():
            classes = _list_classes(root / split)
            _check_subset(classes, train_classes, root / split)
            held[split] = _read_split(classes, index, input_size)
    if "test" not in held:
        pool, held["test"] = _split_pool(*pool, TEST_FRACTION, _TEST_SEED)
    if "val" not in held:
        pool, held["val"] = _split_pool(*pool, val_fraction, seed)
    return _assemble(_imagefolder_info(train_classes), input_size, True,
                     (pool, held["val"], held["test"]))


# -- CIFAR ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str
    class_names: tuple[str, ...] | None  # None: read from meta_file's names_key
    meta_file: str = ""
    names_key: str = ""

    @property
    def tarball(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_CIFAR = {
    "cifar10": _CifarSpec("cifar10", "cifar-10-batches-py",
                          tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                          "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a",
                          ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                           "horse", "ship", "truck")),
    "cifar100": _CifarSpec("cifar100", "cifar-100-python", ("train",), ("test",), "fine_labels",
                           100, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           "eb9058c3a382ffc7106e4002c42a8d85", None, "meta", "fine_label_names"),
}

_DOWNLOAD_TIMEOUT_S = 20


def _multiarray() -> Any:
    try:
        import numpy._core.multiarray as multiarray
        import numpy._core.numeric as numeric
    except ImportError:  # numpy < 2
        import numpy.core.multiarray as multiarray
        import numpy.core.numeric as numeric
    return multiarray, numeric


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a CIFAR python file may construct: numpy arrays of plain dtypes, and bytes."""
    multiarray, numeric = _multiarray()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that constructs only :func:`_allowed_globals`; anything else is refused."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ConfigError(
                f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR python batch holds "
                f"only numpy arrays, lists and bytes. Replace it with the official file") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ConfigError(f"{self.path}: refusing a pickle with persistent ids; replace it with "
                          f"the official file")


def _check_pickle_ends(path: Path, spec: _CifarSpec) -> None:
    """Fail fast when a CIFAR file is missing, is not a pickle (protocol >= 2), or is cut short.

    Reads two bytes: a pickle starts with PROTO (``0x80``) and ends with STOP (``.``), so a
    truncated copy is caught here, before anything is unpickled.
    """
    if not path.is_file():
        raise ConfigError(_missing_cifar_message(spec, path.parent.parent, f"{path} is missing"))
    fix = f"replace it with the file from {spec.url}"
    with path.open("rb") as file:
        if file.read(1) != b"\x80":
            raise ConfigError(f"{path} is not a {spec.name} python file (not a pickle); {fix}")
        file.seek(-1, os.SEEK_END)
        if file.read(1) != pickle.STOP:
            raise ConfigError(f"{path} is truncated (it does not end like a complete pickle); "
                              f"{fix}")


def _unpickle_dict(path: Path, spec: _CifarSpec) -> dict[str, Any]:
    """A CIFAR python file's dict, keys decoded, unpickled by :class:`_RestrictedUnpickler`."""
    _check_pickle_ends(path, spec)
    bad = f"{path} is not a {spec.name} python file"
    fix = f"replace it with the file from {spec.url}"
    try:
        with path.open("rb") as file:
            content = _RestrictedUnpickler(file, path).load()
    except ConfigError:
        raise
    except Exception as error:  # corrupt: any unpickling failure is the file's fault
        raise ConfigError(f"{bad} (cannot unpickle: {type(error).__name__}: {error}); "
                          f"{fix}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{bad} (holds a {type(content).__name__}, not a dict); {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _read_batch(path: Path, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """One python batch file: ``uint8 (N, 3, 32, 32)`` images and ``int64 (N,)`` labels."""
    batch = _unpickle_dict(path, spec)
    bad = f"{path} is not a {spec.name} python file"
    fix = f"replace it with the file from {spec.url}"
    data, labels = batch.get("data"), batch.get(spec.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise ConfigError(f"{bad} (needs 'data' as uint8 (N, 3072)); {fix}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{bad} ('{spec.label_key}' is not a list of integers); {fix}") from None
    if labels.size != len(data) or labels.min(initial=0) < 0 \
            or labels.max(initial=0) >= spec.num_classes:
        raise ConfigError(f"{bad} (needs {len(data)} '{spec.label_key}' in "
                          f"0..{spec.num_classes - 1}); {fix}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_info(spec: _CifarSpec, root: Path) -> DatasetInfo:
    """CIFAR's facts; CIFAR-100's class names come from its ``meta`` file when it is there."""
    names = spec.class_names
    meta = root / spec.folder / spec.meta_file
    if names is None and meta.is_file():
        listed = _unpickle_dict(meta, spec).get(spec.names_key)
        if not isinstance(listed, list) or len(listed) != spec.num_classes \
                or not all(isinstance(n, (bytes, str)) for n in listed):
            raise ConfigError(f"{meta} is not a {spec.name} python file (needs "
                              f"{spec.num_classes} '{spec.names_key}'); replace it with the "
                              f"file from {spec.url}")
        names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in listed)
    return DatasetInfo(spec.name, 3, spec.num_classes, names)


def _read_files(root: Path, files: Sequence[str],
                spec: _CifarSpec) -> _Split:
    parts = [_read_batch(root / spec.folder / file, spec) for file in files]
    images = np.concatenate([p[0] for p in parts])
    return torch.from_numpy(images), np.concatenate([p[1] for p in parts])


def _load_cifar(spec: _CifarSpec, root: Path, input_size: int, seed: int, val_fraction: float,
                download: bool) -> DataSplits:
    """The official python batches; validation carved from the training batches by seed."""
    if not (root / spec.folder).exists():
        _fetch_cifar(spec, root, download)
    train_x, train_y = _read_files(root, spec.train_files, spec)
    test_x, test_y = _read_files(root, spec.test_files, spec)
    train, val = _split_pool(train_x, train_y, val_fraction, seed)
    splits = [(_resize(x, input_size), y) for x, y in (train, val, (test_x, test_y))]
    return _assemble(_cifar_info(spec, root), input_size, True, splits)


def _missing_cifar_message(spec: _CifarSpec, root: Path, problem: str) -> str:
    return (f"{spec.name}: {problem}; download {spec.url} and extract it so that "
            f"{root / spec.folder / spec.train_files[0]} exists (or put {spec.tarball} in "
            f"{root})")


def _fetch_cifar(spec: _CifarSpec, root: Path, download: bool) -> None:
    """Extract a tarball already in ``root``, else download it (md5 checked), else explain."""
    tarball = root / spec.tarball
    if tarball.is_file():  # put there by the user: check it too
        digest = _md5(tarball)
        if digest != spec.md5:
            raise ConfigError(f"{tarball} has md5 {digest}, expected {spec.md5}; it is corrupt "
                              f"or not the official file: delete it and download {spec.url} "
                              f"again")
    elif download:
        _download(spec.url, tarball, spec.md5, lambda problem: _missing_cifar_message(
            spec, root, f"the files are missing and {problem}"))
    else:
        raise ConfigError(_missing_cifar_message(spec, root, "the files are missing and "
                                                 "download is off"))
    _safe_extract(tarball, root, spec)


def _safe_extract(tarball: Path, root: Path, spec: _CifarSpec) -> None:
    """Extract regular files and folders inside ``root`` only, via a temporary folder.

    The finished folder is moved into place in one rename, so concurrent loaders never see a
    half-extracted data set.
    """
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = archive.getmembers()
            for member in members:
                target = (staging / member.name).resolve()
                if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() \
                        or not target.is_relative_to(staging.resolve()):
                    raise ConfigError(f"{tarball}: refusing unsafe archive entry {member.name!r};"
                                      f" delete it and download {spec.url} again")
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Pythons without extraction filters
                archive.extractall(staging, members=members)
        if not (staging / spec.folder).is_dir():
            raise ConfigError(f"{tarball} has no {spec.folder}/ folder; delete it and download "
                              f"{spec.url} again")
        try:
            os.replace(staging / spec.folder, root / spec.folder)
        except OSError:
            if not (root / spec.folder).is_dir():  # else another loader finished first
                raise
    except tarfile.TarError as error:
        raise ConfigError(f"{tarball} is not a readable tar.gz ({error}); delete it and "
                          f"download {spec.url} again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- Fashion-MNIST (IDX files) ----------------------------------------------------------------

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


def _cache_root() -> Path:
    """Per-user cache for downloads that have no data directory (XDG, else ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hetnas"


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
        return _data_root("fashion-mnist", data_dir)
    if not _idx_files(_FASHION_SYSTEM_DIR)[1]:
        return _FASHION_SYSTEM_DIR
    return _cache_root() / "fashion-mnist"


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
        _download(f"{_FASHION_URL}{stem}.gz", present[stem], _FASHION_MD5[stem], explain)
    return present


def _check_fashion(data_dir: str | Path | None, download: bool) -> None:
    """Headers only: each file's magic, item shape, plain length, and image/label counts."""
    folder = (_existing_dir("fashion-mnist", data_dir) if data_dir is not None
              else _fashion_folder(None))
    present, missing = _idx_files(folder)
    if missing and not download:
        raise ConfigError(_missing_fashion_message(folder, missing, "download is off"))
    for pair in _FASHION_SPLITS:
        counts = [(present[stem], _idx_count(present[stem], kind))
                  for stem, kind in zip(pair, _IDX_KINDS, strict=True) if stem in present]
        if len(counts) == 2:
            _check_counts(*counts)


@contextmanager
def _idx_opened(path: Path, kind: _IdxKind) -> Iterator[tuple[IO[bytes], int]]:
    """``path`` opened past its checked header, with the item count it declares.

    Gzip is told by the first bytes, not the name; a file that cannot be read or decompressed
    (a truncated ``.gz``) is a :class:`ConfigError` naming it.
    """
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else path.open("rb")) as file:
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


def _read_idx_split(files: dict[str, Path], pair: tuple[str, str]) -> _Split:
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
    ``size`` lies between their side and :data:`_PAD_UP_TO`; else :func:`_resize` them."""
    height, width = images.shape[-2:]
    if not max(height, width) <= size <= _PAD_UP_TO:
        return _resize(images, size)
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top))


def _load_fashion(files: dict[str, Path], input_size: int, seed: int,
                  val_fraction: float) -> DataSplits:
    """The 60,000 training images split by seed into train and val; the 10,000 ``t10k`` test."""
    (train_x, train_y), test = (_read_idx_split(files, pair) for pair in _FASHION_SPLITS)
    train, val = _split_pool(train_x, train_y, val_fraction, seed)
    splits = [(_pad_or_resize(x, input_size), y) for x, y in (train, val, test)]
    return _assemble(_FASHION, input_size, True, splits)


# -- downloads ---------------------------------------------------------------------------------


def _download(url: str, target: Path, md5: str, explain: Callable[[str], str]) -> None:
    """Fetch ``url`` to ``target``, creating its folder: never a partial or corrupt file there.

    The bytes go to a temporary file beside ``target``, renamed into place only once their md5
    matches, so concurrent loaders see the whole file or none. ``explain(problem)`` words the
    error when the download fails.
    """
    def fetch(part: Path) -> None:
        with part.open("wb") as out, \
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        digest = _md5(part)
        if digest != md5:
            raise ConfigError(f"download of {url} was corrupt (md5 {digest}, expected {md5}); "
                              f"try again, or fetch it another way and put it in {target.parent}")

    try:
        write_atomic(target, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise ConfigError(explain(f"the download failed ({error})")) from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
