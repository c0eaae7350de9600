"""HetConv2d (fast path), MaskedHetConv2d (reference), the pattern, conversions and BN folding."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hetconv import (
    ConfigError,
    HetConv2d,
    MaskedHetConv2d,
    common_divisors,
    fold_batchnorm,
    hetconv_mask,
    kxk_pattern,
)
from hetconv.models import build_model
from space import SearchSpace

ATOL = 1e-10
DT = torch.float64

# (in, out, part): part == in channels, in != out, part == out, several classes per group.
SHAPES = [(4, 4, 2), (4, 8, 4), (6, 12, 3), (8, 4, 4), (12, 6, 6), (16, 16, 8), (8, 8, 1)]
GEOMETRY = [  # (stride, padding, batch, height, width)
    (1, None, 1, 7, 7),
    (2, None, 3, 9, 6),
    (1, 0, 2, 6, 9),
    (2, 0, 1, 8, 7),
    (1, 2, 2, 5, 8),
    (2, 2, 3, 7, 5),
]


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_layer(cin: int, cout: int, part: int, *, stride: int = 1, padding=None,
                  bias: bool = False, kernel: int = 3, seed: int = 0) -> HetConv2d:
    """A float64 HetConv2d whose every parameter (bias included) is random and non-zero."""
    torch.manual_seed(seed)
    layer = HetConv2d(cin, cout, kernel, stride, padding, part=part, bias=bias).to(DT)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, dtype=DT, generator=_seeded(seed + p.numel())))
    return layer


def _paper_pattern(cin: int, cout: int, part: int) -> torch.Tensor:
    """The paper's definition, spelled out: filter n has a K×K kernel on channel m iff
    (m - n) mod P == 0 (counting from zero)."""
    rows = [[(m - n) % part == 0 for m in range(cin)] for n in range(cout)]
    return torch.tensor(rows, dtype=torch.bool)


def _paper_mask(cin: int, cout: int, kernel: int, part: int) -> torch.Tensor:
    pattern = _paper_pattern(cin, cout, part)
    mask = torch.zeros(cout, cin, kernel, kernel, dtype=torch.bool)
    c = kernel // 2
    for n in range(cout):
        for m in range(cin):
            if pattern[n, m]:
                mask[n, m] = True
            else:
                mask[n, m, c, c] = True
    return mask


# -- 1. fast path against the masked reference --------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("stride", "padding", "batch", "height", "width"), GEOMETRY)
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_fast_forward_equals_to_masked(cin, cout, part, stride, padding, batch, height, width,
                                       bias):
    layer = _random_layer(cin, cout, part, stride=stride, padding=padding, bias=bias)
    ref = layer.to_masked()
    assert isinstance(ref, MaskedHetConv2d)
    assert (ref.part, ref.stride, ref.padding) == (part, stride, layer.padding)
    x = torch.randn(batch, cin, height, width, dtype=DT, generator=_seeded(1))
    out, expected = layer(x), ref(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("stride", "padding", "batch", "height", "width"), GEOMETRY)
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_from_masked_equals_reference(cin, cout, part, stride, padding, batch, height, width,
                                      bias):
    torch.manual_seed(3)
    ref = MaskedHetConv2d(cin, cout, 3, stride, padding, part, bias).to(DT)
    with torch.no_grad():  # dense random weights: the part outside the mask must not matter
        ref.weight.copy_(torch.randn(ref.weight.shape, dtype=DT, generator=_seeded(4)))
        if bias:
            ref.bias.copy_(torch.randn(cout, dtype=DT, generator=_seeded(5)))
    layer = HetConv2d.from_masked(ref)
    assert isinstance(layer, HetConv2d)
    assert layer.weight.dtype == DT
    x = torch.randn(batch, cin, height, width, dtype=DT, generator=_seeded(6))
    torch.testing.assert_close(layer(x), ref(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kernel", [1, 5])
@pytest.mark.parametrize(("cin", "cout", "part"), [(4, 8, 4), (6, 6, 3)])
def test_other_kernel_sizes_match_reference(cin, cout, part, kernel):
    layer = _random_layer(cin, cout, part, kernel=kernel, bias=True)
    x = torch.randn(2, cin, 8, 7, dtype=DT, generator=_seeded(7))
    torch.testing.assert_close(layer(x), layer.to_masked()(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("stride", "padding"), [(1, None), (2, 0), (2, 2)])
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_fast_path_follows_paper_definition(cin, cout, part, stride, padding):
    """Independent of MaskedHetConv2d: a dense kernel masked by the paper's rule, run by conv2d."""
    dense = torch.randn(cout, cin, 3, 3, dtype=DT, generator=_seeded(8))
    dense = dense * _paper_mask(cin, cout, 3, part)
    layer = HetConv2d(cin, cout, 3, stride, padding, part=part).to(DT)
    layer.load_dense_weight(dense)
    x = torch.randn(2, cin, 9, 8, dtype=DT, generator=_seeded(9))
    pad = 1 if padding is None else padding
    torch.testing.assert_close(layer(x), F.conv2d(x, dense, None, stride, pad), atol=ATOL, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("stride", "padding", "batch", "height", "width"), GEOMETRY[:4])
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_backward_matches_reference(cin, cout, part, stride, padding, batch, height, width,
                                    bias):
    layer = _random_layer(cin, cout, part, stride=stride, padding=padding, bias=bias)
    ref = layer.to_masked()
    x = torch.randn(batch, cin, height, width, dtype=DT, generator=_seeded(10))
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x_fast)
    upstream = torch.randn(out.shape, dtype=DT, generator=_seeded(11))
    out.backward(upstream)
    ref(x_ref).backward(upstream)

    torch.testing.assert_close(x_fast.grad, x_ref.grad, atol=ATOL, rtol=0)
    if bias:
        torch.testing.assert_close(layer.bias.grad, ref.bias.grad, atol=ATOL, rtol=0)
    dense_grad = ref.weight.grad
    # Gather the reference's gradient at the K×K pattern, by hand, in the documented layout:
    # row r*(out/P) + i of `weight` is filter i*P + r; its column c is input channel c*P + r.
    per_out, per_in = cout // part, cin // part
    gathered = torch.empty_like(layer.weight)
    for r in range(part):
        for i in range(per_out):
            for c in range(per_in):
                gathered[r * per_out + i, c] = dense_grad[i * part + r, c * part + r]
    torch.testing.assert_close(layer.weight.grad, gathered, atol=ATOL, rtol=0)
    if part == 1:
        assert layer.pointwise is None
    else:
        # The 1×1 weights sit off the pattern only: row n holds filter n's, channels increasing.
        off_pattern = torch.stack([
            torch.stack([dense_grad[n, m, 1, 1] for m in range(cin) if (m - n) % part])
            for n in range(cout)])
        torch.testing.assert_close(layer.pointwise.grad, off_pattern, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("cin", "cout", "part"), [(4, 8, 4), (6, 12, 3), (16, 16, 8)])
def test_weight_grad_equals_masked_gradient_loaded_into_fresh_layer(cin, cout, part):
    layer = _random_layer(cin, cout, part)
    ref = layer.to_masked()
    x = torch.randn(2, cin, 6, 5, dtype=DT, generator=_seeded(12))
    layer(x).square().sum().backward()
    ref(x).square().sum().backward()
    fresh = HetConv2d(cin, cout, 3, part=part).to(DT)
    fresh.load_dense_weight(ref.weight.grad * hetconv_mask(cin, cout, 3, part))
    torch.testing.assert_close(layer.weight.grad, fresh.weight, atol=ATOL, rtol=0)
    # Each 1×1 weight is one tap of the mask too: its gradient is the reference's, not a sum.
    torch.testing.assert_close(layer.pointwise.grad, fresh.pointwise, atol=ATOL, rtol=0)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("part", [1, 2, 4, 8])
def test_sgd_steps_train_the_same_weights_as_the_masked_reference(part, kernel, stride, bias,
                                                                   nesterov):
    """The paper's layer trains like the masked reference: each tap is one weight, with one
    gradient, one momentum buffer and one share of weight decay (no duplicated centre taps)."""
    cin, cout = 8, 16
    layer = _random_layer(cin, cout, part, stride=stride, bias=bias, kernel=kernel, seed=21)
    ref = layer.to_masked()  # zero outside the mask, so weight decay keeps it zero there
    mask = ref.mask
    optimizers = [torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                                  nesterov=nesterov) for module in (layer, ref)]
    for step in range(3):  # from the second step on, the momentum buffers count too
        x = torch.randn(2, cin, 9, 8, dtype=DT, generator=_seeded(22 + step))
        upstream = torch.randn(layer(x).shape, dtype=DT, generator=_seeded(32 + step))
        for module, optimizer in zip((layer, ref), optimizers, strict=True):
            optimizer.zero_grad()
            (module(x) * upstream).sum().backward()
            optimizer.step()
        with torch.no_grad():
            torch.testing.assert_close(layer.dense_weight(), ref.weight * mask, atol=ATOL,
                                       rtol=0)
            assert not torch.any(ref.weight[~mask] != 0)
            if bias:
                torch.testing.assert_close(layer.bias, ref.bias, atol=ATOL, rtol=0)


# -- 2. the pattern ----------------------------------------------------------------------------


@pytest.mark.parametrize(("cin", "cout", "part"),
                         [(4, 4, 1), (4, 4, 2), (4, 8, 4), (6, 12, 3), (12, 6, 6), (16, 32, 16),
                          (10, 5, 5)])
def test_pattern_is_papers_definition(cin, cout, part):
    pattern = kxk_pattern(cin, cout, part)
    assert pattern.dtype == torch.bool
    assert torch.equal(pattern, _paper_pattern(cin, cout, part))
    # Every filter has in/P full K×K kernels; the others are 1×1.
    assert pattern.sum(dim=1).tolist() == [cin // part] * cout
    # P distinct filter shapes, repeating every P filters.
    distinct = {tuple(row.tolist()) for row in pattern}
    assert len(distinct) == part
    for n in range(cout - part):
        assert torch.equal(pattern[n], pattern[n + part])


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize(("cin", "cout", "part"), [(4, 4, 2), (4, 8, 4), (6, 12, 3), (8, 8, 1)])
def test_mask_is_papers_definition(cin, cout, part, kernel):
    mask = hetconv_mask(cin, cout, kernel, part)
    assert mask.shape == (cout, cin, kernel, kernel)
    assert torch.equal(mask, _paper_mask(cin, cout, kernel, part))
    # Each filter: in/P kernels of K² taps plus (in - in/P) single taps.
    expected = cin // part * kernel ** 2 + cin - cin // part
    assert mask.flatten(1).sum(dim=1).tolist() == [expected] * cout


def test_part_equal_in_channels_leaves_one_kxk_kernel_per_filter():
    pattern = kxk_pattern(8, 16, 8)
    assert pattern.sum(dim=1).tolist() == [1] * 16
    assert [int(row.nonzero()) for row in pattern] == [n % 8 for n in range(16)]


# -- 3. part 1 is a standard convolution ------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("stride", "padding"), [(1, None), (2, 0), (1, 2)])
@pytest.mark.parametrize(("cin", "cout"), [(3, 8), (8, 8), (5, 2)])
def test_part_one_is_bit_identical_to_conv2d(cin, cout, stride, padding, bias):
    torch.manual_seed(13)
    layer = HetConv2d(cin, cout, 3, stride, padding, part=1, bias=bias)
    assert layer.pointwise is None
    assert {name for name, _ in layer.named_parameters()} == (
        {"weight", "bias"} if bias else {"weight"})
    conv = nn.Conv2d(cin, cout, 3, stride, 1 if padding is None else padding, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        if bias:
            layer.bias.normal_()
            conv.bias.copy_(layer.bias)
    x = torch.randn(2, cin, 9, 7)
    assert torch.equal(layer(x), conv(x))


# -- 4. invalid configurations ----------------------------------------------------------------


def _divisors(a: int, b: int) -> list[int]:
    return [d for d in range(1, min(a, b) + 1) if a % d == 0 and b % d == 0]


@pytest.mark.parametrize("cls", [HetConv2d, MaskedHetConv2d])
@pytest.mark.parametrize(("cin", "cout", "part"),
                         [(6, 12, 4),  # divides out, not in
                          (12, 6, 4),  # divides in, not out
                          (6, 12, 5), (6, 12, 0), (6, 12, -2), (6, 12, 2.0), (6, 12, "2"),
                          (6, 12, None), (6, 12, True), (8, 8, 16)])
def test_invalid_part_is_rejected_with_sizes_and_allowed_parts(cls, cin, cout, part):
    with pytest.raises(ValueError) as info:
        cls(cin, cout, 3, part=part)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert f"{cin}->{cout}" in message
    assert str(_divisors(cin, cout)) in message


@pytest.mark.parametrize("cls", [HetConv2d, MaskedHetConv2d])
@pytest.mark.parametrize("kernel", [2, 4, 0, -1])
def test_even_or_nonpositive_kernel_is_rejected(cls, kernel):
    with pytest.raises(ConfigError, match=re.escape("4->8")) as info:
        cls(4, 8, kernel, part=2)
    assert "kernel" in str(info.value)


def test_negative_padding_and_channel_counts_are_rejected():
    with pytest.raises(ConfigError, match="padding"):
        HetConv2d(4, 4, 3, padding=-1, part=2)
    with pytest.raises(ConfigError, match="0->4"):
        HetConv2d(0, 4, 3, part=1)


@pytest.mark.parametrize(("cin", "cout"), [(6, 12), (16, 24), (7, 5), (1, 9)])
def test_common_divisors(cin, cout):
    assert common_divisors(cin, cout) == _divisors(cin, cout)


# -- 5. conversions and batch-norm folding ----------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("stride", "padding"), [(1, None), (2, 0), (2, 2)])
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_to_dense_equals_layer(cin, cout, part, stride, padding, bias):
    layer = _random_layer(cin, cout, part, stride=stride, padding=padding, bias=bias)
    dense = layer.to_dense()
    assert type(dense) is nn.Conv2d
    assert dense.weight.dtype == DT
    assert (dense.bias is not None) == bias
    x = torch.randn(2, cin, 7, 8, dtype=DT, generator=_seeded(14))
    torch.testing.assert_close(dense(x), layer(x), atol=ATOL, rtol=0)
    # The exported kernel respects the mask.
    assert not torch.any(dense.weight[~hetconv_mask(cin, cout, 3, part)] != 0)


def _random_bn(channels: int, seed: int, affine: bool = True) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-3, affine=affine).to(DT)
    g = _seeded(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, dtype=DT, generator=g))
        bn.running_var.copy_(torch.rand(channels, dtype=DT, generator=g) + 0.5)
        if affine:
            bn.weight.copy_(torch.randn(channels, dtype=DT, generator=g))
            bn.bias.copy_(torch.randn(channels, dtype=DT, generator=g))
    return bn.eval()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_fold_batchnorm_equals_bn_after_layer(cin, cout, part, bias, affine):
    layer = _random_layer(cin, cout, part, stride=2, bias=bias)
    bn = _random_bn(cout, seed=15, affine=affine)
    folded = fold_batchnorm(layer, bn)
    assert isinstance(folded, HetConv2d)
    assert folded.bias is not None
    x = torch.randn(3, cin, 7, 6, dtype=DT, generator=_seeded(16))
    with torch.no_grad():
        expected = bn(layer(x))
        torch.testing.assert_close(folded(x), expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(folded.to_dense()(x), expected, atol=ATOL, rtol=0)
        # The original layer is left alone.
        torch.testing.assert_close(layer(x), layer.to_masked()(x), atol=ATOL, rtol=0)
        assert (layer.bias is None) == (not bias)


def test_fold_batchnorm_rejects_mismatched_or_statless_bn():
    layer = _random_layer(4, 8, 4)
    with pytest.raises(ConfigError, match="8"):
        fold_batchnorm(layer, nn.BatchNorm2d(4).to(DT).eval())
    with pytest.raises(ConfigError):
        fold_batchnorm(layer, nn.BatchNorm2d(8, track_running_stats=False).to(DT))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("cin", "cout", "part"), SHAPES)
def test_round_trips_reproduce_the_layer(cin, cout, part, bias):
    layer = _random_layer(cin, cout, part, bias=bias)
    again = HetConv2d.from_masked(layer.to_masked())
    fresh = HetConv2d(cin, cout, 3, part=part, bias=bias).to(DT)
    fresh.load_dense_weight(layer.dense_weight().detach())
    if bias:
        with torch.no_grad():
            fresh.bias.copy_(layer.bias)
    for copy in (again, fresh):
        assert set(dict(copy.named_parameters())) == set(dict(layer.named_parameters()))
        for name, param in layer.named_parameters():
            assert torch.equal(dict(copy.named_parameters())[name], param), name


@pytest.mark.parametrize(("cin", "cout", "part"), [(4, 8, 4), (6, 12, 3), (4, 4, 2)])
def test_load_dense_weight_round_trip_and_rejections(cin, cout, part):
    layer = HetConv2d(cin, cout, 3, part=part).to(DT)
    mask = hetconv_mask(cin, cout, 3, part)
    dense = torch.randn(cout, cin, 3, 3, dtype=DT, generator=_seeded(17)) * mask
    layer.load_dense_weight(dense)
    torch.testing.assert_close(layer.dense_weight(), dense, atol=0, rtol=0)

    outside = dense.clone()
    n, m = next((n, m) for n in range(cout) for m in range(cin) if not mask[n, m, 0, 0])
    outside[n, m, 0, 0] = 1.0
    with pytest.raises(ConfigError, match="mask"):
        layer.load_dense_weight(outside)
    with pytest.raises(ConfigError, match="shape"):
        layer.load_dense_weight(torch.zeros(cout, cin + 1, 3, 3, dtype=DT))
    with pytest.raises(ConfigError, match="shape"):
        layer.load_dense_weight(torch.zeros(cout, cin, 5, 5, dtype=DT))


# -- 6. parameters are registered and trained -------------------------------------------------


@pytest.mark.parametrize(("cin", "cout", "part"), [(4, 8, 1), (4, 8, 4), (6, 12, 3)])
def test_layer_parameters_are_registered(cin, cout, part):
    layer = HetConv2d(cin, cout, 3, part=part, bias=True)
    params = dict(layer.named_parameters())
    expected = {"weight", "bias"} | ({"pointwise"} if part > 1 else set())
    assert set(params) == expected
    assert set(layer.state_dict()) == expected
    assert params["weight"].shape == (cout, cin // part, 3, 3)
    if part > 1:
        assert params["pointwise"].shape == (cout, cin - cin // part)


# (in, out, K, part): the paper's count N·(M·K²/P + M − M/P), part 1 included.
COUNT_SHAPES = [(4, 4, 3, 2), (4, 8, 3, 4), (6, 12, 3, 3), (16, 16, 3, 8), (8, 8, 3, 1),
                (64, 128, 3, 4), (512, 512, 3, 32), (12, 6, 5, 6), (8, 16, 1, 2)]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("cin", "cout", "kernel", "part"), COUNT_SHAPES)
def test_trainable_parameters_are_the_papers_count(cin, cout, kernel, part, bias):
    with torch.device("meta"):
        layer = HetConv2d(cin, cout, kernel, part=part, bias=bias)
    count = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    papers = cout * (cin * kernel ** 2 // part + cin - cin // part)
    assert count == papers + (cout if bias else 0)
    # One trainable weight per tap of the mask: nothing duplicated, nothing missing.
    assert count - (cout if bias else 0) == int(hetconv_mask(cin, cout, kernel, part).sum())


def test_uniform_vgg16_at_part_4_has_the_papers_5_17_million_parameters():
    """The paper's figure counts convolution and fully connected weights (5,172,426 here).
    Batch norm's scales and shifts, trainable too, add 8,448 and tip the total to 5.18 M."""
    parts = SearchSpace("vgg16").uniform_parts(4)
    model = build_model("vgg16", [int(p) for p in parts])
    layers = (HetConv2d, nn.Conv2d, nn.Linear)
    papers = sum(p.numel() for m in model.modules() if isinstance(m, layers)
                 for p in m.parameters(recurse=False))
    batch_norm = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                     for p in m.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert round(papers / 1e6, 2) == 5.17
    assert trainable == papers + batch_norm
    assert round(trainable / 1e6, 2) == 5.18


@pytest.mark.parametrize(("cin", "cout", "part"), [(512, 512, 4), (256, 512, 2), (64, 64, 8)])
def test_init_std_counts_exactly_the_taps_a_filter_reads(cin, cout, part):
    torch.manual_seed(20)
    layer = HetConv2d(cin, cout, 3, part=part)
    fan_in = cin // part * 9 + cin - cin // part
    for tensor in (layer.weight, layer.pointwise):
        assert float(tensor.detach().std()) == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.02)


@pytest.mark.parametrize(("backbone", "size"),
                         [("vgg16", 32), ("resnet20", 16), ("resnet56", 8), ("resnet18", 32),
                          ("resnet34", 32), ("resnet50", 32)])
def test_every_hetconv_weight_in_a_model_gets_a_gradient(backbone, size):
    space = SearchSpace(backbone, input_size=size)
    parts = space.random_parts(np.random.default_rng(18), 1)[0]
    parts[0] = max(space.layers[0].allowed_parts)  # at least one layer with a 1×1 branch
    torch.manual_seed(19)
    model = build_model(backbone, [int(p) for p in parts])
    registered = {id(p) for p in model.parameters()}
    hetconvs = [m for m in model.modules() if isinstance(m, HetConv2d)]
    assert len(hetconvs) == len(space.layers)
    model(torch.randn(2, 3, size, size)).sum().backward()
    for layer in hetconvs:
        tensors = [layer.weight] + ([layer.pointwise] if layer.pointwise is not None else [])
        assert (layer.pointwise is None) == (layer.part == 1)
        for tensor in tensors:
            assert id(tensor) in registered
            assert tensor.grad is not None
            assert torch.count_nonzero(tensor.grad) > 0
