"""The one-shot HetConv supernet: one dense K×K weight per layer holds the layer at every part.

With power-of-two parts the K×K channels of part 2P are a subset of those of part P (filter
``n`` has a K×K kernel on channel ``m`` when ``(m - n) % 2P == 0``, which implies
``(m - n) % P == 0``), so a single dense kernel serves every part: at part P the layer uses its
K×K kernels on P's pattern and only the centre tap elsewhere (``docs/HETCONV.md``). Each
:class:`SuperHetConv2d` runs exactly :class:`~hetconv.layer.MaskedHetConv2d` at its active
part, so training a supernet trains every architecture of the space at once, and
:func:`extract` turns the supernet plus a part vector into a standalone network in the exact
trainable form (:class:`~hetconv.layer.HetConv2d`) computing the same function.

A supernet trained as one takes each part's layer as it trained it, centre taps and all. One
that merely holds a dense network's kernels (an architecture started from ``--init-from``
weights) can first have them reduced to the architecture's parts by another rule of
:mod:`hetconv.reduction` (:func:`reduce_to_parts`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hetconv.batchnorm import reestimate_batch_norm
from hetconv.conversion import batches, check_batch_size
from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d, check_layer, hetconv_mask
from hetconv.reduction import LEAST_SQUARES, check_rule, paired_inputs, reduce_kernel


class SuperHetConv2d(nn.Module):
    """A HetConv layer whose part is chosen at run time (:attr:`part`), over one dense kernel.

    The masks are derived, not trained: built on first use of each part on the weight's
    device and kept out of the state dict, so a supernet checkpoint is one kernel per layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int | None = None, bias: bool = False) -> None:
        super().__init__()
        check_layer(in_channels, out_channels, kernel_size, 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self._part = 1
        self._masks: dict[tuple[int, torch.device], torch.Tensor] = {}

    @classmethod
    def from_layer(cls, layer: HetConv2d) -> SuperHetConv2d:
        """A supernet layer holding ``layer``'s dense kernel (a part-1 layer: its full kernel)."""
        sup = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.bias is not None)
        sup = sup.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            sup.weight.copy_(layer.dense_weight())
            if layer.bias is not None and sup.bias is not None:
                sup.bias.copy_(layer.bias)
        sup.part = layer.part
        return sup

    @property
    def part(self) -> int:
        return self._part

    @part.setter
    def part(self, part: int) -> None:
        check_layer(self.in_channels, self.out_channels, self.kernel_size, part)
        self._part = int(part)

    def mask(self) -> torch.Tensor:
        """The active part's kernel mask, on the weight's device."""
        key = (self._part, self.weight.device)
        if key not in self._masks:
            self._masks[key] = hetconv_mask(self.in_channels, self.out_channels,
                                            self.kernel_size, self._part).to(self.weight.device)
        return self._masks[key]

    def masked_weight(self) -> torch.Tensor:
        """The dense kernel of the layer at the active part (zeros off its HetConv mask)."""
        if self._part == 1:
            return self.weight
        return self.weight * self.mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, part={self._part}")


def super_layers(model: nn.Module) -> list[tuple[str, SuperHetConv2d]]:
    """The supernet's searchable layers in part-vector order (module order)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SuperHetConv2d)]


def to_supernet(model: nn.Module) -> nn.Module:
    """Replace every :class:`HetConv2d` of ``model`` in place by a :class:`SuperHetConv2d`
    holding its dense kernel, keeping the module names; returns ``model``."""
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, HetConv2d)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SuperHetConv2d.from_layer(layer))
    return model


def set_parts(supernet: nn.Module, parts: Sequence[int]) -> None:
    """Make the supernet compute the architecture with ``parts`` (one per searchable layer)."""
    layers = super_layers(supernet)
    if len(parts) != len(layers):
        raise ConfigError(f"the supernet has {len(layers)} searchable layers but {len(parts)} "
                          f"parts were given")
    for (_, layer), part in zip(layers, parts, strict=True):
        layer.part = part


@torch.no_grad()
def reduce_to_parts(supernet: nn.Module, rule: str, images: torch.Tensor | None = None,
                    batch_size: int = 256) -> None:
    """Give each layer of a supernet holding a dense network's kernels, at its active part, the
    kernel ``rule`` makes of its own (:func:`hetconv.reduction.reduce_kernel`); then
    :func:`extract` takes out that architecture. What ``images`` do is what they do in
    :func:`hetconv.conversion.convert`: least-squares fits the layers to them in module order,
    each against the network at part 1, and every batch norm is re-estimated on them. The
    kernels of the other parts are lost; the supernet is left in eval mode."""
    check_rule(rule, images is not None)
    check_batch_size(batch_size)
    reference = None
    if rule == LEAST_SQUARES:
        reference = copy.deepcopy(supernet).eval()
        set_parts(reference, [1] * len(super_layers(reference)))
    supernet.eval()
    for name, layer in super_layers(supernet):
        inputs = (None if reference is None or images is None
                  else paired_inputs(reference, supernet, name,
                                     batches(supernet, images, batch_size)))
        layer.weight.copy_(reduce_kernel(layer.weight, layer.part, rule, layer.stride,
                                         layer.padding, inputs))
    if images is not None:
        reestimate_batch_norm(supernet, batches(supernet, images, batch_size))


def extract(supernet: nn.Module, target: nn.Module) -> nn.Module:
    """Copy the supernet's weights, at its active parts, into ``target``: the same network built
    in the exact trainable form with those parts (e.g. ``Architecture.build()``). Every other
    parameter and buffer (stem, batch norm, classifier, input normalisation) is copied by
    name. Returns ``target``, which then computes what the supernet computes."""
    layers = dict(super_layers(supernet))
    targets = {n: m for n, m in target.named_modules() if isinstance(m, HetConv2d)}
    if set(layers) != set(targets):
        raise ConfigError(f"target's HetConv layers {sorted(targets)[:3]}... do not match the "
                          f"supernet's {sorted(layers)[:3]}...; build the same network")
    for name, layer in targets.items():
        sup = layers[name]
        if layer.part != sup.part:
            raise ConfigError(f"layer {name}: target has part {layer.part}, the supernet is set "
                              f"to {sup.part}; call set_parts with the target's parts first")
        layer.load_dense_weight(sup.masked_weight().detach())
        if sup.bias is not None and layer.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(sup.bias)
    prefixes = tuple(f"{name}." for name in layers)
    rest = {k: v for k, v in supernet.state_dict().items() if not k.startswith(prefixes)}
    missing, unexpected = target.load_state_dict(rest, strict=False)
    left = [k for k in missing if not k.startswith(prefixes)]
    if left or unexpected:
        raise ConfigError(f"target and supernet differ outside the HetConv layers: missing "
                          f"{left[:3]}, unexpected {unexpected[:3]}")
    return target
