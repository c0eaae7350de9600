"""Data sets as in-memory uint8 tensors with train / validation / test splits.

Every data set comes back as :class:`DataSplits`: images ``uint8 (N, 3, S, S)`` at the requested
input size, labels ``int64``. Normalisation and augmentation are left to the trainer, which does
them per batch on its device (``search.augment``), so the data stay four times smaller than float.

Splits, chosen so that trials are comparable:

* the **test** split never depends on ``seed``: CIFAR's own test batch, an image folder's
  ``test/``, or else a fixed stratified 20 % of the data (digits, image folders without
  ``test/``). Every trial of every search is scored on the same held-out images;
* the **validation** split is a stratified ``val_fraction`` of what is left (of the training
  images), drawn by ``seed``; an image folder's ``val/`` is used as is;
* **train** is the rest. Normalisation statistics come from the training split only.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hetconv.errors import ConfigError

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagefolder")

TEST_FRACTION = 0.2
"""Share of the data held out for testing where a data set has no test split of its own."""

_TEST_SEED = 20190612
"""Fixed seed of that test split, so it is the same for every trial and every search."""

_CHUNK = 2048  # images per resize / statistics chunk: bounds the float working memory

_Split = tuple[torch.Tensor, np.ndarray]  # images and their labels


@dataclass(frozen=True, eq=False)
class DataSplits:
    """One data set in memory: three disjoint splits and the statistics to normalise them.

    Images are ``uint8`` in ``0..255`` (or float in ``0..1``), shape ``(N, 3, S, S)``; labels are
    ``int64`` in ``0..num_classes-1``. ``mean``/``std`` are per channel on the ``0..1`` scale,
    from the training split. ``hflip`` says whether mirroring an image keeps its label.
    """

    name: str
    num_classes: int
    input_size: int
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip: bool

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Images in (train, val, test)."""
        return len(self.train_y), len(self.val_y), len(self.test_y)


def load_dataset(name: str, input_size: int, data_dir: str | Path | None = None, seed: int = 0,
                 val_fraction: float = 0.1, download: bool = True) -> DataSplits:
    """Load ``name`` resized to ``input_size`` and split it (see the module docstring).

    ``digits`` ignores ``data_dir``; CIFAR looks for the official python batches there and, when
    they are missing and ``download`` is true, fetches and checks the official tarball.
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
    return _load_cifar(_CIFAR[name], _data_root(name, data_dir), input_size, seed, val_fraction,
                       download)


def check_dataset(name: str, data_dir: str | Path | None, download: bool = True) -> None:
    """Cheap up-front validation for the CLI: raise :class:`ConfigError` naming problem and fix.

    Reads directory listings and file headers only, never whole data sets. CIFAR files that are
    absent pass when ``download`` is true (loading fetches them) or the tarball is in place.
    """
    _check_name(name)
    if name == "digits":
        return
    if name == "imagefolder":
        root = _existing_dir(name, data_dir)
        classes = _list_classes(root / "train", 2)
        for split in ("val", "test"):
            if (root / split).is_dir():
                _check_subset(_list_classes(root / split), classes, root / split)
        return
    spec, root = _CIFAR[name], _existing_dir(name, data_dir)
    if (root / spec.folder).exists():
        for file in (*spec.train_files, *spec.test_files):
            _check_pickle_header(root / spec.folder / file, spec)
    elif not (root / spec.tarball).is_file() and not download:
        raise ConfigError(_missing_cifar_message(spec, root, "the files are missing"))


def fetch_dataset(name: str, data_dir: str | Path | None) -> None:
    """Make a data set's files present (downloading CIFAR once, in the driver) and check them.

    Trials then load with ``download=False``, so no worker downloads and an offline machine
    fails here, in one line, before any trial starts.
    """
    check_dataset(name, data_dir)
    if name in _CIFAR:
        spec, root = _CIFAR[name], _existing_dir(name, data_dir)
        if not (root / spec.folder).exists():
            _fetch_cifar(spec, root, download=True)
        check_dataset(name, data_dir, download=False)


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


def _assemble(name: str, num_classes: int, input_size: int, hflip: bool,
              splits: Sequence[_Split]) -> DataSplits:
    """Build :class:`DataSplits` from (images, labels) for train, val and test."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    mean, std = _channel_stats(train_x)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(y, dtype=np.int64))

    return DataSplits(name, num_classes, input_size, train_x, labels(train_y), val_x,
                      labels(val_y), test_x, labels(test_y), mean, std, hflip)


def _split_pool(x: torch.Tensor, y: np.ndarray, fraction: float,
                seed: int) -> tuple[_Split, _Split]:
    """Split images and labels into (kept, held) by :func:`_stratified_split`."""
    kept, held = _stratified_split(y, fraction, seed)
    kept_t, held_t = torch.from_numpy(kept), torch.from_numpy(held)
    return (x[kept_t], y[kept]), (x[held_t], y[held])


# -- digits -------------------------------------------------------------------------------


def _load_digits(input_size: int, seed: int, val_fraction: float) -> DataSplits:
    """scikit-learn's 1797 8×8 digits (values 0..16), upsampled and replicated to RGB."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    images = _resize(images, input_size).expand(-1, 3, -1, -1).contiguous()
    labels = bunch.target.astype(np.int64)
    pool, test = _split_pool(images, labels, TEST_FRACTION, _TEST_SEED)
    train, val = _split_pool(*pool, val_fraction, seed)
    return _assemble("digits", 10, input_size, False, (train, val, test))


# -- image folders ----------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _data_root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise ConfigError(f"dataset {name!r} needs a data directory; pass one (--data-dir)")
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


def _read_split(classes: dict[str, list[Path]], index: dict[str, int],
                size: int) -> _Split:
    """Decode every image to RGB at ``size``×``size`` (Pillow bilinear, antialiased)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ConfigError("dataset 'imagefolder' needs Pillow; pip install pillow") from None
    images, labels = [], []
    for class_name, files in classes.items():
        for file in files:
            try:
                with Image.open(file) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                    images.append(np.asarray(rgb, dtype=np.uint8))
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise ConfigError(f"imagefolder: cannot read image {file} ({error}); "
                                  f"fix or remove it") from None
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
    return _assemble("imagefolder", len(train_classes), input_size, True,
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

    @property
    def tarball(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_CIFAR = {
    "cifar10": _CifarSpec("cifar10", "cifar-10-batches-py",
                          tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                          "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a"),
    "cifar100": _CifarSpec("cifar100", "cifar-100-python", ("train",), ("test",), "fine_labels",
                           100, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           "eb9058c3a382ffc7106e4002c42a8d85"),
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
    """What a CIFAR python batch may construct: numpy arrays of plain dtypes, and bytes."""
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


def _check_pickle_header(path: Path, spec: _CifarSpec) -> None:
    """Fail fast when a batch file is missing or does not start like a pickle (protocol >= 2)."""
    if not path.is_file():
        raise ConfigError(_missing_cifar_message(spec, path.parent.parent, f"{path} is missing"))
    with path.open("rb") as file:
        if file.read(1) != b"\x80":
            raise ConfigError(f"{path} is not a CIFAR python batch (not a pickle); replace it "
                              f"with the file from {spec.url}")


def _read_batch(path: Path, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """One python batch file: ``uint8 (N, 3, 32, 32)`` images and ``int64 (N,)`` labels."""
    _check_pickle_header(path, spec)
    bad = f"{path} is not a {spec.name} python batch"
    fix = f"replace it with the file from {spec.url}"
    try:
        with path.open("rb") as file:
            batch = _RestrictedUnpickler(file, path).load()
    except ConfigError:
        raise
    except Exception as error:  # truncated or corrupt: any unpickling failure is the file's fault
        raise ConfigError(f"{bad} (cannot unpickle: {type(error).__name__}: {error}); "
                          f"{fix}") from None
    if not isinstance(batch, dict):
        raise ConfigError(f"{bad} (holds a {type(batch).__name__}, not a dict); {fix}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
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
    return _assemble(spec.name, spec.num_classes, input_size, True, splits)


def _missing_cifar_message(spec: _CifarSpec, root: Path, problem: str) -> str:
    return (f"{spec.name}: {problem}; download {spec.url} and extract it so that "
            f"{root / spec.folder / spec.train_files[0]} exists (or put {spec.tarball} in "
            f"{root})")


def _fetch_cifar(spec: _CifarSpec, root: Path, download: bool) -> None:
    """Extract a tarball already in ``root``, else download it (md5 checked), else explain."""
    tarball = root / spec.tarball
    if not tarball.is_file():
        if not download:
            raise ConfigError(_missing_cifar_message(spec, root, "the files are missing and "
                                                     "download is off"))
        root.mkdir(parents=True, exist_ok=True)
        _download(spec, tarball)
        digest = _md5(tarball)
        if digest != spec.md5:
            tarball.unlink()
            raise ConfigError(f"download of {spec.url} was corrupt (md5 {digest}, expected "
                              f"{spec.md5}); try again, or fetch it another way and put it in "
                              f"{root}")
    digest = _md5(tarball)
    if digest != spec.md5:
        raise ConfigError(f"{tarball} has md5 {digest}, expected {spec.md5}; it is corrupt or "
                          f"not the official file: delete it and download {spec.url} again")
    _safe_extract(tarball, root, spec)


def _download(spec: _CifarSpec, target: Path) -> None:
    """Fetch into a temporary file next to ``target``, then rename: never a partial tarball."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(spec.url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp_name, target)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise ConfigError(_missing_cifar_message(
            spec, target.parent, f"the files are missing and the download failed ({error})")) \
            from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
