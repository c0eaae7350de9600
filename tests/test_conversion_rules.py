"""The rules that turn a trained dense kernel into a HetConv kernel (``hetconv.reduction``), one
layer at a time, a whole network at a time, and as a search's trials start from dense weights
(``--conversion``)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.networks import trained_like
from hetconv import ConfigError, HetConv2d, hetconv_mask
from hetconv.conversion import convert, hetconv_from_conv
from hetconv.reduction import CENTRE, LEAST_SQUARES, RULES, TAP_SUM, reduce_kernel
from search.engine.settings import SearchSettings
from search.engine.study import create_study, load_for_resume
from search.jobs.protocol import TrialConfig
from search.run import build_parser, settings_from
from search.store import records
from search.training.augment import unit_range
from search.training.checkpoint import read_checkpoint
from search.training.data import DataSplits, draw_calibration, load_dataset
from search.training.start import CONVERSION_IMAGES, dense_start
from search.training.trainer import TrainConfig, train, trained_architecture
from space import Architecture
from tests.foreign_networks import Foreign

SIZE = 8  # digits at 8 px: a whole ResNet-20 trains in seconds
STANDARD = Architecture.uniform("resnet20", 1, SIZE, 10, 1)
P8 = Architecture.uniform("resnet20", 8, SIZE, 10, 1)


def _conv(stride: int = 1, padding: int = 1, kernel: int = 3) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(16, 32, kernel, stride, padding, bias=True)


def _inputs(seed: int, batch: int = 32) -> torch.Tensor:
    """Non-negative activations whose neighbours are alike, as behind a ReLU in a trained net."""
    x = torch.randn(batch, 16, 11, 11, generator=torch.Generator().manual_seed(seed))
    return F.avg_pool2d(x, 3, 1, 1).relu()


def _error(layer: nn.Module, conv: nn.Conv2d, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((layer(x) - conv(x)).square().mean())


# -- one layer ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (5, 1, 2),
                                                           (3, 1, 0)])
def test_tap_sum_is_exact_on_a_constant_input_away_from_the_borders(kernel, stride, padding):
    conv = _conv(stride, padding, kernel)
    x = torch.rand(2, 16, 1, 1).expand(-1, -1, 11, 11)  # one value per image and channel
    layer = hetconv_from_conv(conv, 8, TAP_SUM)
    with torch.no_grad():
        dense, converted = conv(x), layer(x)
        centre = hetconv_from_conv(conv, 8, CENTRE)(x)
    # Output pixels whose K×K window lies inside the image: no tap reads the zero padding.
    inside = F.conv2d(torch.ones(1, 1, 11, 11), torch.ones(1, 1, kernel, kernel),
                      stride=stride, padding=padding)[0, 0] == kernel ** 2
    torch.testing.assert_close(converted[..., inside], dense[..., inside], rtol=0, atol=1e-5)
    assert (centre[..., inside] - dense[..., inside]).abs().max() > 0.1  # the old rule is not
    if padding:  # at the borders the dense kernel reads zeros the 1×1 weight does not
        assert (converted[..., ~inside] - dense[..., ~inside]).abs().max() > 1e-3


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 0), (2, 2)])
@pytest.mark.parametrize("part", [4, 8])
def test_least_squares_beats_tap_sum_and_centre_on_held_out_inputs(stride, padding, part):
    conv = _conv(stride, padding)
    calibration, held_out = _inputs(1), _inputs(2)
    fitted = hetconv_from_conv(conv, part, LEAST_SQUARES,
                               [(calibration[:16], calibration[:16]),
                                (calibration[16:], calibration[16:])])
    errors = {rule: _error(hetconv_from_conv(conv, part, rule), conv, held_out)
              for rule in (CENTRE, TAP_SUM)}
    assert _error(fitted, conv, held_out) < 0.85 * min(errors.values())
    # On the calibration inputs it is the least-squares optimum of its 1×1 weights: the
    # squared error no longer moves with them (stride, padding and the centre pixels right).
    tap_sum = hetconv_from_conv(conv, part, TAP_SUM)
    for layer in (fitted, tap_sum):
        (layer(calibration) - conv(calibration).detach()).square().sum().backward()
    assert fitted.pointwise.grad.abs().max() < 1e-3 * tap_sum.pointwise.grad.abs().max()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("part", [1, 2, 4, 16])
def test_every_rule_respects_the_mask_and_part_one_keeps_the_kernel(rule, part):
    conv = _conv(2, 1)
    x = _inputs(3, batch=4)
    inputs = [(x, x)] if rule == LEAST_SQUARES else None
    kernel = reduce_kernel(conv.weight.detach(), part, rule, 2, 1, inputs)
    assert not kernel[~hetconv_mask(16, 32, 3, part)].any()
    pattern = hetconv_mask(16, 32, 3, part).clone()
    pattern[:, :, 1, 1] = False  # the K×K taps but the centre: the pattern, kept as trained
    assert torch.equal(kernel[pattern], conv.weight.detach()[pattern])
    layer = hetconv_from_conv(conv, part, rule, inputs)
    assert torch.equal(layer.dense_weight().detach(), kernel)
    if part == 1:
        assert torch.equal(kernel, conv.weight.detach())
        with torch.no_grad():
            assert torch.equal(layer(x), conv(x))


def test_centre_is_the_masked_kernel_as_before_and_the_default():
    conv = _conv()
    for part in (2, 4, 8):
        mask = hetconv_mask(16, 32, 3, part)
        assert torch.equal(reduce_kernel(conv.weight.detach(), part, CENTRE),
                           conv.weight.detach() * mask)
    torch.manual_seed(0)
    model = trained_like(Foreign(10, in_channels=1))
    default, centre = convert(copy.deepcopy(model), 4), convert(copy.deepcopy(model), 4, CENTRE)
    for key, value in default.state_dict().items():
        assert torch.equal(value, centre.state_dict()[key]), key


def test_a_bad_rule_is_one_clear_error():
    conv = _conv()
    with pytest.raises(ConfigError, match="unknown conversion rule 'median'; choose one of: "
                                          "centre, tap-sum, least-squares"):
        hetconv_from_conv(conv, 4, "median")
    with pytest.raises(ConfigError, match="'least-squares' fits each layer to the inputs it "
                                          "sees: give images"):
        convert(Foreign(10, in_channels=1), 2, LEAST_SQUARES)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        convert(Foreign(10, in_channels=1), 2, TAP_SUM, torch.rand(4, 1, SIZE, SIZE), 0)


# -- a whole network ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dense(tmp_path_factory) -> tuple[DataSplits, Path]:
    """ResNet-20 trained dense for two epochs on the digits at 8 px, saved as a user has it."""
    data = load_dataset("digits", SIZE, seed=0)
    folder = tmp_path_factory.mktemp("dense")
    train(STANDARD, data, TrainConfig(epochs=2, batch_size=64, seed=0, device="cpu"),
          checkpoint_dir=folder)
    state = {key: value for key, value in read_checkpoint(folder)["model"].items()
             if not key.startswith("normalize.")}
    path = folder / "dense.pt"
    torch.save(state, path)
    return data, path


@pytest.fixture(scope="module")
def p8_starts(digits_dense) -> dict[str, dict[str, torch.Tensor]]:
    """What a trial of uniform P8 starts from by each rule."""
    data, path = digits_dense
    return {rule: dense_start(P8, data, str(path), rule) for rule in RULES}


def _built(arch: Architecture, data: DataSplits, weights: dict[str, torch.Tensor]) -> nn.Module:
    model = trained_architecture(arch, data).build()
    model.load_state_dict(weights)
    return model.eval()


def _logit_error(model: nn.Module, dense: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x) - dense.eval()(x)).square().mean())


def test_trials_started_by_least_squares_are_closest_to_the_dense_network(digits_dense,
                                                                          p8_starts):
    data, path = digits_dense
    dense = _built(STANDARD, data, dense_start(STANDARD, data, str(path)))
    x = unit_range(data.val_x)
    errors = {rule: _logit_error(_built(P8, data, start), dense, x)
              for rule, start in p8_starts.items()}
    assert errors[LEAST_SQUARES] < errors[TAP_SUM] < errors[CENTRE]


def test_converting_a_plain_network_gives_what_a_trial_starts_from(digits_dense, p8_starts):
    """``convert`` on ``Conv2d`` layers and the trials' supernet path are one rule: the same
    weights, up to float rounding (the converted layers before a layer run as grouped
    convolutions in one, as masked dense ones in the other)."""
    data, path = digits_dense
    plain = _built(STANDARD, data, dense_start(STANDARD, data, str(path))).train()
    layers = [(name, m) for name, m in plain.named_modules() if isinstance(m, HetConv2d)]
    for name, layer in layers:  # the standard network's part-1 layers as plain convolutions
        parent, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent), child, layer.to_dense())
    images = unit_range(draw_calibration(data, CONVERSION_IMAGES, seed=0))
    converted = convert(plain, {name: part for (name, _), part in zip(layers, P8.parts,
                                                                      strict=True)},
                        LEAST_SQUARES, images)
    assert converted.training  # left in the mode it came in
    started = p8_starts[LEAST_SQUARES]
    assert converted.state_dict().keys() == started.keys()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, started[key], rtol=1e-3, atol=1e-4, msg=key)


# -- the search's option ---------------------------------------------------------------------


def _settings(path: Path | None, **overrides: object) -> SearchSettings:
    budget = Architecture.uniform("resnet20", 4, SIZE, 10, 1).macs
    return SearchSettings(budget=budget, backbone="resnet20", input_size=SIZE,
                          init_from=None if path is None else str(path), **overrides)


def test_the_option_reaches_every_trial_and_is_checked(digits_dense):
    _, path = digits_dense
    settings = _settings(path, conversion=LEAST_SQUARES)
    settings.validate()
    job = settings.training_job()
    assert job.conversion == LEAST_SQUARES
    assert TrialConfig.from_config(TrialConfig(job, "{}", 0, "dir", None).to_config()).job == job
    with pytest.raises(ConfigError, match="unknown --conversion 'median'"):
        _settings(path, conversion="median").validate()
    with pytest.raises(ConfigError, match="--conversion centre says how --init-from's dense "
                                          "weights become each trial's; pass --init-from"):
        _settings(None, conversion=CENTRE).validate()


def test_the_command_line_takes_the_option_and_defaults_to_least_squares(digits_dense):
    _, path = digits_dense
    given = ["--budget", "3e8", "--backbone", "resnet20", "--init-from", str(path)]
    assert settings_from(build_parser().parse_args(given)).conversion == LEAST_SQUARES
    chosen = settings_from(build_parser().parse_args([*given, "--conversion", "tap-sum"]))
    assert chosen.conversion == TAP_SUM
    with pytest.raises(SystemExit):
        build_parser().parse_args([*given, "--conversion", "median"])


def test_a_study_resumes_only_with_the_conversion_it_started_with(digits_dense):
    data, path = digits_dense
    storage = optuna.storages.InMemoryStorage()
    settings = _settings(path, conversion=LEAST_SQUARES)
    study = create_study(storage, "converted", settings, data)
    assert study.user_attrs[records.STUDY_INIT_FROM]["conversion"] == LEAST_SQUARES
    resumed = dataclasses.replace(settings, resume=True)
    load_for_resume(storage, "converted", resumed, data)
    with pytest.raises(ConfigError, match="with --conversion least-squares, not tap-sum; its "
                                          "trials would not be comparable: pass --conversion "
                                          "least-squares"):
        load_for_resume(storage, "converted", dataclasses.replace(resumed, conversion=TAP_SUM),
                        data)
    # A study from before the option started its trials by the centre rule.
    older = dict(study.user_attrs[records.STUDY_INIT_FROM])
    del older["conversion"]
    study.set_user_attr(records.STUDY_INIT_FROM, older)
    load_for_resume(storage, "converted", dataclasses.replace(resumed, conversion=CENTRE), data)
    with pytest.raises(ConfigError, match="with --conversion centre, not least-squares"):
        load_for_resume(storage, "converted", resumed, data)
