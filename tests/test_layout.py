"""Class order: HetConv layers that read and write it compute the same network, reorder-free."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

import hetconv
from hetconv.deployment import fold_batchnorms, trace
from hetconv.layer import HetConv2d
from hetconv.layout import OrderedHetConv2d, class_order, is_power_of_two, to_class_order
from hetconv.models import build_model


def _bit_reversed(value: int, bits: int) -> int:
    return int(format(value, f"0{bits}b")[::-1], 2) if bits else 0


@pytest.mark.parametrize("channels", [1, 6, 16, 48, 64, 96, 512])
def test_every_power_of_two_class_is_one_block_at_its_bit_reversed_place(channels):
    order = class_order(channels)
    assert sorted(order.tolist()) == list(range(channels))
    part = 1
    while channels % part == 0:
        blocks = (order % part).view(part, channels // part)
        bits = part.bit_length() - 1
        for g in range(part):
            assert set(blocks[g].tolist()) == {_bit_reversed(g, bits)}, (channels, part, g)
        part *= 2


@pytest.mark.parametrize(("part", "stride", "padding", "bias"),
                         [(2, 1, 1, True), (4, 2, 1, False), (8, 1, 0, True), (16, 1, 2, True),
                          (32, 2, 1, True)])
def test_ordered_layer_is_the_layer_with_channels_reordered(part, stride, padding, bias):
    torch.manual_seed(part)
    layer = HetConv2d(64, 32, 3, stride, padding, part, bias=bias).eval()
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    ordered = OrderedHetConv2d.from_layer(layer)
    x = torch.randn(2, 64, 9, 9)
    in_order, out_order = class_order(64), class_order(32)
    with torch.no_grad():
        want = layer(x)[:, out_order]
        torch.testing.assert_close(ordered(x[:, in_order]), want, rtol=1e-4, atol=1e-5)
        for q in (2, 4, 8, 16, 32):
            if part % q == 0:
                torch.testing.assert_close(ordered.with_part(q)(x[:, in_order]), want,
                                           rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ordered.to_dense()(x[:, in_order]), want,
                                   rtol=1e-4, atol=1e-5)


def test_ordered_layer_runs_exactly_two_convolutions_and_no_reorder():
    ordered = OrderedHetConv2d.from_layer(HetConv2d(32, 32, part=4))
    ops = [node.target.__name__ for node in fx.symbolic_trace(ordered).graph.nodes
           if node.op == "call_function"]
    assert sorted(ops) == ["add", "conv2d", "conv2d"]


def _folded(backbone: str, parts: list[int] | None, size: int) -> fx.GraphModule:
    torch.manual_seed(0)
    model = build_model(backbone, parts).eval()
    graph = trace(copy.deepcopy(model))
    fold_batchnorms(graph)
    return graph


def _reorders(graph: fx.GraphModule) -> int:
    return sum(node.op == "call_function" and node.target is torch.index_select
               for node in graph.graph.nodes)


@pytest.mark.parametrize(("backbone", "parts", "size"),
                         [("vgg16", [2, 4, 8, 16, 2, 64, 1, 4, 32, 8, 2, 16], 32),
                          ("resnet20", None, 16), ("resnet50", None, 32)])
def test_rewritten_network_computes_the_same(backbone, parts, size):
    graph = _folded(backbone, parts, size)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = graph(x)
        to_class_order(graph, x)
        torch.testing.assert_close(graph(x), want, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, HetConv2d) for m in graph.modules())


def test_vgg_reorders_channels_once_before_the_classifier_whatever_its_parts():
    graph = _folded("vgg16", [2, 4, 8, 16, 2, 64, 1, 4, 32, 8, 2, 16], 32)
    to_class_order(graph, torch.randn(1, 3, 32, 32))
    assert _reorders(graph) == 1


def test_unknown_operations_shared_modules_and_odd_parts_get_natural_order():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 48, 3, padding=1)
            self.odd = HetConv2d(48, 48, part=3, bias=True)  # not a power of two
            self.het = HetConv2d(48, 48, part=4, bias=True)
            self.shared = nn.Conv2d(48, 48, 1)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            y = self.het(torch.relu(self.odd(y))) + y
            y = self.shared(self.shared(y))
            return torch.cat([y, y.flip(1)], 1) * 2.0

    model = Mixed().eval()
    graph = trace(copy.deepcopy(model))
    x = torch.randn(2, 3, 8, 8)
    to_class_order(graph, x)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(graph.get_submodule("odd"), HetConv2d)
    assert isinstance(graph.get_submodule("het"), OrderedHetConv2d)


def test_deploy_is_importable_from_the_package_as_the_readme_shows():
    assert callable(hetconv.deploy)
    assert hetconv.DeployedModel.__name__ == "DeployedModel"
    assert is_power_of_two(64) and not is_power_of_two(48)
