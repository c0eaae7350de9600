"""Small data sets written to disk in the real layouts, for tests that load or train on them.

Each writer makes what ``search.training.data.load_dataset(name, size, root)`` reads: CIFAR's python
batches (as Python 2's cPickle wrote them, or re-saved by Python 3), an image folder of PNGs,
and Fashion-MNIST's IDX files cut from the real ones of Debian's ``dataset-fashion-mnist``
package. Without that package a test using them skips, except under CI (``CI=true``), where it
fails: CI must never lose those tests silently.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.training.datasets import fashion_mnist

# -- CIFAR python batches ----------------------------------------------------------------------

CIFAR_LAYOUT = {  # name: (folder, batch files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                b"labels", 10),
    "cifar100": ("cifar-100-python", ["train", "test"], b"fine_labels", 100),
}

CIFAR100_NAMES = [f"class_{i:02d}" for i in range(100)]
"""The fine class names :func:`write_cifar` puts in CIFAR-100's ``meta`` file."""


def _py2_pickle(obj: Any) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) wrote for the official CIFAR batches.

    Python 2 ``str`` are SHORT_BINSTRING / BINSTRING, which Python 3 reads as bytes only with
    ``encoding="bytes"``; arrays go through ``numpy.core.multiarray._reconstruct``.
    """
    def enc(value: Any) -> bytes:
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


def write_pickle(path: Path, obj: Any, fmt: str = "py2") -> None:
    """``obj`` pickled as Python 2 did (``"py2"``) or as Python 3 re-saves it (``"2"``: bytes
    via ``_codecs.encode``; ``"4"``, ``"5"``: arrays via ``_frombuffer``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "py2":
        path.write_bytes(_py2_pickle(obj))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt)))


def _cifar_batch(rng: np.random.Generator, labels: list[int], label_key: bytes) -> dict:
    """One batch dict as the official files hold it, random images for ``labels``."""
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {b"batch_label": b"synthetic batch", label_key: labels, b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}


def write_cifar(root: Path, name: str = "cifar10", per_batch: int = 20, fmt: str = "py2",
                seed: int = 7) -> dict[str, dict]:
    """CIFAR-10 (five training batches and a test batch) or CIFAR-100 (train, test) under
    ``root``, ``per_batch`` random images each, and CIFAR-100's ``meta`` file (names:
    :data:`CIFAR100_NAMES`). Returns the batches by file name.

    Labels cycle over every class when the training files hold six images of each, else over
    the first classes that they can: with fewer, the loader's stratified 10 % validation split
    would be empty.
    """
    folder, files, label_key, classes = CIFAR_LAYOUT[name]
    used = max(1, min(classes, per_batch * (len(files) - 1) // 6))
    rng = np.random.default_rng(seed)
    batches = {}
    for file in files:
        labels = [int(v) for v in rng.permutation(np.arange(per_batch) % used)]
        batches[file] = _cifar_batch(rng, labels, label_key)
        if name == "cifar100":
            batches[file][b"coarse_labels"] = [v // 5 for v in labels]
        write_pickle(root / folder / file, batches[file], fmt)
    if name == "cifar100":
        write_pickle(root / folder / "meta", {
            b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
            b"coarse_label_names": [b"superclass_%d" % i for i in range(20)]}, fmt)
    return batches


# -- image folders ------------------------------------------------------------------------------


def write_imagefolder(root: Path, classes: int | Mapping[str, tuple[int, int, int]] = 3,
                      per_class: int = 4, size: int | tuple[int, int] = 12,
                      split: str = "train",
                      suffixes: Sequence[str] = (".png",)) -> dict[str, tuple[int, int, int]]:
    """``root/<split>/<class>/<i><suffix>``: each class one flat colour, pixel (0, 0) coding
    ``i`` so that no two images are equal; ``suffixes`` cycle over a class's images.

    ``classes`` is a count (classes ``class_0``, ``class_1``, ...) or names with their colours;
    ``size`` is a side or ``(width, height)``. Returns each class's colour.
    """
    from PIL import Image

    if isinstance(classes, int):
        classes = {f"class_{c}": ((40 + 97 * c) % 256, (200 + 61 * c) % 256, (30 + 151 * c) % 256)
                   for c in range(classes)}
    width, height = (size, size) if isinstance(size, int) else size
    for name, colour in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.full((height, width, 3), colour, dtype=np.uint8)
            pixels[0, 0] = (i % 256, i // 256 % 256, 0)
            Image.fromarray(pixels).save(folder / f"{i}{suffixes[i % len(suffixes)]}",
                                         quality=100)
    return dict(classes)


# -- Fashion-MNIST ------------------------------------------------------------------------------


def fashion_mnist_source() -> Path:
    """Debian's Fashion-MNIST folder; without it the calling test skips, or fails under CI."""
    folder = fashion_mnist._FASHION_SYSTEM_DIR
    _, missing = fashion_mnist._idx_files(folder)
    if missing:
        reason = (f"Fashion-MNIST files {missing} are missing in {folder}; "
                  f"apt-get install dataset-fashion-mnist")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required under CI)")
        pytest.skip(reason)
    return folder


def write_fashion_mnist(root: Path, train: int = 300, test: int = 100,
                        gz: bool = True) -> dict[str, np.ndarray]:
    """The first ``train`` training and ``test`` t10k images of Debian's Fashion-MNIST as IDX
    files in ``root`` (``fashion_mnist.write_prefix``); skips, or fails under CI, without them."""
    return fashion_mnist.write_prefix(root, train, test, fashion_mnist_source(), gz)
