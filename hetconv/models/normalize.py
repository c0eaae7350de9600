"""The input normalisation every built-in network starts with.

A trained network is only right on inputs normalised like its training data. Keeping the mean
and std inside the network (as buffers, so a state dict carries them) makes an exported model
self-contained: it takes a float batch in ``[0, 1]``, shape ``(N, C, H, W)``, and needs nothing
else. The trainer feeds it exactly that, so there is one place where normalisation happens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hetconv.errors import ConfigError


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel; the identity until statistics are given."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"input normalisation needs one mean and one std per input "
                              f"channel ({channels}), got {len(mean)} and {len(std)}")
        if not all(math.isfinite(m) for m in mean) \
                or not all(math.isfinite(s) and s > 0 for s in std):
            raise ConfigError(f"input normalisation needs finite means and positive finite "
                              f"stds, got mean {mean} and std {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
