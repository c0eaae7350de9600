"""What the driver and a Ray trial say to each other: the one home of their keys.

Ray Tune passes a trial a plain ``config`` dict and takes back plain result dicts. Both are
written and read here, through :class:`TrialConfig` and :class:`TrialReport`, so the searcher,
the runner and the trainable cannot disagree on a key. Ray's scheduler and ``TuneConfig`` name
their metrics with :data:`EPOCH` and :data:`VAL_ACCURACY`.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

from search.training.normalization import DATA
from search.training.start import DENSE_CONVERSION

# Result keys a trial reports (Ray metric names).
EPOCH = "epoch"
VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
TRAIN_LOSS = "train_loss"
TRAIN_SECONDS = "train_seconds"
VAL_CORRECT = "val_correct"  # packed per-image correctness (search.store.paired), final report
TEST_CORRECT = "test_correct"
DONE = "done_training"  # only the final report, after the test split was evaluated
DIVERGED = "diverged"  # the last report of a run that diverged: why, in one line
NODE_ID = "node_id"
_RESTARTED_ITERATION = "iterations_since_restore"  # Ray's own count, from 1 in every attempt


@dataclass(frozen=True)
class TrainingJob:
    """What every trial of one search shares: the data and the training recipe."""

    dataset: str
    data_dir: str | None  # absolute, so workers in other folders find it
    epochs: int
    batch_size: int
    seed: int
    threads: int  # torch threads in the trial's worker
    init_from: str | None = None  # a one-shot supernet checkpoint every trial is fine-tuned from
    dense_from: str | None = None  # trained dense weights every trial starts from (--init-from)
    conversion: str = DENSE_CONVERSION  # how dense_from's kernels become a trial's (--conversion)
    train_images: int | None = None  # about this many training images (--train-images); None: all
    input_normalization: str = DATA  # what the networks normalise by (--input-normalization)


@dataclass(frozen=True)
class TrialConfig:
    """Ray's ``config`` for one trial: the shared job plus this trial's architecture and files."""

    job: TrainingJob
    architecture: str  # Architecture.to_json()
    trial_number: int
    checkpoint_dir: str  # the trial's own epoch checkpoints
    resume_from: str | None  # an earlier trial's checkpoint to continue (a re-queued trial)
    replicate: int = 0  # confirmation run k > 0 trains the architecture with another seed

    @property
    def training_seed(self) -> int:
        """One seed per architecture, so a retried trial can continue the first one's
        checkpoint; confirmation run ``replicate`` gets a seed of its own (same data splits)."""
        return (self.job.seed + zlib.crc32(self.architecture.encode())
                + 1_000_003 * self.replicate) % 2**31

    def to_config(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.job),
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "job"}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialConfig:
        job = TrainingJob(**{f.name: config[f.name] for f in dataclasses.fields(TrainingJob)})
        return cls(job, **{f.name: config[f.name] for f in dataclasses.fields(cls)
                           if f.name != "job"})


@dataclass(frozen=True)
class TrialReport:
    """One result a trial reports: after each epoch, and a final one with the test accuracy."""

    epoch: int
    val_accuracy: float
    node_id: str | None = None
    train_loss: float | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    done: bool = False
    val_correct: str | None = None  # final report: which images the network got right
    test_correct: str | None = None
    diverged: str | None = None  # the run stopped here: its loss or weights are not finite

    def to_result(self) -> dict[str, Any]:
        """The metrics dict for ``tune.report``; keys whose value is None are left out."""
        result = {EPOCH: self.epoch, VAL_ACCURACY: self.val_accuracy, NODE_ID: self.node_id,
                  TRAIN_LOSS: self.train_loss, TEST_ACCURACY: self.test_accuracy,
                  TRAIN_SECONDS: self.train_seconds, DONE: self.done or None,
                  VAL_CORRECT: self.val_correct, TEST_CORRECT: self.test_correct,
                  DIVERGED: self.diverged}
        return {key: value for key, value in result.items() if value is not None}

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> TrialReport | None:
        """The report inside a Ray result; None for a result without one (an errored trial)."""
        if not result or VAL_ACCURACY not in result:
            return None
        return cls(epoch=int(result[EPOCH]), val_accuracy=float(result[VAL_ACCURACY]),
                   node_id=result.get(NODE_ID), train_loss=result.get(TRAIN_LOSS),
                   test_accuracy=result.get(TEST_ACCURACY),
                   train_seconds=result.get(TRAIN_SECONDS), done=bool(result.get(DONE)),
                   val_correct=result.get(VAL_CORRECT), test_correct=result.get(TEST_CORRECT),
                   diverged=result.get(DIVERGED))


@dataclass(frozen=True)
class SupernetTrialConfig:
    """Ray's ``config`` for a one-shot search's supernet trial (``job.epochs`` are the
    supernet's): the part-1 network, its checkpoint folder, and the sandwich recipe."""

    job: TrainingJob
    architecture: str  # Architecture.to_json() of the part-1 network
    checkpoint_dir: str
    pool: tuple[tuple[int, ...], ...]  # architectures near the budgets, for random subnets
    random_subnets: int
    distill: bool
    calibration_images: int
    workers: int  # data-parallel Ray Train workers; 1: this trial trains alone
    smallest: bool = True  # the smallest network in every step (False: the largest alone)
    draw: str = "sandwich"  # how a step picks its smaller networks (SandwichRecipe.draw)
    use_gpu: bool = False  # data-parallel workers each take a GPU (NCCL); else CPUs on gloo

    def to_config(self) -> dict[str, Any]:
        return {"job": dataclasses.asdict(self.job),
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "job"}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SupernetTrialConfig:
        values = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name != "job"}
        values["pool"] = tuple(tuple(int(p) for p in parts) for parts in values["pool"])
        return cls(TrainingJob(**config["job"]), **values)


def continued_after(result: dict[str, Any], report: TrialReport) -> int | None:
    """Epochs restored from a checkpoint when this is the first report of a restarted attempt
    that did not start over (Ray counts iterations from 1 again; a later epoch means it
    continued); None otherwise."""
    if result.get(_RESTARTED_ITERATION) == 1 and report.epoch > 1:
        return report.epoch - 1
    return None
