"""HetConv2d: the heterogeneous-kernel convolution of Singh et al. (CVPR 2019).

Filter ``n`` has a K×K kernel on input channel ``m`` exactly when ``(m - n) % part == 0`` and a
1×1 kernel on every other channel (the paper's shifted pattern). Grouping filters by ``n % part``
and channels by ``m % part`` turns the layer into a grouped K×K convolution (``groups=part``)
plus a 1×1 convolution over all channels that is zero on the K×K pattern, which is how
:class:`HetConv2d` runs it. Its trainable parameters are exactly the paper's, ``in/part`` K×K and
``in - in/part`` 1×1 kernels per filter:

* ``weight``: ``(out, in/part, K, K)``, rows in *class-major* order: row ``r*(out/part) + i`` is
  filter ``i*part + r``; column ``c`` of that row is input channel ``c*part + r``.
* ``pointwise``: ``(out, in - in/part)``: row ``n`` holds filter ``n``'s 1×1 weights on its
  off-pattern channels (``(m - n) % part != 0``) in increasing channel order. Every call
  scatters it into the dense ``(out, in, 1, 1)`` kernel with zeros on the pattern, so the 1×1
  branch stays one dense convolution while the pattern's centre taps live only in ``weight``:
  no duplicated weights, each tap one gradient and one share of weight decay
  (``docs/HETCONV.md``, "Three forms of one function").

:class:`MaskedHetConv2d` is the reference: one dense convolution whose kernel is multiplied by the
exact HetConv mask. Both convert into each other and into a plain :class:`torch.nn.Conv2d`.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from hetconv.errors import ConfigError


def common_divisors(in_channels: int, out_channels: int) -> list[int]:
    """Every part a HetConv layer of these sizes accepts: the divisors of both channel counts."""
    return [p for p in range(1, min(in_channels, out_channels) + 1)
            if in_channels % p == 0 and out_channels % p == 0]


def power_of_two_parts(in_channels: int, out_channels: int, cap: int) -> tuple[int, ...]:
    """The powers of two up to ``cap`` that divide both channel counts, in increasing order.

    The parts HetNAS offers when it chooses for the user (the search, one part for a whole
    network in :func:`hetconv.convert`): they nest, the K×K channels of part 2P being a subset
    of those of part P (``docs/HETCONV.md``). Part 1 always fits.
    """
    parts, part = [], 1
    while part <= cap and in_channels % part == 0 and out_channels % part == 0:
        parts.append(part)
        part *= 2
    return tuple(parts)


def check_layer(in_channels: int, out_channels: int, kernel_size: int, part: int) -> None:
    """Raise :class:`ConfigError` naming the layer sizes when they cannot form a HetConv layer."""
    name = f"HetConv2d({in_channels}->{out_channels}, kernel {kernel_size})"
    if in_channels < 1 or out_channels < 1:
        raise ConfigError(f"{name}: channel counts must be positive")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{name}: kernel_size must be odd so the 1x1 kernels sit on its centre")
    if isinstance(part, bool) or not isinstance(part, numbers.Integral) or part < 1 \
            or in_channels % part or out_channels % part:
        raise ConfigError(
            f"{name}: part {part!r} must divide both channel counts; "
            f"allowed parts: {common_divisors(in_channels, out_channels)}")


def kxk_pattern(in_channels: int, out_channels: int, part: int) -> torch.Tensor:
    """Bool ``(out, in)``: True where filter n has a K×K kernel on channel m: (m-n) % part == 0."""
    n = torch.arange(out_channels).unsqueeze(1)
    m = torch.arange(in_channels).unsqueeze(0)
    return (m - n) % part == 0


def hetconv_mask(in_channels: int, out_channels: int, kernel_size: int, part: int) -> torch.Tensor:
    """Bool ``(out, in, K, K)`` kernel mask: full K×K on the pattern, centre tap elsewhere."""
    mask = kxk_pattern(in_channels, out_channels, part)[:, :, None, None]
    mask = mask.expand(-1, -1, kernel_size, kernel_size).clone()
    centre = kernel_size // 2
    mask[:, :, centre, centre] = True
    return mask


def off_pattern_channels(in_channels: int, part: int) -> torch.Tensor:
    """Long ``(part, in - in/part)``: row ``r`` lists, increasing, the input channels on which a
    filter of class ``r`` (``n % part == r``) has 1×1 kernels, i.e. ``m % part != r``.

    Plain arithmetic rather than a search of :func:`kxk_pattern`, so it also builds on the meta
    device (where the backbones are traced for their sizes).
    """
    r = torch.arange(part).view(part, 1, 1)
    c = torch.arange(in_channels // part).view(1, -1, 1)
    j = torch.arange(part - 1).view(1, 1, -1)
    return (c * part + j + (j >= r)).flatten(1)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """The 1×1 branch of a K×K layer: a 1×1 conv reading the pixels under the K×K centre tap.

    Where the K×K padding is below ``K // 2``, ``x`` is cropped so both branches see the same
    output grid; a larger padding pads the 1×1 conv by the difference.
    """
    crop = kernel_size // 2 - padding
    if crop > 0:
        x = x[..., crop:x.shape[-2] - crop, crop:x.shape[-1] - crop]
    return F.conv2d(x, weight, bias, stride, max(-crop, 0))


def conv_with_kernel(weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                     padding: int) -> nn.Conv2d:
    """A :class:`torch.nn.Conv2d` holding ``weight`` ``(out, in, K, K)`` and ``bias`` (copies)."""
    out_channels, in_channels, kernel_size, _ = weight.shape
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                     bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return conv


class HetConv2d(nn.Module):
    """Heterogeneous-kernel convolution, run as grouped K×K + dense 1×1 (the fast path).

    The trainable parameters are the paper's layer exactly (see the module docstring); the 1×1
    kernel's zeros on the K×K pattern are materialised per call, never trained.
    ``part=1`` is exactly a standard convolution (one dense K×K kernel, no 1×1 branch).
    ``padding=None`` means ``kernel_size // 2`` ("same" size at stride 1).
    """

    pointwise_channels: torch.Tensor | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int | None = None, part: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        check_layer(in_channels, out_channels, kernel_size, part)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        if self.padding < 0:
            raise ConfigError(f"HetConv2d({in_channels}->{out_channels}): padding must be >= 0")
        self.part = part = int(part)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // part, kernel_size, kernel_size))
        self.pointwise = (nn.Parameter(torch.empty(out_channels, in_channels - in_channels // part))
                          if part > 1 else None)
        # Where each class's 1×1 weights go in the dense kernel; derived, so not in state_dict.
        self.register_buffer("pointwise_channels",
                             off_pattern_channels(in_channels, part)[None] if part > 1 else None,
                             persistent=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init by fan-in, counting exactly the taps a filter reads: ``in/part`` K×K kernels
        and ``in - in/part`` 1×1 ones.

        That keeps activation variance the same as a dense layer's at any part.
        """
        kxk_channels = self.in_channels // self.part
        fan_in = kxk_channels * self.kernel_size ** 2 + self.in_channels - kxk_channels
        std = (2.0 / fan_in) ** 0.5
        nn.init.normal_(self.weight, 0.0, std)
        if self.pointwise is not None:
            nn.init.normal_(self.pointwise, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, part={self.part}, "
                f"bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.part == 1:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        p = self.part
        # Class-major channel order (channel c*p + r goes to group r) for the grouped K×K conv.
        grouped_in = x.unflatten(1, (self.in_channels // p, p)).transpose(1, 2).flatten(1, 2)
        grouped = F.conv2d(grouped_in, self.weight, None, self.stride, self.padding, groups=p)
        out = pointwise_conv(x, self.pointwise_weight(), self.bias, self.kernel_size, self.stride,
                             self.padding)
        # Add the grouped output back in natural filter order; the strided view costs no copy.
        out.unflatten(1, (self.out_channels // p, p)).add_(
            grouped.unflatten(1, (p, self.out_channels // p)).transpose(1, 2))
        return out

    def _pointwise_branch(self) -> tuple[nn.Parameter, torch.Tensor]:
        """The 1×1 weights and where they go; only layers with part > 1 have them."""
        if self.pointwise is None or self.pointwise_channels is None:
            raise ValueError(f"a part-{self.part} HetConv layer has no 1×1 branch")
        return self.pointwise, self.pointwise_channels

    def pointwise_weight(self) -> torch.Tensor:
        """The dense ``(out, in, 1, 1)`` 1×1 kernel: ``pointwise`` off the pattern, zeros on it.

        Differentiable in ``pointwise`` (only part > 1 layers have one). One ``scatter`` along
        the channels, its ``part``-row index expanded over the filter classes: for a 512×512
        layer on one CPU thread, forward + backward took 0.9-1.2 ms at parts 2, 4 and 8, as
        quick as ``index_copy`` with a flat index (``out/part`` times longer to keep), against
        2.5-5.5 ms for zero-padded reshaped views (copies through tiny inner dimensions) and
        1.9-2.2 ms for ``masked_scatter``.
        """
        p = self.part
        pointwise, channels = self._pointwise_branch()
        rows = pointwise.view(self.out_channels // p, p, -1)  # [i, r]: filter i*p + r
        dense = rows.new_zeros(self.out_channels // p, p, self.in_channels)
        dense = dense.scatter(2, channels.expand(rows.shape[0], -1, -1), rows)
        return dense.view(self.out_channels, self.in_channels, 1, 1)

    # -- conversions -------------------------------------------------------------------------

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense ``(out, in, K, K)`` kernel (differentiable in the fast weights)."""
        p, k = self.part, self.kernel_size
        if p == 1:
            return self.weight
        n_per, m_per = self.out_channels // p, self.in_channels // p
        by_class = self.weight.reshape(p, n_per, m_per, k, k)  # [r, i, c]
        eye = torch.eye(p, dtype=self.weight.dtype, device=self.weight.device)
        # dense[i*p + r, c*p + s] = by_class[r, i, c] when r == s, else 0.
        dense = torch.einsum("ricxy,rs->ircsxy", by_class, eye)
        dense = dense.reshape(self.out_channels, self.in_channels, k, k)
        c = k // 2
        return dense + F.pad(self.pointwise_weight(), (c, c, c, c))  # 1×1 on the centre tap

    @torch.no_grad()
    def load_dense_weight(self, dense: torch.Tensor) -> None:
        """Set the fast weights from a dense kernel that respects :func:`hetconv_mask`.

        Raises :class:`ConfigError` when ``dense`` has weight outside the mask, since no HetConv
        layer of this part can represent it.
        """
        k, p = self.kernel_size, self.part
        expected = (self.out_channels, self.in_channels, k, k)
        if tuple(dense.shape) != expected:
            raise ConfigError(f"dense kernel has shape {tuple(dense.shape)}, expected {expected}")
        mask = hetconv_mask(self.in_channels, self.out_channels, k, p).to(dense.device)
        if torch.any(dense[~mask] != 0):
            raise ConfigError(f"dense kernel has weights outside the part-{p} HetConv mask")
        if p == 1:
            self.weight.copy_(dense)
            return
        n_per, m_per = self.out_channels // p, self.in_channels // p
        blocks = dense.reshape(n_per, p, m_per, p, k, k)
        diagonal = blocks.diagonal(dim1=1, dim2=3)  # (i, c, x, y, r)
        self.weight.copy_(diagonal.permute(4, 0, 1, 2, 3).reshape_as(self.weight))
        centre = dense[:, :, k // 2, k // 2].reshape(n_per, p, self.in_channels)
        pointwise, channels = self._pointwise_branch()
        columns = channels.to(dense.device).expand(n_per, -1, -1)
        pointwise.copy_(centre.gather(2, columns).reshape_as(pointwise))

    def to_dense(self) -> nn.Conv2d:
        """Export as one :class:`torch.nn.Conv2d` computing the same function."""
        return conv_with_kernel(self.dense_weight().detach(), self.bias, self.stride,
                                self.padding)

    def to_masked(self) -> MaskedHetConv2d:
        """The reference form of this layer, with the same function."""
        ref = MaskedHetConv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                              self.padding, self.part, self.bias is not None)
        ref = ref.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            ref.weight.copy_(self.dense_weight())
            if self.bias is not None and ref.bias is not None:
                ref.bias.copy_(self.bias)
        return ref

    @classmethod
    def from_masked(cls, ref: MaskedHetConv2d) -> HetConv2d:
        """The fast form of a reference layer, with the same function."""
        layer = cls(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, ref.padding,
                    ref.part, ref.bias is not None)
        layer = layer.to(device=ref.weight.device, dtype=ref.weight.dtype)
        layer.load_dense_weight(ref.weight.detach() * ref.mask)
        if ref.bias is not None and layer.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(ref.bias)
        return layer


class MaskedHetConv2d(nn.Module):
    """Reference HetConv: one dense convolution with the exact kernel mask; slow, plainly right."""

    mask: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int | None = None, part: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        check_layer(in_channels, out_channels, kernel_size, part)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.part = kernel_size, stride, part
        self.padding = kernel_size // 2 if padding is None else padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("mask", hetconv_mask(in_channels, out_channels, kernel_size, part),
                             persistent=False)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)
