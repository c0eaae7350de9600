"""Read an exported architecture (and optionally its weights) and say what it is and costs."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from hetconv.errors import ConfigError
from space import Architecture


def read_architecture(path: Path) -> Architecture:
    """Parse and validate an architecture JSON file; any problem is one :class:`ConfigError`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read architecture file {path}: {error}") from None
    return Architecture.from_json(text)


def load_trained(arch: Architecture, weights: Path) -> nn.Module:
    """``arch`` built with the state dict in ``weights``, loaded without unpickling code."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"weights file {weights} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"weights file {weights} is not a plain PyTorch state dict "
                          f"({reason})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {weights} holds a {type(state).__name__}, not a "
                          f"state dict")
    model = arch.build()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"weights file {weights} does not match the {arch.backbone} "
                          f"architecture ({str(error).splitlines()[0]}); pass the weights "
                          f"exported with it") from None
    return model.eval()


def describe(arch: Architecture) -> str:
    """A few lines a person reads to know what the file holds."""
    return "\n".join([
        f"backbone     {arch.backbone} ({arch.input_size}x{arch.input_size}, "
        f"{arch.num_classes} classes)",
        f"parts        {' '.join(map(str, arch.parts))}",
        f"paper MACs   {arch.macs:,} ({arch.macs / arch.space.max_macs:.1%} of the standard "
        f"network)",
        f"executed     {arch.executed_macs:,} MACs",
        f"params       {arch.params:,} (paper convention), {arch.executed_params:,} trainable",
    ])
