"""The analytical cost model: MACs and parameters of any part vector, vectorised.

A backbone's cost is a constant (stem, shortcuts, classifier, batch norm) plus one term per
searchable layer. The per-layer sizes come from one trace of the standard network on the meta
device, so the model cannot drift from what ``hetconv`` builds. After that, costing a batch of
part vectors is a few integer numpy operations over an ``(architectures, layers)`` array.

Conventions (see docs/HETCONV.md): *paper* MACs count convolutions and fully connected layers,
a HetConv layer by ``Do²·N·(M·K²/P + M − M/P)``; *executed* MACs count what the fast path runs,
grouped K×K plus a dense 1×1 whose entries on the K×K pattern are fixed zeros,
``Do²·N·(M·K²/P + M)`` (``P = 1``: one dense K×K). Paper parameters count the weights and biases
of convolutions and fully connected layers; executed parameters are every trainable tensor of the
built module: the paper's count (the trainable layer is the paper's exact layer) plus batch norm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d
from hetconv.models import build_model, searchable_layers


@dataclass(frozen=True, eq=False)
class CostProfile:
    """Per-layer sizes of one backbone at one input size and class count."""

    pixels: np.ndarray  # (L,) output pixels Do² of each searchable layer
    in_channels: np.ndarray  # (L,)
    out_channels: np.ndarray  # (L,)
    kernel_area: np.ndarray  # (L,) K²
    fixed_macs: int  # convolutions and linear layers that are not searchable
    fixed_params: int  # weights and biases of those layers
    other_params: int  # everything else trainable (batch norm)

    def paper_macs(self, parts: np.ndarray) -> np.ndarray:
        """Paper-convention MACs of each row of ``parts`` (shape ``(..., L)``)."""
        return self.fixed_macs + (self.pixels * self._paper_weights(parts)).sum(axis=-1)

    def executed_macs(self, parts: np.ndarray) -> np.ndarray:
        """MACs that the fast path executes for each row of ``parts``."""
        return self.fixed_macs + (self.pixels * self._executed_weights(parts)).sum(axis=-1)

    def paper_params(self, parts: np.ndarray) -> np.ndarray:
        """Paper-convention parameters (convolution and linear weights and biases)."""
        return self.fixed_params + self._paper_weights(parts).sum(axis=-1)

    def executed_params(self, parts: np.ndarray) -> np.ndarray:
        """Every trainable parameter of the built module."""
        return self.paper_params(parts) + self.other_params

    def _paper_weights(self, parts: np.ndarray) -> np.ndarray:
        parts = np.asarray(parts, dtype=np.int64)
        m, n, k2 = self.in_channels, self.out_channels, self.kernel_area
        return n * (m * k2 // parts + m - m // parts)

    def _executed_weights(self, parts: np.ndarray) -> np.ndarray:
        """Weights the fast path multiplies by: the paper's plus the 1×1 zeros on the pattern."""
        parts = np.asarray(parts, dtype=np.int64)
        m, n, k2 = self.in_channels, self.out_channels, self.kernel_area
        return n * (m * k2 // parts + np.where(parts > 1, m, 0))


def _fixed_layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one non-searchable convolution or linear layer for one sample."""
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        per_output = module.in_channels // module.groups * k_h * k_w
        return output[0].numel() * per_output
    return output[0].numel() // module.out_features * module.in_features * module.out_features


@functools.cache
def cost_profile(backbone: str, input_size: int, num_classes: int,
                 in_channels: int) -> CostProfile:
    """Trace the standard network once on the meta device; keep the sizes cost depends on."""
    with torch.device("meta"):
        model = build_model(backbone, None, num_classes, in_channels)
    # Eval mode: the trace is a question of shapes; a training-mode batch norm would reject the
    # batch of one at a 1×1 map with a ValueError before the real size problem shows.
    model.eval()
    pixels: list[int] = []
    fixed_macs = 0

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal fixed_macs
        if isinstance(module, HetConv2d):
            pixels.append(output.shape[-1] * output.shape[-2])
        else:
            fixed_macs += _fixed_layer_macs(module, output)

    counted = (HetConv2d, nn.Conv2d, nn.Linear)
    for module in model.modules():
        if isinstance(module, counted):
            module.register_forward_hook(record)
    try:
        model(torch.empty(1, in_channels, input_size, input_size, device="meta"))
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"input size {input_size} is too small for {backbone} "
                          f"({error.args[0].splitlines()[0]}); use a larger --input-size") from None
    layers = searchable_layers(backbone)
    fixed_params = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       for p in m.parameters(recurse=False))
    searchable_params = sum(p.numel() for m in model.modules() if isinstance(m, HetConv2d)
                            for p in m.parameters(recurse=False))
    other_params = sum(p.numel() for p in model.parameters()) - fixed_params - searchable_params
    return CostProfile(
        pixels=np.array(pixels, dtype=np.int64),
        in_channels=np.array([layer.in_channels for layer in layers], dtype=np.int64),
        out_channels=np.array([layer.out_channels for layer in layers], dtype=np.int64),
        kernel_area=np.array([layer.kernel_size ** 2 for layer in layers], dtype=np.int64),
        fixed_macs=fixed_macs, fixed_params=fixed_params, other_params=other_params)
