"""CIFAR-10 and CIFAR-100: the official python batches in the data directory, extracted from
their tarball (downloaded and md5-checked when missing) and unpickled by an unpickler that
constructs nothing but numpy arrays and bytes."""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetconv.errors import ConfigError
from search.training.datasets.downloads import data_root, download_file, existing_dir, file_md5
from search.training.datasets.splits import (
    DatasetInfo,
    DataSplits,
    Loader,
    Split,
    assemble,
    resize,
    split_pool,
)


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


def _multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray"), \
            importlib.import_module("numpy._core.numeric")
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray"), \
            importlib.import_module("numpy.core.numeric")


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
                spec: _CifarSpec) -> Split:
    parts = [_read_batch(root / spec.folder / file, spec) for file in files]
    images = np.concatenate([p[0] for p in parts])
    return torch.from_numpy(images), np.concatenate([p[1] for p in parts])


def _check(name: str, data_dir: str | Path | None, download: bool) -> DatasetInfo:
    """Both ends of every batch file; absent files pass when the tarball is in place or
    ``download`` is on."""
    spec, root = _CIFAR[name], existing_dir(name, data_dir)
    if (root / spec.folder).exists():
        for file in (*spec.train_files, *spec.test_files):
            _check_pickle_ends(root / spec.folder / file, spec)
    elif not (root / spec.tarball).is_file() and not download:
        raise ConfigError(_missing_cifar_message(spec, root, "the files are missing"))
    return _cifar_info(spec, root)


def _load(name: str, data_dir: str | Path | None, input_size: int, seed: int,
          val_fraction: float, download: bool) -> DataSplits:
    """The official python batches; validation carved from the training batches by seed."""
    spec, root = _CIFAR[name], data_root(name, data_dir)
    if not (root / spec.folder).exists():
        _fetch_cifar(spec, root, download)
    train_x, train_y = _read_files(root, spec.train_files, spec)
    test_x, test_y = _read_files(root, spec.test_files, spec)
    train, val = split_pool(train_x, train_y, val_fraction, seed)
    splits = [(resize(x, input_size), y) for x, y in (train, val, (test_x, test_y))]
    return assemble(_cifar_info(spec, root), input_size, True, splits)


def _missing_cifar_message(spec: _CifarSpec, root: Path, problem: str) -> str:
    return (f"{spec.name}: {problem}; download {spec.url} and extract it so that "
            f"{root / spec.folder / spec.train_files[0]} exists (or put {spec.tarball} in "
            f"{root})")


def _fetch_cifar(spec: _CifarSpec, root: Path, download: bool) -> None:
    """Extract a tarball already in ``root``, else download it (md5 checked), else explain."""
    tarball = root / spec.tarball
    if tarball.is_file():  # put there by the user: check it too
        digest = file_md5(tarball)
        if digest != spec.md5:
            raise ConfigError(f"{tarball} has md5 {digest}, expected {spec.md5}; it is corrupt "
                              f"or not the official file: delete it and download {spec.url} "
                              f"again")
    elif download:
        download_file(spec.url, tarball, spec.md5, lambda problem: _missing_cifar_message(
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


def _loader(name: str) -> Loader:
    """``name``'s entry points; its spec is looked up in :data:`_CIFAR` at each call."""
    return Loader(functools.partial(_check, name), functools.partial(_load, name))


CIFAR10, CIFAR100 = _loader("cifar10"), _loader("cifar100")
