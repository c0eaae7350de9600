"""The HetConv layer and the model families built from per-layer part vectors."""

from hetconv.errors import ConfigError
from hetconv.fold import fold_batchnorm
from hetconv.layer import HetConv2d, MaskedHetConv2d, common_divisors, hetconv_mask, kxk_pattern

__all__ = [
    "ConfigError",
    "HetConv2d",
    "MaskedHetConv2d",
    "common_divisors",
    "fold_batchnorm",
    "hetconv_mask",
    "kxk_pattern",
]
