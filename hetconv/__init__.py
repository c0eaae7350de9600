"""The HetConv layer and the model families built from per-layer part vectors.

The layer, folding and models load on first use, so modules that only need
:class:`ConfigError` (the storage, the CLIs, the dashboards) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hetconv.errors import ConfigError

if TYPE_CHECKING:
    from hetconv.deployment import DeployedModel, deploy
    from hetconv.fold import fold_batchnorm
    from hetconv.layer import (
        HetConv2d,
        MaskedHetConv2d,
        common_divisors,
        hetconv_mask,
        kxk_pattern,
    )

_LAZY = {"DeployedModel": "hetconv.deployment", "deploy": "hetconv.deployment",
         "fold_batchnorm": "hetconv.fold", "HetConv2d": "hetconv.layer",
         "MaskedHetConv2d": "hetconv.layer", "common_divisors": "hetconv.layer",
         "hetconv_mask": "hetconv.layer", "kxk_pattern": "hetconv.layer"}

__all__ = [
    "ConfigError",
    "DeployedModel",
    "HetConv2d",
    "MaskedHetConv2d",
    "common_divisors",
    "deploy",
    "fold_batchnorm",
    "hetconv_mask",
    "kxk_pattern",
]


def __getattr__(name: str) -> Any:
    """Import the torch-backed names when first asked for."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hetconv' has no attribute {name!r}")
