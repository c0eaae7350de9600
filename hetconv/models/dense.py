"""Trained dense weights into a standard network (every part 1), checked key by key.

Compression starts from a trained network. Its state dict must name and shape every parameter
and buffer as the network does, with two exceptions a user meets at once when fine-tuning: the
input normalisation is the search's own (it comes from the data, and a dense checkpoint rarely
has one), and a classifier trained for another class count (ImageNet's 1,000 against the
data's 10) starts fresh, with a note saying so. Anything else that does not match is one
:class:`ConfigError` naming the first offending key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hetconv.errors import ConfigError


def classifier_name(model: nn.Module) -> str | None:
    """The last linear layer in module order: the classifier of every usual network."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def check_state_dict(state: Mapping[Any, object], source: str) -> dict[str, torch.Tensor]:
    """``state`` as weights, checked as data, or one :class:`ConfigError` naming ``source`` and
    the first bad entry: names that are strings, values that are tensors holding their data (not
    on the ``meta`` device) and, where floating point, finite (a network that diverged is no
    start for anything)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: entry {key!r} is named by a {type(key).__name__}, not "
                              f"a string; pass a plain state dict (torch.save(model.state_dict()))")
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"{source}: entry {key!r} is a {type(value).__name__}, not a "
                              f"tensor; pass a plain state dict (torch.save(model.state_dict()))")
        if value.is_meta:
            raise ConfigError(f"{source}: {key!r} is a tensor on the meta device, which holds no "
                              f"values; save the weights of a built network")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ConfigError(f"{source}: {key!r} holds NaN or infinite values; pass weights "
                              f"of a network that trained without diverging")
        tensors[key] = value
    return tensors


def load_dense_state(model: nn.Module, state: Mapping[str, object], source: str,
                     skip_prefix: str | None = None) -> list[str]:
    """Copy ``state`` into ``model``; returns notes on what was kept fresh.

    Keys of ``model`` under ``skip_prefix`` (its input normalisation) are neither required nor
    taken from ``state``.
    """
    own = {key: value for key, value in model.state_dict().items()
           if skip_prefix is None or not key.startswith(skip_prefix)}
    tensors = check_state_dict(state, source)
    # Batch norm's step counter only matters with momentum=None; state dicts often lack it.
    missing = [key for key in own if key not in tensors
               and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in tensors if key not in own
                  and not (skip_prefix and key.startswith(skip_prefix))]
    if missing or unexpected:
        first = (f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the "
                 f"network does not")
        raise ConfigError(f"{source} does not fit the network: it {first} ({len(missing)} "
                          f"missing, {len(unexpected)} unexpected keys); pass the state dict of "
                          f"the same network")
    head = classifier_name(model)
    fresh: list[str] = []
    for key, value in own.items():
        given = tensors.get(key)
        if given is None or given.shape == value.shape:
            continue
        if head is not None and key.startswith(f"{head}.") and given.shape[1:] == value.shape[1:]:
            fresh.append(key)
            continue
        raise ConfigError(f"{source}: {key!r} has shape {tuple(given.shape)}, the network's "
                          f"{tuple(value.shape)}; pass the state dict of the same network")
    with torch.no_grad():
        for key, value in own.items():
            if key not in fresh and key in tensors:
                value.copy_(tensors[key])
    if not fresh:
        return []
    return [f"classifier {head} starts fresh: {source} has {tensors[fresh[0]].shape[0]} "
            f"outputs, this network {own[fresh[0]].shape[0]}"]
