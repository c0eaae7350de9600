"""A Ray Tune searcher that drives Optuna's ask/tell through :class:`BudgetedProposer`.

Ray's own ``OptunaSearch`` cannot reject a proposal without launching it, so this adapter asks
the proposer (which screens the budget) and turns Ray's trial events into Optuna tells. All
database writes happen here, in the driver process, and the searcher never leaves it: Ray
pickles the Tuner's configuration (``tuner.pkl``, for ``Tuner.restore``), but the searcher holds
the study, its storage and its sampler (connections and locks; Optuna 5.1's NSGA-II sampler
holds a ``threading.Lock``), so it pickles to a marker that refuses to load instead.

A storage that fails under it (a full disk, a database gone past the reconnection's retries) is
kept in :attr:`BudgetedOptunaSearcher.storage_error`, not raised into Tune (which logs each with
its stack and goes on): the searcher proposes nothing more, the running trials end, and the
driver stops in one line. What could not be recorded is left RUNNING in the study, which
``--resume`` queues again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ray.tune.search import Searcher

from search.engine.proposer import BudgetedProposer, Proposal, SpaceExhausted
from search.jobs.protocol import TrainingJob, TrialConfig, TrialReport, continued_after
from search.store.database import STORAGE_ERRORS
from search.store.records import TrialRecord, from_attrs

FinishedHook = Callable[[TrialRecord], None]
EpochHook = Callable[[int, TrialReport], None]  # trial number, the epoch's report


class NotRestorable(RuntimeError):
    """Raised when Ray tries to load a pickled searcher: a search resumes from its study."""


def _not_restorable() -> None:
    raise NotRestorable("a HetNAS searcher cannot be restored by Ray (Tuner.restore); the study "
                        "in the database is the search state: run search.run --resume")


class BudgetedOptunaSearcher(Searcher):
    """Hands Ray one within-budget architecture per trial and records every outcome."""

    def __init__(self, proposer: BudgetedProposer, job: TrainingJob,
                 checkpoint_root: str, on_finished: FinishedHook | None = None,
                 on_epoch: EpochHook | None = None,
                 on_exhausted: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.proposer = proposer
        self.job = job
        self.checkpoint_root = checkpoint_root
        self.on_finished = on_finished
        self.on_epoch = on_epoch
        self.on_exhausted = on_exhausted  # told once the space within the budgets is used up
        self._live: dict[str, Proposal] = {}
        self.storage_error: BaseException | None = None  # the first failure of the storage

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        """Pickle to :func:`_not_restorable`: the driver's study, storage and sampler stay in
        the driver (see the module docstring)."""
        return _not_restorable, ()

    @contextlib.contextmanager
    def _kept_storage_failure(self) -> Iterator[None]:
        try:
            yield
        except STORAGE_ERRORS as error:
            self.storage_error = self.storage_error or error

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.storage_error is None:
            with self._kept_storage_failure():
                return self._suggest(trial_id)
        return Searcher.FINISHED  # type: ignore[return-value]  # see _suggest

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            proposal = self.proposer.propose()
        except SpaceExhausted as exhausted:
            if self.on_exhausted is not None:
                self.on_exhausted(str(exhausted))
            # Tune ends the stage once the running trials finish; Ray documents FINISHED as a
            # return value of suggest, though its type hint leaves it out.
            return Searcher.FINISHED  # type: ignore[return-value]
        checkpoint_dir = f"{self.checkpoint_root}/trial-{proposal.number:05d}"
        self.proposer.set_checkpoint(proposal, f"{checkpoint_dir}/checkpoint.pt")
        self._live[trial_id] = proposal
        config = TrialConfig(self.job, proposal.architecture.to_json(), proposal.number,
                             checkpoint_dir, proposal.resume_from, proposal.replicate)
        self.proposer.set_seed(proposal, config.training_seed)
        return config.to_config()

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study in the database is the search state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: ``--resume`` reopens the study instead."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.storage_error is None:
            with self._kept_storage_failure():
                self._on_trial_result(trial_id, result)

    def _on_trial_result(self, trial_id: str, result: dict) -> None:
        proposal = self._live.get(trial_id)
        report = TrialReport.from_result(result)
        if proposal is None or report is None or report.diverged:
            return  # a diverged run's last report repeats its last finished epoch
        restored = continued_after(result, report)
        if restored is not None:
            self.proposer.note_continued(proposal, restored)
        self.proposer.report_epoch(proposal, report.epoch, report.val_accuracy, report.node_id)
        if self.on_epoch is not None:
            self.on_epoch(proposal.number, report)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        proposal = self._live.pop(trial_id, None)
        if proposal is None or self.storage_error is not None:
            return
        with self._kept_storage_failure():
            self._complete(proposal, result, error)

    def _complete(self, proposal: Proposal, result: dict | None, error: bool) -> None:
        report = None if error else TrialReport.from_result(result)
        if report is None:
            status = self.proposer.fail(proposal)
        elif report.diverged:
            status = self.proposer.diverge(proposal, report.epoch, report.diverged)
        else:
            # A trial the scheduler stopped never sends its final, test-evaluated result.
            status = self.proposer.complete(
                proposal, report.val_accuracy, report.test_accuracy, report.epoch,
                self.job.epochs, finished=report.done, seconds=report.train_seconds,
                correct=(report.val_correct, report.test_correct))
        if self.on_finished is not None:
            self.on_finished(from_attrs(proposal.number, status, proposal.trial.user_attrs))
