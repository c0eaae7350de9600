"""The limits an architecture must keep to be trained: a MACs budget, a latency budget, or both.

Each budget becomes one Optuna constraint (``value <= 0`` is feasible), so the samplers learn
both boundaries, and each architecture carries its predicted latency whenever the study has a
latency table, so the dashboards can draw the latency axis.

A proposal over the budgets is brought within them by :meth:`Budgets.project`: the fewest
doublings of layers' parts, each the one that removes most of what is over, so a tight budget
costs no rejected proposals (at ResNet-20's uniform-P16 MACs not one random vector in 20,000
fits as drawn).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from search.store import records
from space import Architecture, SearchSpace
from space.latency import LatencyModel


@dataclass(frozen=True)
class Screening:
    """What the budgets say about one architecture."""

    latency_ms: float | None
    constraints: dict[str, float] = field(default_factory=dict)  # name -> amount over budget

    @property
    def fits(self) -> bool:
        return all(value <= 0 for value in self.constraints.values())


@dataclass(frozen=True)
class Budgets:
    """``macs`` (paper convention) and ``latency_ms`` budgets; ``None`` means no such limit.

    ``latency`` predicts an architecture's latency; it is present when there is a latency budget
    or the objective trades accuracy against latency.
    """

    macs: float | None = None
    latency_ms: float | None = None
    latency: LatencyModel | None = None

    def __post_init__(self) -> None:
        if self.macs is None and self.latency_ms is None:
            raise ValueError("a search needs a MACs budget, a latency budget, or both")
        if self.latency_ms is not None and self.latency is None:
            raise ValueError("a latency budget needs a latency model to predict latencies")

    def predicted_ms(self, arch: Architecture) -> float | None:
        if self.latency is None:
            return None
        return float(self.latency.predict_ms(np.asarray(arch.parts, dtype=np.int64)))

    def screen(self, arch: Architecture) -> Screening:
        """The architecture's predicted latency and how far it is over each budget."""
        latency_ms = self.predicted_ms(arch)
        constraints = {}
        if self.macs is not None:
            constraints[records.BUDGET_CONSTRAINT] = float(arch.macs - self.macs)
        if self.latency_ms is not None and latency_ms is not None:
            constraints[records.LATENCY_CONSTRAINT] = latency_ms - self.latency_ms
        return Screening(latency_ms, constraints)

    def within(self, space: SearchSpace, parts: np.ndarray) -> np.ndarray:
        """Bool mask over the rows of ``parts``: within every budget (vectorised
        :meth:`screen`, for drawing many architectures at once)."""
        fits = np.ones(len(parts), dtype=bool)
        if self.macs is not None:
            fits &= space.fits(parts, self.macs)
        if self.latency_ms is not None and self.latency is not None:
            fits &= self.latency.predict_ms(parts) <= self.latency_ms
        return fits

    def scaled(self, share: float) -> Budgets:
        """Every budget times ``share`` (the same latency model)."""
        return Budgets(None if self.macs is None else self.macs * share,
                       None if self.latency_ms is None else self.latency_ms * share,
                       self.latency)

    def project(self, space: SearchSpace, parts: tuple[int, ...]) -> tuple[int, ...] | None:
        """``parts`` if within the budgets, else the architecture reached by doubling one
        layer's part at a time, each time the layer whose doubling removes the most of what is
        over the budgets (relative to each budget); None where no doubling helps any more (a
        latency budget below what raising parts can reach)."""
        current = np.asarray(parts, dtype=np.int64)
        ceiling = space.max_parts
        while True:
            excess = self._excess(space, current[None, :])[0]
            if excess <= 0:
                return tuple(int(p) for p in current)
            layers = np.flatnonzero(current < ceiling)
            if layers.size == 0:
                return None
            steps = np.repeat(current[None, :], layers.size, axis=0)
            steps[np.arange(layers.size), layers] *= 2
            after = self._excess(space, steps)
            best = int(np.argmin(after))
            if after[best] >= excess:
                return None
            current = steps[best]

    def _excess(self, space: SearchSpace, parts: np.ndarray) -> np.ndarray:
        """How far each row of ``parts`` is over the budgets, as a sum of shares of each budget
        (0 within every budget)."""
        excess = np.zeros(len(parts))
        if self.macs is not None:
            excess += np.maximum(space.cost.paper_macs(parts) - self.macs, 0) / self.macs
        if self.latency_ms is not None and self.latency is not None:
            excess += np.maximum(self.latency.predict_ms(parts) - self.latency_ms,
                                 0) / self.latency_ms
        return excess

    def describe(self) -> str:
        """``3e+08 MACs and 1.5 ms``: the budgets as the console and errors name them."""
        parts = []
        if self.macs is not None:
            parts.append(f"{self.macs:.4g} MACs")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.4g} ms")
        return " and ".join(parts)
