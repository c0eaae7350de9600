"""The model families by name: how to build each and the input it was designed for."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from hetconv.errors import ConfigError
from hetconv.models.resnet import from_torchvision, resnet18, resnet34, resnet50
from hetconv.models.resnet_cifar import resnet20, resnet56
from hetconv.models.vgg import vgg16


@dataclass(frozen=True)
class Backbone:
    """A model family: how to build it and the input it was designed for."""

    name: str
    build: Callable[..., nn.Module]
    input_size: int
    num_classes: int
    summary: str
    in_channels: int = 3
    # Renames a state dict from another common layout (torchvision's) to this family's keys.
    dense_keys: Callable[[Mapping[str, object]], dict[str, object]] = dict


BACKBONES: dict[str, Backbone] = {
    b.name: b for b in (
        Backbone("vgg16", vgg16, 32, 10, "VGG-16 with batch norm for 32x32 inputs"),
        Backbone("resnet20", resnet20, 32, 10, "CIFAR ResNet-20"),
        Backbone("resnet56", resnet56, 32, 10, "CIFAR ResNet-56"),
        Backbone("resnet18", resnet18, 224, 1000, "ImageNet ResNet-18",
                 dense_keys=from_torchvision),
        Backbone("resnet34", resnet34, 224, 1000, "ImageNet ResNet-34",
                 dense_keys=from_torchvision),
        Backbone("resnet50", resnet50, 224, 1000, "ImageNet ResNet-50 (3x3 layers searchable)",
                 dense_keys=from_torchvision),
    )
}


def get_backbone(name: str) -> Backbone:
    """Look a family up by name; an unknown name lists the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: "
                          f"{', '.join(BACKBONES)}") from None


def build_model(name: str, parts: Sequence[int] | None = None, num_classes: int | None = None,
                in_channels: int | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> nn.Module:
    """Build a family with one part per searchable layer (``None``: the standard network).

    ``num_classes`` and ``in_channels`` default to the family's own; ``mean``/``std`` are the
    per-channel input statistics the network normalises by (default: none, the identity).
    """
    backbone = get_backbone(name)
    return backbone.build(
        parts, num_classes=backbone.num_classes if num_classes is None else num_classes,
        in_channels=backbone.in_channels if in_channels is None else in_channels,
        mean=mean, std=std)
