"""The deploy form computes what the trained network computes, and only faster forms of it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bench.networks import trained_like
from hetconv.deployment import (
    DENSE,
    ONNXRUNTIME,
    check_equal,
    chunk_candidates,
    chunked,
    deploy,
    equivalent_forms,
    fastest_form,
    fold_batchnorms,
    grouped_form_name,
    trace,
)
from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d, MaskedHetConv2d
from hetconv.models import build_model
from space import SearchSpace


def _random_model(backbone: str, seed: int) -> nn.Module:
    parts = SearchSpace(backbone).random_parts(np.random.default_rng(seed), 1)[0]
    torch.manual_seed(seed)
    return trained_like(build_model(backbone, [int(p) for p in parts]), seed)


@pytest.mark.parametrize(("backbone", "size"), [("vgg16", 32), ("resnet20", 16),
                                                 ("resnet56", 8), ("resnet18", 32),
                                                 ("resnet50", 32)])
def test_eager_deploy_form_equals_model_on_unseen_inputs(backbone, size):
    model = _random_model(backbone, seed=3)
    deployed = deploy(model, torch.randn(2, 3, size, size), compile=False)
    unseen = torch.randn(5, 3, size, size)
    with torch.no_grad():
        expected = model(unseen)
    torch.testing.assert_close(deployed(unseen), expected, rtol=1e-3, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.module.modules())
    assert set(deployed.forms) == {name for name, m in model.named_modules()
                                   if isinstance(m, HetConv2d)}


def test_compiled_deploy_form_equals_model_and_is_compiled():
    model = _random_model("vgg16", seed=5)
    deployed = deploy(model, torch.randn(16, 3, 32, 32))  # chunks of 8 are tried too
    assert deployed.compiled
    for batch in (16, 5):
        unseen = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(unseen)
        torch.testing.assert_close(deployed(unseen), expected, rtol=1e-3, atol=1e-4)


def test_deploy_leaves_the_model_unchanged():
    model = _random_model("resnet20", seed=7).train()
    before = copy.deepcopy(model.state_dict())
    deploy(model, torch.randn(2, 3, 16, 16), compile=False)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_deploy_output_needs_no_autograd():
    model = _random_model("resnet20", seed=1)
    deployed = deploy(model, torch.randn(2, 3, 16, 16), compile=False)
    out = deployed(torch.randn(2, 3, 16, 16, requires_grad=True))
    assert out.grad_fn is None


def test_every_batch_norm_behind_a_convolution_is_folded():
    model = _random_model("vgg16", seed=2)
    graph = trace(copy.deepcopy(model))
    convs = sum(isinstance(m, (nn.Conv2d, HetConv2d)) for m in model.modules())
    assert fold_batchnorms(graph) == convs == 13
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_batch_norm_whose_input_is_also_used_elsewhere_is_kept():
    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = HetConv2d(8, 8, part=4)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = trained_like(Branching(), seed=0)
    graph = trace(copy.deepcopy(model))
    assert fold_batchnorms(graph) == 0
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


@pytest.mark.parametrize("part", [1, 2, 4, 8, 16])
def test_every_equivalent_form_computes_the_layer(part):
    torch.manual_seed(part)
    layer = HetConv2d(16, 32, part=part, bias=True).eval()
    with torch.no_grad():
        layer.bias.normal_()
    forms = equivalent_forms(layer)
    expected_names = {grouped_form_name(q) for q in (2, 4, 8, 16) if q <= part and part % q == 0}
    assert set(forms) == expected_names | {DENSE}
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        want = layer(x)
        for name, form in forms.items():
            torch.testing.assert_close(form(x), want, rtol=1e-4, atol=1e-5, msg=name)


def test_fastest_form_is_the_quickest_measured_one():
    layer = HetConv2d(32, 32, part=8).eval()
    name, form, seconds = fastest_form(layer, torch.randn(2, 32, 8, 8))
    assert set(seconds) == set(equivalent_forms(layer))
    assert seconds[name] == min(seconds.values())
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(form(x), layer(x), rtol=1e-4, atol=1e-5)


def test_forms_timed_in_onnxruntime_are_valid_forms_of_the_layer():
    layer = HetConv2d(16, 16, part=4).eval()
    name, form, seconds = fastest_form(layer, torch.randn(1, 16, 6, 6), ONNXRUNTIME)
    assert set(seconds) == set(equivalent_forms(layer)) and name in seconds
    x = torch.randn(3, 16, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(form(x), layer(x), rtol=1e-4, atol=1e-5)


def test_an_unknown_runtime_is_refused_before_any_timing():
    with pytest.raises(ConfigError, match="runtime 'tvm' is unknown"):
        deploy(nn.Sequential(HetConv2d(8, 8, part=2)), torch.randn(1, 8, 4, 4), runtime="tvm")


def test_masked_reference_layers_are_deployed_in_a_fast_form():
    model = nn.Sequential(MaskedHetConv2d(8, 16, part=4), nn.BatchNorm2d(16), nn.ReLU())
    with torch.no_grad():
        model[0].weight.normal_()
    model = trained_like(model, seed=4)
    deployed = deploy(model, torch.randn(2, 8, 5, 5), compile=False)
    assert not any(isinstance(m, MaskedHetConv2d) for m in deployed.module.modules())
    assert set(deployed.forms) == {"0"}


def test_check_equal_names_the_difference():
    model = _random_model("resnet20", seed=0)
    other = _random_model("resnet20", seed=0)
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    with pytest.raises(RuntimeError, match="differs from the model by up to"):
        check_equal(other, model, torch.randn(2, 3, 16, 16))


def test_a_large_batch_runs_in_the_chunk_size_chosen_and_gives_the_same_outputs():
    model = _random_model("resnet20", seed=9)
    deployed = deploy(model, torch.randn(32, 3, 16, 16), compile=False)
    assert chunk_candidates(32) == [None, 16, 8] and chunk_candidates(37) == [None]
    assert chunk_candidates(16) == [None, 8] and chunk_candidates(8) == [None]
    for batch in (32, 37, 3):  # 37: a last chunk smaller than the others
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            expected = model(x)
            torch.testing.assert_close(deployed(x), expected, rtol=1e-3, atol=1e-4)
            for chunk in chunk_candidates(32):  # whichever chunk the timing picks
                torch.testing.assert_close(chunked(deployed.module, chunk)(x), expected,
                                           rtol=1e-3, atol=1e-4)


def test_deployed_network_reorders_no_channels_between_hetconv_layers():
    deployed = deploy(_random_model("vgg16", seed=4), torch.randn(2, 3, 32, 32), compile=False)
    reorders = [node for node in deployed.module.graph.nodes
                if node.op == "call_function" and node.target is torch.index_select]
    assert len(reorders) == 1  # back to natural order once, before the classifier
