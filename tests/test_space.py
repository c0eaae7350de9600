"""Architecture, the cost model and SearchSpace, checked against independent counts."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hetconv import ConfigError, HetConv2d
from hetconv.models import BACKBONES
from space import SCHEMA, SCHEMA_VERSION, Architecture, Normalization, SearchSpace
from space.trace import searchable_layers

FAMILIES = ["vgg16", "resnet20", "resnet56", "resnet18", "resnet34", "resnet50"]
SMALL_INPUT = {"vgg16": 32, "resnet20": 32, "resnet56": 32, "resnet18": 64, "resnet34": 64,
               "resnet50": 64}


def _random_vectors(backbone: str, count: int, seed: int) -> list[tuple[int, ...]]:
    """Valid part vectors drawn here, independently of SearchSpace.random_parts."""
    rng = np.random.default_rng(seed)
    layers = searchable_layers(backbone)
    return [tuple(int(rng.choice(layer.allowed_parts)) for layer in layers)
            for _ in range(count)]


def _vectors(backbone: str) -> list[tuple[int, ...]]:
    """Uniform 1, 2 and the largest everywhere, plus three random valid vectors."""
    layers = searchable_layers(backbone)
    uniform = [tuple(min(p, layer.allowed_parts[-1]) for layer in layers) for p in (1, 2, 64)]
    return uniform + _random_vectors(backbone, 3, seed=len(backbone))


def _hook_costs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """Paper MACs and parameters, by walking the model's layers during one forward pass.

    HetConv (docs/HETCONV.md): Do²·N·(M·K²/P + M − M/P) MACs, N·(M·K²/P + M − M/P)
    weights.
    Convolutions: Do²·N·(M/groups)·K_h·K_w; linear layers: in·out; biases count as parameters.
    """
    macs = Fraction(0)
    params = 0

    def hook(module, _inputs, output):
        nonlocal macs, params
        pixels = output.shape[-1] * output.shape[-2]
        if isinstance(module, HetConv2d):
            m, n, k, p = (module.in_channels, module.out_channels, module.kernel_size,
                          module.part)
            weights = n * (Fraction(m * k * k, p) + m - Fraction(m, p))
            macs += pixels * weights
            params += int(weights) + (n if module.bias is not None else 0)
        elif isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            weights = module.out_channels * module.in_channels // module.groups * k_h * k_w
            macs += pixels * weights
            params += weights + (module.out_channels if module.bias is not None else 0)
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
            params += module.in_features * module.out_features + (
                module.out_features if module.bias is not None else 0)

    for module in model.modules():
        if isinstance(module, (HetConv2d, nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    model.eval()
    model(torch.empty(1, 3, input_size, input_size, device="meta"))
    assert macs.denominator == 1
    return int(macs), params


def _meta_model(arch: Architecture) -> nn.Module:
    with torch.device("meta"):
        return arch.build().eval()


def _counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


# -- 8. uniform architectures and the paper MACs formula -----------------------------------------


@pytest.mark.parametrize("part", [1, 2, 4, 8, 16, 32, 64])
@pytest.mark.parametrize("backbone", FAMILIES)
def test_uniform_architecture(backbone, part):
    arch = Architecture.uniform(backbone, part)
    layers = searchable_layers(backbone)
    assert arch.backbone == backbone
    assert arch.parts == tuple(max(p for p in layer.allowed_parts if p <= part)
                               for layer in layers)
    assert arch.input_size == BACKBONES[backbone].input_size
    assert arch.num_classes == BACKBONES[backbone].num_classes
    model = _meta_model(arch)
    assert [m.part for m in model.modules() if isinstance(m, HetConv2d)] == list(arch.parts)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_paper_macs_and_params_follow_the_formula(backbone):
    for size in sorted({BACKBONES[backbone].input_size, 40}):
        for parts in _vectors(backbone):
            arch = Architecture(backbone, parts, input_size=size, num_classes=13)
            macs, params = _hook_costs(_meta_model(arch), size)
            assert arch.macs == macs, (size, parts)
            assert arch.params == params, (size, parts)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_more_parts_never_cost_more(backbone):
    costs = [Architecture.uniform(backbone, p).macs for p in (1, 2, 4, 8, 16, 32, 64)]
    assert costs == sorted(costs, reverse=True)
    assert costs[0] > costs[1]


# -- 9. executed MACs and parameters against torch's own counters -------------------------------


@pytest.mark.parametrize("backbone", FAMILIES)
def test_executed_macs_match_flop_counter(backbone):
    for parts in _vectors(backbone):
        arch = Architecture(backbone, parts)
        model = _meta_model(arch)
        x = torch.empty(1, 3, arch.input_size, arch.input_size, device="meta")
        assert _counted_macs(model, x) == arch.executed_macs, parts
        assert sum(p.numel() for p in model.parameters()) == arch.executed_params, parts


@pytest.mark.parametrize("backbone", ["vgg16", "resnet20", "resnet18"])
def test_executed_macs_match_flop_counter_on_real_tensors(backbone):
    size = SMALL_INPUT[backbone]
    parts = _random_vectors(backbone, 1, seed=99)[0]
    arch = Architecture(backbone, parts, input_size=size, num_classes=5)
    torch.manual_seed(0)
    model = arch.build().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 5)
    counted = counter.get_total_flops() // 2
    assert counted == arch.executed_macs
    assert sum(p.numel() for p in model.parameters()) == arch.executed_params
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == arch.executed_params


@pytest.mark.parametrize("backbone", FAMILIES)
def test_executed_exceeds_paper_by_the_zero_taps_on_the_pattern(backbone):
    """The fast path's 1×1 branch also runs on the K×K pattern: N·M/P extra MACs per pixel."""
    arch = Architecture.uniform(backbone, 4)
    extra = 0

    def hook(module, _inputs, output):
        nonlocal extra
        if module.part > 1:
            extra += output.shape[-1] * output.shape[-2] * module.out_channels \
                * module.in_channels // module.part

    model = _meta_model(arch)
    for module in model.modules():
        if isinstance(module, HetConv2d):
            module.register_forward_hook(hook)
    model(torch.empty(1, 3, arch.input_size, arch.input_size, device="meta"))
    assert arch.executed_macs - arch.macs == extra > 0
    assert Architecture.uniform(backbone, 1).executed_macs == Architecture.uniform(
        backbone, 1).macs


# -- 10. published figures -----------------------------------------------------------------------

# Standard networks (all parts 1). Sources: He et al. 2016 (CIFAR ResNets: 0.27 M / 0.85 M
# parameters; ~41 M and ~125 M MACs as widely tabulated), torchvision's model cards (ResNet-18:
# 1.81 GFLOPS / 11.7 M, ResNet-50: 4.09 GFLOPS / 25.6 M, counted as MACs), and the VGG-16 CIFAR
# variant used by network-slimming/HetConv reproductions (~313 M MACs, ~15 M parameters).
PUBLISHED = [
    ("resnet20", 40.55e6, 0.27e6),
    ("resnet56", 125e6, 0.85e6),
    ("resnet18", 1.82e9, 11.7e6),
    ("resnet50", 4.09e9, 25.5e6),
    ("vgg16", 313e6, 15e6),
]


@pytest.mark.parametrize(("backbone", "macs", "params"), PUBLISHED)
def test_standard_networks_match_published_figures(backbone, macs, params):
    arch = Architecture.uniform(backbone, 1)
    assert arch.macs == pytest.approx(macs, rel=0.01)
    assert arch.params == pytest.approx(params, rel=0.01)
    assert arch.executed_params == pytest.approx(params, rel=0.01)


def _layer_standard_macs(backbone: str, index: int) -> int:
    """Do²·M·N·K² of one searchable layer of the standard network, measured with a hook."""
    arch = Architecture.uniform(backbone, 1)
    model = _meta_model(arch)
    layer = [m for m in model.modules() if isinstance(m, HetConv2d)][index]
    seen = []
    layer.register_forward_hook(lambda mod, _i, out: seen.append(
        out.shape[-1] * out.shape[-2] * mod.in_channels * mod.out_channels * mod.kernel_size ** 2))
    model(torch.empty(1, 3, arch.input_size, arch.input_size, device="meta"))
    return seen[0]


@pytest.mark.parametrize("part", [2, 4, 8, 16])
@pytest.mark.parametrize(("backbone", "index"),
                         [("vgg16", 0), ("vgg16", 11), ("resnet20", 0), ("resnet56", 53),
                          ("resnet50", 7), ("resnet18", 15)])
def test_single_layer_ratio_is_papers(backbone, index, part):
    """Paper: HetConv / standard = 1/P + (1 − 1/P)/K² (P = 4, K = 3: one third)."""
    layers = searchable_layers(backbone)
    assert part in layers[index].allowed_parts
    parts = [1] * len(layers)
    parts[index] = part
    saving = Architecture.uniform(backbone, 1).macs - Architecture(backbone, tuple(parts)).macs
    standard = _layer_standard_macs(backbone, index)
    k2 = layers[index].kernel_size ** 2
    expected = Fraction(1, part) + (1 - Fraction(1, part)) / k2
    assert Fraction(standard - saving, standard) == expected
    if part == 4:
        assert expected == Fraction(1, 3)


# -- 11. JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", FAMILIES)
def test_json_round_trip(backbone):
    for parts in _vectors(backbone):
        for size, classes in ((None, None), (SMALL_INPUT[backbone], 3)):
            arch = Architecture(backbone, parts, size, classes)
            text = arch.to_json()
            data = json.loads(text)
            assert data["schema"] == SCHEMA and data["version"] == SCHEMA_VERSION
            assert data["parts"] == list(parts)
            again = Architecture.from_json(text)
            assert again == arch
            assert hash(again) == hash(arch)
            assert again.macs == arch.macs


def _doc(**changes) -> str:
    """A resnet20 document with top-level keys changed; ``input_<key>`` changes ``input``."""
    data = Architecture.uniform("resnet20", 2).to_dict()
    for key, value in changes.items():
        target = data["input"] if key.startswith("input_") else data
        key = key.removeprefix("input_")
        if value is _DROP:
            del target[key]
        else:
            target[key] = value
    return json.dumps(data)


_DROP = object()
_R20 = searchable_layers("resnet20")


@pytest.mark.parametrize(("text", "needle"), [
    (Architecture.uniform("resnet20", 2).to_json()[:40], "JSON"),
    ("", "JSON"),
    ("[1, 2]", "object"),
    ("null", "object"),
    (_doc(version=3), "version"),
    (_doc(version=1), "schema version 1"),
    (_doc(version="1"), "version"),
    (_doc(version=True), "version"),
    (_doc(version=1.0), "version"),
    (_doc(version=_DROP), "version"),
    (_doc(schema="hetnas/trial"), "schema"),
    (_doc(schema=_DROP), "schema"),
    (_doc(backbone="resnet21"), "resnet21"),
    (_doc(backbone=20), "backbone"),
    (_doc(parts=[2] * 17), "17"),
    (_doc(parts=[2] * 19), "19"),
    (_doc(parts="2" * 18), "parts"),
    (_doc(parts={"a": 1}), "parts"),
    (_doc(extra=1), "extra"),
    (_doc(input=_DROP), "input"),
    (_doc(input=[3, 32]), "input"),
    (_doc(input_size=_DROP), "input"),
    (_doc(input_size=0), "input_size"),
    (_doc(input_size=True), "input.size"),
    (_doc(input_channels=2.0), "input.channels"),
    (_doc(input_channels=0), "in_channels"),
    (_doc(input_mean=[0.5, 0.5, 0.5]), "both"),
    (_doc(input_mean=[0.5] * 3, input_std=[0.2] * 2), "one mean and one std"),
    (_doc(input_mean=[0.5] * 3, input_std=[0.2, 0.2, 0.0]), "stds"),
    (_doc(input_mean=[0.5, True, 0.5], input_std=[0.2] * 3), "means"),
    (_doc(input_mean=[0.5, 1e300, 0.5], input_std=[0.2] * 3), "means"),
    (_doc(input_mean=[0.5, 10**400, 0.5], input_std=[0.2] * 3), "means"),  # no OverflowError
    (_doc(input_mean=[0.5] * 3, input_std=[0.2, float("nan"), 0.2]), "stds"),
    (_doc(input_mean=[0.5, "0", 0.5], input_std=[0.2] * 3), "means"),
    (_doc(class_names=["a"] * 9), "10 strings"),
    (_doc(class_names=[1] * 10), "10 strings"),
    (_doc(class_names="abcdefghij"), "class_names"),
    (_doc(num_classes=-1), "num_classes"),
    (_doc(num_classes=2.5), "num_classes"),
])
def test_from_json_rejects_bad_documents(text, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Architecture.from_json(text)


@pytest.mark.parametrize("index", [0, 7, 17])
@pytest.mark.parametrize("bad", [3, 128, 0, -2, 2.0, 2.5, "2", None, True, False, [2]])
def test_from_json_rejects_bad_part_naming_the_layer(index, bad):
    parts = [2] * 18
    parts[index] = bad
    with pytest.raises(ConfigError) as info:
        Architecture.from_json(_doc(parts=parts))
    message = str(info.value)
    layer = _R20[index]
    assert f"layer {index} " in message
    assert layer.name in message
    assert str(list(layer.allowed_parts)) in message


def test_json_round_trip_keeps_normalisation_and_class_names():
    arch = Architecture.uniform("resnet20", 4, 8, 3, 1).trained_on(
        Normalization((0.25,), (0.5,)), ["left", "right", "up"])
    again = Architecture.from_json(arch.to_json())
    assert again == arch and again.normalization == Normalization((0.25,), (0.5,))
    assert again.class_names == ("left", "right", "up") and again.in_channels == 1
    model = again.build()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model.normalize(x), (x - 0.25) / 0.5)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1 and model.fc.out_features == 3
    assert arch != Architecture.uniform("resnet20", 4, 8, 3, 1)  # the statistics count


def test_architecture_rejects_part_above_the_cap():
    parts = [64] * 12
    parts[-1] = 128  # divides 512 channels, but the space stops at MAX_PART
    with pytest.raises(ConfigError, match="layer 11"):
        Architecture("vgg16", tuple(parts))


def test_architecture_is_frozen_and_hashable():
    arch = Architecture.uniform("resnet20", 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.parts = (1,) * 18
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.backbone = "resnet56"
    same = Architecture("resnet20", [4] * 18)  # a list is taken in as a tuple
    assert same.parts == (4,) * 18
    assert same == arch and hash(same) == hash(arch)
    assert len({arch, same, Architecture.uniform("resnet20", 2)}) == 2
    assert arch != Architecture.uniform("resnet20", 4, num_classes=100)


# -- 12. SearchSpace ------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", FAMILIES)
def test_min_and_max_macs(backbone):
    space = SearchSpace(backbone)
    largest = tuple(layer.allowed_parts[-1] for layer in searchable_layers(backbone))
    smallest = (1,) * len(largest)
    size = space.input_size
    assert space.min_macs == _hook_costs(_meta_model(Architecture(backbone, largest)), size)[0]
    assert space.max_macs == _hook_costs(_meta_model(Architecture(backbone, smallest)), size)[0]
    assert space.min_macs < space.max_macs


def _numbers(text: str) -> list[float]:
    return [float(s) for s in re.findall(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?", text)]


@pytest.mark.parametrize("backbone", ["vgg16", "resnet20", "resnet50"])
def test_check_budget(backbone):
    space = SearchSpace(backbone)
    for bad in (-1, -1e9, 0, 0.0, math.nan, math.inf, -math.inf, True, "1e9", None):
        with pytest.raises(ConfigError, match="budget"):
            space.check_budget(bad)
    for below in (space.min_macs - 1, space.min_macs // 3, 1):
        with pytest.raises(ConfigError) as info:
            space.check_budget(below)
        numbers = _numbers(str(info.value))
        assert space.min_macs in numbers
        assert any(math.isclose(n, below, rel_tol=1e-3) for n in numbers)
    for fine in (space.min_macs, float(space.min_macs), space.max_macs, 10 * space.max_macs):
        space.check_budget(fine)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_uniform_parts_clamp_narrow_layers(backbone):
    space = SearchSpace(backbone)
    for part in (1, 2, 4, 8, 16, 32, 64, 128):
        parts = space.uniform_parts(part)
        for layer, chosen in zip(space.layers, parts, strict=True):
            assert chosen in layer.allowed_parts
            assert chosen == min(part, layer.allowed_parts[-1])
    for bad in (0, 3, 6, -4, 2.0, True):
        with pytest.raises(ConfigError):
            space.uniform_parts(bad)


def test_uniform_parts_on_resnet20_follow_the_stage_widths():
    # Six 16->16 layers and the 16->32 one, five 32->32 and the 32->64 one, five 64->64.
    assert SearchSpace("resnet20").uniform_parts(64) == (16,) * 7 + (32,) * 6 + (64,) * 5
    assert SearchSpace("resnet20").uniform_parts(16) == (16,) * 18
    assert SearchSpace("resnet20").uniform_choices() == [1, 2, 4, 8, 16, 32, 64]
    assert SearchSpace("resnet18").uniform_choices() == [1, 2, 4, 8, 16, 32, 64]
    assert SearchSpace("vgg16").uniform_choices() == [1, 2, 4, 8, 16, 32, 64]


@pytest.mark.parametrize("backbone", FAMILIES)
def test_random_parts_only_yield_allowed_parts(backbone):
    space = SearchSpace(backbone)
    drawn = space.random_parts(np.random.default_rng(1), 300)
    assert drawn.shape == (300, len(space.layers))
    for column, layer in zip(drawn.T, space.layers, strict=True):
        assert set(column.tolist()) <= set(layer.allowed_parts)
        assert set(column.tolist()) == set(layer.allowed_parts)  # 300 draws reach every choice
    # Each row is a valid architecture.
    Architecture(backbone, tuple(int(p) for p in drawn[0]))


@pytest.mark.parametrize("backbone", FAMILIES)
def test_fits_agrees_with_architecture_macs(backbone):
    space = SearchSpace(backbone)
    drawn = space.random_parts(np.random.default_rng(2), 300)
    macs = np.array([Architecture(backbone, tuple(int(p) for p in row)).macs for row in drawn])
    for budget in (np.median(macs), float(macs.min()), float(macs.max()) - 1,
                   float(space.min_macs), float(space.max_macs)):
        fits = space.fits(drawn, budget)
        assert fits.shape == (300,)
        assert fits.tolist() == (macs <= budget).tolist()
    assert 0 < space.fits(drawn, np.median(macs)).sum() < 300


# -- 13. input sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "size"), [("vgg16", 16), ("vgg16", 24), ("vgg16", 2)])
def test_too_small_input_is_rejected_at_construction(backbone, size):
    parts = tuple(searchable_layers(backbone)[i].allowed_parts[0] for i in range(12))
    with pytest.raises(ConfigError, match=str(size)):
        Architecture(backbone, parts, input_size=size)
    with pytest.raises(ConfigError, match="input"):
        Architecture.uniform(backbone, 4, input_size=size)
    with pytest.raises(ConfigError, match="input"):
        SearchSpace(backbone, input_size=size)
