"""The ImageNet ResNets (18, 34, 50) with only their 3×3 convolutions searchable.

Layout as in torchvision (ResNet v1.5: the stride sits on the bottleneck's 3×3). The 7×7 stem, the
1×1 convolutions of the bottleneck and the projection shortcuts stay standard, as in the paper.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hetconv.models.normalize import InputNormalization
from hetconv.models.part_supply import PartSupply


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two searchable 3×3 layers."""

    expansion = 1

    def __init__(self, supply: PartSupply, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = supply.conv(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = supply.conv(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, searchable 3×3 (carrying the stride), 1×1 expand."""

    expansion = 4

    def __init__(self, supply: PartSupply, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = supply.conv(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Input normalisation, stem (7×7, max pool), four stages, global average pool, linear
    classifier."""

    def __init__(self, name: str, block: type[BasicBlock] | type[Bottleneck],
                 blocks_per_stage: Sequence[int], parts: Sequence[int] | None,
                 num_classes: int, in_channels: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> None:
        super().__init__()
        supply = PartSupply(name, parts)
        self.normalize = InputNormalization(in_channels, mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        channels = 64
        for stage, count in enumerate(blocks_per_stage):
            width = 64 * 2 ** stage
            blocks = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(supply, channels, width, stride))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        supply.finish()
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(self.normalize(x)))), 1))


def resnet18(parts: Sequence[int] | None = None, num_classes: int = 1000, in_channels: int = 3,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-18: 16 searchable layers."""
    return ResNet("resnet18", BasicBlock, (2, 2, 2, 2), parts, num_classes, in_channels, mean, std)


def resnet34(parts: Sequence[int] | None = None, num_classes: int = 1000, in_channels: int = 3,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-34: 32 searchable layers."""
    return ResNet("resnet34", BasicBlock, (3, 4, 6, 3), parts, num_classes, in_channels, mean, std)


def resnet50(parts: Sequence[int] | None = None, num_classes: int = 1000, in_channels: int = 3,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-50: 16 searchable layers (the bottlenecks' 3×3)."""
    return ResNet("resnet50", Bottleneck, (3, 4, 6, 3), parts, num_classes, in_channels, mean, std)


_TORCHVISION_KEYS = (
    (re.compile(r"^conv1\."), lambda _: "stem.0."),
    (re.compile(r"^bn1\."), lambda _: "stem.1."),
    (re.compile(r"^layer(\d)\."), lambda match: f"stages.{int(match.group(1)) - 1}."),
    (re.compile(r"\.downsample\."), lambda _: ".shortcut."),
)


def from_torchvision(state: Mapping[str, object]) -> dict[str, object]:
    """A state dict in torchvision's ResNet layout (``conv1``, ``layer1.0.downsample``) renamed
    to this module's (``stem.0``, ``stages.0.0.shortcut``); any other layout unchanged.

    The networks are the same (torchvision's ResNet v1.5), so trained ImageNet weights load.
    """
    if "layer1.0.conv1.weight" not in state:
        return dict(state)
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _TORCHVISION_KEYS:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed
