"""Turn Optuna's proposals into architectures that fit the budgets (MACs, latency or both).

The proposer is the sampler side of the search and knows nothing of Ray. An architecture over
a budget is never handed out for training; its Optuna trial is completed at once as infeasible
(``Trial.set_constraint``) so the sampler learns where the boundary lies, and it is counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from hetconv.errors import ConfigError
from search.engine.budgets import Budgets
from search.store import records
from search.store.objectives import ACCURACY, LATENCY_METRIC, Objective
from space import Architecture, SearchSpace

_REJECTION_NOTICE = 1000  # a line per this many proposals in a row over the budgets


def param_name(index: int) -> str:
    """Optuna parameter of layer ``index``: the base-2 log of its part (an ordinal TPE can use)."""
    return f"log2_part_{index:02d}"


def parts_to_params(parts: Sequence[int]) -> dict[str, int]:
    return {param_name(i): int(math.log2(p)) for i, p in enumerate(parts)}


@dataclass
class Proposal:
    """An Optuna trial and the within-budget architecture it stands for."""

    trial: optuna.Trial
    architecture: Architecture

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def resume_from(self) -> str | None:
        return self.trial.user_attrs.get(records.RESUME_FROM)

    @property
    def replicate(self) -> int:
        """0 for the search's own run; k for confirmation run k (trained with another seed)."""
        return int(self.trial.user_attrs.get(records.REPLICATE, 0))


class BudgetedProposer:
    """Asks Optuna for part vectors, screens them against the budgets, tells results back."""

    def __init__(self, study: optuna.Study, space: SearchSpace, budgets: Budgets,
                 objective: Objective = ACCURACY, max_consecutive_rejections: int = 10_000,
                 report: Callable[[str], None] | None = None) -> None:
        self.study = study
        self.space = space
        self.budgets = budgets
        self.objective = objective
        self.max_consecutive_rejections = max_consecutive_rejections
        self.report = report
        self.rejected = 0

    def baselines_within(self) -> list[tuple[int, Architecture]]:
        """Every distinct uniform-P network within the budgets (the paper's), cheapest last."""
        found, seen = [], set()
        for part in self.space.uniform_choices():
            parts = self.space.uniform_parts(part)
            if parts in seen:
                continue
            seen.add(parts)
            arch = Architecture(self.space.backbone, parts, self.space.input_size,
                                self.space.num_classes, self.space.in_channels)
            if self.budgets.screen(arch).fits:
                found.append((part, arch))
        return found

    def enqueue_baselines(self, which: str = "all",
                          estimate: Callable[[tuple[int, ...]], float] | None = None) -> list[int]:
        """Queue the uniform-P networks within the budgets, each once per study: ``all``,
        ``near`` (the two costliest: what a searched network at the budget must beat) or
        ``none``. ``estimate``: a one-shot supernet's estimate of a network, recorded beside
        its result (asked only for the networks queued now)."""
        within = self.baselines_within()
        chosen = {"all": within, "near": within[:2], "none": []}[which]
        # A baseline that failed is queued again; one done, running or queued is not.
        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        present = {t.user_attrs.get(records.BASELINE_PART)
                   for t in self.study.get_trials(deepcopy=False, states=alive)
                   if not t.user_attrs.get(records.REPLICATE)}
        for part, arch in chosen:
            if part not in present:
                attrs: dict[str, float] = {records.BASELINE_PART: part}
                if estimate is not None:
                    attrs[records.ESTIMATED_ACCURACY] = estimate(arch.parts)
                self.study.enqueue_trial(parts_to_params(arch.parts), user_attrs=attrs)
        return [part for part, _ in chosen]

    def enqueue_confirmation(self, parts: Sequence[int], baseline_part: int | None,
                             replicate: int) -> None:
        """Queue confirmation run ``replicate`` of an architecture (trained with another seed)."""
        attrs: dict[str, int] = {records.REPLICATE: replicate}
        if baseline_part:
            attrs[records.BASELINE_PART] = baseline_part
        self.study.enqueue_trial(parts_to_params(parts), user_attrs=attrs)

    def enqueue_finalist(self, parts: Sequence[int], estimate_trial: int,
                         estimated_accuracy: float) -> None:
        """Queue the stand-alone training of a one-shot search's candidate."""
        self.study.enqueue_trial(parts_to_params(parts), user_attrs={
            records.FINALIST_OF: estimate_trial, records.ESTIMATED_ACCURACY: estimated_accuracy,
            records.PARTS: list(parts)})

    def _suggest_parts(self, trial: optuna.Trial) -> tuple[int, ...]:
        return tuple(
            2 ** trial.suggest_int(param_name(i), 0, int(math.log2(layer.allowed_parts[-1])))
            for i, layer in enumerate(self.space.layers))

    def propose(self, estimate: bool = False) -> Proposal:
        """The next architecture to train (or, with ``estimate``, to score with the one-shot
        supernet). Over-budget proposals are told infeasible and skipped."""
        for attempt in range(self.max_consecutive_rejections):
            trial = self.study.ask()
            arch = Architecture(self.space.backbone, self._suggest_parts(trial),
                                self.space.input_size, self.space.num_classes,
                                self.space.in_channels)
            screening = self.budgets.screen(arch)
            attrs = {records.PARTS: list(arch.parts), records.PAPER_MACS: arch.macs,
                     records.EXECUTED_MACS: arch.executed_macs, records.PARAMS: arch.params,
                     records.ARCHITECTURE: arch.to_json(), **screening.constraints}
            if screening.latency_ms is not None:
                attrs[records.LATENCY] = screening.latency_ms
            for name, over_budget in screening.constraints.items():
                trial.set_constraint(name, over_budget)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if screening.fits:
                if estimate:
                    trial.set_user_attr(records.ESTIMATE, True)
                trial.set_user_attr(records.STATUS, records.RUNNING)
                return Proposal(trial, arch)
            trial.set_user_attr(records.STATUS, records.REJECTED)
            trial.set_user_attr(records.EPOCHS_TRAINED, 0)
            self.study.tell(trial, self._values(0.0, arch))
            self.rejected += 1
            in_a_row = attempt + 1
            if self.report is not None and in_a_row % _REJECTION_NOTICE == 0:
                self.report(f"  {in_a_row} proposals in a row over the budget of "
                            f"{self.budgets.describe()}; still asking the sampler "
                            f"(gives up at {self.max_consecutive_rejections})")
        raise ConfigError(f"the sampler proposed {self.max_consecutive_rejections} architectures "
                          f"in a row over the budget of {self.budgets.describe()}; raise it")

    def _values(self, accuracy: float, arch: Architecture) -> list[float]:
        latency = self.budgets.predicted_ms(arch) \
            if self.objective.cost_metric == LATENCY_METRIC else None
        return self.objective.values(accuracy, arch.macs, latency)

    def report_epoch(self, proposal: Proposal, epoch: int, accuracy: float,
                     node: str | None = None) -> None:
        """Record a validation accuracy as the trial's learning curve, and where it trained."""
        if not self.objective.is_pareto:  # Optuna's pruners take one value per step
            proposal.trial.report(accuracy, epoch)
        proposal.trial.set_user_attr(records.VAL_ACCURACY, accuracy)
        proposal.trial.set_user_attr(records.EPOCHS_TRAINED, epoch)
        if node is not None:
            proposal.trial.set_user_attr(records.NODE, node)

    def note_continued(self, proposal: Proposal, epochs_restored: int) -> None:
        """Record that an attempt of this trial continued from a checkpoint (worker died)."""
        earlier = proposal.trial.user_attrs.get(records.CONTINUED_AFTER, [])
        proposal.trial.set_user_attr(records.CONTINUED_AFTER, [*earlier, epochs_restored])

    def set_seed(self, proposal: Proposal, seed: int) -> None:
        """Record the seed the trial trains with (confirmation runs differ only in it)."""
        proposal.trial.set_user_attr(records.SEED, seed)

    def set_checkpoint(self, proposal: Proposal, path: str) -> None:
        proposal.trial.set_user_attr(records.CHECKPOINT, path)

    def complete(self, proposal: Proposal, accuracy: float, test_accuracy: float | None,
                 epochs: int, planned_epochs: int, finished: bool,
                 seconds: float | None = None,
                 correct: tuple[str | None, str | None] = (None, None)) -> str:
        """Tell the trial's outcome; a trial that did not finish all epochs is pruned.
        ``correct``: which validation and test images it got right, packed."""
        trial = proposal.trial
        trial.set_user_attr(records.VAL_ACCURACY, accuracy)
        trial.set_user_attr(records.EPOCHS_TRAINED, epochs)
        trial.set_user_attr(records.EPOCHS_PLANNED, planned_epochs)
        if seconds is not None:
            trial.set_user_attr(records.WALL_SECONDS, seconds)
        if not finished or epochs < planned_epochs:
            trial.set_user_attr(records.STATUS, records.EARLY_STOPPED)
            self.study.tell(trial, state=TrialState.PRUNED)
            return records.EARLY_STOPPED
        if test_accuracy is not None:
            trial.set_user_attr(records.TEST_ACCURACY, test_accuracy)
        for key, bits in zip((records.VAL_CORRECT, records.TEST_CORRECT), correct, strict=True):
            if bits is not None:
                trial.set_user_attr(key, bits)
        trial.set_user_attr(records.STATUS, records.COMPLETE)
        self.study.tell(trial, self._values(accuracy, proposal.architecture))
        return records.COMPLETE

    def complete_estimate(self, proposal: Proposal, estimated_accuracy: float) -> None:
        """Tell a one-shot candidate's supernet estimate (the sampler learns from it; the
        record says it is an estimate)."""
        trial = proposal.trial
        trial.set_user_attr(records.VAL_ACCURACY, estimated_accuracy)
        trial.set_user_attr(records.EPOCHS_TRAINED, 0)
        trial.set_user_attr(records.STATUS, records.ESTIMATED)
        self.study.tell(trial, self._values(estimated_accuracy, proposal.architecture))

    def fail(self, proposal: Proposal) -> str:
        proposal.trial.set_user_attr(records.STATUS, records.FAILED)
        self.study.tell(proposal.trial, state=TrialState.FAIL)
        return records.FAILED
