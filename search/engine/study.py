"""Create a HetNAS study in Optuna storage, or reopen one to resume it."""

from __future__ import annotations

import datetime
import math
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from hetconv.errors import ConfigError
from hetconv.reduction import CENTRE
from search.engine.settings import SearchSettings
from search.store import records
from search.store.objectives import objective_named
from search.store.studies import open_study
from search.training.data import DataSplits
from search.training.normalization import DATA, FLAG
from search.training.start import dense_digest

RESUME = "--resume: "
START_WITHOUT_RESUME = "start one without --resume"


def default_study_name(settings: SearchSettings) -> str:
    """``vgg16-digits-20261125-153000``: new each run, so a rerun never collides. A factory's
    network is named by its callable (``mynet-digits-...``), since the name becomes folders."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    network = settings.backbone.rpartition(":")[2]
    return f"{network}-{settings.dataset}-{stamp}"


def _dense_attr(settings: SearchSettings) -> dict[str, str] | None:
    """What ``--init-from`` the study's trials start from, by what ``--conversion``, and with
    what ``--input-normalization``; None when they start from scratch."""
    path = settings.dense_weights
    return None if path is None else {"path": path, "sha256": dense_digest(path),
                                      "conversion": settings.conversion,
                                      "input_normalization": settings.input_normalization}


STARTUP_TRIALS = 5
"""Random proposals within the budgets before TPE or NSGA-II propose (random search needs none).
Five, as TPE's start-up in HetNAS so far; not yet tuned on the ground-truth table."""


def startup_trials(settings: SearchSettings) -> int:
    """How many start-up proposals the search's sampler gets (0 for random search)."""
    return 0 if settings.sampler == "random" else STARTUP_TRIALS


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``--sampler``; constraints come from ``Trial.set_constraint``."""
    if settings.sampler == "tpe":
        # constant_liar keeps parallel workers from being handed the same proposal. The
        # start-up proposals are the proposer's (random within the budgets, STARTUP_TRIALS of
        # them): TPE's own would count the queued baselines.
        return optuna.samplers.TPESampler(seed=settings.seed, multivariate=True,
                                          constant_liar=True, n_startup_trials=0)
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=16)
    return optuna.samplers.RandomSampler(seed=settings.seed)


def _latency_attrs(settings: SearchSettings) -> dict[str, object]:
    """The latency budget and what the latencies are measured on, as the study records them."""
    return {records.STUDY_LATENCY_BUDGET: settings.latency_budget,
            records.STUDY_LATENCY_SPEC: (settings.latency_spec.to_json()
                                         if settings.needs_latency else None)}


def _comparability_attrs(settings: SearchSettings, data: DataSplits) -> dict[str, object]:
    """The training settings and image counts that say whether two trials' accuracies can be
    compared, and how noisy they are (HetNAS 0.3; studies made before get them on resume)."""
    return {records.STUDY_BATCH_SIZE: settings.batch_size,
            records.STUDY_TRAIN_IMAGES: settings.train_images,
            records.STUDY_SEED: settings.seed,
            records.STUDY_SAMPLER: settings.sampler,
            records.STUDY_STRATEGY: settings.strategy,
            records.STUDY_VAL_IMAGES: data.sizes[1], records.STUDY_TEST_IMAGES: data.sizes[2],
            **_oneshot_attrs(settings)}


def _oneshot_attrs(settings: SearchSettings) -> dict[str, object]:
    """A one-shot study's options that decide what its estimates and finalists mean: resumed
    with others, it would rank runs from the supernet beside runs from scratch, or load a
    supernet checkpoint trained another way. None for the standard strategy."""
    options = settings.oneshot if settings.is_oneshot else None
    return {records.STUDY_SUPERNET_EPOCHS: options and options.training_epochs(settings.epochs),
            records.STUDY_SUPERNET_RECIPE: options and options.supernet_recipe,
            records.STUDY_SANDWICH: options and options.sandwich,
            records.STUDY_FINALIST_INIT: options and options.finalist_init}


def library_versions() -> dict[str, str]:
    """Versions that decide whether two studies' numbers are comparable."""
    import ray
    import torch

    return {"torch": torch.__version__, "optuna": optuna.__version__, "ray": ray.__version__}


def create_study(storage: optuna.storages.BaseStorage, name: str, settings: SearchSettings,
                 data: DataSplits) -> optuna.Study:
    """A new study carrying the search's settings, and the input statistics and class names of
    its data (what an exported network needs), as study attributes."""
    space = settings.space
    objective = objective_named(settings.objective)
    try:
        study = optuna.create_study(storage=storage, study_name=name,
                                    sampler=make_sampler(settings),
                                    directions=objective.directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"study {name!r} already exists in this storage; pass --resume to "
                          f"continue it or --study with a new name") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objective.metric_names)
    budget = None if settings.budget is None else float(settings.budget)
    for key, value in ((records.STUDY_BACKBONE, settings.backbone),
                       (records.STUDY_DATASET, settings.dataset),
                       (records.STUDY_DATA_DIR, settings.data_folder),
                       (records.STUDY_BUDGET, budget),
                       (records.STUDY_INPUT_SIZE, space.input_size),
                       (records.STUDY_NUM_CLASSES, space.num_classes),
                       (records.STUDY_IN_CHANNELS, space.in_channels),
                       (records.STUDY_INPUT_MEAN, list(data.mean)),
                       (records.STUDY_INPUT_STD, list(data.std)),
                       (records.STUDY_CLASS_NAMES, None if data.class_names is None
                        else list(data.class_names)),
                       (records.STUDY_OBJECTIVE, settings.objective),
                       (records.STUDY_EPOCHS, settings.epochs),
                       (records.STUDY_INIT_FROM, _dense_attr(settings)),
                       *_comparability_attrs(settings, data).items(),
                       (records.STUDY_VERSIONS, library_versions()),
                       *_latency_attrs(settings).items()):
        study.set_user_attr(key, value)
    return study


def load_for_resume(storage: optuna.storages.BaseStorage, name: str, settings: SearchSettings,
                    data: DataSplits) -> optuna.Study:
    """Reopen ``name`` after checking it was made with the same backbone, budgets and objective,
    and on the same data (its input statistics and class names, which the export records)."""
    study = open_study(storage, name, make_sampler(settings), RESUME, START_WITHOUT_RESUME)
    stored = study.user_attrs
    if records.STUDY_INPUT_MEAN not in stored:
        raise ConfigError(f"--resume: study {name!r} was made by HetNAS 0.1 (three-channel "
                          f"digits, the over-parameterised layer, no input statistics); its "
                          f"trials cannot be continued: start a new search")
    expected = {records.STUDY_BACKBONE: settings.backbone,
                records.STUDY_DATASET: settings.dataset,
                records.STUDY_OBJECTIVE: settings.objective,
                records.STUDY_INPUT_SIZE: settings.space.input_size,
                records.STUDY_NUM_CLASSES: settings.space.num_classes,
                records.STUDY_IN_CHANNELS: settings.space.in_channels,
                **_latency_attrs(settings)}
    for key, value in expected.items():
        if stored.get(key) != value:
            raise ConfigError(f"--resume: study {name!r} was run with {key} "
                              f"{stored.get(key)!r}, not {value!r}; pass the same options")
    # Settings that make trials incomparable; studies made before they were recorded lack them.
    for key, flag, value in ((records.STUDY_EPOCHS, "--epochs", settings.epochs),
                             (records.STUDY_BATCH_SIZE, "--batch-size", settings.batch_size),
                             (records.STUDY_TRAIN_IMAGES, "--train-images",
                              settings.train_images),
                             (records.STUDY_SAMPLER, "--sampler", settings.sampler),
                             (records.STUDY_STRATEGY, "--strategy", settings.strategy),
                             (records.STUDY_SEED, "--seed", settings.seed),
                             *((key, "--" + key.replace("_", "-"), value)
                               for key, value in _oneshot_attrs(settings).items())):
        if key in stored and stored[key] != value:
            raise ConfigError(f"--resume: study {name!r} was run with {flag} {stored[key]}, "
                              f"not {value}; its trials would not be comparable: pass {flag} "
                              f"{stored[key]}, or start a new study")
    dense = stored.get(records.STUDY_INIT_FROM)
    wanted = _dense_attr(settings)
    if (dense or {}).get("sha256") != (wanted or {}).get("sha256"):
        was = "from scratch" if dense is None else f"from --init-from {dense['path']}"
        now = ("from scratch" if wanted is None else f"from {wanted['path']}"
               + (", which holds other weights" if dense is not None else ""))
        raise ConfigError(f"--resume: study {name!r} started its trials {was}, not {now}; its "
                          f"trials would not be comparable: pass the same --init-from file, or "
                          f"start a new study")
    if dense is not None and wanted is not None:
        # Studies made before an option was recorded did what its value here does.
        for key, flag, before in (("conversion", "--conversion", CENTRE),
                                  ("input_normalization", FLAG, DATA)):
            was = dense.get(key, before)
            if was != wanted[key]:
                raise ConfigError(f"--resume: study {name!r} started its trials from "
                                  f"--init-from's weights with {flag} {was}, not {wanted[key]}; "
                                  f"its trials would not be comparable: pass {flag} {was}, or "
                                  f"start a new study")
    budget = stored.get(records.STUDY_BUDGET)
    if not _same_budget(budget, settings.budget):
        given = "none" if settings.budget is None else f"{settings.budget:g}"
        fix = "leave out --budget" if budget is None else f"pass --budget {budget!r}"
        raise ConfigError(f"--resume: study {name!r} has budget {budget!r} MACs, not {given}; "
                          f"{fix}")
    if not _same_data(stored, data):
        raise ConfigError(f"--resume: study {name!r} was run on other {settings.dataset} data "
                          f"(its input statistics or class names differ: another --seed, or "
                          f"changed files); pass the same --seed and data, or start a new study")
    # Studies made before these were recorded get them now (the data was just checked to be
    # the same; the batch size and sampler cannot be checked and are taken as given).
    for key, value in _comparability_attrs(settings, data).items():
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def _same_data(stored: dict, data: DataSplits) -> bool:
    def close(a: list[float], b: tuple[float, ...]) -> bool:
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9)
                                        for x, y in zip(a, b, strict=True))

    names = None if data.class_names is None else list(data.class_names)
    return close(stored[records.STUDY_INPUT_MEAN], data.mean) \
        and close(stored[records.STUDY_INPUT_STD], data.std) \
        and stored.get(records.STUDY_CLASS_NAMES) == names


def _same_budget(stored: float | None, given: float | None) -> bool:
    if stored is None or given is None:
        return stored is given
    return math.isclose(stored, float(given), rel_tol=1e-9)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a dead driver as failed and queue their architectures again.

    The re-queued trial continues from the failed one's last epoch checkpoint when it has one,
    and carries the failed one's role and parts: a queued trial shows no parameters until it is
    asked for, so whatever looks for an architecture among queued trials (the one-shot
    finalists) reads its parts. Returns the numbers of the trials that were recovered.
    """
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        attrs = {key: trial.user_attrs[key]
                 for key in (records.BASELINE_PART, records.REPLICATE, records.ESTIMATE,
                             records.FINALIST_OF, records.ESTIMATED_ACCURACY, records.PARTS,
                             records.REQUESTED_PARTS, records.STARTUP)
                 if key in trial.user_attrs}
        if trial.user_attrs.get(records.CHECKPOINT):
            attrs[records.RESUME_FROM] = trial.user_attrs[records.CHECKPOINT]
        study.enqueue_trial(trial.params, user_attrs=attrs)
        recovered.append(trial.number)
    return recovered


@dataclass(frozen=True)
class TrialCounts:
    """Trials that used a training slot and finished (complete or stopped early), by role, and
    the baselines and confirmation runs still queued."""

    baselines: int
    searched: int  # one-shot finalists included
    confirmations: int
    queued_baselines: int
    queued_searched: int  # re-queued after an interrupted run; queued one-shot finalists
    queued_confirmations: int
    estimates: int = 0  # one-shot candidates scored by the supernet (not trained)
    queued_estimates: int = 0  # re-queued after an interrupted run

    @property
    def trained(self) -> int:
        return self.baselines + self.searched + self.confirmations

    @property
    def queued(self) -> int:
        return self.queued_baselines + self.queued_searched + self.queued_confirmations


def _role(attrs: dict) -> str:
    if attrs.get(records.ESTIMATE):
        return "estimates"
    if attrs.get(records.REPLICATE):
        return "confirmations"
    return "baselines" if attrs.get(records.BASELINE_PART) else "searched"


def trial_counts(study: optuna.Study) -> TrialCounts:
    """What the study has trained and has queued, by role (baseline, searched, confirmation)."""
    done = {"baselines": 0, "searched": 0, "confirmations": 0, "estimates": 0}
    queued = {"baselines": 0, "searched": 0, "confirmations": 0, "estimates": 0}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            queued[_role(trial.user_attrs)] += 1
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED) \
                and trial.user_attrs.get(records.STATUS) not in (records.REJECTED,
                                                                 records.REPEATED):
            done[_role(trial.user_attrs)] += 1
    return TrialCounts(**done, queued_baselines=queued["baselines"],
                       queued_searched=queued["searched"],
                       queued_confirmations=queued["confirmations"],
                       queued_estimates=queued["estimates"])
