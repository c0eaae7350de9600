"""One trace of a network: every searchable layer as the network feeds it, and the fixed rest.

The cost model (``space.cost``), the search space's layer list and the latency profiler
(``search.profiling``) all read this one description, so they cannot disagree on a layer's
shape. The trace runs the standard network (every part 1) once on the meta device: no memory,
no compute, and the input sizes, strides and paddings are the ones the model really uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from hetconv.errors import ConfigError, param
from hetconv.layer import HetConv2d
from space.networks import build_network, defaults, is_factory
from space.parts import allowed_parts


@dataclass(frozen=True)
class SearchableLayer:
    """One HetConv layer of a network, where it sits, and the parts the search may give it."""

    index: int  # position in the part vector
    name: str  # module name in the network
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    in_height: int  # the feature map it is fed
    in_width: int
    out_pixels: int  # Do², output positions per sample
    allowed_parts: tuple[int, ...]

    def describe(self) -> str:
        """Short human form used in error messages: ``layer 3 (features.10, 128->256)``."""
        return f"layer {self.index} ({self.name}, {self.in_channels}->{self.out_channels})"


@dataclass(frozen=True)
class NetworkTrace:
    """The searchable layers in part-vector order, and the cost of everything else."""

    layers: tuple[SearchableLayer, ...]
    fixed_macs: int  # convolutions and linear layers that are not searchable, per sample
    fixed_params: int  # weights and biases of those layers
    other_params: int  # everything else trainable (batch norm)


def _fixed_layer_macs(module: nn.Conv2d | nn.Linear, output: torch.Tensor) -> int:
    """MACs of one non-searchable convolution or linear layer for one sample."""
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        per_output = module.in_channels // module.groups * k_h * k_w
        return output[0].numel() * per_output
    return output[0].numel() // module.out_features * module.in_features * module.out_features


def trace_network(model: nn.Module, input_shape: tuple[int, int, int],
                  label: str = "the network") -> NetworkTrace:
    """Trace ``model`` (built on the meta device, every part 1) on one ``(C, H, W)`` input."""
    # Eval mode: the trace is a question of shapes; a training-mode batch norm would reject the
    # batch of one at a 1×1 map with a ValueError before the real size problem shows.
    model.eval()
    fed: dict[str, tuple[int, int, int]] = {}  # name -> (height, width, output pixels)
    fixed_macs = 0

    def record_fixed(module: nn.Conv2d | nn.Linear, _inputs: tuple,
                     output: torch.Tensor) -> None:
        nonlocal fixed_macs
        fixed_macs += _fixed_layer_macs(module, output)

    hetconvs = [(name, m) for name, m in model.named_modules() if isinstance(m, HetConv2d)]
    for name, module in hetconvs:
        def record(_m: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            height, width = inputs[0].shape[-2:]
            fed[name] = (int(height), int(width), int(output.shape[-1] * output.shape[-2]))
        module.register_forward_hook(record)
    for fixed in model.modules():
        if isinstance(fixed, (nn.Conv2d, nn.Linear)):
            fixed.register_forward_hook(record_fixed)
    try:
        device = next((p.device for p in model.parameters()), torch.device("meta"))
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    except (RuntimeError, ValueError) as error:
        channels, height, width = input_shape
        raise ConfigError(f"{label} cannot take a {channels}x{height}x{width} input "
                          f"({error.args[0].splitlines()[0]}): too small for it, or a network "
                          f"made for other input channels; use a larger {param('input_size')} "
                          f"or a network for {channels}-channel images") from None
    layers = tuple(
        SearchableLayer(i, name, m.in_channels, m.out_channels, m.kernel_size, m.stride,
                        m.padding, *fed[name], allowed_parts(m.in_channels, m.out_channels))
        for i, (name, m) in enumerate(hetconvs))
    fixed_params = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       for p in m.parameters(recurse=False))
    searchable_params = sum(p.numel() for _, m in hetconvs for p in m.parameters(recurse=False))
    other_params = sum(p.numel() for p in model.parameters()) - fixed_params - searchable_params
    # A searchable layer's bias costs the same at every part: it counts with the fixed weights.
    fixed_params += sum(m.bias.numel() for _, m in hetconvs if m.bias is not None)
    return NetworkTrace(layers, fixed_macs, fixed_params, other_params)


@functools.cache
def trace_backbone(backbone: str, input_size: int, num_classes: int,
                   in_channels: int) -> NetworkTrace:
    """The trace of a network's standard form (every part 1), once per shape."""
    # A user's network is traced on the CPU: its forward may make CPU tensors or call .item(),
    # which the meta device refuses (factory_layers has run it there once already).
    with torch.device("cpu" if is_factory(backbone) else "meta"):
        model = build_network(backbone, None, num_classes, in_channels, input_size)
    return trace_network(model, (in_channels, input_size, input_size), backbone)


def searchable_layers(backbone: str, input_size: int | None = None,
                      num_classes: int | None = None,
                      in_channels: int | None = None) -> tuple[SearchableLayer, ...]:
    """A built-in family's searchable layers (at its own input, classes and channels unless
    given)."""
    spec = defaults(backbone)
    return trace_backbone(backbone, input_size or spec.input_size,
                          num_classes or spec.num_classes, in_channels or spec.in_channels).layers
