"""Latency of an architecture on one device, predicted from per-layer measurements.

MACs are a poor proxy for time (grouped convolutions run slower per MAC than dense ones, and
the deploy form picks a different kernel per layer and device), so a latency budget needs
measured numbers. A network's latency is modelled as one term per searchable layer and part
(the layer measured alone in its deploy form, with its ReLU) plus a constant *remainder*: the
stem, pools, classifier, shortcuts and per-call overhead, found by measuring whole networks and
subtracting their predicted layer sum. The remainder may be negative (each layer measured alone
pays the call overhead that the whole network pays once).

Measurements are only comparable on the same :class:`LatencySpec`: device, batch, dtype,
runtime and torch version. This module holds no SQL and no Optuna; ``search.profiling.profiler``
measures and ``search.store.latency_table`` keeps the numbers.
"""

from __future__ import annotations

import math
import numbers
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import device as TorchDevice  # the field ``LatencySpec.torch`` shadows the module
from torch import dtype as TorchDType

from hetconv.errors import ConfigError, param

DEVICES = ("cpu", "cuda")
RUNTIMES = ("compiled", "eager")
DTYPES = ("float32",)  # the deploy form checks its output at float32 tolerance
MAX_BATCH = 65_536  # beyond any batch served at once; keeps torch and the table's integers sane
TORCH_VERSION = torch.__version__


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"


def _device_label(device: str) -> str:
    """A description that tells machines apart, so their measurements never mix."""
    if device == "cpu":
        threads = torch.get_num_threads()
        return f"cpu: {cpu_name()}, {threads} thread{'s' if threads != 1 else ''}"
    return f"cuda: {torch.cuda.get_device_name(torch.cuda.current_device())}"


@dataclass(frozen=True)
class LatencySpec:
    """What a latency figure depends on besides the layer: where and how the network runs.

    ``device`` is descriptive (``"cpu: AMD EPYC, 2 threads"``, ``"cuda: NVIDIA H100 ..."``);
    its prefix names the torch device. ``runtime`` is ``"compiled"`` (``deploy(...,
    compile=True)``, TorchInductor) or ``"eager"`` (``compile=False``).
    """

    device: str
    batch: int
    dtype: str = "float32"
    runtime: str = "compiled"
    torch: str = TORCH_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or self.device.partition(":")[0] not in DEVICES:
            raise ConfigError(f"latency device {self.device!r} must start with 'cpu:' or "
                              f"'cuda:'")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) \
                or not 1 <= self.batch <= MAX_BATCH:
            raise ConfigError(f"batch must be a positive integer up to {MAX_BATCH:,}, got "
                              f"{self.batch!r}; use e.g. {param('batch')} 1")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not supported; use one of {DTYPES}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r} is unknown; use {param('runtime')} "
                              f"compiled or {param('runtime')} eager")
        if not isinstance(self.torch, str) or not self.torch:
            raise ConfigError(f"torch version must be a non-empty string, got {self.torch!r}")

    @classmethod
    def current(cls, device: str = "cpu", batch: int = 1,
                runtime: str = "compiled") -> LatencySpec:
        """The spec of this machine and process (CPU thread count included)."""
        if device not in DEVICES:
            raise ConfigError(f"device {device!r} is unknown; use {param('device')} cpu or "
                              f"{param('device')} cuda")
        if device == "cuda" and not torch.cuda.is_available():
            build = ("this torch is a CPU-only build" if torch.version.cuda is None
                     else "torch sees no CUDA GPU")
            raise ConfigError(f"{param('device')} cuda was requested but {build} "
                              f"(torch {torch.__version__}); use {param('device')} cpu")
        return cls(device=_device_label(device), batch=batch, runtime=runtime)

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"``: the torch device the measurements run on."""
        return self.device.partition(":")[0]

    @property
    def torch_device(self) -> TorchDevice:
        return TorchDevice(self.device_type)

    @property
    def torch_dtype(self) -> TorchDType:
        return getattr(torch, self.dtype)

    def describe(self) -> str:
        """One line for tables and messages."""
        return f"{self.device}, batch {self.batch}, {self.dtype}, {self.runtime}, " \
               f"torch {self.torch}"

    def to_json(self) -> dict[str, Any]:
        """A plain dict (the search keeps it as an Optuna study attribute)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> LatencySpec:
        """Inverse of :meth:`to_json`; a malformed dict is a :class:`ConfigError`."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ConfigError(f"a latency spec is a dict with exactly the keys "
                              f"{sorted(names)}, got {data!r}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class LatencyModel:
    """Predicted milliseconds of any part vector: per-layer terms plus a constant remainder.

    ``layer_ms[l, j]`` is layer ``l``'s milliseconds at part ``choices[j]`` (NaN where the layer
    does not allow that part). Prediction is vectorised like :meth:`CostProfile.paper_macs`.
    """

    layer_ms: np.ndarray  # (L, len(choices))
    choices: tuple[int, ...]  # the part of each column, ascending
    remainder_ms: float
    spec: LatencySpec | None = None
    backbone: str = "network"
    _columns: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layer_ms = np.asarray(self.layer_ms, dtype=np.float64)
        choices = np.asarray(self.choices, dtype=np.int64)
        if layer_ms.ndim != 2 or layer_ms.shape[1] != len(choices) \
                or np.any(np.diff(choices) <= 0):
            raise ValueError(f"layer_ms must be (layers, {len(choices)}) with ascending choices")
        if np.any(np.isnan(layer_ms).all(axis=1)):
            raise ValueError("every layer needs at least one measured part")
        object.__setattr__(self, "layer_ms", layer_ms)
        object.__setattr__(self, "_columns", choices)

    @classmethod
    def from_rows(cls, rows: Sequence[dict[int, float]], remainder_ms: float,
                  spec: LatencySpec | None = None, backbone: str = "network") -> LatencyModel:
        """Build from one ``{part: ms}`` dict per searchable layer."""
        choices = tuple(sorted({part for row in rows for part in row}))
        table = np.full((len(rows), len(choices)), np.nan)
        for i, row in enumerate(rows):
            for part, ms in row.items():
                table[i, choices.index(part)] = ms
        return cls(table, choices, float(remainder_ms), spec, backbone)

    @property
    def num_layers(self) -> int:
        return self.layer_ms.shape[0]

    def layer_terms(self, parts: np.ndarray) -> np.ndarray:
        """Each layer's milliseconds for each row of ``parts`` (shape ``(..., L)``)."""
        parts = np.asarray(parts, dtype=np.int64)
        if parts.shape[-1:] != (self.num_layers,):
            raise ConfigError(f"{self.backbone} has {self.num_layers} searchable layers but "
                              f"part vectors of length {parts.shape[-1:]} were given")
        column = np.searchsorted(self._columns, parts).clip(max=len(self._columns) - 1)
        terms = self.layer_ms[np.arange(self.num_layers), column]
        bad = (self._columns[column] != parts) | np.isnan(terms)
        if np.any(bad):
            layer = int(np.argwhere(bad)[0][-1])
            raise ConfigError(f"{self.backbone} layer {layer}: no latency for part "
                              f"{int(parts[np.nonzero(bad)][0])}; measured parts: "
                              f"{self.allowed_parts(layer)}")
        return terms

    def allowed_parts(self, layer: int) -> list[int]:
        """The parts layer ``layer`` has a latency for."""
        return [p for p, ms in zip(self.choices, self.layer_ms[layer], strict=True)
                if not math.isnan(ms)]

    def predict_ms(self, parts: np.ndarray) -> np.ndarray:
        """Predicted milliseconds of each row of ``parts`` (shape ``(..., L)`` -> ``(...)``)."""
        return self.remainder_ms + self.layer_terms(parts).sum(axis=-1)

    @property
    def min_ms(self) -> float:
        """The fastest architecture's predicted milliseconds (each layer at its fastest part)."""
        return float(self.remainder_ms + np.nanmin(self.layer_ms, axis=1).sum())

    @property
    def max_ms(self) -> float:
        """The slowest architecture's predicted milliseconds."""
        return float(self.remainder_ms + np.nanmax(self.layer_ms, axis=1).sum())

    def fastest_parts(self) -> np.ndarray:
        """The part vector reaching :attr:`min_ms`."""
        filled = np.where(np.isnan(self.layer_ms), np.inf, self.layer_ms)
        return self._columns[filled.argmin(axis=1)]

    def check_budget(self, ms: float) -> None:
        """Reject a latency budget that is not a positive number or that no architecture meets."""
        check_latency_budget(ms)
        if ms < self.min_ms:
            where = f" on {self.spec.describe()}" if self.spec is not None else ""
            raise ConfigError(
                f"latency budget {ms:.4g} ms is below the fastest {self.backbone} architecture "
                f"({self.min_ms:.4g} ms predicted{where}; the slowest needs "
                f"{self.max_ms:.4g} ms); raise the latency budget to at least "
                f"{math.ceil(self.min_ms * 1000) / 1000:.3f} ms")


def check_latency_budget(ms: object) -> None:
    """The one rule for a latency budget's value: a positive, finite number of milliseconds
    (whether any architecture meets it is :meth:`LatencyModel.check_budget`'s question)."""
    if isinstance(ms, bool) or not isinstance(ms, numbers.Real) \
            or not math.isfinite(ms) or ms <= 0:
        raise ConfigError(f"{param('latency_budget')} must be a positive number of "
                          f"milliseconds, got {ms!r}")


def fit_network_terms(measured_ms: np.ndarray, layer_sum_ms: np.ndarray,
                      weight_mb: np.ndarray) -> tuple[float, float]:
    """``(remainder_ms, ms_per_weight_mb)`` fitted to whole networks by least squares.

    A network takes ``remainder + sum of its layers alone + ms_per_weight_mb * its layers'
    weight megabytes``: a layer timed alone over and over keeps its weights in cache, a network
    whose weights outgrow the cache reads them from memory on every call. ``measured_ms``,
    ``layer_sum_ms`` and ``weight_mb`` hold one entry per measured network. The memory term
    is never negative; without spread in the weights (or with a negative fit) it is 0 and the
    remainder is the median difference.
    """
    measured_ms, layer_sum_ms, weight_mb = (np.asarray(a, dtype=np.float64)
                                            for a in (measured_ms, layer_sum_ms, weight_mb))
    residual = measured_ms - layer_sum_ms
    if np.ptp(weight_mb) > 0 and len(residual) >= 3:
        design = np.stack([np.ones_like(weight_mb), weight_mb], axis=1)
        (remainder, per_mb), *_ = np.linalg.lstsq(design, residual, rcond=None)
        if per_mb >= 0:
            return float(remainder), float(per_mb)
    return float(np.median(residual)), 0.0
