"""The input normalisation every built-in network starts with.

A trained network is only right on inputs normalised like its training data. Keeping the mean
and std inside the network (as buffers, so a state dict carries them) makes an exported model
self-contained: it takes a float batch in ``[0, 1]``, shape ``(N, C, H, W)``, and needs nothing
else. The trainer feeds it exactly that, so there is one place where normalisation happens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hetconv.errors import ConfigError

STAT_LIMIT = 1e6
"""Means within ±STAT_LIMIT and stds in [1/STAT_LIMIT, STAT_LIMIT]: on the 0..1 scale anything
outside is no image statistic (and would overflow or divide by zero in float32)."""


def check_statistics(channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    """Raise :class:`ConfigError` unless ``mean``/``std`` are plausible per-channel statistics."""
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"input normalisation needs one mean and one std per input channel "
                          f"({channels}), got {len(mean)} and {len(std)}")

    def number(value: object, low: float) -> bool:
        # ``type(...) in``: JSON true is no statistic. The bounds also refuse NaN and infinity,
        # and compare huge integers exactly, without converting them to float.
        return (type(value) is int or type(value) is float) and low <= value <= STAT_LIMIT

    if not all(number(m, -STAT_LIMIT) for m in mean) \
            or not all(number(s, 1 / STAT_LIMIT) for s in std):
        raise ConfigError(f"input normalisation needs means within ±{STAT_LIMIT:g} and stds in "
                          f"[{1 / STAT_LIMIT:g}, {STAT_LIMIT:g}], got mean {list(mean)}, "
                          f"std {list(std)}")


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel; the identity until statistics are given."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        check_statistics(channels, mean, std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedNetwork(nn.Module):
    """A network a user wrote, with the input normalisation the built-in families have in front.

    ``network`` keeps its own module names under ``network.``, so a state dict of the user's
    network maps onto it by that prefix.
    """

    def __init__(self, channels: int, network: nn.Module, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = InputNormalization(channels, mean, std)
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(x))
