"""Model families whose searchable convolutions each take their own HetConv part."""

from hetconv.models.registry import (
    BACKBONES,
    Backbone,
    build_model,
    get_backbone,
)
from hetconv.models.resnet import resnet18, resnet34, resnet50
from hetconv.models.resnet_cifar import resnet20, resnet56
from hetconv.models.vgg import vgg16

__all__ = [
    "BACKBONES",
    "Backbone",
    "build_model",
    "get_backbone",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet50",
    "resnet56",
    "vgg16",
]
