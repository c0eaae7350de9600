"""What a search optimises: the one home of the objectives' names, directions and values.

A study's objective is recorded by name (the study attribute ``records.STUDY_OBJECTIVE``);
everything that depends on it (the Optuna directions, the metric names shown by
optuna-dashboard, the values a finished trial is told, whether a learning curve feeds a pruner)
asks the :class:`Objective` of that name instead of branching on the string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hetconv.errors import ConfigError

ACCURACY_METRIC = "accuracy"
MACS_METRIC = "MACs"
LATENCY_METRIC = "latency_ms"


@dataclass(frozen=True)
class Objective:
    """Maximise validation accuracy, alone or against a cost that is minimised."""

    name: str
    cost_metric: str | None  # MACS_METRIC, LATENCY_METRIC, or None for accuracy alone
    description: str

    @property
    def is_pareto(self) -> bool:
        """Two values (accuracy and a cost): Optuna keeps a front, and reports no pruning curve."""
        return self.cost_metric is not None

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return ["maximize", "minimize"] if self.is_pareto else ["maximize"]

    @property
    def metric_names(self) -> list[str]:
        return [ACCURACY_METRIC] if self.cost_metric is None \
            else [ACCURACY_METRIC, self.cost_metric]

    def values(self, accuracy: float, paper_macs: int, latency_ms: float | None) -> list[float]:
        """The values a trial is told: accuracy, then its cost when the objective has one."""
        if self.cost_metric is None:
            return [accuracy]
        if self.cost_metric == LATENCY_METRIC:
            if latency_ms is None:
                raise ValueError(f"objective {self.name!r} needs a predicted latency")
            return [accuracy, latency_ms]
        return [accuracy, float(paper_macs)]


ACCURACY = Objective("accuracy", None, "maximise accuracy")
PARETO_MACS = Objective("pareto", MACS_METRIC, "maximise accuracy, minimise paper MACs")
PARETO_LATENCY = Objective("pareto-latency", LATENCY_METRIC,
                           "maximise accuracy, minimise predicted latency")
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (ACCURACY, PARETO_MACS, PARETO_LATENCY)}


def objective_named(name: str) -> Objective:
    """The objective called ``name``; a ConfigError naming the choices otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, not {name!r}") \
            from None
