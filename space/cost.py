"""The analytical cost model: MACs and parameters of any part vector, vectorised.

A backbone's cost is a constant (stem, shortcuts, classifier, batch norm) plus one term per
searchable layer. The per-layer sizes come from the network's one trace (``space.trace``), so the
model cannot drift from what ``hetconv`` builds. After that, costing a batch of
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

from space.trace import trace_backbone


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


@functools.cache
def cost_profile(backbone: str, input_size: int, num_classes: int,
                 in_channels: int) -> CostProfile:
    """The sizes cost depends on, from the backbone's one trace (``space.trace``)."""
    trace = trace_backbone(backbone, input_size, num_classes, in_channels)
    layers = trace.layers

    def column(values: list[int]) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    return CostProfile(
        pixels=column([layer.out_pixels for layer in layers]),
        in_channels=column([layer.in_channels for layer in layers]),
        out_channels=column([layer.out_channels for layer in layers]),
        kernel_area=column([layer.kernel_size ** 2 for layer in layers]),
        fixed_macs=trace.fixed_macs, fixed_params=trace.fixed_params,
        other_params=trace.other_params)
