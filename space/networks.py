"""Where a searched network comes from: a built-in family, or a user's factory.

An architecture names its network by one string (``Architecture.backbone``): a built-in family
(``resnet20``) or ``package.module:factory``, a callable that returns a ``torch.nn.Module``
given the class count (and ``in_channels=`` when it takes that keyword). A factory's network is
made searchable by :func:`hetconv.convert`: every convolution that can take a part
above 1 from the search's powers of two (``space.parts``) becomes a HetConv layer, in module
order, and the input normalisation is put in front (:class:`NormalizedNetwork`), as the
built-in families have it. So the trace, the cost model, the trainer, export and the
dashboards treat both kinds alike.

Importing the factory runs the user's code: an architecture file that names a factory is as
trusted as the module it names.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, cast

import torch
from torch import nn

from hetconv.conversion import convert, convertible
from hetconv.deployment import fold_batchnorms, trace
from hetconv.errors import ConfigError, first_line, param
from hetconv.layer import HetConv2d
from hetconv.models import build_model, get_backbone
from hetconv.models.dense import load_dense_state
from hetconv.models.normalize import NormalizedNetwork
from space.parts import allowed_parts

FACTORY_SEPARATOR = ":"


def is_factory(backbone: str) -> bool:
    """Whether ``backbone`` names a user's factory (``module:callable``), not a family."""
    return FACTORY_SEPARATOR in backbone


@dataclass(frozen=True)
class Defaults:
    """What a network was designed for; None where the data must say (a factory's network)."""

    input_size: int | None
    num_classes: int | None
    in_channels: int | None


def defaults(backbone: str) -> Defaults:
    """The input size, class count and channels a network takes when none are given."""
    if is_factory(backbone):
        resolve_factory(backbone)  # a bad name fails here, before any size is asked for
        return Defaults(None, None, None)
    spec = get_backbone(backbone)
    return Defaults(spec.input_size, spec.num_classes, spec.in_channels)


@functools.cache
def resolve_factory(backbone: str) -> Callable[..., object]:
    """The callable ``module:name`` names, imported once; a bad name is one ConfigError."""
    module_name, _, attribute = backbone.partition(FACTORY_SEPARATOR)
    if not module_name or not attribute:
        raise ConfigError(f"network {backbone!r} must be written package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"network {backbone!r}: cannot import {module_name!r} ({error}); "
                          f"install it or run from the folder that holds it") from None
    except Exception as error:  # the user's module raised while importing: its fault, one line
        raise ConfigError(f"network {backbone!r}: importing {module_name!r} raised "
                          f"{type(error).__name__}: {error}") from None
    factory: object = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"network {backbone!r}: module {module_name!r} has no "
                              f"{attribute!r}")
    if not callable(factory):
        raise ConfigError(f"network {backbone!r}: {attribute!r} is a "
                          f"{type(factory).__name__}, not a callable returning a network")
    return factory


def dense_network(backbone: str, num_classes: int, in_channels: int) -> nn.Module:
    """The factory's network as it builds it: plain convolutions, its own initialisation."""
    factory = resolve_factory(backbone)
    kwargs = {"in_channels": in_channels} if _takes_in_channels(factory) else {}
    try:
        network = factory(num_classes, **kwargs)
    except Exception as error:
        raise ConfigError(f"network {backbone!r} raised {type(error).__name__} when "
                          f"called with num_classes={num_classes}: {error}") from None
    if not isinstance(network, nn.Module):
        raise ConfigError(f"network {backbone!r} returned a {type(network).__name__}, "
                          f"not a torch.nn.Module")
    return network


def _takes_in_channels(factory: Callable[..., object]) -> bool:
    try:
        return "in_channels" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False


@dataclass(frozen=True)
class FactoryLayers:
    """Which convolutions of a factory's network the search gives a part, and why the others
    stay as they are (name -> reason), in module order."""

    searchable: tuple[str, ...]
    left_dense: dict[str, str]


@functools.cache
def factory_layers(backbone: str, num_classes: int, in_channels: int,
                   input_size: int) -> FactoryLayers:
    """Run the factory's network once, in eval mode on the CPU, on one input of the data's
    shape: a searchable layer is a convolution HetConv can replace (:func:`hetconv.convertible`)
    that the search offers a part above 1 (``space.parts``) and that the forward pass calls
    exactly once. One that never runs (unused, training-only, its weight read directly) has no
    cost to search; one that runs twice would be costed once. The output must be
    ``(1, num_classes)`` logits."""
    network = dense_network(backbone, num_classes, in_channels).eval()
    found = convertible(network)
    left = dict(found.ineligible)
    offered = []
    for name, conv in found.eligible.items():
        if len(allowed_parts(conv.in_channels, conv.out_channels)) > 1:
            offered.append(name)
        else:
            left[name] = (f"channels {conv.in_channels}->{conv.out_channels}: no power-of-two "
                          f"part above 1 divides both")
    if not offered:
        _no_searchable_layer(backbone, found.order, left)
    calls: Counter[str] = Counter()
    for name in offered:
        network.get_submodule(name).register_forward_hook(
            lambda _m, _i, _o, name=name: calls.update([name]))
    shape = f"{in_channels}x{input_size}x{input_size}"
    try:
        with torch.no_grad():
            output = network(torch.zeros(1, in_channels, input_size, input_size))
    except Exception as error:  # the user's forward: its message is the diagnosis
        raise ConfigError(f"network {backbone!r} cannot take a {shape} input "
                          f"({first_line(error)}); use "
                          f"another {param('input_size')} or a network for {in_channels}-channel "
                          f"images of that size") from None
    got = _not_logits(output, 1, num_classes)
    if got is not None:
        raise ConfigError(f"network {backbone!r} returned {got} for one {shape} image; it must "
                          f"return a (batch, {num_classes}) tensor of logits, one per class")
    for name in offered:
        if calls[name] != 1:
            left[name] = ("never runs in eval mode" if calls[name] == 0
                          else f"runs {calls[name]} times per forward pass")
    searchable = tuple(name for name in offered if calls[name] == 1)
    if not searchable:
        _no_searchable_layer(backbone, found.order, left)
    return FactoryLayers(searchable, {name: left[name] for name in found.order if name in left})


def check_trains_and_deploys(network: nn.Module, backbone: str, num_classes: int,
                             in_channels: int, input_size: int, batch_size: int) -> None:
    """What the eval-mode trace (:func:`factory_layers`) cannot see of a user's network, checked
    before a search writes anything, each a :class:`ConfigError` naming the cause: one training
    step (train mode, a batch of ``batch_size``: a forward that assumes one image, or returns
    auxiliary outputs in training, fails in every trial), and the deploy form ``search.deploy``
    builds (batch norms folded into their convolutions need running statistics; torch.fx
    cannot trace control flow that depends on the data)."""
    shape = f"{batch_size} images of {in_channels}x{input_size}x{input_size} on the CPU"
    images = torch.randn(batch_size, in_channels, input_size, input_size,
                         generator=torch.Generator().manual_seed(0))
    network.train()
    try:
        output = network(images)
        got = _not_logits(output, batch_size, num_classes)
        if got is None:
            labels = torch.arange(batch_size) % num_classes
            nn.functional.cross_entropy(output, labels).backward()
    except Exception as error:  # the user's forward: its message is the diagnosis
        raise ConfigError(f"network {backbone!r} cannot train on a batch of {shape} "
                          f"({first_line(error)}); its forward must take any batch "
                          f"size") from None
    if got is not None:
        raise ConfigError(f"network {backbone!r} returned {got} in training mode for a batch "
                          f"of {shape}; it must return one (batch, {num_classes}) tensor of "
                          f"logits in training mode too, without auxiliary outputs")
    no_statistics = [name for name, module in network.named_modules()
                     if isinstance(module, nn.modules.batchnorm._BatchNorm)
                     and not module.track_running_stats]
    if no_statistics:
        raise ConfigError(f"network {backbone!r} has batch norms without running statistics "
                          f"({', '.join(no_statistics[:3])}): a deployed network folds them "
                          f"into its convolutions; build them with track_running_stats=True")
    network.eval()
    try:
        with torch.no_grad():
            graph = trace(network)
            fold_batchnorms(graph)
            graph(images[:2])
    except Exception as error:  # torch.fx's message names the construct
        raise ConfigError(f"network {backbone!r} cannot be deployed: torch.fx cannot trace it "
                          f"({first_line(error)}); write its forward without control flow "
                          f"that depends on the data") from None


def _not_logits(output: object, batch: int, num_classes: int) -> object | None:
    """None when ``output`` is the ``(batch, num_classes)`` logits a network must return, else
    what it is instead (a shape, or a type name), for the message."""
    if isinstance(output, torch.Tensor):
        shape = tuple(output.shape)
        return None if shape == (batch, num_classes) else shape
    return type(output).__name__


def _no_searchable_layer(backbone: str, order: Sequence[str], left: Mapping[str, str]) -> NoReturn:
    why = "; ".join(f"{name} ({left[name]})" for name in order[:3]) or "it has no Conv2d at all"
    raise ConfigError(f"network {backbone!r} has no convolution that can take a HetConv part: "
                      f"{why}")


def build_network(backbone: str, parts: Sequence[int] | None, num_classes: int,
                  in_channels: int, input_size: int, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> nn.Module:
    """A network with one part per searchable layer (``None``: every part 1, the standard
    network) for ``input_size`` images, normalising its input by ``mean``/``std`` (default:
    the identity)."""
    if not is_factory(backbone):
        return build_model(backbone, parts, num_classes, in_channels, mean, std)
    names = factory_layers(backbone, num_classes, in_channels, input_size).searchable
    network = dense_network(backbone, num_classes, in_channels)
    parts = [1] * len(names) if parts is None else list(parts)
    if len(parts) != len(names):
        raise ConfigError(f"{backbone} has {len(names)} searchable layers but {len(parts)} parts "
                          f"were given")
    convert(network, dict(zip(names, parts, strict=True)))
    for name in names:
        layer = network.get_submodule(name)
        # A kernel masked to a part above 1 keeps only centre taps off the pattern, which
        # shrinks its output; the layer's own initialisation is scaled for what it reads.
        if isinstance(layer, HetConv2d) and layer.part > 1:
            layer.reset_parameters()
    return NormalizedNetwork(in_channels, network, mean, std)


def load_dense(backbone: str, standard: nn.Module, state: Mapping[str, object],
               source: str) -> list[str]:
    """Load trained dense weights into ``standard``, the network ``backbone`` builds with every
    part 1; returns notes on what starts fresh (:func:`hetconv.models.dense.load_dense_state`).

    A factory's weights are its own network's state dict, or the whole standard network's as
    ``search.train`` writes it (the network under ``network.``); a family's are its state dict
    (or, for the ImageNet ResNets, torchvision's). Neither needs the input normalisation.
    """
    if not is_factory(backbone):
        return load_dense_state(standard, get_backbone(backbone).dense_keys(state), source,
                                skip_prefix="normalize.")
    if _whole_standard_network(standard, state):
        return load_dense_state(standard, state, source, skip_prefix="normalize.")
    return load_dense_state(cast(NormalizedNetwork, standard).network, state, source)


def _whole_standard_network(standard: nn.Module, state: Mapping[str, object]) -> bool:
    """Whether a factory's dense ``state`` is the whole ``standard`` network's (its keys, the
    user's network under ``network.``) rather than the user's network's own, which may have a
    module named ``network`` too."""
    keys = set(state)
    return keys <= standard.state_dict().keys() and any(
        isinstance(key, str) and key.startswith("network.") for key in keys)
