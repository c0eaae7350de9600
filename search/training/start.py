"""Where a trial's weights start: at random (from scratch), from a trained dense network
(``--init-from dense.pt``), or from a one-shot supernet (a fine-tuned finalist).

Both trained starts take the architecture out of a supernet through :func:`extracted`. From
dense weights, every architecture of the search starts from the same weights, each the only way
its parts allow (``docs/HETCONV.md``): the dense network is loaded into the standard network
(every part 1), which becomes a supernet whose one kernel per layer holds every part, and the
architecture is extracted from it: K×K kernels on its pattern, elsewhere the 1×1 weights of the
search's ``--conversion`` rule (:mod:`hetconv.reduction`), every other weight (stem,
classifier) as trained. The rules other than ``centre`` also re-estimate batch norm, on
:data:`CONVERSION_IMAGES` training images that least-squares fits to as well; ``centre`` starts
exactly as every search before the option did. The one-shot supernet starts from the standard
network itself. Every network here normalises its input by the data's ``mean`` and ``std``: the
training split's, or the ``--input-normalization`` the dense weights expect
(``search.training.normalization``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from hetconv.errors import ConfigError, param
from hetconv.reduction import CENTRE, LEAST_SQUARES
from hetconv.supernet import extract, reduce_to_parts, set_parts, to_supernet
from search.training.augment import unit_range
from search.training.checkpoint import read_checkpoint, read_state_dict
from search.training.data import DataSplits, draw_calibration
from search.training.trainer import evaluate, trained_architecture
from space import Architecture, SearchSpace
from space.architecture import Normalization
from space.networks import build_network, load_dense

DENSE_CHECK_IMAGES = 1000  # validation images the driver scores the dense weights on
DENSE_CONVERSION = LEAST_SQUARES  # kept the most accuracy: bench/conversion_rules.py
CONVERSION_IMAGES = 512  # training images a conversion re-estimates batch norm (and fits) on


def read_dense(path: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, loaded without unpickling code; read once per process while
    the file stays the same."""
    try:
        stat = Path(path).stat()
    except OSError:
        stat = None
    return _read_dense(path, None if stat is None else (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=2)
def _read_dense(path: str, _version: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    return read_state_dict(path, param("init_from"))


def dense_digest(path: str) -> str:
    """SHA-256 of the file: a resumed search must start its new trials from the same weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def standard_network(space: SearchSpace, path: str,
                     normalization: Normalization | None = None) -> tuple[nn.Module, list[str]]:
    """The space's standard network (every part 1) holding the dense weights in ``path``, and
    notes on what starts fresh; a mismatch is one ConfigError naming the first key."""
    with torch.random.fork_rng(devices=[]):
        model = build_network(space.backbone, None, space.num_classes, space.in_channels,
                              space.input_size,
                              None if normalization is None else normalization.mean,
                              None if normalization is None else normalization.std)
    notes = load_dense(space.backbone, model, read_dense(path), f"dense weights {path}")
    return model, notes


def start_weights(arch: Architecture, data: DataSplits, supernet: str | None = None,
                  dense: str | None = None,
                  conversion: str = DENSE_CONVERSION) -> dict[str, torch.Tensor] | None:
    """The weights a new run of ``arch`` starts from: extracted from the supernet checkpoint
    ``supernet`` when given, else from the dense weights ``dense`` by the ``conversion``
    rule, else None (from scratch)."""
    if supernet is not None:
        return supernet_start(arch, data, supernet)
    if dense is not None:
        return dense_start(arch, data, dense, conversion)
    return None


def extracted(supernet: nn.Module, arch: Architecture,
              data: DataSplits) -> dict[str, torch.Tensor]:
    """The weights ``arch`` (trained on ``data``) has inside ``supernet``: its parts set, the
    target network built without touching the caller's random state, then
    :func:`hetconv.supernet.extract`."""
    set_parts(supernet, arch.parts)
    with torch.random.fork_rng(devices=[]):
        target = trained_architecture(arch, data).build()
    return extract(supernet, target).state_dict()


def dense_start(arch: Architecture, data: DataSplits, path: str,
                conversion: str = DENSE_CONVERSION) -> dict[str, torch.Tensor]:
    """The weights ``arch`` starts from, as trained on ``data``: the dense network's kernels
    on its parts' patterns, the ``conversion`` rule's 1×1 weights elsewhere, every other weight
    as trained (batch norm re-estimated, except with ``centre``)."""
    normalization = Normalization(data.mean, data.std)
    standard, _ = standard_network(arch.space, path, normalization)
    if all(part == 1 for part in arch.parts):
        return standard.state_dict()
    supernet = to_supernet(standard)
    if conversion != CENTRE:
        set_parts(supernet, arch.parts)
        reduce_to_parts(supernet, conversion,
                        unit_range(draw_calibration(data, CONVERSION_IMAGES, seed=0)))
    return extracted(supernet, arch, data)


def build_supernet(arch: Architecture, data: DataSplits,
                   weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """The supernet of ``arch`` (the part-1 network) with trained ``weights``, on the CPU."""
    with torch.random.fork_rng(devices=[]):
        model = to_supernet(trained_architecture(arch, data).build())
    model.load_state_dict(weights)
    return model.eval()


def supernet_start(arch: Architecture, data: DataSplits,
                   checkpoint: str) -> dict[str, torch.Tensor]:
    """The weights ``arch`` has inside the supernet saved at ``checkpoint``: the starting
    point of a fine-tuned stand-alone run."""
    saved = read_checkpoint(checkpoint)
    supernet = build_supernet(Architecture.from_json(saved["architecture"]), data,
                              saved["model"])
    return extracted(supernet, arch, data)


def dense_accuracy(space: SearchSpace, path: str, data: DataSplits,
                   images: int = DENSE_CHECK_IMAGES) -> tuple[float, int]:
    """The dense weights' accuracy on the first ``images`` validation images, fed as every
    trial feeds them (normalised by ``data``'s mean and std), and the image count:
    a network trained on other inputs scores low here, before any trial is spent on it."""
    model, _ = standard_network(space, path, Normalization(data.mean, data.std))
    count = min(images, len(data.val_y))
    return evaluate(model, data.val_x[:count], data.val_y[:count], "cpu"), count


def check_dense(space: SearchSpace, path: str) -> list[str]:
    """Refuse dense weights that do not fit the space's network, before anything is written;
    returns the notes (a classifier that starts fresh). Weights for another channel count than
    the data's, the likeliest misfit (RGB ImageNet weights on grayscale data), are named so."""
    try:
        return standard_network(space, path)[1]
    except ConfigError as error:
        channels = _input_channels(read_dense(path))
        if channels is None or channels == space.in_channels:
            raise
        raise ConfigError(f"dense weights {path} take {channels}-channel images but the data "
                          f"set has {space.in_channels}-channel ones: pass weights for "
                          f"{space.in_channels}-channel images, or the data they were trained on "
                          f"({error})") from None


def _input_channels(state: Mapping[str, torch.Tensor]) -> int | None:
    """The input channels of the first convolution kernel in a state dict (its first 4-D
    floating tensor), or None without one."""
    kernel = next((value for value in state.values()
                   if value.is_floating_point() and value.dim() == 4), None)
    return None if kernel is None else kernel.shape[1]
