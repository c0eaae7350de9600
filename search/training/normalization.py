"""What a search's networks normalise their input by (``search.run --input-normalization``).

Every HetNAS network normalises its own input (images in ``[0, 1]``). By default (``data``) it
uses the training split's per-channel mean and std, as a network trained by HetNAS expects.
Dense weights trained elsewhere (``--init-from``) expect the normalisation they were trained
with: ``imagenet`` is timm's and torchvision's, and ``MEAN,...:STD,...`` gives any other, one
value per channel on the ``0..1`` scale. The chosen mean and std replace the data's in
:class:`~search.training.datasets.splits.DataSplits` (:func:`normalized`), so every network
built for the data, the trials', the supernet's and the dense check's, uses them, and the study
records and the export carry them.
"""

from __future__ import annotations

import dataclasses
import math

from hetconv.errors import ConfigError
from hetconv.models.normalize import check_statistics
from search.training.datasets.splits import DataSplits
from space.architecture import Normalization

FLAG = "--input-normalization"
DATA = "data"
"""The default: the training split's own statistics."""

PRESETS: dict[str, Normalization] = {
    "imagenet": Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Named normalisations of widely shared pretrained weights."""

_SYNTAX = f"{DATA}, {', '.join(PRESETS)}, or MEAN,...:STD,... with one value per channel"


def input_normalization(text: str, channels: int, dataset: str) -> Normalization | None:
    """The mean and std ``text`` names for ``channels``-channel images of ``dataset``; None
    for :data:`DATA` (the training split's). Bad text is one :class:`ConfigError` naming the
    problem and the fix."""
    if text == DATA:
        return None
    norm = PRESETS.get(text) or _explicit(text)
    if len(norm.mean) != channels:
        raise ConfigError(f"{FLAG} {text} gives {len(norm.mean)} channels but dataset "
                          f"{dataset!r} has {channels}-channel images; pass one mean and one "
                          f"std per channel (MEAN,...:STD,...), or {DATA}")
    try:
        check_statistics(channels, norm.mean, norm.std)
    except ConfigError as error:
        raise ConfigError(f"{FLAG} {text}: {error}") from None
    return norm


def normalized(data: DataSplits, text: str) -> DataSplits:
    """``data`` carrying the mean and std its networks must normalise by (``text``, see
    :func:`input_normalization`)."""
    norm = input_normalization(text, data.channels, data.name)
    return data if norm is None else dataclasses.replace(data, mean=norm.mean, std=norm.std)


def describe_normalization(text: str) -> str:
    """How the networks are fed, in words, for the driver's lines."""
    if text == DATA:
        return "the training split's mean and std"
    return f"{FLAG} {text}"


def preset_name(norm: Normalization) -> str | None:
    """The preset ``norm`` is, if any: what ``search.check`` names beside the numbers."""
    def close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6)
                                        for x, y in zip(a, b, strict=True))

    return next((name for name, preset in PRESETS.items()
                 if close(preset.mean, norm.mean) and close(preset.std, norm.std)), None)


def _explicit(text: str) -> Normalization:
    """``MEAN,...:STD,...`` as numbers, or a ConfigError saying what the option takes."""
    halves = text.split(":")
    try:
        mean, std = (tuple(float(value) for value in half.split(",")) for half in halves)
    except ValueError:  # not two halves, or not numbers
        raise ConfigError(f"{FLAG} {text!r} is no preset nor MEAN,...:STD,...; pass "
                          f"{_SYNTAX} (e.g. {FLAG} imagenet)") from None
    if len(mean) != len(std):
        raise ConfigError(f"{FLAG} {text} gives {len(mean)} means but {len(std)} stds; pass "
                          f"one mean and one std per channel")
    if not all(math.isfinite(value) for value in mean + std):
        raise ConfigError(f"{FLAG} {text}: every mean and std must be a finite number")
    if not all(value > 0 for value in std):
        raise ConfigError(f"{FLAG} {text}: every std must be positive (it divides the input); "
                          f"pass the std of each channel on the 0..1 scale")
    return Normalization(mean, std)
