"""Data sets (digits, CIFAR python batches, image folders, Fashion-MNIST) and augmentation."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hetconv import ConfigError
from search.training.augment import crop_padding, random_crop_flip, unit_range
from search.training.data import DATASETS, DatasetInfo, check_dataset, load_dataset
from search.training.datasets import cifar, downloads, fashion_mnist, splits
from search.training.datasets.fashion_mnist import write_idx
from tests.datasets import (
    CIFAR100_NAMES,
    fashion_mnist_source,
    write_cifar,
    write_fashion_mnist,
    write_imagefolder,
    write_pickle,
)

# -- digits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", 8)


def _rows(x: torch.Tensor, y: torch.Tensor) -> collections.Counter:
    """Multiset of (image bytes, label): compares splits even when images repeat."""
    return collections.Counter((img.numpy().tobytes(), int(label))
                               for img, label in zip(x, y, strict=True))


def test_digits_are_the_real_images_partitioned(digits8):
    d = digits8
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.channels) == \
        ("digits", 10, 8, False, 1)
    assert d.class_names == tuple("0123456789")
    assert sum(d.sizes) == 1797
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and x.is_contiguous()
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every split
    bunch = load_digits()
    expected = torch.from_numpy(np.round(bunch.images * 255 / 16).astype(np.uint8))
    everything = _rows(expected.unsqueeze(1), torch.from_numpy(bunch.target))
    got = _rows(d.train_x, d.train_y) + _rows(d.val_x, d.val_y) + _rows(d.test_x, d.test_y)
    assert got == everything  # each real image lands in exactly one split
    assert len(d.test_y) == pytest.approx(0.2 * 1797, abs=10)
    assert len(d.val_y) == pytest.approx(0.1 * (1797 - len(d.test_y)), abs=10)
    mean = d.train_x.double().mean().item() / 255
    assert d.mean == pytest.approx((mean,)) and len(d.std) == 1
    assert 0.1 < d.std[0] < 0.5


def test_digits_splits_depend_on_seed_but_test_is_fixed(digits8):
    again = load_dataset("digits", 8, seed=0)
    other = load_dataset("digits", 8, seed=1)
    for a, b in ((digits8.train_x, again.train_x), (digits8.val_y, again.val_y)):
        assert torch.equal(a, b)
    assert torch.equal(digits8.test_x, other.test_x) and torch.equal(digits8.test_y, other.test_y)
    assert not torch.equal(digits8.val_x, other.val_x)
    assert _rows(digits8.train_x, digits8.train_y) + _rows(digits8.val_x, digits8.val_y) == \
        _rows(other.train_x, other.train_y) + _rows(other.val_x, other.val_y)


def test_digits_resize_keeps_the_picture():
    d = load_dataset("digits", 32, val_fraction=0.2)
    assert d.train_x.shape[1:] == (1, 32, 32)
    small = load_dataset("digits", 8, val_fraction=0.2)
    assert torch.equal(d.test_y, small.test_y)
    # Averaging the upsampled image back to 8x8 gives about the original (bilinear blurs a bit).
    pooled = torch.nn.functional.avg_pool2d(d.test_x.float(), 4).flatten()
    assert torch.corrcoef(torch.stack([pooled, small.test_x.float().flatten()]))[0, 1] > 0.95
    brightness = d.test_x.float().mean().item()
    assert brightness == pytest.approx(small.test_x.float().mean().item(), rel=0.05)
    assert abs(len(d.val_y) - 0.2 * (1797 - len(d.test_y))) < 10


def test_stratified_split_is_a_partition():
    labels = np.repeat(np.arange(5), [1, 2, 10, 30, 57])
    kept, held = splits._stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(labels.size))
    assert set(labels[kept]) == set(range(5))  # every class keeps an image
    assert collections.Counter(labels[held].tolist()) == {2: 2, 3: 8, 4: 14}
    again, _ = splits._stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(kept, again)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "mnist"}, "unknown dataset 'mnist'; choose one of: digits, cifar10"),
    ({"input_size": 0}, "input size must be a positive integer"),
    ({"val_fraction": 1.0}, "val_fraction must lie strictly between 0 and 1"),
    ({"seed": -1}, "data seed must be an integer from 0 to"),
    ({"name": "cifar10"}, "needs a data directory"),
    ({"name": "imagefolder"}, "needs a data directory"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    args = {"name": "digits", "input_size": 8} | kwargs
    with pytest.raises(ConfigError, match=message):
        load_dataset(**args)


def test_check_dataset_names():
    assert DATASETS == ("digits", "cifar10", "cifar100", "imagefolder", "fashion-mnist")
    assert check_dataset("digits", None) == DatasetInfo("digits", 1, 10, tuple("0123456789"))
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        check_dataset("svhn", None)


# -- every kind: the facts told up front are the facts loaded ----------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_info_matches_what_loads(tmp_path, name):
    data_dir: Path | None = tmp_path
    if name == "digits":
        data_dir = None
    elif name == "imagefolder":
        write_imagefolder(tmp_path, classes=4, per_class=10)
    elif name == "fashion-mnist":
        write_fashion_mnist(tmp_path, train=200, test=50)
    else:
        write_cifar(tmp_path, name, per_batch=600 if name == "cifar100" else 20)
    info = check_dataset(name, data_dir, download=False)
    d = load_dataset(name, 16, data_dir, download=False)
    assert d.info == info and info.name == name
    assert info.channels == d.channels == d.train_x.shape[1] == len(d.mean) == len(d.std)
    assert info.num_classes == d.num_classes == len(info.class_names)
    assert int(d.train_y.max()) < info.num_classes
    expected = {"digits": (1, tuple("0123456789")),
                "cifar10": (3, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                "horse", "ship", "truck")),
                "cifar100": (3, tuple(CIFAR100_NAMES)),
                "imagefolder": (3, ("class_0", "class_1", "class_2", "class_3")),
                "fashion-mnist": (1, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))}
    assert (info.channels, info.class_names) == expected[name]


# -- CIFAR python batches ----------------------------------------------------------------------


def _images(batch: dict) -> torch.Tensor:
    return torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32).copy())


@pytest.mark.parametrize("fmt", ["py2", "2", "4", "5"])
def test_cifar10_reads_the_official_layout(tmp_path, fmt):
    batches = write_cifar(tmp_path, fmt=fmt)
    assert check_dataset("cifar10", tmp_path, download=False).num_classes == 10
    d = load_dataset("cifar10", 32, tmp_path, download=False)
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.sizes, d.channels) == \
        ("cifar10", 10, 32, True, (90, 10, 20), 3)
    assert torch.equal(d.test_x, _images(batches["test_batch"]))
    assert d.test_y.tolist() == batches["test_batch"][b"labels"]
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    everything = _rows(torch.cat([_images(b) for b in train]),
                       torch.tensor(sum((b[b"labels"] for b in train), [])))
    assert _rows(d.train_x, d.train_y) + _rows(d.val_x, d.val_y) == everything
    assert set(d.val_y.tolist()) == set(range(10))
    assert d.mean == pytest.approx((d.train_x.double().mean(dim=(0, 2, 3)) / 255).tolist())


def test_cifar_val_split_follows_seed_and_resizes(tmp_path):
    write_cifar(tmp_path)
    a = load_dataset("cifar10", 16, tmp_path, seed=0, download=False)
    b = load_dataset("cifar10", 16, tmp_path, seed=5, download=False)
    assert a.train_x.shape[1:] == (3, 16, 16) and a.train_x.dtype == torch.uint8
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.val_x, b.val_x)


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path):
    batches = write_cifar(tmp_path, "cifar100", per_batch=600)
    d = load_dataset("cifar100", 32, tmp_path, download=False)
    assert (d.num_classes, d.sizes) == (100, (500, 100, 600))
    assert set(d.val_y.tolist()) == set(range(100))
    assert d.test_y.tolist() == batches["test"][b"fine_labels"]
    assert d.class_names == tuple(CIFAR100_NAMES)
    (tmp_path / "cifar-100-python" / "meta").unlink()  # names unknown, the data still load
    assert check_dataset("cifar100", tmp_path).class_names is None
    assert load_dataset("cifar100", 8, tmp_path, download=False).class_names is None


def test_cifar100_damaged_meta_is_a_config_error(tmp_path):
    write_cifar(tmp_path, "cifar100", per_batch=600)
    write_pickle(tmp_path / "cifar-100-python" / "meta", {b"fine_label_names": [b"a", b"b"]})
    for call in (lambda: check_dataset("cifar100", tmp_path),
                 lambda: load_dataset("cifar100", 8, tmp_path, download=False)):
        with pytest.raises(ConfigError, match=r"meta is not a cifar100 python file \(needs 100 "
                                              r"'fine_label_names'\); replace it"):
            call()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_forbidden_global_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    write_cifar(tmp_path)
    batch_file = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch_file.write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=protocol))
    with pytest.raises(ConfigError, match=r"data_batch_3: refusing to unpickle (posix|os)\.system"):
        load_dataset("cifar10", 32, tmp_path, download=False)
    assert not marker.exists()


def test_hand_written_reduce_to_builtins_is_refused(tmp_path):
    write_cifar(tmp_path)
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch_file.write_bytes(b"\x80\x02cbuiltins\neval\nU\x031+1\x85R.")
    with pytest.raises(ConfigError, match=r"refusing to unpickle builtins\.eval"):
        load_dataset("cifar10", 32, tmp_path, download=False)


@pytest.mark.parametrize("damage, message, checked", [
    ("truncate", r"data_batch_2 is truncated \(it does not end like a complete pickle\)", True),
    ("truncate-last-byte", "is truncated", True),
    ("empty", r"not a cifar10 python file \(not a pickle\)", True),
    ("corrupt", "cannot unpickle: UnpicklingError", False),
    ("text", "not a pickle", True),
    ("list", "holds a list, not a dict", False),
    ("shape", r"needs 'data' as uint8 \(N, 3072\)", False),
    ("labels", "needs 20 'labels' in 0..9", False),
    ("missing", "data_batch_2 is missing; download https://www.cs.toronto.edu", True),
])
def test_damaged_cifar_files_are_config_errors(tmp_path, damage, message, checked):
    batches = write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = batches["data_batch_2"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "truncate-last-byte":
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "corrupt":  # starts and ends like a pickle, garbage between
        path.write_bytes(b"\x80\x02" + b"\xff" * 100 + b".")
    elif damage == "text":
        path.write_text("not a pickle at all")
    elif damage == "list":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif damage == "shape":
        write_pickle(path, batch | {b"data": batch[b"data"][:, :100].copy()})
    elif damage == "labels":
        write_pickle(path, batch | {b"labels": [11] * 20})
    else:
        path.unlink()
    with pytest.raises(ConfigError, match=message):
        load_dataset("cifar10", 32, tmp_path, download=False)
    if checked:  # caught up front from the file's first and last byte
        with pytest.raises(ConfigError, match=message):
            check_dataset("cifar10", tmp_path)
    else:
        check_dataset("cifar10", tmp_path)


def test_missing_cifar_without_download_says_where_to_put_it(tmp_path):
    message = (r"files are missing and download is off; download .*cifar-10-python\.tar\.gz "
               r"and extract it so that .*cifar-10-batches-py/data_batch_1 exists")
    with pytest.raises(ConfigError, match=message):
        load_dataset("cifar10", 32, tmp_path, download=False)
    with pytest.raises(ConfigError, match="files are missing"):
        check_dataset("cifar10", tmp_path, download=False)
    check_dataset("cifar10", tmp_path, download=True)  # loading will download into it
    with pytest.raises(ConfigError, match="not-yet does not exist"):
        check_dataset("cifar10", tmp_path / "not-yet", download=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_dataset("cifar10", tmp_path / "file")


def test_offline_download_is_a_config_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        assert url.startswith("https://www.cs.toronto.edu/~kriz/") and timeout <= 60
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"the files are missing and the download failed "
                                          r"\(<urlopen error no network>\); "
                                          r"download .*cifar-100-python\.tar\.gz"):
        load_dataset("cifar100", 32, root)
    assert list(root.iterdir()) == []  # no partial download left behind


def _tarball(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _use_md5(monkeypatch, md5: str) -> None:
    spec = dataclasses.replace(cifar._CIFAR["cifar10"], md5=md5)
    monkeypatch.setitem(cifar._CIFAR, "cifar10", spec)


def test_downloaded_tarball_is_checked_and_extracted(tmp_path, monkeypatch):
    source = tmp_path / "source"
    batches = write_cifar(source)
    files = {f"cifar-10-batches-py/{p.name}": p.read_bytes()
             for p in (source / "cifar-10-batches-py").iterdir()}
    tarball = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(tarball, files)

    def fake_urlopen(url, timeout):
        return io.BytesIO(tarball.read_bytes())

    monkeypatch.setattr(downloads.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=f"download of .* was corrupt \\(md5 {md5}, expected "
                                          f"c58f30108f"):
        load_dataset("cifar10", 32, root)
    assert list(root.iterdir()) == []  # the bad download is not kept
    (root / "cifar-10-python.tar.gz").write_bytes(tarball.read_bytes())
    with pytest.raises(ConfigError, match=f"has md5 {md5}, expected c58f30108f.*delete it"):
        load_dataset("cifar10", 32, root, download=False)  # a tarball the user put there
    assert (root / "cifar-10-python.tar.gz").exists()
    (root / "cifar-10-python.tar.gz").unlink()
    _use_md5(monkeypatch, md5)
    d = load_dataset("cifar10", 32, root)
    assert torch.equal(d.test_x, _images(batches["test_batch"]))
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py",
                                                      "cifar-10-python.tar.gz"]


@pytest.mark.parametrize("evil", ["../escaped", "/tmp/absolute", "cifar-10-batches-py/../../x"])
def test_tarball_with_path_traversal_is_refused(tmp_path, monkeypatch, evil):
    root = tmp_path / "data"
    root.mkdir()
    md5 = _tarball(root / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": b"x",
                                                     evil: b"owned"})
    _use_md5(monkeypatch, md5)
    with pytest.raises(ConfigError, match="refusing unsafe archive entry"):
        load_dataset("cifar10", 32, root, download=False)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "x").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_tarball_symlink_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    _use_md5(monkeypatch, hashlib.md5((root / "cifar-10-python.tar.gz").read_bytes()).hexdigest())
    with pytest.raises(ConfigError, match="refusing unsafe archive entry"):
        load_dataset("cifar10", 32, root, download=False)


def test_cifar_writer_gives_every_split_a_class_it_can(tmp_path):
    write_cifar(tmp_path, "cifar100", per_batch=60)  # too few for 100 classes: uses 10
    d = load_dataset("cifar100", 8, tmp_path, download=False)
    assert d.num_classes == 100 and d.sizes == (50, 10, 60)
    assert set(d.val_y.tolist()) == set(range(10))


# -- image folders ------------------------------------------------------------------------------

_COLOURS = {"b_red": (220, 30, 30), "a_green": (30, 200, 40), "c_blue": (20, 40, 230)}


def _write_folder(root: Path, split: str, per_class: int, classes=_COLOURS) -> None:
    """Both decoders: even images JPEG, odd ones PNG, 12 wide and 10 high."""
    write_imagefolder(root, classes, per_class, (12, 10), split, suffixes=(".jpg", ".png"))


def test_imagefolder_splits_train_when_val_and_test_are_absent(tmp_path):
    _write_folder(tmp_path, "train", 10)
    (tmp_path / "train" / "a_green" / "notes.txt").write_text("ignored")
    info = check_dataset("imagefolder", tmp_path)
    assert info == DatasetInfo("imagefolder", 3, 3, ("a_green", "b_red", "c_blue"))
    d = load_dataset("imagefolder", 8, tmp_path)
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.sizes) == \
        ("imagefolder", 3, 8, True, (21, 3, 6))
    assert d.train_x.shape[1:] == (3, 8, 8) and d.train_x.dtype == torch.uint8
    assert d.info == info
    for label, name in enumerate(sorted(_COLOURS)):  # classes sorted by name
        centre = d.train_x[d.train_y == label][:, :, 4, 4].float().mean(0)
        assert centre.tolist() == pytest.approx(_COLOURS[name], abs=6)
    other = load_dataset("imagefolder", 8, tmp_path, seed=1)
    assert torch.equal(d.test_x, other.test_x) and not torch.equal(d.val_x, other.val_x)


def test_imagefolder_uses_given_val_and_test(tmp_path):
    _write_folder(tmp_path, "train", 4)
    _write_folder(tmp_path, "val", 2, {"c_blue": _COLOURS["c_blue"]})
    _write_folder(tmp_path, "test", 3)
    d = load_dataset("imagefolder", 6, tmp_path)
    assert d.sizes == (12, 2, 9)
    assert d.val_y.tolist() == [2, 2] and d.test_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_imagefolder_grayscale_images_become_rgb(tmp_path):
    from PIL import Image

    _write_folder(tmp_path, "train", 3)
    Image.new("L", (5, 5), 77).save(tmp_path / "train" / "a_green" / "gray.png")
    d = load_dataset("imagefolder", 4, tmp_path, val_fraction=0.3)
    assert d.channels == 3 and check_dataset("imagefolder", tmp_path).channels == 3
    everything = torch.cat([d.train_x, d.val_x, d.test_x])
    assert (everything == 77).all(dim=(1, 2, 3)).sum() == 1  # the gray one, in all 3 channels


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("no-train", r"train is missing; expected <data dir>/train/<class>/\*\.png"),
    ("one-class", r"has 1 class folder\(s\), needs at least 2"),
    ("empty-class", "holds no .png or .jpg images"),
    ("unknown-val-class", r"has classes \['d_new'\] that train/ lacks"),
])
def test_imagefolder_layout_errors(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout != "missing":
        root.mkdir()
    if layout == "one-class":
        _write_folder(root, "train", 2, {"only": (1, 2, 3)})
    elif layout in ("empty-class", "unknown-val-class"):
        _write_folder(root, "train", 2)
    if layout == "empty-class":
        (root / "train" / "d_empty").mkdir()
    if layout == "unknown-val-class":
        _write_folder(root, "val", 1, {"d_new": (0, 0, 0)})
    for call in (lambda: check_dataset("imagefolder", root),
                 lambda: load_dataset("imagefolder", 8, root)):
        with pytest.raises(ConfigError, match=message):
            call()


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width``×``height`` but holds no pixels: a bomb's header."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("damage, message, checked", [
    ("text-as-png", r"cannot read image .*damaged\.png \(cannot identify image file", True),
    ("garbage-png", r"cannot read image .*damaged\.png", True),
    ("truncated-png", r"cannot read image .*damaged\.png \(image file is truncated\)", False),
    ("truncated-jpeg", r"cannot read image .*damaged\.jpg \(image file is truncated", False),
    ("72-megapixels", r"damaged\.png is 8500×8500 pixels, over the limit of 64 megapixels "
                      r"\(a decompression bomb", True),
    ("100-megapixels", r"damaged\.png is 10000×10000 pixels, over the limit", True),
    ("400-megapixels", r"damaged\.png is too large to decode \(Image size \(400000000 pixels\)",
     True),
])
def test_imagefolder_damaged_images_are_named(tmp_path, damage, message, checked):
    from PIL import Image

    _write_folder(tmp_path, "train", 3)
    folder = tmp_path / "train" / "b_red"
    target = folder / ("damaged.jpg" if damage == "truncated-jpeg" else "damaged.png")
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    if damage == "text-as-png":
        target.write_text("these are my notes, not a picture")
    elif damage == "garbage-png":
        target.write_bytes(b"\x89PNG garbage")
    elif damage.startswith("truncated"):
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "PNG" if target.suffix == ".png" else "JPEG")
        target.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        with Image.open(target) as image:  # the header reads fine: only decoding fails
            assert image.size == (40, 40)
    else:
        side = {"72-megapixels": 8500, "100-megapixels": 10000, "400-megapixels": 20000}[damage]
        _png_header_only(target, side, side)
    pil_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match=message):
            load_dataset("imagefolder", 8, tmp_path)
        if checked:  # the header alone tells
            with pytest.raises(ConfigError, match=message):
                check_dataset("imagefolder", tmp_path)
        else:
            check_dataset("imagefolder", tmp_path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # Pillow's global setting left alone


# -- Fashion-MNIST --------------------------------------------------------------------------------

_FASHION_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The first 300 training and 100 test images of the real files, gzipped."""
    root = tmp_path_factory.mktemp("fashion")
    return root, write_fashion_mnist(root, train=300, test=100)


def test_fashion_mnist_subset_is_padded_to_32(fashion):
    root, written = fashion
    d = load_dataset("fashion-mnist", 32, root, download=False)
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.channels) == \
        ("fashion-mnist", 10, 32, True, 1)
    assert d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    assert d.info == check_dataset("fashion-mnist", root, download=False)
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 32, 32)
        frame = torch.ones(32, 32, dtype=torch.bool)
        frame[2:30, 2:30] = False
        assert not x[:, 0, frame].any()  # a 2-pixel zero frame around every picture
    # The test split is the t10k images exactly, in order, pixels untouched.
    test_images = torch.from_numpy(written["t10k-images-idx3-ubyte"])
    assert torch.equal(d.test_x[:, 0, 2:30, 2:30], test_images)
    assert d.test_y.tolist() == written["t10k-labels-idx1-ubyte"].tolist()
    train_labels = collections.Counter(written["train-labels-idx1-ubyte"].tolist())
    assert len(train_labels) == 10  # the first 300 hold every class
    assert collections.Counter(d.train_y.tolist() + d.val_y.tolist()) == train_labels
    assert d.sizes[0] + d.sizes[1] == 300 and d.sizes[2] == 100
    assert d.sizes[1] == pytest.approx(30, abs=5) and set(d.val_y.tolist()) == set(range(10))
    pool = _rows(torch.from_numpy(written["train-images-idx3-ubyte"]).unsqueeze(1),
                 torch.from_numpy(written["train-labels-idx1-ubyte"]))
    centre = (slice(None), slice(None), slice(2, 30), slice(2, 30))
    assert _rows(d.train_x[centre], d.train_y) + _rows(d.val_x[centre], d.val_y) == pool
    assert d.mean == pytest.approx((d.train_x.double().mean().item() / 255,))


def test_fashion_mnist_val_split_follows_seed(fashion):
    root, _ = fashion
    a = load_dataset("fashion-mnist", 28, root, seed=0, download=False)
    b = load_dataset("fashion-mnist", 28, root, seed=3, download=False)
    again = load_dataset("fashion-mnist", 28, root, seed=0, download=False)
    assert torch.equal(a.val_x, again.val_x) and torch.equal(a.train_y, again.train_y)
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.val_x, b.val_x)
    assert _rows(a.train_x, a.train_y) + _rows(a.val_x, a.val_y) == \
        _rows(b.train_x, b.train_y) + _rows(b.val_x, b.val_y)


@pytest.mark.parametrize("size, frame", [(28, 0), (29, None), (30, 1), (36, 4)])
def test_fashion_mnist_pads_from_28_to_36(fashion, size, frame):
    root, written = fashion
    d = load_dataset("fashion-mnist", size, root, download=False)
    raw = torch.from_numpy(written["t10k-images-idx3-ubyte"])
    assert d.test_x.shape[1:] == (1, size, size)
    top = (size - 28) // 2  # an odd extra pixel goes to the bottom and right
    assert frame is None or top == frame
    assert torch.equal(d.test_x[:, 0, top:top + 28, top:top + 28], raw)
    assert d.test_x.sum() == raw.sum(dtype=torch.int64)  # nothing else on the canvas


@pytest.mark.parametrize("size", [16, 37, 64])
def test_fashion_mnist_resizes_other_sizes(fashion, size):
    root, written = fashion
    d = load_dataset("fashion-mnist", size, root, download=False)
    raw = torch.from_numpy(written["t10k-images-idx3-ubyte"]).unsqueeze(1)
    assert torch.equal(d.test_x, splits.resize(raw, size))


def test_fashion_mnist_plain_and_gz_files_read_alike(fashion, tmp_path):
    root, _ = fashion
    write_fashion_mnist(tmp_path, train=300, test=100, gz=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_FASHION_STEMS)
    plain = load_dataset("fashion-mnist", 32, tmp_path, download=False)
    gzipped = load_dataset("fashion-mnist", 32, root, download=False)
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(plain, field), getattr(gzipped, field))
    # Gzip is told by content: a gzipped file without .gz, among plain ones, reads alike.
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        (root / "t10k-labels-idx1-ubyte.gz").read_bytes())
    again = load_dataset("fashion-mnist", 32, tmp_path, download=False)
    assert torch.equal(again.test_y, plain.test_y)


def test_fashion_mnist_default_folder_is_debians(monkeypatch, tmp_path):
    source = fashion_mnist_source()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # must not be used
    info = check_dataset("fashion-mnist", None, download=False)
    d = load_dataset("fashion-mnist", 32, None, download=False)
    assert d.info == info and d.sizes == (54000, 6000, 10000)
    for labels, per_class in ((d.train_y, 5400), (d.val_y, 600), (d.test_y, 1000)):
        assert collections.Counter(labels.tolist()) == dict.fromkeys(range(10), per_class)
    with gzip.open(source / "t10k-labels-idx1-ubyte.gz") as file:
        assert d.test_y.tolist() == list(file.read()[8:])
    assert not (tmp_path / "cache").exists()


def test_debian_files_hold_the_official_data():
    """Debian re-gzipped the files (so the .gz md5 differ); what they hold is the official data.

    The md5 of the decompressed files, as torchvision lists them.
    """
    official = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
    source = fashion_mnist_source()
    for stem, md5 in official.items():
        with gzip.open(source / f"{stem}.gz") as file:
            assert hashlib.md5(file.read()).hexdigest() == md5, stem


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Answer downloads of ``_FASHION_URL + name`` with ``files[name]``; returns the URLs asked."""
    asked: list[str] = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        name = url.removeprefix(fashion_mnist._FASHION_URL)
        if name not in files:
            raise urllib.error.URLError("no network")
        return io.BytesIO(files[name])

    monkeypatch.setattr(downloads.urllib.request, "urlopen", fake_urlopen)
    return asked


@pytest.fixture
def no_debian_files(monkeypatch, tmp_path) -> Path:
    """Debian's folder absent; the per-user cache under ``tmp_path``: returns the cache folder."""
    monkeypatch.setattr(fashion_mnist, "_FASHION_SYSTEM_DIR", tmp_path / "no-such-dir")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "hetnas" / "fashion-mnist"


def test_fashion_mnist_downloads_to_the_cache_md5_checked(fashion, monkeypatch, no_debian_files):
    root, written = fashion
    files = {f"{stem}.gz": (root / f"{stem}.gz").read_bytes() for stem in _FASHION_STEMS}
    asked = _serve(monkeypatch, files)
    check_dataset("fashion-mnist", None)  # absent, but download is on
    with pytest.raises(ConfigError, match=r"download of http://fashion-mnist\.s3-website\."
                                          r"eu-central-1\.amazonaws\.com/train-images-idx3-ubyte"
                                          r"\.gz was corrupt \(md5 [0-9a-f]{32}, expected "
                                          r"8d4fb7e6c68d591d4c3dfef9ec88bf0d\)"):
        load_dataset("fashion-mnist", 32)
    assert list(no_debian_files.iterdir()) == []  # nothing partial or corrupt left
    for name, payload in files.items():
        monkeypatch.setitem(fashion_mnist._FASHION_MD5, name.removesuffix(".gz"),
                            hashlib.md5(payload).hexdigest())
    asked.clear()
    info = load_dataset("fashion-mnist", 28).info  # what the search driver does first
    assert sorted(asked) == sorted(fashion_mnist._FASHION_URL + name for name in files)
    assert sorted(p.name for p in no_debian_files.iterdir()) == sorted(files)
    asked.clear()
    d = load_dataset("fashion-mnist", 28, download=False)  # what each trial does
    assert asked == [] and d.info == info
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(written["t10k-images-idx3-ubyte"]))


def test_fashion_mnist_downloads_only_what_the_data_dir_lacks(fashion, monkeypatch, tmp_path):
    root, _ = fashion
    files = {f"{stem}.gz": (root / f"{stem}.gz").read_bytes() for stem in _FASHION_STEMS}
    for name, payload in files.items():
        monkeypatch.setitem(fashion_mnist._FASHION_MD5, name.removesuffix(".gz"),
                            hashlib.md5(payload).hexdigest())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for stem in _FASHION_STEMS[:2]:
        (data_dir / f"{stem}.gz").write_bytes(files[f"{stem}.gz"])
    asked = _serve(monkeypatch, files)
    d = load_dataset("fashion-mnist", 32, data_dir)
    assert sorted(asked) == sorted(f"{fashion_mnist._FASHION_URL}{stem}.gz"
                                   for stem in _FASHION_STEMS[2:])
    assert d.sizes[2] == 100


def test_fashion_mnist_offline_says_how_to_get_it(monkeypatch, no_debian_files):
    _serve(monkeypatch, {})
    message = (r"fashion-mnist: train-images-idx3-ubyte\[\.gz\], .*t10k-labels-idx1-ubyte\[\.gz\] "
               r"missing in .*cache/hetnas/fashion-mnist and the download failed \(<urlopen error "
               r"no network>\); install Debian's package \(apt-get install dataset-fashion-mnist"
               r".*\) or download them from http://fashion-mnist\.s3-website")
    with pytest.raises(ConfigError, match=message):
        load_dataset("fashion-mnist", 32)
    assert list(no_debian_files.iterdir()) == []


def test_fashion_mnist_missing_files_are_named(fashion, tmp_path):
    root, _ = fashion
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes((root / f"{stem}.gz").read_bytes())
    message = (r"fashion-mnist: train-labels-idx1-ubyte\[\.gz\], t10k-images-idx3-ubyte\[\.gz\] "
               r"missing in .* and download is off; install Debian's package \(apt-get install "
               r"dataset-fashion-mnist, .*\) or download them from "
               r"http://fashion-mnist\.s3-website\.eu-central-1\.amazonaws\.com/ into ")
    for call in (lambda: check_dataset("fashion-mnist", tmp_path, download=False),
                 lambda: load_dataset("fashion-mnist", 32, tmp_path, download=False)):
        with pytest.raises(ConfigError, match=message):
            call()
    with pytest.raises(ConfigError, match="not-yet does not exist"):
        check_dataset("fashion-mnist", tmp_path / "not-yet")


_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


@pytest.mark.parametrize("damage, message, checked", [
    ("truncated", r"train-images-idx3-ubyte is truncated: 235100 bytes of images after the "
                  r"header, 235200 expected for 300 images; replace it with http://", True),
    ("too-long", r"train-images-idx3-ubyte is longer than its header says: 235201 bytes", True),
    ("empty", r"t10k-labels-idx1-ubyte is truncated: 0 bytes, shorter than an IDX header", True),
    ("labels-as-images", r"train-images-idx3-ubyte is not an IDX images file \(magic "
                         r"0x00000801, expected 0x00000803\)", True),
    ("images-as-labels", r"t10k-labels-idx1-ubyte is not an IDX labels file \(magic "
                         r"0x00000803, expected 0x00000801\)", True),
    ("27x28", r"holds images of shape \(27, 28\), Fashion-MNIST's are \(28, 28\)", True),
    ("counts", r"train-images-idx3-ubyte holds 300 images but .*train-labels-idx1-ubyte holds "
               r"299 labels; use both files of one release", True),
    ("label-10", r"t10k-labels-idx1-ubyte holds label 10, but Fashion-MNIST's are 0\.\.9", False),
    ("gz-truncated", r"train-images-idx3-ubyte\.gz cannot be read \(EOFError: ", False),
    ("gz-short-body", r"train-images-idx3-ubyte\.gz is truncated: 234416 bytes", False),
    ("gz-corrupt", r"t10k-images-idx3-ubyte\.gz cannot be read \((BadGzipFile|error)", False),
])
def test_damaged_fashion_mnist_files_are_config_errors(fashion, tmp_path, damage, message,
                                                       checked):
    root, written = fashion
    gz = damage.startswith("gz-")
    write_fashion_mnist(tmp_path, train=300, test=100, gz=gz)
    suffix = ".gz" if gz else ""
    images, labels = (tmp_path / f"{stem}{suffix}" for stem in ("train-images-idx3-ubyte",
                                                                "train-labels-idx1-ubyte"))
    test_images, test_labels = (tmp_path / f"{stem}{suffix}" for stem in _FASHION_STEMS[2:])
    train_images = written["train-images-idx3-ubyte"]
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "too-long":
        images.write_bytes(images.read_bytes() + b"\0")
    elif damage == "empty":
        test_labels.write_bytes(b"")
    elif damage == "labels-as-images":
        images.write_bytes(labels.read_bytes())
    elif damage == "images-as-labels":
        test_labels.write_bytes(test_images.read_bytes())
    elif damage == "27x28":
        write_idx(images, train_images[:, :27], _IMAGES_MAGIC)
    elif damage == "counts":
        write_idx(labels, written["train-labels-idx1-ubyte"][:-1], _LABELS_MAGIC)
    elif damage == "label-10":
        write_idx(test_labels, np.full(100, 10, dtype=np.uint8), _LABELS_MAGIC)
    elif damage == "gz-truncated":
        images.write_bytes(images.read_bytes()[:-5000])
    elif damage == "gz-short-body":  # a whole gzip stream, but one image short of its header
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-784]))
    else:
        payload = bytearray(test_images.read_bytes())
        payload[len(payload) // 2:len(payload) // 2 + 64] = bytes(64)
        test_images.write_bytes(bytes(payload))
    with pytest.raises(ConfigError, match=message):
        load_dataset("fashion-mnist", 32, tmp_path, download=False)
    if checked:  # headers and plain files' lengths are read up front
        with pytest.raises(ConfigError, match=message):
            check_dataset("fashion-mnist", tmp_path, download=False)
    else:
        check_dataset("fashion-mnist", tmp_path, download=False)


def test_fashion_mnist_writer_skips_without_debian_files(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "_FASHION_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install dataset-fashion-mnist"):
        write_fashion_mnist(tmp_path)
    monkeypatch.setenv("CI", "true")  # CI never skips silently
    with pytest.raises(pytest.fail.Exception, match="required under CI"):
        write_fashion_mnist(tmp_path)


# -- augmentation ------------------------------------------------------------------------------


def _shifted(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Reference: zero-pad, take the window at (dy, dx), optionally mirror it."""
    p = 3
    padded = torch.nn.functional.pad(image, (p, p, p, p))
    h, w = image.shape[-2:]
    window = padded[:, p + dy:p + dy + h, p + dx:p + dx + w]
    return window.flip(-1) if flip else window


def _explain(out: torch.Tensor, image: torch.Tensor, flips: bool) -> set[tuple[int, int, bool]]:
    return {(dy, dx, f) for dy in range(-3, 4) for dx in range(-3, 4)
            for f in ((False, True) if flips else (False,))
            if torch.equal(out, _shifted(image, dy, dx, f))}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_shifts_with_zero_fill_and_never_flips_without_hflip(dtype):
    images = torch.randint(1, 256, (64, 3, 9, 7), generator=torch.Generator().manual_seed(0))
    images = images.to(dtype)
    out = random_crop_flip(images, torch.Generator().manual_seed(1), 3, hflip=False)
    assert out.shape == images.shape and out.dtype == dtype
    shifts = set()
    for o, image in zip(out, images, strict=True):
        explanations = _explain(o, image, flips=True)
        assert len(explanations) == 1 and not next(iter(explanations))[2]
        shifts |= explanations
    assert len(shifts) > 20  # the offsets really vary over the batch


def test_hflip_mirrors_about_half():
    images = torch.randint(1, 256, (200, 3, 7, 7), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(images, torch.Generator().manual_seed(2), 3, hflip=True)
    flipped = 0
    for o, image in zip(out, images, strict=True):
        (explanation,) = _explain(o, image, flips=True)
        flipped += explanation[2]
    assert 70 < flipped < 130


def test_augmentation_is_reproducible_from_the_generator():
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    a = random_crop_flip(images, torch.Generator().manual_seed(5), 2, hflip=True)
    b = random_crop_flip(images, torch.Generator().manual_seed(5), 2, hflip=True)
    c = random_crop_flip(images, torch.Generator().manual_seed(6), 2, hflip=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert random_crop_flip(images, torch.Generator(), 0, hflip=False) is images


def test_crop_padding_scales_with_input_size():
    assert [crop_padding(s) for s in (8, 16, 32, 64, 224)] == [1, 2, 4, 8, 28]


def test_unit_range_scales_uint8_and_copies_float():
    images = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
    out = unit_range(images)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.tensor([[[[0.0, 0.2, 1.0]]]]))
    as_float = images.float() / 255
    scaled = unit_range(as_float)
    assert torch.equal(scaled, as_float) and scaled.data_ptr() != as_float.data_ptr()
    assert unit_range(images, torch.float64).dtype == torch.float64
