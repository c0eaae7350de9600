"""Measure per-layer latency on this machine and turn the stored figures into a LatencyModel.

What is timed is what a deployed network runs: each searchable layer, with its ReLU, built with
random weights and put through :func:`hetconv.deployment.deploy` (fastest equivalent form,
channels-last, TorchInductor when the spec's runtime is ``compiled``), on an input of the
layer's real shape at the spec's batch. Only (shape, part) keys missing from the database are
measured, so a second run, or a search on the same kind of machine, costs one query.

A layer alone is not a layer in a network: the network pays its call overhead once and runs
its stem, pools and classifier, and a layer timed alone over and over finds its weights in
cache where a network whose weights outgrow the cache reads them from memory on every call. So
a few whole uniform-P networks are measured too, and a remainder and a cost per megabyte of
layer weights are fitted to them (:func:`space.latency.fit_network_terms`); the model's per-layer
terms are the layer alone plus its weights' share.

Each measurement compiles fresh graphs; dynamo's caches are reset between layer shapes, and a
compiled runtime that produced no graph (dynamo's silent fall-back to eager) is an error, not a
figure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

from hetconv.deployment import DeployedModel, deploy
from hetconv.errors import ConfigError, param
from hetconv.layer import HetConv2d
from hetconv.layout import OrderedHetConv2d, is_power_of_two
from hetconv.timing import interleaved_samples
from search.store.latency_table import (
    Calibration,
    LatencyStore,
    LayerShape,
    Measurement,
    NetworkKey,
)
from space.latency import LatencyModel, LatencySpec, fit_network_terms
from space.networks import build_network
from space.search_space import SearchSpace

TARGET_SECONDS = 0.3  # timed calls per figure: about this long in all ...
ROUNDS = 5  # ... in this many rounds ...
MIN_CALLS = 5  # ... of never fewer calls than this ...
MAX_CALLS = 400  # ... nor more
CALIBRATION_NETWORKS = 5  # uniform-P networks measured to calibrate the layer sum

Report = Callable[[str], None]
K = TypeVar("K")


def layer_shapes(space: SearchSpace) -> tuple[LayerShape, ...]:
    """Each searchable layer's shape as the network feeds it, in part-vector order (from the
    space's one trace, ``space.trace``)."""
    return tuple(LayerShape(layer.in_channels, layer.out_channels, layer.kernel_size,
                            layer.stride, layer.padding, layer.in_height, layer.in_width)
                 for layer in space.layers)


def _check_measurable(spec: LatencySpec) -> None:
    """Figures are stored under ``spec``: refuse to measure them on another machine or torch."""
    here = LatencySpec.current(spec.device_type, spec.batch, spec.runtime)
    if (here.device, here.torch) != (spec.device, spec.torch):
        raise ConfigError(f"cannot measure latency for '{spec.device}' with torch {spec.torch} "
                          f"on this machine ('{here.device}', torch {here.torch}); run the "
                          f"profiler where that spec was made")


def deploy_for(model: nn.Module, example: torch.Tensor, spec: LatencySpec) -> DeployedModel:
    """``deploy`` as the spec's runtime says, making sure a compiled runtime really compiled.

    One process compiles many graphs, and dynamo falls back to eager without an error once a
    cache limit is reached: callers reset dynamo between groups of graphs, and a deploy that
    added no graph is refused here.
    """
    compile = spec.runtime == "compiled"
    graphs = counters["stats"]["unique_graphs"]
    deployed = deploy(model, example, compile=compile)
    if compile and (not deployed.compiled or counters["stats"]["unique_graphs"] == graphs):
        raise ConfigError("TorchInductor did not compile the deploy form on this machine (a C++ "
                          "compiler is needed on CPU, Triton on CUDA); use "
                          f"{param('runtime')} eager")
    return deployed


def quickest_ms(calls: dict[K, Callable[[], object]],
                     device: torch.device) -> dict[K, tuple[float, int]]:
    """Milliseconds per call of each of ``calls``, and how many calls were timed.

    With every core busy a multi-threaded call waits for its threads to be scheduled and runs
    many times slower, so the figure kept is the quickest of :data:`ROUNDS` interleaved rounds:
    the machine as it runs when quiet.
    """
    samples = interleaved_samples(calls, device, ROUNDS, TARGET_SECONDS / ROUNDS, MIN_CALLS,
                                  MAX_CALLS)
    return {key: (1e3 * min(rounds), ROUNDS * calls_per_round)
            for key, (rounds, calls_per_round) in samples.items()}


def _profiled_layer(shape: LayerShape, part: int) -> nn.Module:
    """The searchable layer as a deployed network holds it (class order for power-of-two
    parts), with the bias batch-norm folding gives it."""
    layer = HetConv2d(shape.in_channels, shape.out_channels, shape.kernel_size, shape.stride,
                      shape.padding, part, bias=True)
    if part > 1 and is_power_of_two(part):
        return OrderedHetConv2d.from_layer(layer)
    return layer


def _example(shape: tuple[int, ...], spec: LatencySpec) -> torch.Tensor:
    x = torch.randn(shape, device=spec.torch_device, dtype=spec.torch_dtype)
    return x.contiguous(memory_format=torch.channels_last)


def measure_shape(shape: LayerShape, parts: list[int],
                  spec: LatencySpec) -> dict[int, tuple[float, int]]:
    """Milliseconds (and timed calls) of one layer + ReLU in its deploy form, alone, at each
    of ``parts``; the parts take turns so that noise hits them alike.

    Inside a deployed network the layer reads and writes class order (``hetconv.layout``), so
    it is measured in that form, without the reorders a network pays only at its ends.
    """
    x = _example((spec.batch, shape.in_channels, shape.input_height, shape.input_width), spec)
    torch._dynamo.reset()  # once per shape: the previous shapes' graphs are done with
    deployed = {}
    for part in parts:
        module = nn.Sequential(_profiled_layer(shape, part), nn.ReLU())
        module = module.to(spec.torch_device, spec.torch_dtype)
        deployed[part] = deploy_for(module.eval(), x, spec)
    return quickest_ms({part: functools.partial(d, x) for part, d in deployed.items()},
                       spec.torch_device)


def measure_network(space: SearchSpace, parts: np.ndarray | tuple[int, ...],
                    spec: LatencySpec) -> tuple[float, int]:
    """Milliseconds (and timed calls) of the whole deployed network with ``parts``, timed as
    the layers are."""
    parts = space.check_parts(tuple(int(p) for p in parts))
    model = build_network(space.backbone, parts, space.num_classes, space.in_channels,
                          space.input_size)
    model = model.to(spec.torch_device, spec.torch_dtype).eval()
    x = _example((spec.batch, space.in_channels, space.input_size, space.input_size), spec)
    torch._dynamo.reset()
    deployed = deploy_for(model, x, spec)
    return quickest_ms({0: lambda: deployed(x)}, spec.torch_device)[0]


def layer_weight_mb(shape: LayerShape, part: int, spec: LatencySpec) -> float:
    """Megabytes of weights (bias included) the layer reads per call, at the spec's dtype.

    Counted on the deploy form, which reads a dense 1×1 kernel (its zeros on the K×K pattern
    included), not on the trainable layer, which stores only the paper's weights.
    """
    with torch.device("meta"):
        layer = _profiled_layer(shape, part)
    return sum(p.numel() for p in layer.parameters()) * spec.torch_dtype.itemsize / 1e6


@dataclass
class Profile:
    """What :func:`profile` found: the model, the stored figures it came from, and which of
    them this call measured."""

    model: LatencyModel
    shapes: tuple[LayerShape, ...]
    layers: dict[tuple[LayerShape, int], Measurement]  # each layer alone
    measured: set[tuple[LayerShape, int]]
    calibration: Calibration
    calibration_measured: bool


def _command(space: SearchSpace, spec: LatencySpec, storage_url: str) -> str:
    return (f"python -m search.profile --backbone {space.backbone} --input-size "
            f"{space.input_size} --device {spec.device_type} --batch {spec.batch} --runtime "
            f"{spec.runtime} --storage {storage_url} (and the --dataset of the search: "
            f"{space.in_channels}-channel input, {space.num_classes} classes)")


def _table(space: SearchSpace, shapes: tuple[LayerShape, ...],
           value: Callable[[LayerShape, int], float]) -> list[dict[int, float]]:
    return [{part: value(shape, part) for part in layer.allowed_parts}
            for shape, layer in zip(shapes, space.layers, strict=True)]


def profile(store: LatencyStore, space: SearchSpace, spec: LatencySpec,
            measure_missing: bool = True, force: bool = False,
            report: Report = print) -> Profile:
    """Read what the store holds for ``space`` on ``spec``, measure what it lacks (everything
    with ``force``), store it, and return the model. Reports one line per measured layer shape
    and one for the network calibration; nothing when all was stored."""
    shapes = layer_shapes(space)
    wanted = {(shape, part) for shape, layer in zip(shapes, space.layers, strict=True)
              for part in layer.allowed_parts}
    network = NetworkKey(space.backbone, space.input_size, space.num_classes, space.in_channels)
    stored = {} if force else store.layer_rows(spec, wanted)
    calibration = None if force else store.calibration(spec, network)
    missing = sorted(wanted - set(stored), key=lambda key: (shapes.index(key[0]), key[1]))
    # The calibration is relative to the layer sum: it is measured again when a layer figure
    # changed after it (here, or in a --force run for another backbone with a shared shape).
    stale = calibration is not None and any(
        row.measured_at > calibration.measured_at for row in stored.values())
    if (missing or calibration is None) and not measure_missing:
        raise ConfigError(f"no stored latency for {space.backbone} on {spec.describe()}; run "
                          f"{_command(space, spec, store.url)} first")
    calibrate = measure_missing and (bool(missing) or calibration is None or stale)
    if calibrate:
        _check_measurable(spec)
    layers = dict(stored)
    by_shape: dict[LayerShape, list[int]] = {}
    for shape, part in missing:
        by_shape.setdefault(shape, []).append(part)
    for count, (shape, parts) in enumerate(by_shape.items(), 1):
        figures = {(shape, part): figure
                   for part, figure in measure_shape(shape, parts, spec).items()}
        store.add_layers(spec, figures, replace=force)
        layers.update(store.layer_rows(spec, figures))  # a concurrent profiler's may have won
        numbers = ", ".join(f"P{part} {layers[shape, part].milliseconds:.3f}" for part in parts)
        used_by = ",".join(str(i) for i, s in enumerate(shapes) if s == shape)
        report(f"latency {count}/{len(by_shape)}: {space.backbone} layer {used_by} "
               f"({shape.label()}): {numbers} ms")
    alone = _table(space, shapes, lambda shape, part: layers[shape, part].milliseconds)
    weights = _table(space, shapes, lambda shape, part: layer_weight_mb(shape, part, spec))
    if calibrate:
        remainder, per_mb, count = calibrate_network(space, spec, alone, weights, report)
        store.add_calibration(spec, network, remainder, per_mb, count, replace=True)
        calibration = store.calibration(spec, network)
    assert calibration is not None, "stored before (checked above), or measured just now"
    if calibrate:
        report(f"latency: {space.backbone} whole network = layers alone + "
               f"{calibration.remainder_ms:.3f} ms + {calibration.ms_per_weight_mb:.4f} ms per "
               f"MB of layer weights")
    in_network = [{part: ms + calibration.ms_per_weight_mb * weight[part]
                   for part, ms in row.items()} for row, weight in zip(alone, weights,
                                                                       strict=True)]
    model = LatencyModel.from_rows(in_network, calibration.remainder_ms, spec, space.backbone)
    return Profile(model, shapes, layers, set(missing), calibration, calibrate)


def calibrate_network(space: SearchSpace, spec: LatencySpec, alone: list[dict[int, float]],
                      weights: list[dict[int, float]],
                      report: Report = print) -> tuple[float, float, int]:
    """Measure a few uniform-P networks (from the cheapest to the standard one) and fit how
    they differ from their layers' sum: ``(remainder_ms, ms_per_weight_mb, networks)``."""
    choices = space.uniform_choices()
    count = min(CALIBRATION_NETWORKS, len(choices))
    picks = sorted({choices[round(i * (len(choices) - 1) / max(count - 1, 1))]
                    for i in range(count)})
    measured, layer_sum, weight_mb = [], [], []
    for part in picks:
        parts = space.uniform_parts(part)
        measured.append(measure_network(space, parts, spec)[0])
        layer_sum.append(sum(row[p] for row, p in zip(alone, parts, strict=True)))
        weight_mb.append(sum(row[p] for row, p in zip(weights, parts, strict=True)))
    remainder, per_mb = fit_network_terms(np.array(measured), np.array(layer_sum),
                                          np.array(weight_mb))
    if remainder < -0.5 * min(measured):
        report(f"latency: warning: the layers alone add up to far more than the whole "
               f"{space.backbone} ({min(layer_sum):.3f} vs {min(measured):.3f} ms): the machine "
               f"was probably busy; measure again with --force when it is quiet")
    return remainder, per_mb, len(picks)


def latency_model(storage_url: str, space: SearchSpace, spec: LatencySpec,
                  measure_missing: bool = True, report: Report = print,
                  force: bool = False) -> LatencyModel:
    """The latency model of ``space`` on ``spec``, from the database at ``storage_url``.

    Figures missing from the database are measured on this machine first (one progress line
    each) unless ``measure_missing`` is false, which makes them a :class:`ConfigError` naming
    the profiling command. ``force`` re-measures everything.
    """
    with LatencyStore(storage_url) as store:
        return profile(store, space, spec, measure_missing, force, report).model
