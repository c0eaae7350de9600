"""Turn Optuna's proposals into architectures that fit the budgets (MACs, latency or both).

The proposer is the sampler side of the search and knows nothing of Ray.

*The sampler's view.* Optuna suggests one parameter per layer, the base-2 logarithm of its part.
A suggestion over the budgets is brought within them by :meth:`Budgets.project` (the fewest
doublings of parts, each removing the most of what is over), and that architecture is trained;
the trial keeps the suggestion as its parameters and the trained parts in ``records.PARTS``
(with ``records.REQUESTED_PARTS`` where they differ). The sampler thus learns the accuracy of
``project(suggestion)``, a fixed function of its parameters, and a tight budget costs no
rejected rows. Only where no doubling reaches a latency budget is a suggestion told infeasible
(``Trial.set_constraint``) and counted as rejected.

*Nothing trained twice.* A suggestion whose architecture the study has trained already (or
scored, for a one-shot estimate) is answered from that record: the trial is told the known
values, marked ``repeated`` and never trained, and ``--trials`` counts distinct architectures.
One that repeats an architecture still training waits for its outcome. Confirmation runs and
retried trials are repeats by design and are trained. A sampler that has converged (TPE on a
small space within a tight budget) would repeat for ever: after :data:`RANDOM_AFTER_REPEATS`
repeats in a row, a random architecture within the budgets that the study has not seen is
proposed in its place; where random draws find none either, :class:`SpaceExhausted` ends the
stage (a small network's space within a tight budget can hold fewer architectures than
``--trials`` or ``--candidates``).

*Start-up.* The first ``startup`` searched proposals of a study are random architectures drawn
uniformly among those within the budgets (queued as fixed trials marked ``startup``), so the
model-based samplers start from real random points inside the budget rather than from the
queued uniform baselines, which TPE's own start-up count would include.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from hetconv.errors import ConfigError
from search.engine.budgets import Budgets, Screening
from search.store import records
from search.store.objectives import ACCURACY, LATENCY_METRIC, Objective
from space import Architecture, SearchSpace

_REJECTION_NOTICE = 1000  # a line per this many proposals in a row over the budgets
_STARTUP_DRAWS = 20_000  # random vectors screened at once for a random architecture
RANDOM_AFTER_REPEATS = 10  # repeats in a row, then an unseen random architecture instead
_PROJECTED_DRAWS = 200  # random vectors brought within the budgets where none fits as drawn


class SpaceExhausted(Exception):
    """The sampler keeps proposing known architectures and random draws find no new one: the
    search has seen every architecture within the budgets it can reach."""


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
                 report: Callable[[str], None] | None = None, startup: int = 0,
                 seed: int = 0) -> None:
        self.study = study
        self.startup = startup  # random searched proposals within the budgets, first
        self._rng = np.random.default_rng([seed, len(study.trials)])
        self.space = space
        self.budgets = budgets
        self.objective = objective
        self.max_consecutive_rejections = max_consecutive_rejections
        self.report = report
        self.rejected = 0
        self.repeated = 0  # proposals answered from the record of an architecture's own run
        self._outcomes: dict[_Key, _Outcome] | None = None  # read from the study when first asked
        self._in_flight: dict[int, _Key] = {}  # trial number -> what it trains
        self._waiting: dict[_Key, list[optuna.Trial]] = {}  # repeats of a run still training

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
        supernet): the sampler's suggestion brought within the budgets; one the study knows
        already is answered from its record and the sampler asked again."""
        rejected = repeated = 0
        if not estimate:
            self._queue_startup()
        for _ in range(self.max_consecutive_rejections):
            trial = self.study.ask()
            requested = self._suggest_parts(trial)
            parts = self.budgets.project(self.space, requested)
            arch = Architecture(self.space.backbone, requested if parts is None else parts,
                                self.space.input_size, self.space.num_classes,
                                self.space.in_channels)
            screening = self._record(trial, arch, requested)
            if not screening.fits:
                self._reject(trial, arch)
                rejected += 1
                self._notice(rejected, "over the budget of " + self.budgets.describe())
                continue
            if estimate:
                trial.set_user_attr(records.ESTIMATE, True)
            key = (arch.parts, estimate)
            if self._is_own_run(trial) and self._answered(trial, key):
                repeated += 1
                self._notice(repeated, "of architectures trained already")
                if repeated % RANDOM_AFTER_REPEATS == 0 and not self._queue_random(estimate):
                    raise SpaceExhausted(
                        f"every architecture within the budget of {self.budgets.describe()} "
                        f"that random draws reach has been "
                        f"{'estimated' if estimate else 'trained'} already "
                        f"({sum(1 for _, kind in self._outcomes or {} if kind == estimate)} "
                        f"distinct)")
                continue
            trial.set_user_attr(records.STATUS, records.RUNNING)
            self._in_flight[trial.number] = key
            return Proposal(trial, arch)
        what = ("over the budget of " + self.budgets.describe() if rejected > repeated else
                "of architectures trained already; the space within the budgets may be "
                "exhausted")
        raise ConfigError(f"the sampler proposed {self.max_consecutive_rejections} architectures "
                          f"in a row {what}; raise the budget or lower --trials")

    def _queue_startup(self) -> None:
        """Queue the next start-up architecture while the study has fewer than ``startup``, when
        the sampler would be asked (no queued trial is waiting):
        drawn uniformly among the random vectors within the budgets (a random vector brought
        within them where too few fit to be found by drawing)."""
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return  # the next ask hands out a queued trial, not the sampler's
        made = sum(1 for t in trials if t.user_attrs.get(records.STARTUP)
                   and t.state != TrialState.FAIL)  # a failed one was queued again
        if made < self.startup:
            self._queue_random(False, {records.STARTUP: True})

    def _queue_random(self, estimate: bool, attrs: dict[str, bool] | None = None) -> bool:
        """Queue an architecture drawn uniformly among the random vectors within the budgets
        that the study has not trained (or estimated), or random vectors brought within them
        where too few fit to be found by drawing. False when every one found is known: the
        space within the budgets looks exhausted."""
        seen = {parts for parts, kind in (self._outcomes or {}) if kind == estimate}
        seen |= {parts for parts, kind in self._in_flight.values() if kind == estimate}
        draws = self.space.random_parts(self._rng, _STARTUP_DRAWS)
        found: list[tuple[int, ...] | None] = [
            tuple(int(p) for p in row) for row in draws[self.budgets.within(self.space, draws)]]
        if not found:
            found = [self.budgets.project(self.space, tuple(int(p) for p in row))
                     for row in draws[:_PROJECTED_DRAWS]]
        parts = next((p for p in found if p is not None and p not in seen), None)
        if parts is None:
            return False
        self.study.enqueue_trial(parts_to_params(parts), user_attrs=attrs)
        return True

    def _record(self, trial: optuna.Trial, arch: Architecture,
                requested: tuple[int, ...]) -> Screening:
        """Write what the trial stands for (parts, costs, constraints) and screen it."""
        screening = self.budgets.screen(arch)
        attrs = {records.PARTS: list(arch.parts), records.PAPER_MACS: arch.macs,
                 records.EXECUTED_MACS: arch.executed_macs, records.PARAMS: arch.params,
                 records.ARCHITECTURE: arch.to_json(), **screening.constraints}
        if arch.parts != requested:
            attrs[records.REQUESTED_PARTS] = list(requested)
        if screening.latency_ms is not None:
            attrs[records.LATENCY] = screening.latency_ms
        for name, over_budget in screening.constraints.items():
            trial.set_constraint(name, over_budget)
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        return screening

    def _reject(self, trial: optuna.Trial, arch: Architecture) -> None:
        trial.set_user_attr(records.STATUS, records.REJECTED)
        trial.set_user_attr(records.EPOCHS_TRAINED, 0)
        self.study.tell(trial, self._values(0.0, arch))
        self.rejected += 1

    def _notice(self, in_a_row: int, what: str) -> None:
        if self.report is not None and in_a_row % _REJECTION_NOTICE == 0:
            self.report(f"  {in_a_row} proposals in a row {what}; still asking the sampler "
                        f"(gives up at {self.max_consecutive_rejections})")

    @staticmethod
    def _is_own_run(trial: optuna.Trial) -> bool:
        """An architecture's own run: not a confirmation seed, not a retried trial."""
        attrs = trial.user_attrs
        return not attrs.get(records.REPLICATE) and records.RESUME_FROM not in attrs

    def _answered(self, trial: optuna.Trial, key: _Key) -> bool:
        """Answer ``trial`` from the record of the architecture it repeats, or keep it waiting
        for the run in flight; False when the architecture is new."""
        if self._outcomes is None:
            self._outcomes = _outcomes(self.study)
        known = self._outcomes.get(key)
        if known is None and key not in self._in_flight.values():
            return False
        trial.set_user_attr(records.STATUS, records.REPEATED)
        self.repeated += 1
        if known is None:
            self._waiting.setdefault(key, []).append(trial)
        else:
            _tell_repeat(self.study, trial, known)
        return True

    def _settle(self, trial: optuna.Trial, outcome: _Outcome | None) -> None:
        """The run of ``trial`` ended: remember its outcome (None: it failed, so a later
        proposal trains it again) and answer the repeats that waited for it."""
        key = self._in_flight.pop(trial.number, None)
        if key is None:
            return
        if outcome is not None and self._outcomes is not None:
            self._outcomes[key] = outcome
        for waiting in self._waiting.pop(key, []):
            if outcome is None:
                self.study.tell(waiting, state=TrialState.FAIL)
            else:
                _tell_repeat(self.study, waiting, outcome)

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
            self._settle(trial, _Outcome(trial.number, None))
            return records.EARLY_STOPPED
        if test_accuracy is not None:
            trial.set_user_attr(records.TEST_ACCURACY, test_accuracy)
        for key, bits in zip((records.VAL_CORRECT, records.TEST_CORRECT), correct, strict=True):
            if bits is not None:
                trial.set_user_attr(key, bits)
        trial.set_user_attr(records.STATUS, records.COMPLETE)
        values = self._values(accuracy, proposal.architecture)
        self.study.tell(trial, values)
        self._settle(trial, _Outcome(trial.number, values))
        return records.COMPLETE

    def complete_estimate(self, proposal: Proposal, estimated_accuracy: float) -> None:
        """Tell a one-shot candidate's supernet estimate (the sampler learns from it; the
        record says it is an estimate)."""
        trial = proposal.trial
        trial.set_user_attr(records.VAL_ACCURACY, estimated_accuracy)
        trial.set_user_attr(records.EPOCHS_TRAINED, 0)
        trial.set_user_attr(records.STATUS, records.ESTIMATED)
        values = self._values(estimated_accuracy, proposal.architecture)
        self.study.tell(trial, values)
        self._settle(trial, _Outcome(trial.number, values))

    def diverge(self, proposal: Proposal, epochs: int, reason: str) -> str:
        """Tell a run that diverged after ``epochs`` finished epochs: pruned there (the sampler
        ranks it below every finished run), its architecture not proposed for training again."""
        trial = proposal.trial
        trial.set_user_attr(records.EPOCHS_TRAINED, epochs)
        trial.set_user_attr(records.DIVERGENCE, reason)
        trial.set_user_attr(records.STATUS, records.DIVERGED)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._settle(trial, _Outcome(trial.number, None))
        return records.DIVERGED

    def fail(self, proposal: Proposal) -> str:
        proposal.trial.set_user_attr(records.STATUS, records.FAILED)
        self.study.tell(proposal.trial, state=TrialState.FAIL)
        self._settle(proposal.trial, None)
        return records.FAILED


_Key = tuple[tuple[int, ...], bool]  # an architecture's parts, and whether it is an estimate


@dataclass(frozen=True)
class _Outcome:
    """How an architecture's own run ended: its trial and values (None: stopped early)."""

    number: int
    values: list[float] | None


def _outcomes(study: optuna.Study) -> dict[_Key, _Outcome]:
    """Every architecture the study has trained to the end, stopped early or estimated, from
    its own run (the first when there are several)."""
    found: dict[_Key, _Outcome] = {}
    for trial in study.get_trials(deepcopy=False,
                                  states=(TrialState.COMPLETE, TrialState.PRUNED)):
        attrs = trial.user_attrs
        if attrs.get(records.STATUS) not in (records.COMPLETE, records.ESTIMATED,
                                             records.EARLY_STOPPED, records.DIVERGED) \
                or attrs.get(records.REPLICATE) or records.PARTS not in attrs:
            continue
        key = (tuple(attrs[records.PARTS]), bool(attrs.get(records.ESTIMATE)))
        values = trial.values if trial.state == TrialState.COMPLETE else None
        found.setdefault(key, _Outcome(trial.number, values))
    return found


def _tell_repeat(study: optuna.Study, trial: optuna.Trial, known: _Outcome) -> None:
    """Answer a repeated proposal with what its architecture's own run gave."""
    trial.set_user_attr(records.REPEAT_OF, known.number)
    if known.values is None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, known.values)
