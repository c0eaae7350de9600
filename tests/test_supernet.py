"""The one-shot supernet: its forward is the HetConv layer at every part, and extraction gives a
standalone network with the same outputs, on every backbone."""

from __future__ import annotations

import pytest
import torch

from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d, MaskedHetConv2d
from hetconv.models import BACKBONES
from hetconv.supernet import SuperHetConv2d, extract, set_parts, super_layers, to_supernet
from space import Architecture, Normalization, SearchSpace

SIZE = {"vgg16": 32, "resnet20": 16, "resnet56": 8, "resnet18": 32, "resnet34": 32,
        "resnet50": 32}


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride"),
                         [(16, 32, 3, 1), (64, 64, 3, 2), (8, 16, 5, 1)])
def test_forward_is_the_masked_reference_at_every_part(cin, cout, kernel, stride) -> None:
    torch.manual_seed(0)
    sup = SuperHetConv2d(cin, cout, kernel, stride, bias=True)
    with torch.no_grad():
        sup.bias.normal_()
    x = torch.randn(2, cin, 9, 9)
    part = 1
    while cin % part == 0 and cout % part == 0:
        sup.part = part
        ref = MaskedHetConv2d(cin, cout, kernel, stride, part=part, bias=True)
        with torch.no_grad():
            ref.weight.copy_(sup.weight)
            ref.bias.copy_(sup.bias)
        torch.testing.assert_close(sup(x), ref(x), rtol=0, atol=1e-5)
        # ... and the fast exact form built from the same dense kernel
        fast = HetConv2d.from_masked(ref)
        torch.testing.assert_close(sup(x), fast(x), rtol=0, atol=1e-5)
        part *= 2


def test_a_part_the_layer_cannot_take_is_one_line() -> None:
    sup = SuperHetConv2d(16, 24)
    with pytest.raises(ConfigError, match="part 16 must divide both channel counts"):
        sup.part = 16


def test_only_the_active_parts_kernels_get_gradients() -> None:
    sup = SuperHetConv2d(8, 8)
    sup.part = 4
    sup(torch.randn(1, 8, 5, 5)).sum().backward()
    on_mask = sup.mask()
    assert torch.all(sup.weight.grad[~on_mask] == 0)
    assert torch.count_nonzero(sup.weight.grad[on_mask]) > 0


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_extraction_equals_the_supernet_on_every_backbone(backbone) -> None:
    torch.manual_seed(1)
    space = SearchSpace(backbone, SIZE[backbone], 7, 3)
    # The supernet's input statistics are not the target's defaults: extraction copies them.
    stats = Normalization((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    standard = Architecture(backbone, space.uniform_parts(1), space.input_size, 7, 3,
                            normalization=stats).build()
    supernet = to_supernet(standard).eval()
    for module in supernet.modules():  # batch-norm statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    generator = torch.Generator().manual_seed(len(backbone))
    parts = tuple(int(layer.allowed_parts[int(torch.randint(len(layer.allowed_parts), (1,),
                                                            generator=generator))])
                  for layer in space.layers)
    assert len(super_layers(supernet)) == len(parts)
    set_parts(supernet, parts)
    target = Architecture(backbone, parts, space.input_size, 7, 3).build()
    extract(supernet, target).eval()
    x = torch.rand(2, 3, space.input_size, space.input_size)
    with torch.no_grad():
        expected, got = supernet(x), target(x)
    assert (expected - got).abs().max().item() <= 1e-5


def test_extraction_refuses_a_target_with_other_parts() -> None:
    space = SearchSpace("resnet20", 8, 10, 1)
    supernet = to_supernet(Architecture.uniform("resnet20", 1, 8, 10, 1).build())
    set_parts(supernet, space.uniform_parts(2))
    with pytest.raises(ConfigError, match="call set_parts with the target's parts first"):
        extract(supernet, Architecture.uniform("resnet20", 4, 8, 10, 1).build())
    with pytest.raises(ConfigError, match="18 searchable layers but 3 parts"):
        set_parts(supernet, (1, 2, 4))
