"""The zero-cost proxies of bench/zero_cost.py: properties each must have by its definition, on
ResNet-20s of the search space and real 8×8 digits, never fixed numbers."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bench.networks import trained_like
from bench.zero_cost import (
    PROXIES,
    grad_norm,
    layer_kernels,
    naswot,
    naswot_kernel,
    score_all,
    snip,
    synflow,
)
from hetconv.layer import HetConv2d
from hetconv.supernet import to_supernet
from search.training.data import load_dataset
from space import Architecture
from space.architecture import Normalization

SIZE = 8


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small networks run quickest on one thread, and the scores are then reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """32 real digits, uint8 ``(32, 1, 8, 8)``, and their labels."""
    data = load_dataset("digits", SIZE, seed=0)
    return data.train_x[:32], data.train_y[:32]


def resnet(part: int = 2, size: int = SIZE) -> nn.Module:
    torch.manual_seed(0)
    return Architecture.uniform("resnet20", part, size, 10, 1).build()


def test_the_model_is_left_as_it_was(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = batch
    for model in (resnet(), trained_like(resnet())):
        state = {name: value.clone() for name, value in model.state_dict().items()}
        modes = [module.training for module in model.modules()]
        rng = torch.get_rng_state()
        score_all(model, images, labels)
        after = model.state_dict()
        assert state.keys() == after.keys()
        assert all(torch.equal(state[name], after[name]) for name in state)
        assert [module.training for module in model.modules()] == modes
        assert all(p.grad is None and p.requires_grad for p in model.parameters())
        assert torch.equal(torch.get_rng_state(), rng)


def test_scores_are_finite_and_a_function_of_the_seed(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = batch
    model = resnet()
    scores = score_all(model, images, labels, seed=3)
    assert tuple(scores) == PROXIES
    assert all(math.isfinite(value) and value > 0 for value in scores.values())
    assert score_all(model, images, labels, seed=3) == scores
    # One call per proxy reads the same as all at once.
    assert scores == {"synflow": synflow(model, images), "naswot": naswot(model, images, 3),
                      "grad_norm": grad_norm(model, images, labels, 3),
                      "snip": snip(model, images, labels, 3)}


def test_the_seed_draws_the_dropout_of_a_train_mode_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(8 * 6 * 6, 10))
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 10
    assert score_all(model, images, labels, seed=0) == score_all(model, images, labels, seed=0)
    first, second = score_all(model, images, labels, 0), score_all(model, images, labels, 1)
    assert first["grad_norm"] != second["grad_norm"] and first["snip"] != second["snip"]
    assert first["synflow"] == second["synflow"]  # data-free, in eval mode: no dropout


def test_uint8_and_unit_float_images_score_alike(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = batch
    model = resnet()
    as_float = score_all(model, images.float() / 255, labels)
    assert as_float == pytest.approx(score_all(model, images, labels), rel=1e-6)


def test_synflow_reads_only_the_shape_of_the_images(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = batch
    model = resnet()
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(2))
    assert synflow(model, images) == synflow(model, noise) == synflow(model, images[:1])


def test_synflow_ignores_the_input_statistics_the_network_carries() -> None:
    plain = Architecture.uniform("resnet20", 2, SIZE, 10, 1)
    torch.manual_seed(0)
    model = plain.build()
    torch.manual_seed(0)
    normalising = plain.trained_on(Normalization((0.3,), (0.2,)), None).build()
    images = torch.zeros(1, 1, SIZE, SIZE)
    assert synflow(model, images) == synflow(normalising, images)


def test_denser_networks_have_more_synaptic_flow() -> None:
    images = torch.zeros(1, 1, 28, 28)
    assert synflow(resnet(1, 28), images) > synflow(resnet(16, 28), images)


def test_naswot_kernel_counts_agreeing_units_over_every_relu(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = batch
    model = resnet()
    # In the CIFAR ResNet every batch norm feeds one ReLU (the stem's nn.ReLU, the blocks'
    # functional F.relu), so the codes span exactly the batch norms' outputs.
    units = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal units
        units += output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, nn.BatchNorm2d)]
    model(images[:1].float() / 255)
    for hook in hooks:
        hook.remove()
    kernel = naswot_kernel(model, images)
    assert kernel.shape == (len(images), len(images))
    assert torch.equal(kernel, kernel.T)
    assert torch.equal(kernel.diagonal(), torch.full((len(images),), float(units),
                                                     dtype=torch.float64))
    assert kernel.max() == units and kernel.min() >= 0


def test_naswot_is_lower_when_the_images_are_alike(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = batch
    model = resnet()
    varied = naswot(model, images)
    assert math.isfinite(varied)
    assert naswot(model, images[:1].expand_as(images)) < varied
    # Half the batch repeated: still singular.
    assert naswot(model, torch.cat([images[:16], images[:16]])) == -math.inf


def test_snip_and_grad_norm_vanish_with_the_weights(
        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With every kernel zero the features are zero, so no kernel has a loss gradient, and
    |θ ⊙ g| is zero anyway."""
    images, labels = batch
    model = resnet()
    assert snip(model, images, labels) > 0 and grad_norm(model, images, labels) > 0
    with torch.no_grad():
        for layer in layer_kernels(model):
            for kernel in layer:
                kernel.zero_()
    assert snip(model, images, labels) == 0 and grad_norm(model, images, labels) == 0


def masked_form(model: nn.Module) -> nn.Module:
    """``model`` with every HetConv layer in its masked reference form, and weight under the
    mask's zeros, which the forward never reads."""
    model = copy.deepcopy(model)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, HetConv2d)]:
        masked = layer.to_masked()
        with torch.no_grad():
            masked.weight.add_(~masked.mask * 0.5)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, masked)
    return model


@pytest.mark.parametrize("form", [masked_form, lambda m: to_supernet(copy.deepcopy(m))],
                         ids=["masked", "supernet"])
def test_the_hetconv_forms_score_alike(batch: tuple[torch.Tensor, torch.Tensor], form) -> None:
    """Masked taps hold weight but get no gradient, so the dense forms score as the fast one."""
    images, labels = batch
    model = resnet(4)
    assert score_all(form(model), images, labels) \
        == pytest.approx(score_all(model, images, labels), rel=1e-4)
