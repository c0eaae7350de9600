"""A Ray Tune searcher that drives Optuna's ask/tell through :class:`BudgetedProposer`.

Ray's own ``OptunaSearch`` cannot reject a proposal without launching it, so this adapter asks
the proposer (which screens the budget) and turns Ray's trial events into Optuna tells. All
database writes happen here, in the driver process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from search.proposer import BudgetedProposer, Proposal
from search.store.records import TrialRecord, from_attrs

EPOCH = "epoch"
VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
TRAIN_SECONDS = "train_seconds"
DONE = "done_training"
NODE_ID = "node_id"

FinishedHook = Callable[[TrialRecord], None]


class BudgetedOptunaSearcher(Searcher):
    """Hands Ray one within-budget architecture per trial and records every outcome."""

    def __init__(self, proposer: BudgetedProposer, base_config: dict[str, Any],
                 checkpoint_root: str, on_finished: FinishedHook | None = None) -> None:
        super().__init__()
        self.proposer = proposer
        self.base_config = base_config
        self.checkpoint_root = checkpoint_root
        self.on_finished = on_finished
        self._live: dict[str, Proposal] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        proposal = self.proposer.propose()
        checkpoint_dir = f"{self.checkpoint_root}/trial-{proposal.number:05d}"
        self.proposer.set_checkpoint(proposal, f"{checkpoint_dir}/checkpoint.pt")
        self._live[trial_id] = proposal
        return {**self.base_config, "architecture": proposal.architecture.to_json(),
                "trial_number": proposal.number, "checkpoint_dir": checkpoint_dir,
                "resume_from": proposal.resume_from}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study in the database is the search state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: ``--resume`` reopens the study instead."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        proposal = self._live.get(trial_id)
        if proposal is None or VAL_ACCURACY not in result:
            return
        epoch = int(result[EPOCH])
        # Ray counts reports from 1 again in a restarted attempt; a later epoch means the
        # attempt continued from a checkpoint instead of starting over.
        if result.get("iterations_since_restore") == 1 and epoch > 1:
            self.proposer.note_continued(proposal, epoch - 1)
        self.proposer.report_epoch(proposal, epoch, float(result[VAL_ACCURACY]),
                                   result.get(NODE_ID))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        proposal = self._live.pop(trial_id, None)
        if proposal is None:
            return
        if error or not result or VAL_ACCURACY not in result:
            status = self.proposer.fail(proposal)
        else:
            # A trial the scheduler stopped never sends its final, test-evaluated result.
            status = self.proposer.complete(
                proposal, float(result[VAL_ACCURACY]), result.get(TEST_ACCURACY),
                int(result[EPOCH]), int(self.base_config["epochs"]),
                finished=bool(result.get(DONE)), seconds=result.get(TRAIN_SECONDS))
        if self.on_finished is not None:
            self.on_finished(from_attrs(proposal.number, status, proposal.trial.user_attrs))
