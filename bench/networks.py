"""What the benchmarks and the tests do to networks they did not train (the tests import it as
``bench.networks``, the scripts beside it as ``networks``)."""

from __future__ import annotations

import torch
from torch import nn


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with every batch norm given the non-trivial statistics and affine
    terms training would leave, so folding and carrying them over is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) - 0.5)
    return model.eval()
