"""Data sets (digits, CIFAR python batches, image folders) and per-batch augmentation."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hetconv import ConfigError
from search import data as data_module
from search.augment import crop_padding, normalize, random_crop_flip
from search.data import DATASETS, check_dataset, load_dataset

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
    assert (d.name, d.num_classes, d.input_size, d.hflip) == ("digits", 10, 8, False)
    assert sum(d.sizes) == 1797
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 8, 8) and x.is_contiguous()
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every split
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    bunch = load_digits()
    expected = torch.from_numpy(np.round(bunch.images * 255 / 16).astype(np.uint8))
    everything = _rows(expected.unsqueeze(1).expand(-1, 3, -1, -1), torch.from_numpy(bunch.target))
    got = _rows(d.train_x, d.train_y) + _rows(d.val_x, d.val_y) + _rows(d.test_x, d.test_y)
    assert got == everything  # each real image lands in exactly one split
    assert len(d.test_y) == pytest.approx(0.2 * 1797, abs=10)
    assert len(d.val_y) == pytest.approx(0.1 * (1797 - len(d.test_y)), abs=10)
    mean = d.train_x.double().mean().item() / 255
    assert d.mean == pytest.approx((mean,) * 3)
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
    assert d.train_x.shape[1:] == (3, 32, 32)
    small = load_dataset("digits", 8, val_fraction=0.2)
    assert torch.equal(d.test_y, small.test_y)
    # Averaging the upsampled image back to 8x8 gives about the original (bilinear blurs a bit).
    pooled = torch.nn.functional.avg_pool2d(d.test_x[:, :1].float(), 4).flatten()
    assert torch.corrcoef(torch.stack([pooled, small.test_x[:, :1].float().flatten()]))[0, 1] > 0.95
    brightness = d.test_x.float().mean().item()
    assert brightness == pytest.approx(small.test_x.float().mean().item(), rel=0.05)
    assert abs(len(d.val_y) - 0.2 * (1797 - len(d.test_y))) < 10


def test_stratified_split_is_a_partition():
    labels = np.repeat(np.arange(5), [1, 2, 10, 30, 57])
    kept, held = data_module._stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(labels.size))
    assert set(labels[kept]) == set(range(5))  # every class keeps an image
    assert collections.Counter(labels[held].tolist()) == {2: 2, 3: 8, 4: 14}
    again, _ = data_module._stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(kept, again)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "mnist"}, "unknown dataset 'mnist'; choose one of: digits, cifar10"),
    ({"input_size": 0}, "input size must be a positive integer"),
    ({"val_fraction": 1.0}, "val_fraction must lie strictly between 0 and 1"),
    ({"seed": -1}, "data seed must be a non-negative integer"),
    ({"name": "cifar10"}, "needs a data directory"),
    ({"name": "imagefolder"}, "needs a data directory"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    args = {"name": "digits", "input_size": 8} | kwargs
    with pytest.raises(ConfigError, match=message):
        load_dataset(**args)


def test_check_dataset_names():
    assert DATASETS == ("digits", "cifar10", "cifar100", "imagefolder")
    check_dataset("digits", None)
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        check_dataset("svhn", None)


# -- CIFAR python batches ----------------------------------------------------------------------


def _py2_pickle(obj) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) wrote for the official CIFAR batches.

    Python 2 ``str`` are SHORT_BINSTRING / BINSTRING, which Python 3 reads as bytes only with
    ``encoding="bytes"``; arrays go through ``numpy.core.multiarray._reconstruct``.
    """
    def enc(value) -> bytes:
        if isinstance(value, bytes):
            if len(value) < 256:
                return b"U" + bytes([len(value)]) + value
            return b"T" + struct.pack("<i", len(value)) + value
        if isinstance(value, bool):
            return b"\x88" if value else b"\x89"
        if isinstance(value, int):
            if 0 <= value < 256:
                return b"K" + bytes([value])
            return b"J" + struct.pack("<i", value)
        if isinstance(value, list):
            return b"]" + (b"(" + b"".join(map(enc, value)) + b"e" if value else b"")
        if isinstance(value, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in value.items()) + b"u"
        if isinstance(value, np.ndarray):
            assert value.dtype == np.uint8 and value.ndim == 2
            dtype = (b"cnumpy\ndtype\n" + enc(b"u1") + enc(0) + enc(1) + b"\x87R(" + enc(3)
                     + enc(b"|") + b"NNN" + enc(-1) + enc(-1) + enc(0) + b"tb")
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + enc(0)
                    + b"\x85" + enc(b"b") + b"\x87R(" + enc(1) + enc(value.shape[0])
                    + enc(value.shape[1]) + b"\x86" + dtype + enc(False)
                    + enc(value.tobytes()) + b"tb")
        raise TypeError(type(value))

    return b"\x80\x02" + enc(obj) + b"."


def _batch(rng: np.random.Generator, labels: list[int], label_key: bytes) -> dict:
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {b"batch_label": b"synthetic batch", label_key: labels, b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}


def _write(path: Path, batch: dict, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "py2":
        path.write_bytes(_py2_pickle(batch))
    else:  # a Python 3 re-save: protocol 2 (bytes via _codecs.encode), 4 or 5 (_frombuffer)
        path.write_bytes(pickle.dumps(batch, protocol=int(fmt)))


def _write_cifar10(root: Path, fmt: str = "py2", per_batch: int = 20) -> dict[str, dict]:
    rng = np.random.default_rng(7)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.permutation(np.arange(per_batch) % 10)]
        batches[name] = _batch(rng, labels, b"labels")
        _write(root / "cifar-10-batches-py" / name, batches[name], fmt)
    return batches


def _images(batch: dict) -> torch.Tensor:
    return torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32).copy())


@pytest.mark.parametrize("fmt", ["py2", "2", "4", "5"])
def test_cifar10_reads_the_official_layout(tmp_path, fmt):
    batches = _write_cifar10(tmp_path, fmt)
    check_dataset("cifar10", tmp_path, download=False)
    d = load_dataset("cifar10", 32, tmp_path, download=False)
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.sizes) == \
        ("cifar10", 10, 32, True, (90, 10, 20))
    assert torch.equal(d.test_x, _images(batches["test_batch"]))
    assert d.test_y.tolist() == batches["test_batch"][b"labels"]
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    everything = _rows(torch.cat([_images(b) for b in train]),
                       torch.tensor(sum((b[b"labels"] for b in train), [])))
    assert _rows(d.train_x, d.train_y) + _rows(d.val_x, d.val_y) == everything
    assert set(d.val_y.tolist()) == set(range(10))
    assert d.mean == pytest.approx((d.train_x.double().mean(dim=(0, 2, 3)) / 255).tolist())


def test_cifar_val_split_follows_seed_and_resizes(tmp_path):
    _write_cifar10(tmp_path)
    a = load_dataset("cifar10", 16, tmp_path, seed=0, download=False)
    b = load_dataset("cifar10", 16, tmp_path, seed=5, download=False)
    assert a.train_x.shape[1:] == (3, 16, 16) and a.train_x.dtype == torch.uint8
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.val_x, b.val_x)


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    for name, per_class in (("train", 5), ("test", 1)):
        fine = [int(v) for v in rng.permutation(np.repeat(np.arange(100), per_class))]
        batch = _batch(rng, fine, b"fine_labels")
        batch[b"coarse_labels"] = [v // 5 for v in fine]
        _write(folder / name, batch, "py2")
    d = load_dataset("cifar100", 32, tmp_path, val_fraction=0.2, download=False)
    assert (d.num_classes, d.sizes) == (100, (400, 100, 100))
    assert set(d.val_y.tolist()) == set(range(100))
    assert d.test_y.tolist() == fine


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_forbidden_global_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    _write_cifar10(tmp_path)
    batch_file = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch_file.write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=protocol))
    with pytest.raises(ConfigError, match=r"data_batch_3: refusing to unpickle (posix|os)\.system"):
        load_dataset("cifar10", 32, tmp_path, download=False)
    assert not marker.exists()


def test_hand_written_reduce_to_builtins_is_refused(tmp_path):
    _write_cifar10(tmp_path)
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch_file.write_bytes(b"\x80\x02cbuiltins\neval\nU\x031+1\x85R.")
    with pytest.raises(ConfigError, match=r"refusing to unpickle builtins\.eval"):
        load_dataset("cifar10", 32, tmp_path, download=False)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "cannot unpickle"),
    ("text", "not a pickle"),
    ("list", "holds a list, not a dict"),
    ("shape", r"needs 'data' as uint8 \(N, 3072\)"),
    ("labels", "needs 20 'labels' in 0..9"),
    ("missing", "data_batch_2 is missing; download https://www.cs.toronto.edu"),
])
def test_damaged_cifar_files_are_config_errors(tmp_path, damage, message):
    batches = _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = batches["data_batch_2"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "text":
        path.write_text("not a pickle at all")
    elif damage == "list":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif damage == "shape":
        _write(path, batch | {b"data": batch[b"data"][:, :100].copy()}, "py2")
    elif damage == "labels":
        _write(path, batch | {b"labels": [11] * 20}, "py2")
    else:
        path.unlink()
    with pytest.raises(ConfigError, match=message):
        load_dataset("cifar10", 32, tmp_path, download=False)
    if damage in ("text", "missing"):
        with pytest.raises(ConfigError, match=message):
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

    monkeypatch.setattr(data_module.urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"download failed \(<urlopen error no network>\); "
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
    spec = dataclasses.replace(data_module._CIFAR["cifar10"], md5=md5)
    monkeypatch.setitem(data_module._CIFAR, "cifar10", spec)


def test_downloaded_tarball_is_checked_and_extracted(tmp_path, monkeypatch):
    source = tmp_path / "source"
    batches = _write_cifar10(source)
    files = {f"cifar-10-batches-py/{p.name}": p.read_bytes()
             for p in (source / "cifar-10-batches-py").iterdir()}
    tarball = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(tarball, files)

    def fake_urlopen(url, timeout):
        return io.BytesIO(tarball.read_bytes())

    monkeypatch.setattr(data_module.urllib.request, "urlopen", fake_urlopen)
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


# -- image folders ------------------------------------------------------------------------------

_COLOURS = {"b_red": (220, 30, 30), "a_green": (30, 200, 40), "c_blue": (20, 40, 230)}


def _write_folder(root: Path, split: str, per_class: int, classes=_COLOURS, size=(12, 10)):
    from PIL import Image

    for name, colour in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
            pixels[0, 0] = i  # distinct images
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i}{suffix}", quality=100)


def test_imagefolder_splits_train_when_val_and_test_are_absent(tmp_path):
    _write_folder(tmp_path, "train", 10)
    (tmp_path / "train" / "a_green" / "notes.txt").write_text("ignored")
    check_dataset("imagefolder", tmp_path)
    d = load_dataset("imagefolder", 8, tmp_path)
    assert (d.name, d.num_classes, d.input_size, d.hflip, d.sizes) == \
        ("imagefolder", 3, 8, True, (21, 3, 6))
    assert d.train_x.shape[1:] == (3, 8, 8) and d.train_x.dtype == torch.uint8
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


def test_imagefolder_corrupt_image_is_named(tmp_path):
    _write_folder(tmp_path, "train", 3)
    (tmp_path / "train" / "b_red" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ConfigError, match=r"cannot read image .*broken\.png"):
        load_dataset("imagefolder", 8, tmp_path)


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


def test_normalize_uint8_and_float():
    images = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)
    mean, std = (0.5, 0.2, 0.0), (0.5, 0.1, 1.0)
    out = normalize(images, mean, std)
    expected = torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]], [[1.0, 0.0]]]])
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)
    as_float = images.float() / 255
    assert torch.allclose(normalize(as_float, mean, std), expected, atol=1e-6)
    assert torch.equal(as_float, images.float() / 255)  # input untouched
