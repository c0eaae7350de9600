"""The model families: which layers are searchable, their allowed parts, shapes and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hetconv import ConfigError, HetConv2d
from hetconv.models import BACKBONES, build_model, get_backbone
from space.parts import MAX_PART, allowed_parts
from space.trace import searchable_layers

# Searchable layer counts from the architectures themselves: VGG-16 has 13 convolutions of
# which the first stays standard; ResNet-(6n+2) has 2 per block × 3n blocks; ResNet-18/34 2 per
# basic block (8 and 16 blocks); ResNet-50 one 3×3 per bottleneck (16 of them).
COUNTS = {"vgg16": 12, "resnet20": 18, "resnet56": 54, "resnet18": 16, "resnet34": 32,
          "resnet50": 16}
# Real forward passes use 32×32 for every family (the ImageNet ResNets end at 1×1 there).
SMALL_INPUT = dict.fromkeys(COUNTS, 32)


def _meta(backbone: str, parts=None, num_classes=None) -> nn.Module:
    with torch.device("meta"):
        return build_model(backbone, parts, num_classes)


def test_registry_lists_exactly_the_families():
    assert set(BACKBONES) == set(COUNTS)


@pytest.mark.parametrize(("backbone", "count"), COUNTS.items())
def test_searchable_layer_counts(backbone, count):
    layers = searchable_layers(backbone)
    assert len(layers) == count
    assert [layer.index for layer in layers] == list(range(count))
    model = _meta(backbone)
    hetconvs = [(name, m) for name, m in model.named_modules() if isinstance(m, HetConv2d)]
    assert [name for name, _ in hetconvs] == [layer.name for layer in layers]
    for (_, module), layer in zip(hetconvs, layers, strict=True):
        assert (module.in_channels, module.out_channels, module.kernel_size, module.stride) == (
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride)
        assert module.kernel_size == 3
        assert module.part == 1  # parts=None is the standard network


@pytest.mark.parametrize("backbone", COUNTS)
def test_first_convolution_is_plain_and_takes_rgb(backbone):
    model = _meta(backbone)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, HetConv2d))]
    first = convs[0]
    assert type(first) is nn.Conv2d
    assert first.in_channels == 3
    assert not any(isinstance(m, HetConv2d) and m.in_channels == 3 for m in model.modules())
    assert first.kernel_size == ((3, 3) if backbone in ("vgg16", "resnet20", "resnet56")
                                 else (7, 7))


def test_vgg16_layout():
    model = _meta("vgg16", num_classes=7)
    features = list(model.features)
    convs = [i for i, m in enumerate(features) if isinstance(m, (nn.Conv2d, HetConv2d))]
    assert len(convs) == 13
    widths = []
    for i in convs:
        bn = features[i + 1]
        assert isinstance(bn, nn.BatchNorm2d), f"no batch norm after features.{i}"
        assert bn.num_features == features[i].out_channels
        widths.append(features[i].out_channels)
    assert widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in features) == 5
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 7)]


def test_resnet50_keeps_1x1_convolutions_standard():
    model = _meta("resnet50")
    hetconvs = [m for m in model.modules() if isinstance(m, HetConv2d)]
    assert all(m.kernel_size == 3 for m in hetconvs)
    pointwise = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    # Two per bottleneck (reduce, expand) plus the four projection shortcuts.
    assert len(pointwise) == 16 * 2 + 4
    assert all(type(m) is nn.Conv2d for m in pointwise)
    plain_3x3 = [m for m in model.modules()
                 if type(m) is nn.Conv2d and m.kernel_size == (3, 3)]
    assert plain_3x3 == []


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet20", "resnet56"])
def test_basic_block_resnets_have_no_plain_3x3_beyond_the_stem(backbone):
    model = _meta(backbone)
    plain = [m for m in model.modules() if type(m) is nn.Conv2d and m.kernel_size == (3, 3)]
    assert len(plain) == (1 if backbone in ("resnet20", "resnet56") else 0)


def _powers_of_two_dividing(a: int, b: int, cap: int) -> tuple[int, ...]:
    return tuple(2 ** e for e in range(0, 16) if 2 ** e <= cap and a % 2 ** e == 0
                 and b % 2 ** e == 0)


@pytest.mark.parametrize("backbone", COUNTS)
def test_allowed_parts_are_capped_powers_of_two_dividing_both(backbone):
    for layer in searchable_layers(backbone):
        expected = _powers_of_two_dividing(layer.in_channels, layer.out_channels, MAX_PART)
        assert layer.allowed_parts == expected, layer.describe()
        assert layer.allowed_parts[0] == 1


@pytest.mark.parametrize(("cin", "cout", "cap"),
                         [(16, 16, 64), (512, 512, 64), (512, 512, 1024), (48, 96, 64),
                          (12, 8, 64), (3, 64, 64), (64, 128, 8)])
def test_allowed_parts_function(cin, cout, cap):
    assert allowed_parts(cin, cout, cap) == _powers_of_two_dividing(cin, cout, cap)


def test_vgg16_admits_the_papers_part_64_everywhere():
    assert MAX_PART >= 64
    layers = searchable_layers("vgg16")
    assert all(64 in layer.allowed_parts for layer in layers)
    model = _meta("vgg16", [64] * len(layers))
    assert [m.part for m in model.modules() if isinstance(m, HetConv2d)] == [64] * 12


@pytest.mark.parametrize("backbone", COUNTS)
def test_parts_reach_the_layers_in_order(backbone):
    layers = searchable_layers(backbone)
    parts = [layer.allowed_parts[i % len(layer.allowed_parts)] for i, layer in enumerate(layers)]
    model = _meta(backbone, parts)
    assert [m.part for m in model.modules() if isinstance(m, HetConv2d)] == parts


@pytest.mark.parametrize("backbone", COUNTS)
def test_forward_output_shape(backbone):
    layers = searchable_layers(backbone)
    parts = [layer.allowed_parts[-1] for layer in layers]
    torch.manual_seed(0)
    model = build_model(backbone, parts, num_classes=7).eval()
    size = SMALL_INPUT[backbone]
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", COUNTS)
def test_default_class_count(backbone):
    default = get_backbone(backbone).num_classes
    assert default == (10 if backbone in ("vgg16", "resnet20", "resnet56") else 1000)
    model = _meta(backbone)
    x = torch.empty(1, 3, get_backbone(backbone).input_size, get_backbone(backbone).input_size,
                    device="meta")
    assert model(x).shape == (1, default)


@pytest.mark.parametrize("backbone", COUNTS)
def test_wrong_part_count_is_rejected(backbone):
    count = COUNTS[backbone]
    for wrong in (count - 1, count + 1, 0):
        with pytest.raises(ConfigError, match=backbone) as info:
            _meta(backbone, [1] * wrong)
        assert str(wrong) in str(info.value)


@pytest.mark.parametrize("backbone", COUNTS)
def test_part_dividing_no_layer_is_rejected(backbone):
    layers = searchable_layers(backbone)
    for bad in (3, 0, 2 * max(layer.in_channels for layer in layers)):
        parts = [1] * len(layers)
        parts[-1] = bad
        with pytest.raises(ConfigError, match="allowed parts"):
            _meta(backbone, parts)


def test_resnet20_rejects_part_wider_than_its_narrow_layers():
    parts = [1] * 18
    parts[0] = 32  # 16->16 channels
    with pytest.raises(ConfigError, match="16->16"):
        _meta("resnet20", parts)


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ConfigError, match="resnet20") as info:
        build_model("resnet21")
    assert "resnet21" in str(info.value)
