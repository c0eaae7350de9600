"""Turn any network's convolutions into HetConv layers, carrying trained kernels over.

A plain :class:`torch.nn.Conv2d` can become a :class:`~hetconv.layer.HetConv2d` when it has an
odd square kernel larger than 1×1 (the 1×1 kernels sit on its centre tap), ``groups=1`` (the
K×K pattern shifts across *all* input channels), no dilation, zero padding of the same size on
every side, a square stride, and channel counts with a common divisor above 1. Any other layer
(the depthwise convolution of a MobileNet, a 1×1 projection, a dilated or reflect-padded
convolution, a ``Conv2d`` subclass with its own ``forward``) is reported with its reason and
left as it is.

A trained dense kernel carries over the only way the paper's layer allows
(``docs/HETCONV.md``): the K×K kernels on the part's pattern are kept, and off the pattern
each kernel becomes one 1×1 weight, by a rule of :mod:`hetconv.reduction`: its centre tap
(the default), the sum of its taps, or weights fitted by least squares to images the network
reads. At part 1 nothing is dropped, so a network converted at part 1 computes exactly what it
computed before, whatever the rule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hetconv.batchnorm import reestimate_batch_norm
from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d, power_of_two_parts
from hetconv.layout import is_power_of_two
from hetconv.reduction import CENTRE, LEAST_SQUARES, check_rule, paired_inputs, reduce_kernel


@dataclass(frozen=True)
class Convertible:
    """The convolutions of a network that can take a HetConv part, and why the others cannot.

    Both map module names (as ``named_modules`` gives them) in module order.
    """

    eligible: dict[str, nn.Conv2d]
    ineligible: dict[str, str]  # name -> reason
    order: tuple[str, ...]  # every convolution's name, in module order


def _symmetric(value: int | tuple[int, ...]) -> int | None:
    """The one number of a square kernel, stride or padding; None when the sides differ."""
    values = (value,) if isinstance(value, int) else tuple(value)
    return values[0] if len(set(values)) == 1 else None


def _padding(conv: nn.Conv2d) -> int | None:
    if conv.padding == "valid":
        return 0
    if conv.padding == "same":
        return conv.kernel_size[0] // 2  # torch allows "same" only at stride 1
    return _symmetric(conv.padding)  # type: ignore[arg-type]


def ineligibility(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot become a HetConv layer, or None when it can."""
    if type(conv) is not nn.Conv2d:
        return f"a {type(conv).__name__}, not a plain Conv2d, so its forward may differ"
    kernel = _symmetric(conv.kernel_size)
    if kernel is None:
        return f"kernel {tuple(conv.kernel_size)} is not square"
    if kernel == 1 or kernel % 2 == 0:
        return f"kernel {kernel}x{kernel}: HetConv needs an odd kernel larger than 1x1"
    if conv.groups != 1:
        return f"groups={conv.groups} (a grouped or depthwise convolution)"
    if _symmetric(conv.dilation) != 1:
        return f"dilation {tuple(conv.dilation)}"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r}"
    if _padding(conv) is None:
        return f"padding {conv.padding} differs between sides"
    if _symmetric(conv.stride) is None:
        return f"stride {tuple(conv.stride)} is not square"
    if math.gcd(conv.in_channels, conv.out_channels) == 1:
        return (f"channels {conv.in_channels}->{conv.out_channels} have no common divisor "
                f"above 1, so no part above 1 fits")
    return None


def convertible(model: nn.Module) -> Convertible:
    """Every convolution of ``model``, sorted into those that can take a part and the rest."""
    convolutions = [(name, module) for name, module in model.named_modules()
                    if isinstance(module, nn.Conv2d)]
    reasons = {name: ineligibility(module) for name, module in convolutions}
    return Convertible({name: module for name, module in convolutions if reasons[name] is None},
                       {name: reason for name, reason in reasons.items() if reason is not None},
                       tuple(name for name, _ in convolutions))


def hetconv_from_conv(conv: nn.Conv2d, part: int, rule: str = CENTRE,
                      inputs: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
                      ) -> HetConv2d:
    """The HetConv layer of ``part`` closest to ``conv``: its trained kernel on the part's
    pattern, elsewhere the 1×1 weights of ``rule`` (:func:`hetconv.reduction.reduce_kernel`,
    which says what least-squares takes as ``inputs``), its bias; same device and dtype."""
    reason = ineligibility(conv)
    if reason is not None:
        raise ConfigError(f"{conv} cannot become a HetConv layer: {reason}")
    kernel = conv.kernel_size[0]
    padding = _padding(conv)
    layer = HetConv2d(conv.in_channels, conv.out_channels, kernel, conv.stride[0], padding,
                      part, conv.bias is not None)
    layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if conv.weight.device.type == "meta":
        return layer
    layer.load_dense_weight(reduce_kernel(conv.weight.detach(), part, rule, conv.stride[0],
                                          padding, inputs))
    if conv.bias is not None and layer.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(conv.bias)
    layer.requires_grad_(conv.weight.requires_grad)  # a frozen layer stays frozen
    return layer


def convert(model: nn.Module, parts: int | Mapping[str, int] = 1, rule: str = CENTRE,
            images: torch.Tensor | None = None, batch_size: int = 256) -> nn.Module:
    """Replace convolutions of ``model`` in place by HetConv layers; returns ``model``.

    ``parts`` is one power-of-two part for every eligible layer, as the search offers them
    (they nest; ``space.parts``): a layer that part does not fit takes the largest power of two
    below it that divides both its channel counts (a 3->24 stem takes part 1, the standard
    convolution). Or a part per layer name, any divisor of both channel counts (layers not
    named stay as they are). Naming a layer that cannot be converted, or giving it a part that
    does not divide its channel counts, raises :class:`ConfigError` with the reason.
    :func:`convertible` lists the layers and the reasons beforehand.

    ``rule`` sets the 1×1 weights (:mod:`hetconv.reduction`). ``images`` (what ``model`` reads,
    fed ``batch_size`` at a time): least-squares fits the layers to them one after another in
    module order, each on the inputs it sees behind the layers converted before it, against
    the outputs of the dense network; and with any rule, every batch norm's statistics are
    then re-estimated on them, since the converted layers' outputs are not the dense ones.
    """
    check_rule(rule, images is not None)
    check_batch_size(batch_size)
    found = convertible(model)
    if isinstance(parts, Mapping):
        unknown = [name for name in parts if name not in found.eligible]
        if unknown:
            name = unknown[0]
            reason = found.ineligible.get(name, "no Conv2d of that name in the network")
            raise ConfigError(f"layer {name!r} cannot take a HetConv part: {reason}")
        chosen = dict(parts)
    else:
        if isinstance(parts, bool) or not isinstance(parts, int) or not is_power_of_two(parts):
            raise ConfigError(f"one part for every layer must be a power of two (name the layers "
                              f"to give any other divisor), got {parts!r}")
        chosen = {name: power_of_two_parts(conv.in_channels, conv.out_channels, parts)[-1]
                  for name, conv in found.eligible.items()}
    training = model.training
    if images is not None:
        model.eval()  # the layers are fitted to, and compared with, what inference computes
    reference = copy.deepcopy(model) if rule == LEAST_SQUARES else None
    for name in [name for name in found.order if name in chosen]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        inputs = (None if reference is None or images is None
                  else paired_inputs(reference, model, name, batches(model, images, batch_size)))
        try:
            layer = hetconv_from_conv(found.eligible[name], chosen[name], rule, inputs)
        except ConfigError as error:
            raise ConfigError(f"layer {name!r}: {error}") from None
        setattr(parent, child, layer)
    if images is not None:
        reestimate_batch_norm(model, batches(model, images, batch_size))
        model.train(training)
    return model


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size for the conversion's images that is not a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def batches(model: nn.Module, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """``images`` ``batch_size`` at a time, on ``model``'s device."""
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size].to(device)
