"""Fold an inference-mode batch norm into the HetConv layer in front of it.

At inference a batch norm is a per-filter affine map, so scaling each filter's kernels (both the
K×K and the 1×1 ones) and adding a bias gives one layer with the same output and no BN pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d


def fold_batchnorm(layer: HetConv2d, bn: nn.BatchNorm2d) -> HetConv2d:
    """Return a new HetConv2d (with bias) equal to ``bn(layer(x))`` with ``bn`` in eval mode."""
    if bn.num_features != layer.out_channels:
        raise ConfigError(f"batch norm has {bn.num_features} features but the layer has "
                          f"{layer.out_channels} filters")
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError("batch norm tracks no running statistics, so it cannot be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        p = layer.part
        # `weight` rows are class-major (row r*(out/p) + i is filter i*p + r): reorder the scale.
        class_major = scale.reshape(layer.out_channels // p, p).t().reshape(-1)
        folded.weight.mul_(class_major.view(-1, 1, 1, 1).to(folded.weight.dtype))
        if folded.pointwise is not None:
            folded.pointwise.mul_(scale.view(-1, 1).to(folded.pointwise.dtype))
        bias = shift if layer.bias is None else layer.bias * scale + shift
        folded.bias = nn.Parameter(bias.to(folded.weight.dtype))
    return folded
