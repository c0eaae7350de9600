"""The HetConv layer (exact trainable form, batch-norm folding, deploy form) and the model
families built from per-layer part vectors; knows parts, not search spaces or budgets.

``hetconv`` is the root of the project's dependency graph, so its error type
(:mod:`hetconv.errors`, which imports only the standard library) is the one every package
raises. The torch-backed names below are exported lazily (PEP 562): ``from hetconv import
deploy`` works as the README shows, while the torch-free readers (the store, the commands'
error handling, the dashboards) import :mod:`hetconv.errors` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hetconv.errors import ConfigError

if TYPE_CHECKING:
    from hetconv.conversion import convert, convertible
    from hetconv.deployment import DeployedModel, deploy
    from hetconv.fold import fold_batchnorm
    from hetconv.layer import (
        HetConv2d,
        MaskedHetConv2d,
        common_divisors,
        hetconv_mask,
        kxk_pattern,
    )
    from hetconv.supernet import SuperHetConv2d, extract, set_parts, to_supernet

_LAZY = {"convert": "hetconv.conversion", "convertible": "hetconv.conversion",
         "DeployedModel": "hetconv.deployment", "deploy": "hetconv.deployment",
         "fold_batchnorm": "hetconv.fold", "HetConv2d": "hetconv.layer",
         "MaskedHetConv2d": "hetconv.layer", "common_divisors": "hetconv.layer",
         "hetconv_mask": "hetconv.layer", "kxk_pattern": "hetconv.layer",
         "SuperHetConv2d": "hetconv.supernet", "extract": "hetconv.supernet",
         "set_parts": "hetconv.supernet", "to_supernet": "hetconv.supernet"}

__all__ = [
    "ConfigError",
    "DeployedModel",
    "HetConv2d",
    "MaskedHetConv2d",
    "SuperHetConv2d",
    "common_divisors",
    "convert",
    "convertible",
    "deploy",
    "extract",
    "fold_batchnorm",
    "hetconv_mask",
    "kxk_pattern",
    "set_parts",
    "to_supernet",
]


def __getattr__(name: str) -> Any:
    """Import the torch-backed names when first asked for."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hetconv' has no attribute {name!r}")
