"""How a trained dense K×K kernel becomes a HetConv kernel: the rules for the 1×1 weights.

At part P a filter keeps its K×K kernels on the part's pattern; on every other input channel
it has one 1×1 weight, which reads the pixel under the K×K centre tap (``docs/HETCONV.md``).
Which number that weight should be, given the dense kernel the network was trained with, is
the only choice a conversion makes, and each rule is written once, here, for every path that
converts: :func:`hetconv.conversion.convert` (any network's ``Conv2d`` layers) and
:func:`hetconv.supernet.reduce_to_parts` (a supernet holding a dense network, which is how a
search's trials start from ``--init-from`` weights). Each rule gives a dense kernel that
respects :func:`~hetconv.layer.hetconv_mask`, so it loads through
:meth:`~hetconv.layer.HetConv2d.load_dense_weight` or sits in a supernet layer unchanged.

* ``centre``: the kernel's centre tap. What the mask leaves; the rule HetNAS always used.
* ``tap-sum``: the sum of the kernel's K² taps. On an input that is constant over the K×K
  window the dense kernel's response is exactly that sum times the value, so the layer is
  exact wherever its input is locally constant. Not at the borders: there the dense kernel
  reads some taps from the zero padding and the 1×1 weight reads none of it.
* ``least-squares``: fitted to data. Given the inputs the layer sees, each filter's 1×1
  weights minimise the squared difference between the dense layer's output and the HetConv
  layer's (its pattern K×K kernels kept as trained), in closed form: the normal equations,
  summed over batches, solved per filter class with a tiny ridge toward the tap sum (a
  channel that never varies in the data keeps the data-free guess). The 1×1 branch sees the
  input at the strided centre positions, exactly as :func:`~hetconv.layer.pointwise_conv`
  feeds it. The dense output may come from another input than the HetConv layer's own: in a
  whole network converted layer by layer, the dense network's, so each layer also makes up for
  what the converted layers before it lost (channel reconstruction, He et al., ICCV 2017).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hetconv.errors import ConfigError
from hetconv.layer import (
    check_layer,
    hetconv_mask,
    kxk_pattern,
    off_pattern_channels,
    pointwise_conv,
)

CENTRE, TAP_SUM, LEAST_SQUARES = "centre", "tap-sum", "least-squares"
RULES = (CENTRE, TAP_SUM, LEAST_SQUARES)
RIDGE = 1e-5  # relative to the mean squared input: stability, not a prior that shows


def check_rule(rule: str, has_images: bool) -> None:
    """Refuse an unknown rule, and least-squares without the images it is fitted on."""
    if rule not in RULES:
        raise ConfigError(f"unknown conversion rule {rule!r}; choose one of: {', '.join(RULES)}")
    if rule == LEAST_SQUARES and not has_images:
        raise ConfigError("conversion rule 'least-squares' fits each layer to the inputs it "
                          "sees: give images, or choose 'tap-sum' or 'centre'")


def reduce_kernel(weight: torch.Tensor, part: int, rule: str, stride: int = 1,
                  padding: int | None = None,
                  inputs: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
                  ) -> torch.Tensor:
    """The dense ``(out, in, K, K)`` kernel of the part-``part`` HetConv layer that ``rule``
    makes of ``weight``: K×K on the pattern, only the centre tap elsewhere.

    ``stride``, ``padding`` (default ``K // 2``) and ``inputs`` serve least-squares alone:
    ``inputs`` gives, batch by batch, the input the dense layer's output is computed from and
    the input the HetConv layer will see (the same tensor when converting one layer alone).
    """
    out_channels, in_channels, kernel = weight.shape[:3]
    check_layer(in_channels, out_channels, kernel, part)
    check_rule(rule, inputs is not None)
    if rule == CENTRE or part == 1:  # at part 1 the mask keeps every tap: nothing to choose
        return weight * hetconv_mask(in_channels, out_channels, kernel, part).to(weight.device)
    off = ~kxk_pattern(in_channels, out_channels, part).to(weight.device)
    pointwise = weight.sum(dim=(2, 3)) * off
    if rule == LEAST_SQUARES and inputs is not None:
        padding = kernel // 2 if padding is None else padding
        fit = _NormalEquations(weight, part, stride, padding)
        for dense_input, layer_input in inputs:
            fit.add(dense_input, layer_input)
        pointwise = fit.solve(prior=pointwise)
    kept = weight * ~off[:, :, None, None]
    centre = kernel // 2
    return kept + F.pad(pointwise[:, :, None, None], (centre,) * 4)


class _NormalEquations:
    """One layer's least-squares problem for its 1×1 weights, summed over batches in float64.

    With ``c`` the input under the centre tap and ``r`` what the 1×1 weights must add (the
    dense output less the pattern's K×K part), per output pixel: ``gram = Σ c cᵀ`` and
    ``cross = Σ c rᵀ``. Filters of one class ``n % part`` share their 1×1 channels, so the
    ``part`` solves each take every filter of their class at once.
    """

    def __init__(self, weight: torch.Tensor, part: int, stride: int, padding: int) -> None:
        out_channels, in_channels, kernel = weight.shape[:3]
        self.weight, self.part, self.stride, self.padding = weight, part, stride, padding
        pattern = kxk_pattern(in_channels, out_channels, part).to(weight.device)
        self.pattern_weight = weight * pattern[:, :, None, None]
        self.identity = torch.eye(in_channels, dtype=weight.dtype,
                                  device=weight.device)[:, :, None, None]
        self.gram = torch.zeros(in_channels, in_channels, dtype=torch.float64,
                                device=weight.device)
        self.cross = torch.zeros(in_channels, out_channels, dtype=torch.float64,
                                 device=weight.device)

    def add(self, dense_input: torch.Tensor, layer_input: torch.Tensor) -> None:
        """Add one batch: the dense layer's input and the HetConv layer's (same shape)."""
        kernel = self.weight.shape[-1]
        target = F.conv2d(dense_input, self.weight, None, self.stride, self.padding) \
            - F.conv2d(layer_input, self.pattern_weight, None, self.stride, self.padding)
        centre = pointwise_conv(layer_input, self.identity, None, kernel, self.stride,
                                self.padding)
        c = centre.transpose(0, 1).flatten(1).double()  # (in, pixels)
        r = target.transpose(0, 1).flatten(1).double()  # (out, pixels)
        self.gram += c @ c.T
        self.cross += c @ r.T

    def solve(self, prior: torch.Tensor) -> torch.Tensor:
        """The ``(out, in)`` 1×1 weights (zero on the pattern), pulled toward ``prior`` by the
        ridge where the data does not decide them."""
        out_channels, in_channels = prior.shape
        p = self.part
        channels = off_pattern_channels(in_channels, p).to(prior.device)[:, :, None]  # (p, L, 1)
        filters = torch.arange(out_channels, device=prior.device).view(-1, p).T[:, None, :]
        gram = self.gram[channels, channels.transpose(1, 2)]  # (p, L, L)
        ridge = RIDGE * gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)[:, None, None]
        identity = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        guess = prior.double()[filters, channels]  # (p, L, out/p)
        solved = torch.linalg.solve(gram + ridge * identity,
                                    self.cross[channels, filters] + ridge * guess)
        pointwise = torch.zeros_like(prior)
        pointwise[filters, channels] = solved.to(prior.dtype)
        return pointwise


class _Reached(Exception):
    """Stops a forward pass once the watched layer's input is caught."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


@torch.no_grad()
def layer_input(model: nn.Module, layer: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """What ``layer`` (a module inside ``model``) receives when ``model`` reads ``batch``; the
    pass stops there."""
    def catch(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        raise _Reached(args[0])

    handle = layer.register_forward_pre_hook(catch)
    try:
        model(batch)
    except _Reached as reached:
        return reached.value
    finally:
        handle.remove()
    raise ConfigError(f"{type(layer).__name__} never ran when the network read its images")


def paired_inputs(reference: nn.Module, model: nn.Module, name: str,
                  batches: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch, the inputs of layer ``name`` in ``reference`` (the dense network) and in
    ``model`` (the one being converted): what least-squares fits that layer on."""
    for batch in batches:
        yield (layer_input(reference, reference.get_submodule(name), batch),
               layer_input(model, model.get_submodule(name), batch))
