"""Read an exported architecture (and optionally its weights) and say what it is and costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import torch
from torch import nn

from hetconv.errors import ConfigError
from hetconv.models.normalize import InputNormalization
from search.store.files import check_source
from search.training.checkpoint import read_state_dict
from search.training.normalization import preset_name
from space import Architecture

MAX_ARCHITECTURE_BYTES = 16 << 20
"""An architecture file is a few kilobytes (class names for 100,000 classes stay well below
this); reading no more keeps a huge or endless file (``/dev/zero``) from filling the memory."""


def read_architecture(path: Path) -> Architecture:
    """Parse and validate an architecture JSON file; any problem is one :class:`ConfigError`."""
    return Architecture.from_json(_read_text(path))


def stated_verdict(path: Path) -> str | None:
    """The verdict the export stored in an architecture file (``result.verdict``), if any."""
    result = json.loads(_read_text(path)).get("result")
    verdict = result.get("verdict") if isinstance(result, dict) else None
    return verdict if isinstance(verdict, str) else None


def _read_text(path: Path) -> str:
    """An architecture file's text, refused in one line when it is no such file."""
    check_source(path, "architecture file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_ARCHITECTURE_BYTES + 1)
        if len(data) > MAX_ARCHITECTURE_BYTES:
            raise ConfigError(f"architecture file {path} is larger than "
                              f"{MAX_ARCHITECTURE_BYTES >> 20} MiB, which no architecture is; "
                              f"pass the JSON file search.export wrote")
        return data.decode()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read architecture file {path}: {error}") from None


def load_trained(arch: Architecture, weights: Path) -> nn.Module:
    """``arch`` built with the state dict in ``weights``, loaded without unpickling code."""
    state = read_state_dict(weights, "weights file")
    model = arch.build()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        # torch's first line names the module; the next one names the keys.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ConfigError(f"weights file {weights} does not match the {arch.backbone} "
                          f"architecture ({detail}); pass the weights exported with "
                          f"it") from None
    check_normalization(model, arch, f"weights file {weights}")
    return model.eval()


def check_normalization(model: nn.Module, arch: Architecture, source: str) -> None:
    """Refuse weights whose own input normalisation is not the one ``arch`` states."""
    norm = arch.normalization
    if norm is None:
        return
    stated = [torch.tensor(values, dtype=torch.float32) for values in (norm.mean, norm.std)]
    normalize = cast(InputNormalization, model.normalize)
    held = [buffer.flatten() for buffer in (normalize.mean, normalize.std)]
    if not all(torch.allclose(a, b) for a, b in zip(stated, held, strict=True)):
        raise ConfigError(f"{source} was trained on inputs normalised by mean "
                          f"{held[0].tolist()} and std {held[1].tolist()}, not the architecture's "
                          f"{list(norm.mean)} and {list(norm.std)}; pass the weights exported "
                          f"with it")


def _input_line(arch: Architecture) -> str:
    norm = arch.normalization
    if norm is None:
        return "no normalisation recorded: feed inputs as the network was trained on them"
    mean, std = (", ".join(f"{v:.4f}" for v in values) for values in (norm.mean, norm.std))
    preset = preset_name(norm)
    named = "" if preset is None else f" (--input-normalization {preset})"
    return f"float in [0, 1], normalised inside the network by mean ({mean}), std ({std}){named}"


def describe(arch: Architecture) -> str:
    """A few lines a person reads to know what the file holds."""
    names = "" if arch.class_names is None else f": {', '.join(arch.class_names)}"
    if len(names) > 80:
        names = names[:77] + "..."
    return "\n".join([
        f"backbone     {arch.backbone} ({arch.in_channels}x{arch.input_size}x{arch.input_size} "
        f"input, {arch.num_classes} classes{names})",
        f"input        {_input_line(arch)}",
        f"parts        {' '.join(map(str, arch.parts))}",
        f"paper MACs   {arch.macs:,} ({arch.macs / arch.space.max_macs:.1%} of the standard "
        f"network)",
        f"executed     {arch.executed_macs:,} MACs",
        f"params       {arch.params:,} (paper convention), {arch.executed_params:,} trainable",
    ])
