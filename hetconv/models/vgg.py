"""VGG-16 for 32×32 inputs as the HetConv paper used it.

Batch norm after every convolution, the first convolution (it reads the image's channels) standard,
the 12 others HetConv, and a 512 → 512 → classes classifier. An adaptive average pool before the
classifier is the identity at 32×32 and lets larger inputs through. The network starts with its
input normalisation (:class:`~hetconv.models.normalize.InputNormalization`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hetconv.models.normalize import InputNormalization
from hetconv.models.part_supply import PartSupply

VGG16_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                     512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """Plain VGG: input normalisation, conv-BN-ReLU blocks, max pools, a two-layer classifier."""

    def __init__(self, normalize: InputNormalization, features: nn.Sequential, width: int,
                 num_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.normalize(x))))


def vgg16(parts: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 3,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> VGG:
    """VGG-16 with one part per HetConv layer (12 of them); ``None`` is the standard net.

    ``in_channels`` feed the standard first convolution; ``mean``/``std`` the normalisation.
    """
    supply = PartSupply("vgg16", parts)
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_PLAN:
        if isinstance(item, str):  # "M": a max pool
            layers.append(nn.MaxPool2d(2))
            continue
        conv = (nn.Conv2d(channels, item, 3, padding=1, bias=False) if not layers
                else supply.conv(channels, item))
        layers += [conv, nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
        channels = item
    supply.finish()
    return VGG(InputNormalization(in_channels, mean, std), nn.Sequential(*layers), channels,
               num_classes)
