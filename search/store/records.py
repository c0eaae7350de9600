"""The trial record: how a search writes each trial into the Optuna study, and how to read it.

This module is the only place that spells the user-attribute and study-attribute keys. The
search writes through it and the dashboards and the export read through it, so the two sides
cannot drift apart. It needs Optuna and nothing else of the project (no Ray, no torch).

Every Optuna trial of a HetNAS study is one of:

* ``complete``: trained for all its epochs; Optuna state COMPLETE, feasible constraint.
* ``rejected``: over a budget that no projection reaches (``search.engine.budgets``; a latency
  budget raising parts cannot meet), never trained. Optuna state COMPLETE with accuracy 0 and a
  positive ``macs_over_budget`` or ``latency_over_budget_ms`` constraint, so the sampler learns
  where the boundary is while Optuna's own ``best_trial`` and Pareto front (which honour
  constraints) leave it out.
* ``repeated``: the sampler proposed an architecture the study had trained (or estimated)
  already; answered with that run's values (``repeat_of`` names it), never trained, never a
  result of its own; Optuna state COMPLETE (PRUNED where the run was stopped early).
* ``early_stopped``: stopped by the scheduler (ASHA) before its last epoch; Optuna state PRUNED,
  so it never counts as a full result.
* ``failed``: the trial errored, or the driver died while it ran; Optuna state FAIL.
* ``estimated``: a one-shot search's candidate, scored by the supernet and never trained on its
  own (marked ``supernet_estimate``); Optuna state COMPLETE with the estimate as its value, so
  the samplers learn from it, but never a full result: the export and every table of results
  leave it out, and its ``val_accuracy`` is an estimate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

# Trial user attributes.
STATUS = "status"
PARTS = "parts"
PAPER_MACS = "paper_macs"
EXECUTED_MACS = "executed_macs"
PARAMS = "params"
EPOCHS_TRAINED = "epochs_trained"
EPOCHS_PLANNED = "epochs_planned"
WALL_SECONDS = "wall_seconds"
VAL_ACCURACY = "val_accuracy"  # last validation accuracy, also of early-stopped trials
TEST_ACCURACY = "test_accuracy"
BUDGET_CONSTRAINT = "macs_over_budget"  # also the Optuna constraint's name; <= 0 is feasible
LATENCY = "latency_ms"  # latency predicted from the study's latency table (milliseconds)
LATENCY_CONSTRAINT = "latency_over_budget_ms"  # Optuna constraint name too; <= 0 is feasible
BASELINE_PART = "baseline_part"  # set on the uniform-P networks of the paper
CHECKPOINT = "checkpoint"
RESUME_FROM = "resume_from"  # a re-proposed trial continues this checkpoint
ARCHITECTURE = "architecture"  # Architecture.to_json()
NODE = "node"  # id of the Ray node that trained the trial (last attempt)
CONTINUED_AFTER = "continued_after_epochs"  # epochs restored from checkpoints on each restart
SEED = "seed"  # the training seed (weights init, batch order, augmentation)
REPLICATE = "replicate"  # confirmation run k (1, 2, ...) of an architecture: another seed
ESTIMATE = "supernet_estimate"  # True on a one-shot candidate scored by the supernet
ESTIMATED_ACCURACY = "estimated_accuracy"  # the supernet's estimate, on a trained architecture
FINALIST_OF = "finalist_of"  # the estimate trial whose architecture this trial trains
REQUESTED_PARTS = "requested_parts"  # the sampler's suggestion, where the budgets changed it
REPEAT_OF = "repeat_of"  # a repeated proposal: the trial whose record answered it
STARTUP = "startup"  # a start-up proposal: random within the budgets, before the sampler's own
VAL_CORRECT = "val_correct"  # which validation images the final network got right (packed bits,
TEST_CORRECT = "test_correct"  # search.store.paired.pack_correct); the same for the test images
DIVERGENCE = "divergence"  # on a diverged trial: the one line that says where and what to change

# Status values.
COMPLETE = "complete"
REJECTED = "rejected"
REPEATED = "repeated"  # an architecture the study had trained already: answered, not trained
EARLY_STOPPED = "early_stopped"
DIVERGED = "diverged"  # its loss or weights left the finite numbers: an outcome, not a crash
FAILED = "failed"
RUNNING = "running"
QUEUED = "queued"  # enqueued (a baseline or a retried trial), not started yet
ESTIMATED = "estimated"  # scored by the one-shot supernet, not trained

# Study user attributes.
STUDY_BACKBONE = "backbone"
STUDY_DATASET = "dataset"
STUDY_BUDGET = "budget_macs"  # None when the search has only a latency budget
STUDY_LATENCY_BUDGET = "latency_budget_ms"  # None when the search has no latency budget
STUDY_LATENCY_SPEC = "latency_spec"  # what the latencies were measured on (LatencySpec.to_json)
STUDY_INPUT_SIZE = "input_size"
STUDY_NUM_CLASSES = "num_classes"
STUDY_IN_CHANNELS = "in_channels"
STUDY_INPUT_MEAN = "input_mean"  # per channel, 0..1 scale: the training split's (seed-drawn),
# or --input-normalization's; what every network of the study normalises its input by
STUDY_INPUT_STD = "input_std"
STUDY_CLASS_NAMES = "class_names"  # None where the data set has none
STUDY_OBJECTIVE = "objective"  # an Objective's name (search.store.objectives)
STUDY_EPOCHS = "epochs"
STUDY_BATCH_SIZE = "batch_size"
STUDY_TRAIN_IMAGES = "train_images"  # --train-images: the training subset's size asked for
STUDY_SEED = "seed"  # --seed: the data's split and every seed drawn from it
STUDY_DATA_DIR = "data_dir"  # --data-dir, absolute; None: the data set's own place
STUDY_SAMPLER = "sampler"
STUDY_VAL_IMAGES = "val_images"  # images each validation accuracy is measured on
STUDY_TEST_IMAGES = "test_images"
STUDY_VERSIONS = "versions"
STUDY_STRATEGY = "strategy"  # "standard" (every candidate trained) or "oneshot"
# Dense weights trials start from: path, SHA-256, conversion, input_normalization; None
STUDY_INIT_FROM = "init_from"
STUDY_SUPERNET = "supernet"  # a one-shot study's supernet: checkpoint, epochs, accuracy, time
# A one-shot study's options that decide what its estimates and finalists mean (None: standard).
STUDY_SUPERNET_EPOCHS = "supernet_epochs"
STUDY_SUPERNET_RECIPE = "supernet_recipe"
STUDY_SANDWICH = "sandwich"
STUDY_FINALIST_INIT = "finalist_init"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the dashboards and the export see it."""

    number: int
    status: str  # COMPLETE, REJECTED, EARLY_STOPPED, DIVERGED, FAILED, RUNNING, QUEUED, ESTIMATED
    parts: tuple[int, ...]
    accuracy: float | None  # last validation accuracy; None when never trained
    test_accuracy: float | None
    paper_macs: int | None
    executed_macs: int | None
    params: int | None
    latency_ms: float | None  # predicted; None when the study has no latency table
    epochs_trained: int
    wall_seconds: float | None
    baseline_part: int | None
    checkpoint: str | None
    architecture: str | None
    replicate: int = 0  # 0: the search's own run; k > 0: confirmation run k (another seed)
    estimate: bool = False  # a one-shot candidate: ``accuracy`` is the supernet's estimate
    estimated_accuracy: float | None = None  # the supernet's estimate of a trained architecture
    val_correct: str | None = None  # packed per-image correctness (search.store.paired)
    test_correct: str | None = None
    divergence: str | None = None  # why a diverged run stopped, in one line

    @property
    def is_full_result(self) -> bool:
        """Trained to the end and within budget: the only trials that may be 'best'."""
        return self.status == COMPLETE

    @property
    def kind(self) -> str:
        """``uniform P4``, ``searched``, or either with ``confirmation`` for a re-run;
        ``supernet estimate`` for a one-shot candidate."""
        if self.estimate:
            return "supernet estimate"
        base = f"uniform P{self.baseline_part}" if self.baseline_part else "searched"
        return f"{base} confirmation" if self.replicate else base


def _status(trial: FrozenTrial) -> str:
    if trial.state == TrialState.WAITING:
        return QUEUED
    if trial.state == TrialState.RUNNING:
        return RUNNING
    if trial.state == TrialState.FAIL:
        return FAILED
    if trial.state == TrialState.PRUNED:  # stopped early, or told so (diverged, a repeat)
        stored = trial.user_attrs.get(STATUS)
        return stored if stored in (DIVERGED, REPEATED) else EARLY_STOPPED
    return trial.user_attrs.get(STATUS, COMPLETE)


def from_attrs(number: int, status: str, attrs: dict) -> TrialRecord:
    """A record from a trial's number, status and user attributes."""
    return TrialRecord(
        number=number, status=status, parts=tuple(attrs.get(PARTS, ())),
        accuracy=attrs.get(VAL_ACCURACY), test_accuracy=attrs.get(TEST_ACCURACY),
        paper_macs=attrs.get(PAPER_MACS), executed_macs=attrs.get(EXECUTED_MACS),
        params=attrs.get(PARAMS), latency_ms=attrs.get(LATENCY),
        epochs_trained=attrs.get(EPOCHS_TRAINED, 0),
        wall_seconds=attrs.get(WALL_SECONDS), baseline_part=attrs.get(BASELINE_PART),
        checkpoint=attrs.get(CHECKPOINT), architecture=attrs.get(ARCHITECTURE),
        replicate=attrs.get(REPLICATE, 0), estimate=bool(attrs.get(ESTIMATE, False)),
        estimated_accuracy=attrs.get(ESTIMATED_ACCURACY), val_correct=attrs.get(VAL_CORRECT),
        test_correct=attrs.get(TEST_CORRECT), divergence=attrs.get(DIVERGENCE))


def to_record(trial: FrozenTrial) -> TrialRecord:
    """Read one Optuna trial through the record keys."""
    return from_attrs(trial.number, _status(trial), trial.user_attrs)


def read_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as a record, in trial-number order."""
    return [to_record(t) for t in study.get_trials(deepcopy=False)]


def diverged_parts(records: Iterable[TrialRecord]) -> set[tuple[int, ...]]:
    """Architectures of which a run diverged: no network to pick on the seeds that happened not
    to, so the rankings leave them out."""
    return {r.parts for r in records if r.status == DIVERGED}


def ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Full, feasible results of the search's own runs, best accuracy first (fewer MACs breaks
    ties); architectures with a run that diverged are left out (see :func:`diverged_parts`).
    Confirmation runs are read through :func:`runs_by_architecture` instead."""
    records = list(records)
    diverged = diverged_parts(records)
    full = [r for r in records if r.is_full_result and r.accuracy is not None and not r.replicate
            and r.parts not in diverged]
    return sorted(full, key=lambda r: (-(r.accuracy or 0.0), r.paper_macs or 0, r.number))


def top_ranked(records: Iterable[TrialRecord], limit: int) -> list[tuple[int, TrialRecord]]:
    """The ``limit`` best searched architectures and every uniform baseline with their ranks
    in :func:`ranked`, in rank order: what every "top architectures" table lists (the
    baselines stay whatever their rank, to compare against)."""
    ranks = list(enumerate(ranked(records), start=1))
    best = [r.number for _, r in ranks if not r.baseline_part][:limit]
    return [(rank, r) for rank, r in ranks if r.baseline_part or r.number in best]


@dataclass(frozen=True)
class ArchitectureRuns:
    """Every complete run of one architecture: the search's own and its confirmation runs."""

    runs: tuple[TrialRecord, ...]  # the search's own run first, then by replicate

    @property
    def first(self) -> TrialRecord:
        return self.runs[0]

    @property
    def confirmed(self) -> bool:
        """Trained with more than one seed."""
        return len(self.runs) > 1

    @property
    def val_accuracies(self) -> tuple[float, ...]:
        return tuple(r.accuracy for r in self.runs if r.accuracy is not None)

    @property
    def test_accuracies(self) -> tuple[float, ...]:
        return tuple(r.test_accuracy for r in self.runs if r.test_accuracy is not None)

    @property
    def mean_val_accuracy(self) -> float:
        values = self.val_accuracies
        return sum(values) / len(values) if values else 0.0

    @property
    def selection_accuracy(self) -> float:
        """What architectures are ranked by: the mean validation accuracy of the confirmation
        runs where there are any. The search's own run is left out of it because it was picked
        as the best of many on that same validation split (the winner's curse would favour
        searched architectures over the baselines); with one run, that run's accuracy."""
        again = [r.accuracy for r in self.runs if r.replicate and r.accuracy is not None]
        return sum(again) / len(again) if again else self.mean_val_accuracy

    @property
    def best_run(self) -> TrialRecord:
        """The run whose weights an export ships: the best on validation."""
        return max(self.runs, key=lambda r: (r.accuracy or 0.0, -r.number))


def runs_by_architecture(records: Iterable[TrialRecord]) -> list[ArchitectureRuns]:
    """Complete runs grouped by architecture (the search's own run first), confirmed ones first
    by :attr:`ArchitectureRuns.selection_accuracy`; architectures with one run follow, by their
    accuracy.

    A group holds the search's first run of the architecture and its confirmation runs: a
    sampler that proposes an architecture again trains it with the same seed, which is no
    second opinion. Architectures with a run that diverged are left out (see
    :func:`diverged_parts`)."""
    records = list(records)
    diverged = diverged_parts(records)
    groups: dict[tuple[int, ...], list[TrialRecord]] = {}
    for record in sorted(records, key=lambda r: r.number):
        if not (record.is_full_result and record.accuracy is not None) \
                or record.parts in diverged:
            continue
        group = groups.setdefault(record.parts, [])
        if record.replicate or not any(not r.replicate for r in group):
            group.append(record)
    runs = [ArchitectureRuns(tuple(sorted(group, key=lambda r: (r.replicate, r.number))))
            for group in groups.values()]
    return sorted(runs, key=lambda g: (not g.confirmed, -g.selection_accuracy,
                                       g.first.paper_macs or 0, g.first.number))
