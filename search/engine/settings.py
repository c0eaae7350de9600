"""Everything one search needs, validated before anything is written anywhere."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from hetconv.errors import ConfigError
from hetconv.models import BACKBONES
from hetconv.reduction import RULES
from search.jobs.protocol import TrainingJob
from search.store.objectives import OBJECTIVES, PARETO_LATENCY
from search.store.storage import DEFAULT_STORAGE
from search.training.data import DatasetInfo, check_dataset
from search.training.normalization import DATA, FLAG, input_normalization
from search.training.parallel import check_workers
from search.training.seeds import MAX_SEED
from search.training.start import DENSE_CONVERSION, check_dense
from space import SearchSpace
from space.latency import RUNTIMES, LatencySpec, check_latency_budget
from space.networks import is_factory

SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("fifo", "asha")
BASELINES = ("all", "near", "none")  # which uniform-P networks are trained beside the search
STRATEGIES = ("standard", "oneshot")  # train every candidate, or estimate them with a supernet
FINALIST_INITS = ("scratch", "supernet")  # how a one-shot search's stand-alone runs start
SUPERNET_RECIPES = ("largest", "sandwich", "strata", "fair")  # a supernet step (docs/ONESHOT.md)


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A study's name becomes folder names (checkpoints, Ray's results): letters, digits, ``.``,
``_`` and ``-``, not starting with a dot or dash, up to 100 characters."""


def check_study_name(name: str, what: str) -> None:
    """Refuse a study name that is no safe folder name; ``what`` says where it came from."""
    if not STUDY_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise ConfigError(f"{what} {shown!r} cannot name a study: use 1 to 100 letters, digits, "
                          f"'.', '_' or '-', starting with a letter or digit (it becomes folder "
                          f"names)")


INTEGER_LIMITS = {
    "epochs": 10_000, "supernet_epochs": 10_000, "batch_size": 65_536, "trials": 100_000,
    "candidates": 1_000_000, "finalists": 10_000, "sandwich": 100, "supernet_workers": 1_024,
    "workers": 1_024, "threads": 1_024, "confirm_top": 1_000, "confirm_seeds": 1_000,
    "max_concurrent": 100_000, "max_failures": 1_000, "seed": MAX_SEED,
    "train_images": 100_000_000}
"""The most each integer option of ``search.run`` and ``search.train`` takes: far beyond any
real run, so a typo (``--epochs 10**30``) is one line here instead of an overflow in torch, numpy
or the database, or a run that never ends."""


def check_integer(name: str, value: object, least: int = 1,
                  rule: str = "a positive integer") -> None:
    """Refuse the option ``--name`` unless it is an integer from ``least`` (which ``rule``
    says in words) to its :data:`INTEGER_LIMITS` entry."""
    most = INTEGER_LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise ConfigError(f"--{name.replace('_', '-')} must be {rule}, at most {most:,}; got "
                          f"{value!r}")


def _resource(name: str, value: float, none_allowed: bool) -> None:
    """Refuse a Ray resource amount that is not a finite number above 0 (or 0, where
    ``none_allowed``); NaN is refused too, though ``nan <= 0`` is false."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not none_allowed):
        rule = "0 or more" if none_allowed else "above 0"
        raise ConfigError(f"--{name} must be a finite number {rule}, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown --{name} {value!r}; choose one of: {', '.join(choices)}")


@dataclass(frozen=True)
class OneShotSettings:
    """The options of ``--strategy oneshot`` alone (``docs/ONESHOT.md``), checked once."""

    supernet_epochs: int | None = None  # the supernet's epochs (default: --epochs)
    candidates: int = 500  # architectures the supernet estimates
    finalists: int = 3  # best estimates then trained stand-alone
    finalist_init: str = "supernet"  # stand-alone runs fine-tuned (measured better)
    supernet_recipe: str = "largest"  # the largest network alone (measured best)
    sandwich: int = 2  # sandwich and strata recipes: subnets per step beside the largest
    supernet_workers: int = 1  # data-parallel Ray Train workers for the supernet

    def training_epochs(self, epochs: int) -> int:
        """The supernet's epochs: ``--supernet-epochs``, else the trials' ``epochs``."""
        return epochs if self.supernet_epochs is None else self.supernet_epochs

    def validate(self, batch_size: int, scheduler: str) -> None:
        """Raise :class:`ConfigError` on the first bad one-shot option."""
        _choice("finalist-init", self.finalist_init, FINALIST_INITS)
        _choice("supernet-recipe", self.supernet_recipe, SUPERNET_RECIPES)
        for name in ("supernet_epochs", "candidates", "finalists", "supernet_workers"):
            value = getattr(self, name)
            if value is not None:
                check_integer(name, value)
        check_integer("sandwich", self.sandwich, 0, "0 or more random subnets per step")
        check_workers(batch_size, self.supernet_workers)
        if self.finalists > self.candidates:
            raise ConfigError(f"--finalists {self.finalists} is more than --candidates "
                              f"{self.candidates}; lower it or estimate more candidates")
        if scheduler == "asha":
            raise ConfigError("--scheduler asha stops trials by their early epochs; a one-shot "
                              "search trains only its finalists: use --scheduler fifo")


@dataclass(frozen=True)
class SearchSettings:
    """The options of ``python -m search.run``; see ``--help`` for what each means."""

    budget: float | None = None  # MACs
    latency_budget: float | None = None  # milliseconds per batch of --latency-batch
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_runtime: str = "compiled"
    backbone: str = "vgg16"
    dataset: str = "digits"
    data_dir: str | None = None
    train_images: int | None = None  # about this many training images; None: all of them
    input_size: int | None = None
    strategy: str = "standard"
    oneshot: OneShotSettings = OneShotSettings()  # read with --strategy oneshot only
    trials: int = 10  # searched architectures; baselines and confirmation runs come on top
    baselines: str = "all"
    confirm_top: int = 1
    confirm_seeds: int = 3
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
    init_from: str | None = None  # trained dense weights every trial starts from
    conversion: str = DENSE_CONVERSION  # the rule for their off-pattern 1x1 weights (measured)
    input_normalization: str = DATA  # what the weights expect the input normalised by

    @functools.cached_property
    def dataset_info(self) -> DatasetInfo:
        """Class count, channels and class names of ``--dataset``, from a cheap check."""
        return check_dataset(self.dataset, self.data_dir)

    @property
    def data_folder(self) -> str | None:
        """``--data-dir`` as an absolute path, which trials in other folders find; None: the
        data set's own place."""
        return str(Path(self.data_dir).resolve()) if self.data_dir else None

    @property
    def space(self) -> SearchSpace:
        """The backbone shaped for the data set: its head has the data's classes, its stem the
        data's channels."""
        info = self.dataset_info
        return SearchSpace(self.backbone, self.input_size, info.num_classes, info.channels)

    @property
    def is_oneshot(self) -> bool:
        return self.strategy == "oneshot"

    def training_job(self, epochs: int | None = None,
                     init_from: str | None = None) -> TrainingJob:
        """What every trial of this search shares (``epochs``: another count than
        ``--epochs``, for the supernet; ``init_from``: a supernet to fine-tune from)."""
        return TrainingJob(
            dataset=self.dataset,
            data_dir=self.data_folder,
            epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
            seed=self.seed, threads=max(1, int(self.cpus_per_trial)), init_from=init_from,
            dense_from=self.dense_weights, conversion=self.conversion,
            train_images=self.train_images, input_normalization=self.input_normalization)

    @property
    def dense_weights(self) -> str | None:
        """``--init-from`` as an absolute path, so workers in other folders find it."""
        return None if self.init_from is None else str(Path(self.init_from).resolve())

    @functools.cached_property
    def dense_notes(self) -> list[str]:
        """What ``--init-from`` leaves fresh (a classifier for other classes); checks the file
        against the network, naming the first key that does not fit."""
        return [] if self.init_from is None else check_dense(self.space, self.init_from)

    @property
    def needs_latency(self) -> bool:
        """A latency budget or the accuracy-latency objective needs the latency table."""
        return self.latency_budget is not None or self.objective == PARETO_LATENCY.name

    @property
    def latency_spec(self) -> LatencySpec:
        """What latencies are measured on: this machine's device, batch, runtime and torch."""
        return LatencySpec.current(self.latency_device, self.latency_batch, self.latency_runtime)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first bad option; touches no storage or cluster."""
        if self.study is not None:
            check_study_name(self.study, "--study")
        self.space  # noqa: B018 (checks the data set and --input-size, which shape the space)
        if self.budget is None and self.latency_budget is None:
            raise ConfigError("give --budget MACS, --latency-budget MS, or both")
        if self.budget is not None:
            self.space.check_budget(self.budget)
        if self.latency_budget is not None:
            check_latency_budget(self.latency_budget)
        self.dense_notes  # noqa: B018 (a file that does not fit fails before anything is written)
        _choice("conversion", self.conversion, RULES)
        if self.init_from is None and self.conversion != DENSE_CONVERSION:
            raise ConfigError(f"--conversion {self.conversion} says how --init-from's dense "
                              f"weights become each trial's; pass --init-from DENSE.pt or leave "
                              f"it out")
        if self.init_from is None and self.input_normalization != DATA:
            raise ConfigError(f"{FLAG} {self.input_normalization} says what input --init-from's "
                              f"dense weights expect; without them the networks start from "
                              f"scratch and normalise by their data's statistics: pass "
                              f"--init-from DENSE.pt or leave {FLAG} out")
        input_normalization(self.input_normalization, self.space.in_channels, self.dataset)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("objective", self.objective, tuple(OBJECTIVES))
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("baselines", self.baselines, BASELINES)
        _choice("strategy", self.strategy, STRATEGIES)
        check_integer("confirm_top", self.confirm_top, 0, "0 (no confirmation) or a positive "
                      "integer")
        if self.confirm_top:
            check_integer("confirm_seeds", self.confirm_seeds, 2, "2 or more (the search's run "
                          "plus at least one more seed; or pass --confirm-top 0)")
        check_integer("trials", self.trials, 0, "0 (the uniform baselines alone) or a positive "
                      "integer")
        # Resumed, it trains what the study has queued (a stopped search's confirmation runs).
        if self.trials == 0 and self.baselines == "none" and not self.is_oneshot \
                and not self.resume:
            raise ConfigError("--trials 0 with --baselines none trains nothing; give --trials "
                              "N or train the baselines")
        check_integer("epochs", self.epochs)
        check_integer("batch_size", self.batch_size)
        check_integer("max_failures", self.max_failures, 0, "0 (no retries) or a positive "
                      "integer")
        check_integer("seed", self.seed, 0, "a non-negative integer")
        if self.train_images is not None:
            check_integer("train_images", self.train_images)
        if self.max_concurrent is not None:
            check_integer("max_concurrent", self.max_concurrent)
        _resource("cpus-per-trial", self.cpus_per_trial, none_allowed=False)
        _resource("gpus-per-trial", self.gpus_per_trial, none_allowed=True)
        if self.is_oneshot:
            self.oneshot.validate(self.batch_size, self.scheduler)
        else:
            given = [f.name for f in dataclasses.fields(OneShotSettings)
                     if getattr(self.oneshot, f.name) != f.default]
            if given:
                flags = ", ".join("--" + name.replace("_", "-") for name in given)
                raise ConfigError(f"{flags} {'is an option' if len(given) == 1 else 'are options'}"
                                  f" of the one-shot search; add --strategy oneshot or leave "
                                  f"{'it' if len(given) == 1 else 'them'} out")
        if self.needs_latency:
            if self.latency_device == "cuda" and not torch.cuda.is_available():
                raise ConfigError("--latency-device cuda: torch sees no CUDA GPU on this "
                                  "machine; profile on the GPU machine or use --latency-device "
                                  "cpu")
            _choice("latency-runtime", self.latency_runtime, RUNTIMES)
            self.latency_spec  # noqa: B018 (validates --latency-device on this machine)
        if self.scheduler == "asha" and self.epochs < 2:
            raise ConfigError("--scheduler asha needs --epochs 2 or more to stop anything early")
        artifacts = Path(self.artifacts_dir)
        existing = next(path for path in (artifacts, *artifacts.parents) if path.exists())
        if not existing.is_dir():
            where = "is" if existing == artifacts else f"lies under {existing}, which is"
            raise ConfigError(f"--artifacts-dir {self.artifacts_dir} {where} not a folder; pass "
                              f"a folder for the trials' checkpoints")


def add_network_options(parser: argparse.ArgumentParser, default_backbone: str) -> None:
    """``--backbone`` and ``--model``: the two ways every command names a network."""
    parser.add_argument(
        "--backbone", default=None,
        help=f"built-in model family: {', '.join(BACKBONES)} (default {default_backbone})")
    parser.add_argument(
        "--model", default=None, metavar="MODULE:FACTORY",
        help="your own network instead of a built-in family: a callable that returns a "
             "torch.nn.Module given the class count (and in_channels=, if it takes that "
             "keyword), e.g. mypkg.models:mynet; its convolutions that can take a part become "
             "HetConv layers (the module must be importable on every Ray worker)")


def network_named(model: str | None, backbone: str | None) -> str | None:
    """The network ``--model`` or ``--backbone`` names (a factory or a family), or None when
    neither is given; both, or a factory not written ``package.module:factory``, is refused."""
    if model is not None and backbone is not None:
        raise ConfigError("--model and --backbone both name the network; pass one of them")
    if model is not None and not is_factory(model):
        raise ConfigError(f"--model {model!r} must be written package.module:factory (a "
                          f"built-in family goes in --backbone)")
    return model if model is not None else backbone
