"""What can be searched for one backbone, at one input size and class count."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetconv.errors import ConfigError, param
from space.cost import CostProfile, cost_profile
from space.networks import defaults
from space.trace import SearchableLayer, trace_backbone

SIZE_LIMITS = {"input_size": 4_096, "num_classes": 100_000, "in_channels": 1_024}
"""The most each size of a network may be: far beyond real data (ImageNet-21k has 21,841
classes), yet a network at the limits still fits in memory, so a typo or a crafted file (10**12
classes: a classifier of terabytes) is one error, not an allocation that fails or swaps."""


@dataclass(frozen=True, init=False)
class SearchSpace:
    """One part per searchable layer, each from that layer's allowed parts.

    ``backbone`` is a built-in family or a factory, ``package.module:callable``
    (``space.networks``). ``input_size``, ``num_classes`` and ``in_channels`` default to the
    family's own (32, 10 and 3 for the CIFAR families, 224, 1000 and 3 for the ImageNet ones;
    a factory has none); a search takes them from its data set.
    """

    backbone: str
    input_size: int
    num_classes: int
    in_channels: int

    def __init__(self, backbone: str, input_size: int | None = None,
                 num_classes: int | None = None, in_channels: int | None = None) -> None:
        """``None`` takes the backbone's own value (a factory's network has none)."""
        spec = defaults(backbone)
        object.__setattr__(self, "backbone", backbone)
        given = {"input_size": input_size, "num_classes": num_classes,
                 "in_channels": in_channels}
        for field, value in given.items():
            value = getattr(spec, field) if value is None else value
            if value is None:
                raise ConfigError(f"network {backbone!r} comes from a factory, which says no "
                                  f"{field}; give {param(field)}")
            most = SIZE_LIMITS[field]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ConfigError(f"{param(field)} must be an integer from 1 to {most:,}, got "
                                  f"{value!r}")
            object.__setattr__(self, field, value)
        self.cost  # noqa: B018 - fail now, not later, on an input size the backbone cannot take

    @property
    def layers(self) -> tuple[SearchableLayer, ...]:
        """The searchable layers as this space's input size feeds them."""
        return trace_backbone(self.backbone, self.input_size, self.num_classes,
                              self.in_channels).layers

    @property
    def cost(self) -> CostProfile:
        return cost_profile(self.backbone, self.input_size, self.num_classes, self.in_channels)

    @functools.cached_property
    def max_parts(self) -> np.ndarray:
        """The largest allowed part of every layer: the cheapest architecture."""
        return np.array([layer.allowed_parts[-1] for layer in self.layers], dtype=np.int64)

    @property
    def min_macs(self) -> int:
        """Paper MACs of the cheapest architecture in the space."""
        return int(self.cost.paper_macs(self.max_parts))

    @property
    def max_macs(self) -> int:
        """Paper MACs of the standard network (every part 1)."""
        return int(self.cost.paper_macs(np.ones(len(self.layers), dtype=np.int64)))

    def check_parts(self, parts: Sequence[int]) -> tuple[int, ...]:
        """Return ``parts`` as a tuple, or raise naming the first layer that cannot take it."""
        parts = tuple(parts)
        if len(parts) != len(self.layers):
            raise ConfigError(f"{self.backbone} has {len(self.layers)} searchable layers but "
                              f"{len(parts)} parts were given")
        for layer, part in zip(self.layers, parts, strict=True):
            if isinstance(part, bool) or not isinstance(part, (int, np.integer)) \
                    or part not in layer.allowed_parts:
                raise ConfigError(f"{self.backbone} {layer.describe()}: part {part!r} is not "
                                  f"allowed; choose one of {list(layer.allowed_parts)}")
        return tuple(int(p) for p in parts)

    def uniform_parts(self, part: int) -> tuple[int, ...]:
        """One part for the whole network, as the paper did.

        A layer too narrow for ``part`` takes its largest allowed part below it.
        """
        if isinstance(part, bool) or not isinstance(part, int) or part < 1 \
                or part & (part - 1):
            raise ConfigError(f"uniform part must be a power of two, got {part!r}")
        return tuple(max(p for p in layer.allowed_parts if p <= part) for layer in self.layers)

    def uniform_choices(self) -> list[int]:
        """Every distinct uniform part, from 1 up to the largest any layer allows."""
        largest = int(self.max_parts.max())
        return [2 ** i for i in range(int(math.log2(largest)) + 1)]

    def check_budget(self, budget: float) -> None:
        """Reject a MACs budget that is not a positive number or that no architecture meets."""
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) \
                or not math.isfinite(budget) or budget <= 0:
            raise ConfigError(f"{param('budget')} must be a positive number of MACs, "
                              f"got {budget!r}")
        if budget < self.min_macs:
            raise ConfigError(
                f"budget {budget:.4g} MACs is below the cheapest {self.backbone} architecture "
                f"({self.min_macs:.4g} MACs; the standard network needs {self.max_macs:.4g}); "
                f"raise {param('budget')} to at least {self.min_macs}")

    def random_parts(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` part vectors drawn uniformly from each layer's allowed parts."""
        columns = [rng.choice(np.array(layer.allowed_parts), size=count) for layer in self.layers]
        return np.stack(columns, axis=1).astype(np.int64)

    def fits(self, parts: np.ndarray, budget: float) -> np.ndarray:
        """Bool mask over the rows of ``parts``: paper MACs within ``budget``."""
        return self.cost.paper_macs(parts) <= budget
