"""Networks HetNAS did not write, for the tests of conversion and ``--model``: the layers a
user's network has and the built-in families lack.

``Foreign`` has a 5×5 convolution, a depthwise convolution (must stay as it is), 1×1
convolutions, a residual block with biased convolutions and an identity shortcut, a strided
layer into 18 channels (few divisors: parts 1 and 2 only) and one into 27 channels (no power
of two above 1 fits: converted by ``hetconv.convert`` but not searched). Its stem reads the
data's channels, which no part above 1 divides for 1 or 3 channels.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding="same", bias=True)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv2(torch.relu(self.conv1(x)))))


class Foreign(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 12, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(12), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(12, 24, 5, padding=2, bias=False),
                                  nn.BatchNorm2d(24), nn.ReLU())
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.pointwise = nn.Conv2d(24, 24, 1, bias=False)
        self.block = Residual(24)
        self.down = nn.Sequential(nn.Conv2d(24, 18, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(18), nn.ReLU())
        self.odd = nn.Conv2d(18, 27, 3, padding=1)
        self.head = nn.Linear(27, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.pointwise(self.depthwise(self.wide(self.stem(x)))))
        x = torch.relu(self.odd(self.down(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def foreign(num_classes: int, in_channels: int = 3) -> Foreign:
    """The factory ``--model tests.foreign_networks:foreign`` names."""
    return Foreign(num_classes, in_channels)


SEARCHABLE = ["wide.0", "block.conv1", "block.conv2", "down.0"]  # in part-vector order


def rgb_only(num_classes: int) -> Foreign:
    """A network for 3-channel images that cannot be told the data's channels."""
    return Foreign(num_classes)


def pointwise_only(num_classes: int) -> nn.Module:
    """No convolution can take a part: 1×1 and depthwise only."""
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def raises(num_classes: int) -> nn.Module:
    raise ValueError(f"this factory does not build {num_classes}-class networks")


def not_a_module(num_classes: int) -> object:
    return {"classes": num_classes}


class Untidy(Foreign):
    """Foreign plus what real networks have: a convolution never called in eval mode (a
    training-only auxiliary head), one called twice (shared weights), a forward that makes a
    CPU tensor and calls ``.item()``."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.aux = nn.Conv2d(24, 24, 3, padding=1)
        self.shared = nn.Conv2d(24, 24, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.pointwise(self.depthwise(self.wide(self.stem(x)))))
        if self.training:
            x = x + 0 * self.aux(x)
        x = self.shared(torch.relu(self.shared(x))) * torch.tensor(1.0)
        scale = 1.0 if x.abs().sum().item() >= 0 else 0.0
        x = torch.relu(self.odd(self.down(x))) * scale
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def untidy(num_classes: int, in_channels: int = 3) -> Untidy:
    return Untidy(num_classes, in_channels)


def tuple_out(num_classes: int, in_channels: int = 3) -> nn.Module:
    class Pair(Foreign):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            out = super().forward(x)
            return out, out

    return Pair(num_classes, in_channels)


def five_classes(num_classes: int, in_channels: int = 3) -> Foreign:
    """Ignores the class count it is given."""
    return Foreign(5, in_channels)


class _OneImageAtATime(Foreign):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.pointwise(self.depthwise(self.wide(self.stem(x)))))
        x = torch.relu(self.odd(self.down(x)))
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).reshape(1, -1))


def batch_of_one(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Passes the start-up trace (one image), fails on every training batch."""
    return _OneImageAtATime(num_classes, in_channels)


class _AuxiliaryInTraining(Foreign):
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return (out, out) if self.training else out


def aux_in_training(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Logits in eval mode, (logits, auxiliary logits) in training mode (as GoogLeNet)."""
    return _AuxiliaryInTraining(num_classes, in_channels)


def no_running_stats(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Batch norms that normalise by the batch alone, even in eval mode."""
    network = Foreign(num_classes, in_channels)
    network.wide[1] = nn.BatchNorm2d(24, track_running_stats=False)
    return network


class _DataDependent(Foreign):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if out.mean() > 0 else -out


def data_dependent(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Control flow on the data: runs eagerly, cannot be traced by torch.fx."""
    return _DataDependent(num_classes, in_channels)
