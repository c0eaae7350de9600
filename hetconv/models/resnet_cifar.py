"""The CIFAR ResNets of He et al. (2016): ResNet-20 and ResNet-56.

Three stages of 16, 32 and 64 channels, ``n`` basic blocks each (depth 6n + 2). The stem stays a
standard convolution; both 3×3 convolutions of every block are searchable. Where a block halves
the size and doubles the width, the shortcut is the paper's option A (subsample and zero-pad the
channels): no parameters and no MACs, so the widely quoted costs (ResNet-20: 0.27 M parameters,
about 41 M MACs) hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hetconv.models.normalize import InputNormalization
from hetconv.models.part_supply import PartSupply


class PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsample, then zero channels up to the new width."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class CifarBasicBlock(nn.Module):
    """Two searchable 3×3 HetConv layers with batch norm and an identity or option-A shortcut."""

    def __init__(self, supply: PartSupply, in_channels: int, out_channels: int,
                 stride: int) -> None:
        super().__init__()
        self.conv1 = supply.conv(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = supply.conv(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (PadShortcut(out_channels - in_channels)
                         if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """Input normalisation, stem, three stages of basic blocks, global average pool, linear
    classifier."""

    def __init__(self, depth: int, parts: Sequence[int] | None, num_classes: int,
                 in_channels: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> None:
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        supply = PartSupply(f"resnet{depth}", parts)
        self.normalize = InputNormalization(in_channels, mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        width = 16
        for stage, stage_width in enumerate((16, 32, 64)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(CifarBasicBlock(supply, width, stage_width, stride))
                width = stage_width
        supply.finish()
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(self.normalize(x)))), 1))


def resnet20(parts: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 3,
             mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> CifarResNet:
    """ResNet-20 for 32×32 inputs: 18 searchable layers."""
    return CifarResNet(20, parts, num_classes, in_channels, mean, std)


def resnet56(parts: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 3,
             mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> CifarResNet:
    """ResNet-56 for 32×32 inputs: 54 searchable layers."""
    return CifarResNet(56, parts, num_classes, in_channels, mean, std)
