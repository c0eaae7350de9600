"""Everything one search needs, validated before anything is written anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hetconv.errors import ConfigError
from search.data import check_dataset
from search.storage import DEFAULT_STORAGE
from space import SearchSpace

SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("accuracy", "pareto")
SCHEDULERS = ("fifo", "asha")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown --{name} {value!r}; choose one of: {', '.join(choices)}")


@dataclass(frozen=True)
class SearchSettings:
    """The options of ``python -m search.run``; see ``--help`` for what each means."""

    budget: float
    backbone: str = "vgg16"
    dataset: str = "digits"
    data_dir: str | None = None
    input_size: int | None = None
    trials: int = 10
    epochs: int = 4
    batch_size: int = 32
    sampler: str = "tpe"
    objective: str = "accuracy"
    storage: str = DEFAULT_STORAGE
    study: str | None = None
    ray_address: str | None = None
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    scheduler: str = "fifo"
    seed: int = 0
    resume: bool = False
    artifacts_dir: str = "hetnas_artifacts"
    max_failures: int = 2

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(self.backbone, self.input_size)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first bad option; touches no storage or cluster."""
        if self.input_size is not None:
            _positive_int("input-size", self.input_size)
        self.space.check_budget(self.budget)
        check_dataset(self.dataset, self.data_dir)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        for name in ("trials", "epochs", "batch_size", "max_failures"):
            value = getattr(self, name)
            if name == "max_failures" and value == 0:
                continue
            _positive_int(name.replace("_", "-"), value)
        if self.max_concurrent is not None:
            _positive_int("max-concurrent", self.max_concurrent)
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.scheduler == "asha" and self.epochs < 2:
            raise ConfigError("--scheduler asha needs --epochs 2 or more to stop anything early")
        if Path(self.artifacts_dir).exists() and not Path(self.artifacts_dir).is_dir():
            raise ConfigError(f"--artifacts-dir {self.artifacts_dir} exists and is not a folder")
