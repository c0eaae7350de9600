"""Networks HetNAS did not write: conversion, their search space, their costs and dense weights.

The networks are in ``tests/foreign_networks.py``: a 5×5 layer, a depthwise convolution that must
stay as it is, 1×1 layers, a residual block with biases, channel counts with few divisors, and a
20×20 input.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.networks import trained_like
from hetconv import ConfigError, HetConv2d, hetconv_mask
from hetconv.conversion import convert, convertible
from hetconv.models import build_model
from search.training.data import DataSplits
from search.training.start import check_dense, dense_start, standard_network
from space import Architecture, SearchSpace
from space.networks import factory_layers
from tests.foreign_networks import SEARCHABLE, Foreign

FACTORY = "tests.foreign_networks:foreign"
SIZE = 20  # not 32: the trace must take the network's real input



def _input(channels: int = 1, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# -- conversion ---------------------------------------------------------------------------------


def test_conversion_at_part_one_keeps_the_function_exactly():
    torch.manual_seed(0)
    dense = trained_like(Foreign(10, in_channels=3))
    x = _input(3)
    converted = convert(copy.deepcopy(dense), 1)
    assert sum(isinstance(m, HetConv2d) for m in converted.modules()) == 6
    with torch.no_grad():
        assert torch.equal(converted(x), dense(x))


def test_layers_that_cannot_take_a_part_are_listed_with_the_reason():
    found = convertible(Foreign(10, in_channels=1))
    assert list(found.eligible) == ["wide.0", "block.conv1", "block.conv2", "down.0", "odd"]
    assert "groups=24" in found.ineligible["depthwise"]
    assert "1x1" in found.ineligible["pointwise"]
    assert "no common divisor" in found.ineligible["stem.0"]  # 1 -> 12 channels
    model = convert(Foreign(10, in_channels=1), 2)
    assert type(model.depthwise) is nn.Conv2d and type(model.pointwise) is nn.Conv2d
    assert type(model.stem[0]) is nn.Conv2d


def test_a_trained_kernel_keeps_its_pattern_and_centre_taps():
    torch.manual_seed(0)
    dense = Foreign(10)
    kernel = dense.wide[0].weight.detach().clone()  # 12 -> 24, 5x5
    dense.block.conv1.requires_grad_(False)  # frozen by its user
    convert(dense, {"wide.0": 4, "block.conv1": 8})
    assert not any(p.requires_grad for p in dense.block.conv1.parameters())
    assert all(p.requires_grad for p in dense.wide[0].parameters())
    layer = dense.wide[0]
    assert isinstance(layer, HetConv2d) and layer.part == 4 and layer.kernel_size == 5
    mask = hetconv_mask(12, 24, 5, 4)
    assert torch.equal(layer.dense_weight().detach(), kernel * mask)
    x = torch.randn(2, 12, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, kernel * mask, padding=2))
    assert dense.block.conv1.part == 8 and dense.block.conv1.bias is not None
    assert type(dense.block.conv2) is nn.Conv2d  # not named: left alone


def test_one_part_for_all_takes_the_largest_power_of_two_below_it():
    model = convert(Foreign(10), 8)
    assert model.block.conv1.part == 8
    assert model.wide[0].part == 4  # 12 -> 24
    assert model.down[0].part == 2  # 24 -> 18: common divisors 1, 2, 3, 6
    assert model.odd.part == 1  # 18 -> 27: common divisors 1, 3, 9, no power of two above 1
    assert model.stem[0].part == 1  # 3 -> 12: the paper's standard stem, not part 3
    stem = convert(nn.Sequential(nn.Conv2d(3, 24, 3, padding=1)), 4)[0]
    assert isinstance(stem, HetConv2d) and stem.part == 1  # the 3 -> 24 at part 4


@pytest.mark.parametrize("part", [3, 6, 0, True, 4.0])
def test_one_part_for_all_must_be_a_power_of_two(part):
    with pytest.raises(ConfigError, match="power of two"):
        convert(Foreign(10), part)


@pytest.mark.parametrize(("parts", "needle"), [
    ({"depthwise": 2}, "groups=24"),
    ({"nothing.here": 2}, "no Conv2d of that name"),
    ({"down.0": 4}, "'down.0'"),
])
def test_conversion_refuses_what_the_layer_cannot_take(parts, needle):
    with pytest.raises(ConfigError, match=needle):
        convert(Foreign(10), parts)


# -- the search space of a factory ----------------------------------------------------------


def test_search_space_from_a_factory_traces_its_layers():
    space = SearchSpace(FACTORY, SIZE, 10, 1)
    assert [layer.name for layer in space.layers] == [f"network.{n}" for n in SEARCHABLE]
    assert [layer.allowed_parts for layer in space.layers] \
        == [(1, 2, 4), (1, 2, 4, 8), (1, 2, 4, 8), (1, 2)]
    assert [layer.kernel_size for layer in space.layers] == [5, 3, 3, 3]
    assert [layer.in_height for layer in space.layers] == [SIZE, SIZE, SIZE, SIZE]
    assert space.layers[3].out_pixels == (SIZE // 2) ** 2


def _hooked_pixels(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    pixels: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, HetConv2d):
            module.register_forward_hook(
                lambda _m, _i, out, name=name: pixels.__setitem__(name, out[0, 0].numel()))
    model(x)
    return pixels


@pytest.mark.parametrize("parts", [(1, 1, 1, 1), (4, 2, 8, 2), (2, 8, 1, 1), (4, 8, 8, 2)])
def test_macs_and_params_match_independent_counts(parts):
    arch = Architecture(FACTORY, parts, SIZE, 10, 1)
    torch.manual_seed(0)
    model = arch.build().eval()
    x = _input()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    assert counter.get_total_flops() // 2 == arch.executed_macs
    assert sum(p.numel() for p in model.parameters()) == arch.executed_params
    # Paper MACs: the standard network's count less the kernel taps each part drops.
    dense = Foreign(10, in_channels=1).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        dense(x[:1])
    with torch.no_grad():
        pixels = _hooked_pixels(model, x[:1])
    dropped = sum(pixels[name] * int((~hetconv_mask(m.in_channels, m.out_channels,
                                                    m.kernel_size, m.part)).sum())
                  for name, m in model.named_modules() if isinstance(m, HetConv2d))
    assert counter.get_total_flops() // 2 - dropped == arch.macs
    weights = sum(p.numel() for m in dense.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  for p in m.parameters(recurse=False))
    dropped_weights = sum(int((~hetconv_mask(m.in_channels, m.out_channels, m.kernel_size,
                                              m.part)).sum())
                          for m in model.modules() if isinstance(m, HetConv2d))
    assert weights - dropped_weights == arch.params


def test_factory_architecture_survives_its_file():
    arch = Architecture(FACTORY, (4, 2, 8, 2), SIZE, 10, 1)
    again = Architecture.from_json(arch.to_json())
    assert again == arch and again.backbone == FACTORY
    assert isinstance(again.build().network.block.conv2, HetConv2d)


@pytest.mark.parametrize(("factory", "needle"), [
    ("tests.no_such_module:net", "cannot import 'tests.no_such_module'"),
    ("tests.foreign_networks:missing", "has no 'missing'"),
    ("tests.foreign_networks:SEARCHABLE", "not a callable"),
    ("tests.foreign_networks:raises", "raised ValueError when called with num_classes=10"),
    ("tests.foreign_networks:not_a_module", "returned a dict, not a torch.nn.Module"),
    ("tests.foreign_networks:pointwise_only", "no convolution that can take a HetConv part"),
    (":foreign", "must be written package.module:factory"),
])
def test_a_bad_factory_is_one_clear_error(factory, needle):
    with pytest.raises(ConfigError, match=needle):
        SearchSpace(factory, SIZE, 10, 1)


def test_a_factory_has_no_default_input_size():
    with pytest.raises(ConfigError, match="give input_size"):
        SearchSpace(FACTORY, None, 10, 1)


def test_a_network_for_other_channels_is_refused_at_the_trace():
    with pytest.raises(ConfigError, match="cannot take a 1x20x20 input"):
        SearchSpace("tests.foreign_networks:rgb_only", SIZE, 10, 1)


# -- starting from trained dense weights -------------------------------------------------------


def _data(channels: int, classes: int) -> DataSplits:
    """Splits whose statistics are the identity: the functions below compare networks alone."""
    images = torch.zeros(4, channels, SIZE, SIZE, dtype=torch.uint8)
    labels = torch.arange(4) % classes
    return DataSplits("synthetic", classes, None, SIZE, images, labels, images, labels,
                      images, labels, mean=(0.0,) * channels, std=(1.0,) * channels,
                      hflip=False)


def test_dense_weights_of_a_factory_network_give_its_function(tmp_path):
    torch.manual_seed(0)
    dense = trained_like(Foreign(10, in_channels=1))
    path = tmp_path / "dense.pt"
    torch.save(dense.state_dict(), path)
    space = SearchSpace(FACTORY, SIZE, 10, 1)
    standard, notes = standard_network(space, str(path))
    assert notes == []
    x = _input()
    with torch.no_grad():
        assert torch.equal(standard.eval()(x), dense(x))
    arch = Architecture(FACTORY, (4, 2, 8, 2), SIZE, 10, 1)
    model = arch.build()
    model.load_state_dict(dense_start(arch, _data(1, 10), str(path), conversion="centre"))
    for name in SEARCHABLE:
        layer = model.network.get_submodule(name)
        kernel = dense.get_submodule(name).weight.detach()
        mask = hetconv_mask(layer.in_channels, layer.out_channels, layer.kernel_size, layer.part)
        assert torch.equal(layer.dense_weight().detach(), kernel * mask), name
    assert torch.equal(model.network.block.bn.running_mean, dense.block.bn.running_mean)
    assert torch.equal(model.network.head.weight, dense.head.weight)


def test_dense_weights_that_do_not_fit_name_the_first_key(tmp_path):
    state = Foreign(10, in_channels=1).state_dict()
    path = tmp_path / "dense.pt"
    space = SearchSpace(FACTORY, SIZE, 10, 1)
    torch.save({k: v for k, v in state.items() if k != "block.bn.running_var"}, path)
    with pytest.raises(ConfigError, match="lacks 'block.bn.running_var'"):
        check_dense(space, str(path))
    torch.save(Foreign(10, in_channels=3).state_dict(), path)
    with pytest.raises(ConfigError, match=r"'stem.0.weight' has shape \(12, 3, 3, 3\)"):
        check_dense(space, str(path))
    torch.save([1, 2], path)
    with pytest.raises(ConfigError, match="holds a list, not a state dict"):
        check_dense(space, str(path))
    for garbage in (b"not a checkpoint", b"hello\n", b""):
        path.write_bytes(garbage)
        with pytest.raises(ConfigError, match="not a plain PyTorch state dict"):
            check_dense(space, str(path))
    diverged = dict(state)
    diverged["wide.0.weight"] = torch.full_like(state["wide.0.weight"], float("nan"))
    torch.save(diverged, path)
    with pytest.raises(ConfigError, match="'wide.0.weight' holds NaN or infinite values"):
        check_dense(space, str(path))
    # Batch norm's step counters are optional, as torch's own strict loading has them.
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    assert check_dense(space, str(path)) == []


def test_a_classifier_for_other_classes_starts_fresh_and_says_so(tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(Foreign(1000, in_channels=1).state_dict(), path)
    notes = check_dense(SearchSpace(FACTORY, SIZE, 10, 1), str(path))
    assert notes == ["classifier head starts fresh: dense weights " + str(path)
                     + " has 1000 outputs, this network 10"]


def _torchvision_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename this project's ResNet keys to torchvision's, written out by hand."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("normalize."):
            continue
        key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        key = key.replace(".shortcut.", ".downsample.")
        for stage in range(4):
            key = key.replace(f"stages.{stage}.", f"layer{stage + 1}.")
        renamed[key] = value
    return renamed


def test_builtin_resnet_takes_torchvision_keys(tmp_path):
    torch.manual_seed(0)
    dense = trained_like(build_model("resnet18", None, 1000, 3))
    state = _torchvision_layout(dense.state_dict())
    assert "layer2.0.downsample.0.weight" in state and "conv1.weight" in state
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    space = SearchSpace("resnet18", 64, 10, 3)
    standard, notes = standard_network(space, str(path))
    assert notes == ["classifier fc starts fresh: dense weights " + str(path)
                     + " has 1000 outputs, this network 10"]
    for key, value in dense.state_dict().items():
        if not key.startswith(("fc.", "normalize.")):
            assert torch.equal(standard.state_dict()[key], value), key


def test_only_convolutions_that_run_once_are_searched_and_costs_count_every_call():
    space = SearchSpace("tests.foreign_networks:untidy", SIZE, 10, 1)
    assert [layer.name for layer in space.layers] == [f"network.{n}" for n in SEARCHABLE]
    layers = factory_layers("tests.foreign_networks:untidy", 10, 1, SIZE)
    assert layers.left_dense["aux"] == "never runs in eval mode"
    assert layers.left_dense["shared"] == "runs 2 times per forward pass"
    assert "no power-of-two part" in layers.left_dense["odd"]
    arch = Architecture("tests.foreign_networks:untidy", (4, 2, 8, 2), SIZE, 10, 1)
    model = arch.build().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_input()[:1])
    assert counter.get_total_flops() // 2 == arch.executed_macs  # the shared layer twice


@pytest.mark.parametrize(("factory", "needle"), [
    ("tuple_out", "returned tuple for one 1x20x20 image; it must return a (batch, 10) tensor"),
    ("five_classes", "returned (1, 5) for one 1x20x20 image"),
])
def test_a_network_that_does_not_return_logits_is_refused(factory, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        SearchSpace(f"tests.foreign_networks:{factory}", SIZE, 10, 1)
