"""Architecture: the value that the sampler, trials, database, export and dashboards pass around."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from hetconv.errors import ConfigError
from hetconv.models.normalize import check_statistics
from space.networks import build_network
from space.search_space import SearchSpace

SCHEMA = "hetnas/architecture"
SCHEMA_VERSION = 2
_KEYS = {"schema", "version", "backbone", "parts", "input", "num_classes"}
_INPUT_KEYS = {"channels", "size", "mean", "std"}
# Optional: the class names, and free-form notes that travel with the architecture (the export's
# accuracy, MACs, trial number), read by people and ignored when building.
_OPTIONAL_KEYS = {"class_names", "result"}
DOCUMENT_KEYS = {"in_channels": "'input.channels'", "input_size": "'input.size'",
                 "num_classes": "'num_classes'"}
"""How an architecture file names the sizes of its network: what a command reading one shows for
these parameters in an error (``run_cli``'s ``flags``), instead of flags it does not have."""
_VERSION_1_LACKS = ("schema version 1 (before HetNAS 0.2) lacks the input channels, the input "
                    "normalisation and the class names, and its weights use the old "
                    "over-parameterised layer; run the search again with this HetNAS and export "
                    "the new study")


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std, on the 0..1 scale, of the images a network was trained on."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Architecture:
    """A backbone with one HetConv part per searchable layer. Immutable and validated.

    ``input_size``, ``num_classes`` and ``in_channels`` shape the network (defaults: the
    backbone's own). ``normalization`` and ``class_names`` describe the data a trained network
    expects and says; a searched architecture has none, an exported one has both where the data
    set has them, and :meth:`build` then gives a network that takes float images in ``[0, 1]``.
    """

    backbone: str
    parts: tuple[int, ...]
    input_size: int | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    normalization: Normalization | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        space = SearchSpace(self.backbone, self.input_size, self.num_classes, self.in_channels)
        object.__setattr__(self, "input_size", space.input_size)
        object.__setattr__(self, "num_classes", space.num_classes)
        object.__setattr__(self, "in_channels", space.in_channels)
        object.__setattr__(self, "parts", space.check_parts(self.parts))
        if self.normalization is not None:
            check_statistics(space.in_channels, self.normalization.mean, self.normalization.std)
        if self.class_names is not None:
            names = tuple(self.class_names)
            if len(names) != space.num_classes or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"class_names must be {space.num_classes} strings, one per "
                                  f"class, got {len(names)}")
            object.__setattr__(self, "class_names", names)

    @classmethod
    def uniform(cls, backbone: str, part: int, input_size: int | None = None,
                num_classes: int | None = None, in_channels: int | None = None) -> Architecture:
        """The paper's network: one part everywhere (clamped per layer to what it allows)."""
        space = SearchSpace(backbone, input_size, num_classes, in_channels)
        return cls(backbone, space.uniform_parts(part), space.input_size, space.num_classes,
                   space.in_channels)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(self.backbone, self.input_size, self.num_classes, self.in_channels)

    def as_searched(self) -> Architecture:
        """The network alone, without its data's statistics and class names: what a trial
        trains and what a checkpoint is checked against."""
        return replace(self, normalization=None, class_names=None)

    def trained_on(self, normalization: Normalization,
                   class_names: Sequence[str] | None) -> Architecture:
        """This architecture with the input statistics and class names of its training data."""
        return replace(self, normalization=normalization,
                       class_names=None if class_names is None else tuple(class_names))

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
        """A freshly initialised ``torch.nn.Module`` of this architecture.

        It normalises its input by :attr:`normalization` when the architecture has one.
        """
        norm = self.normalization
        assert self.num_classes is not None and self.in_channels is not None  # __post_init__
        assert self.input_size is not None
        return build_network(self.backbone, self.parts, self.num_classes, self.in_channels,
                             self.input_size,
                             None if norm is None else norm.mean,
                             None if norm is None else norm.std)

    def to_dict(self) -> dict[str, Any]:
        norm = self.normalization
        document: dict[str, Any] = {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "backbone": self.backbone,
            "parts": list(self.parts),
            "input": {"channels": self.in_channels, "size": self.input_size,
                      "mean": None if norm is None else list(norm.mean),
                      "std": None if norm is None else list(norm.std)},
            "num_classes": self.num_classes}
        if self.class_names is not None:
            document["class_names"] = list(self.class_names)
        return document

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
        if type(version) is int and version == 1:
            raise ConfigError(f"architecture document of {_VERSION_1_LACKS}")
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
        block = data["input"]
        if not isinstance(block, Mapping) or set(block) != _INPUT_KEYS:
            raise ConfigError(f"architecture document: 'input' must be an object with keys "
                              f"{sorted(_INPUT_KEYS)}")
        # Explicit in a file: no backbone default.
        for key, value in (("input.channels", block["channels"]), ("input.size", block["size"]),
                           ("num_classes", data["num_classes"])):
            if type(value) is not int:
                raise ConfigError(f"architecture document: {key!r} must be an integer, "
                                  f"got {value!r}")
        return cls(data["backbone"], tuple(parts), block["size"], data["num_classes"],
                   block["channels"], _read_normalization(block["mean"], block["std"]),
                   _read_class_names(data.get("class_names")))

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Parse and validate :meth:`to_json` output; any problem is one :class:`ConfigError`."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as error:  # ValueError: also a number of 4,301+ digits
            raise ConfigError(f"architecture file is not valid JSON: {error}") from None
        except RecursionError:  # e.g. 100,000 '[': deeper than Python's parser goes
            raise ConfigError("architecture file is not an architecture: its JSON is nested "
                              "too deeply to read; pass the file search.export wrote") from None
        return cls.from_dict(data)


def _read_normalization(mean: Any, std: Any) -> Normalization | None:
    """``input.mean``/``input.std`` of a document: both lists of numbers, or both null."""
    if mean is None and std is None:
        return None
    if not all(isinstance(v, list) for v in (mean, std)):
        raise ConfigError("architecture document: 'input.mean' and 'input.std' must both be "
                          "lists of numbers (one per channel) or both null")
    return Normalization(tuple(mean), tuple(std))


def _read_class_names(names: Any) -> tuple[str, ...] | None:
    if names is None:
        return None
    if not isinstance(names, list):
        raise ConfigError("architecture document: 'class_names' must be a list of strings")
    return tuple(names)
