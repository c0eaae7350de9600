"""Architecture: the value that the sampler, trials, database, export and dashboards pass around."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from hetconv.errors import ConfigError
from hetconv.models import build_model
from space.search_space import SearchSpace

SCHEMA = "hetnas/architecture"
SCHEMA_VERSION = 1
_KEYS = {"schema", "version", "backbone", "parts", "input_size", "num_classes"}
# Free-form notes that travel with the architecture (the export's accuracy, MACs, trial number);
# read by people, ignored when building.
_OPTIONAL_KEYS = {"result"}


@dataclass(frozen=True)
class Architecture:
    """A backbone with one HetConv part per searchable layer. Immutable and validated."""

    backbone: str
    parts: tuple[int, ...]
    input_size: int | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        space = SearchSpace(self.backbone, self.input_size, self.num_classes)
        object.__setattr__(self, "input_size", space.input_size)
        object.__setattr__(self, "num_classes", space.num_classes)
        object.__setattr__(self, "parts", space.check_parts(self.parts))

    @classmethod
    def uniform(cls, backbone: str, part: int, input_size: int | None = None,
                num_classes: int | None = None) -> Architecture:
        """The paper's network: one part everywhere (clamped per layer to what it allows)."""
        space = SearchSpace(backbone, input_size, num_classes)
        return cls(backbone, space.uniform_parts(part), space.input_size, space.num_classes)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(self.backbone, self.input_size, self.num_classes)

    @property
    def macs(self) -> int:
        """Paper-convention MACs per image."""
        return int(self.space.cost.paper_macs(np.array(self.parts)))

    @property
    def executed_macs(self) -> int:
        """MACs per image that the built model's fast path runs."""
        return int(self.space.cost.executed_macs(np.array(self.parts)))

    @property
    def params(self) -> int:
        """Paper-convention parameters (convolution and linear weights and biases)."""
        return int(self.space.cost.paper_params(np.array(self.parts)))

    @property
    def executed_params(self) -> int:
        """Trainable parameters of the built module, batch norm included."""
        return int(self.space.cost.executed_params(np.array(self.parts)))

    def build(self) -> nn.Module:
        """A freshly initialised ``torch.nn.Module`` of this architecture."""
        return build_model(self.backbone, self.parts, self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "backbone": self.backbone,
                "parts": list(self.parts), "input_size": self.input_size,
                "num_classes": self.num_classes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Validate a decoded architecture document and build the value."""
        if not isinstance(data, Mapping):
            raise ConfigError("architecture document must be a JSON object")
        if data.get("schema") != SCHEMA:
            raise ConfigError(f"not an architecture document: 'schema' must be {SCHEMA!r}")
        version = data.get("version")
        # ``type(...) is int``: JSON ``true`` and ``1.0`` compare equal to 1 but are not version 1.
        if type(version) is not int or version != SCHEMA_VERSION:
            raise ConfigError(f"architecture schema version {version!r} is not "
                              f"supported; this HetNAS reads version {SCHEMA_VERSION}")
        missing = sorted(_KEYS - set(data))
        unknown = sorted(set(data) - _KEYS - _OPTIONAL_KEYS)
        if missing or unknown:
            raise ConfigError(f"architecture document: missing keys {missing}, "
                              f"unknown keys {unknown}")
        if not isinstance(data["backbone"], str):
            raise ConfigError("architecture document: 'backbone' must be a string")
        parts = data["parts"]
        if not isinstance(parts, Sequence) or isinstance(parts, str):
            raise ConfigError("architecture document: 'parts' must be a list of integers")
        for key in ("input_size", "num_classes"):  # explicit in a file: no backbone default
            if type(data[key]) is not int:
                raise ConfigError(f"architecture document: {key!r} must be an integer, "
                                  f"got {data[key]!r}")
        return cls(data["backbone"], tuple(parts), data["input_size"], data["num_classes"])

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Parse and validate :meth:`to_json` output; any problem is one :class:`ConfigError`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"architecture file is not valid JSON: {error}") from None
        return cls.from_dict(data)
