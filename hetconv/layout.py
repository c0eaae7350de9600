"""Class order: a channel order in which every HetConv layer runs without reordering channels.

The training form, :class:`~hetconv.layer.HetConv2d`, gathers its input into class-major order
on every call and adds the grouped output back through a strided view: extra passes over the
activations that cost as much as the small convolutions themselves (``docs/BENCHMARKS.md``). At
inference the order of the channels between two layers is free, so the deploy form keeps every
activation in one fixed order per channel count and folds the reordering into the weights.

The order sorts channel ``n`` by ``bitrev(n mod Q)``, then ``n // Q``, where ``Q`` is the largest
power of two dividing the channel count and ``bitrev`` reverses ``log2(Q)`` bits. Sorting on the
reversed low bits groups the channels by ``n mod 2`` first, then ``n mod 4``, and so on; so for
*every* power-of-two part ``P`` the channels of each class ``n mod P`` are contiguous (class ``r``
is block ``bitrev_P(r)``). A part-P layer reads its P groups straight off its input, and writes
its P filter classes exactly where the next layer, whatever its part, expects them.

:func:`to_class_order` rewrites a traced network so: HetConv layers become
:class:`OrderedHetConv2d`, dense convolutions absorb the order in their weights, channel-wise
operations (ReLU, pooling, residual adds) pass it on, and anything else gets its channels back
in natural order through one ``index_select``.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from hetconv.layer import HetConv2d, conv_with_kernel, pointwise_conv

_CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity)
_CHANNELWISE_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu6, F.max_pool2d,
                          F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                          operator.add, operator.iadd, torch.add, operator.mul, torch.mul}
_CHANNELWISE_METHODS = {"relu", "relu_", "add", "add_", "mul", "mul_", "contiguous"}


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def class_order(channels: int) -> torch.Tensor:
    """``order[i]`` is the channel stored at position ``i`` (a permutation of ``channels``)."""
    q = channels & -channels  # the largest power of two dividing the count
    bits = q.bit_length() - 1
    n = torch.arange(channels)
    low = n % q
    reversed_low = torch.zeros_like(n)
    for bit in range(bits):
        reversed_low |= ((low >> bit) & 1) << (bits - 1 - bit)
    return torch.argsort(reversed_low * (channels // q) + n // q)


def _block_diagonal(weight: torch.Tensor, part: int) -> torch.Tensor:
    """Bool ``(out, in)``: True inside the ``part`` diagonal blocks of a class-ordered kernel."""
    out_channels, in_channels = weight.shape[:2]
    eye = torch.eye(part, dtype=torch.bool, device=weight.device)
    return eye[:, None, :, None].expand(part, out_channels // part, part, in_channels // part) \
        .reshape(out_channels, in_channels)


class OrderedHetConv2d(nn.Module):
    """A HetConv layer for inference whose input and output are in :func:`class_order`.

    In that order the K×K pattern is block-diagonal, so the layer is a grouped K×K convolution
    (``groups=part``, centre taps included) plus a 1×1 convolution whose diagonal blocks are
    zero: two convolutions and an add, with no channel reordering. Unlike the training form's
    compact ``pointwise``, its ``pointwise`` is that dense ``(out, in, 1, 1)`` kernel, zeros
    included: nothing trains it, so nothing is gained by rebuilding it on every call.
    """

    def __init__(self, ordered_dense: torch.Tensor, part: int, stride: int, padding: int,
                 bias: torch.Tensor | None) -> None:
        """``ordered_dense``: the layer's dense ``(out, in, K, K)`` kernel, rows and columns in
        class order (zero outside the part-``part`` pattern)."""
        super().__init__()
        out_channels, in_channels, k, _ = ordered_dense.shape
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.part, self.stride, self.padding = part, stride, padding
        n_per, m_per = out_channels // part, in_channels // part
        blocks = ordered_dense.reshape(part, n_per, part, m_per, k, k)
        grouped = blocks.diagonal(dim1=0, dim2=2).permute(4, 0, 1, 2, 3)  # (part, n, m, K, K)
        centre = ordered_dense[:, :, k // 2, k // 2].masked_fill(
            _block_diagonal(ordered_dense, part), 0.0)
        self.weight = nn.Parameter(grouped.reshape(out_channels, m_per, k, k).clone())
        self.pointwise = nn.Parameter(centre[:, :, None, None].clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_layer(cls, layer: HetConv2d) -> OrderedHetConv2d:
        """``layer`` with its input and output channels in class order."""
        dense = layer.dense_weight().detach()
        out_order, in_order = class_order(layer.out_channels), class_order(layer.in_channels)
        ordered = dense[out_order.to(dense.device)][:, in_order.to(dense.device)]
        bias = None if layer.bias is None else layer.bias.detach()[out_order.to(dense.device)]
        return cls(ordered, layer.part, layer.stride, layer.padding, bias)

    def dense_weight(self) -> torch.Tensor:
        """The dense kernel in class order (rows and columns)."""
        p, k = self.part, self.kernel_size
        n_per, m_per = self.out_channels // p, self.in_channels // p
        grouped = self.weight.reshape(p, n_per, m_per, k, k)
        eye = torch.eye(p, dtype=self.weight.dtype, device=self.weight.device)
        dense = torch.einsum("rncxy,rs->rnscxy", grouped, eye).reshape(
            self.out_channels, self.in_channels, k, k).clone()
        dense[:, :, k // 2, k // 2] += self.pointwise[:, :, 0, 0]
        return dense

    def with_part(self, part: int) -> OrderedHetConv2d:
        """The same function as a part-``part`` layer (``part`` must divide this one's)."""
        return OrderedHetConv2d(self.dense_weight().detach(), part, self.stride, self.padding,
                                self.bias)

    def to_dense(self) -> nn.Conv2d:
        """One :class:`torch.nn.Conv2d` computing the same function, in the same order."""
        return conv_with_kernel(self.dense_weight().detach(), self.bias, self.stride,
                                self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, part={self.part}, class order")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = F.conv2d(x, self.weight, None, self.stride, self.padding, groups=self.part)
        return pointwise_conv(x, self.pointwise, self.bias, self.kernel_size, self.stride,
                              self.padding) + grouped


def _reordered_conv(conv: nn.Conv2d, in_ordered: bool, out_ordered: bool) -> nn.Conv2d:
    """``conv`` reading its input in class order (when ``in_ordered``) and writing class order
    (when ``out_ordered``)."""
    device = conv.weight.device
    out_order = class_order(conv.out_channels).to(device) if out_ordered else slice(None)
    weight = conv.weight.detach()[out_order]
    if in_ordered:
        weight = weight[:, class_order(conv.in_channels).to(device)]
    new = copy.deepcopy(conv)  # same geometry, device and dtype; the weights are replaced below
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias.detach()[out_order])
    return new


def replace_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    """Put ``module`` where ``root.get_submodule(target)`` was."""
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


class _Rewriter:
    """Walks the graph once, tracking which activations are in class order."""

    def __init__(self, graph: fx.GraphModule) -> None:
        self.graph = graph
        self.modules = dict(graph.named_modules())
        calls = Counter(node.target for node in graph.graph.nodes if node.op == "call_module")
        self.shared = {target for target, count in calls.items() if count > 1}
        # Activations that reach a HetConv layer through channel-wise operations only: a dense
        # convolution writes class order for them, and natural order for anything else.
        self.wanted: set[fx.Node] = set()
        for node in reversed(graph.graph.nodes):
            if any(self._is_hetconv(user) or (self._is_channelwise(user) and user in self.wanted)
                   for user in node.users):
                self.wanted.add(node)
        self.ordered: set[fx.Node] = set()
        self.natural_copies: dict[fx.Node, fx.Node] = {}
        self.ordered_copies: dict[fx.Node, fx.Node] = {}

    def _index(self, channels: int, inverse: bool) -> fx.Node:
        name = f"_{'natural' if inverse else 'class'}_order_{channels}"
        if not hasattr(self.graph, name):
            order = class_order(channels)
            self.graph.register_buffer(name, torch.argsort(order) if inverse else order)
        return self.graph.graph.get_attr(name)

    def _channels(self, node: fx.Node) -> int:
        return int(node.meta["tensor_meta"].shape[1])

    def _convert(self, node: fx.Node, to_ordered: bool) -> fx.Node:
        """``node``'s value in class order (``to_ordered``) or natural order; the conversion is
        inserted right after ``node`` the first time it is asked for."""
        if (node in self.ordered) == to_ordered:
            return node
        cache = self.ordered_copies if to_ordered else self.natural_copies
        if node not in cache:
            with self.graph.graph.inserting_after(node):
                index = self._index(self._channels(node), inverse=not to_ordered)
            with self.graph.graph.inserting_after(index):
                copy = self.graph.graph.call_function(torch.index_select, (node, 1, index))
            copy.meta = dict(node.meta)
            cache[node] = copy
            if to_ordered:
                self.ordered.add(copy)
        return cache[node]

    def _inputs_to(self, node: fx.Node, to_ordered: bool) -> None:
        for arg in list(node.all_input_nodes):
            node.replace_input_with(arg, self._convert(arg, to_ordered))

    def _tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [arg for arg in node.all_input_nodes if "tensor_meta" in arg.meta]

    def _is_channelwise(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.modules[node.target], _CHANNELWISE_MODULES)
        if node.op == "call_function":
            return node.target in _CHANNELWISE_FUNCTIONS
        return node.op == "call_method" and node.target in _CHANNELWISE_METHODS

    def _module(self, node: fx.Node) -> nn.Module | None:
        """The module ``node`` calls, unless it is called more than once: weights used twice
        cannot take two orders, so such a module runs in natural order."""
        if node.op != "call_module" or node.target in self.shared:
            return None
        return self.modules[node.target]

    def _is_hetconv(self, node: fx.Node) -> bool:
        module = self._module(node)
        return (isinstance(module, HetConv2d) and module.part > 1
                and is_power_of_two(module.part))

    def _is_dense_conv(self, node: fx.Node) -> bool:
        module = self._module(node)
        return (isinstance(module, HetConv2d) and module.part == 1
                or type(module) is nn.Conv2d and module.groups == 1)

    def visit(self, node: fx.Node) -> None:
        module, target = self._module(node), str(node.target)
        if self._is_hetconv(node) and isinstance(module, HetConv2d):
            self._inputs_to(node, to_ordered=True)
            replace_submodule(self.graph, target, OrderedHetConv2d.from_layer(module))
            self.ordered.add(node)
        elif self._is_dense_conv(node) and isinstance(module, (HetConv2d, nn.Conv2d)):
            conv = module.to_dense() if isinstance(module, HetConv2d) else module
            in_ordered, out_ordered = node.args[0] in self.ordered, node in self.wanted
            if in_ordered or out_ordered:
                conv = _reordered_conv(conv, in_ordered, out_ordered)
            if conv is not module:
                replace_submodule(self.graph, target, conv)
            if out_ordered:
                self.ordered.add(node)
        elif self._is_channelwise(node):
            inputs = self._tensor_inputs(node)
            if inputs and all(arg in self.ordered for arg in inputs):
                self.ordered.add(node)
            else:
                self._inputs_to(node, to_ordered=False)
        elif node.op != "placeholder" and node.op != "get_attr":
            self._inputs_to(node, to_ordered=False)


def to_class_order(graph: fx.GraphModule, example_input: torch.Tensor) -> fx.GraphModule:
    """Rewrite ``graph`` (in place) so activations between layers stay in class order.

    The output (and whatever reaches an operation not known to act per channel) comes back in
    natural order, so the function of the network is unchanged. HetConv layers whose part is not
    a power of two keep their own reordering form.
    """
    ShapeProp(graph).propagate(example_input)
    rewriter = _Rewriter(graph)
    for node in list(graph.graph.nodes):
        rewriter.visit(node)
    graph.graph.lint()
    graph.delete_all_unused_submodules()
    graph.recompile()
    return graph
