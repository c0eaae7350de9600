"""Proposals inside the budgets by construction, and nothing trained twice.

Real Optuna studies and samplers (the ones ``search.run`` makes), no Ray: the proposer is the
sampler side of the search, so its promises are tested where they are kept.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.engine.budgets import Budgets
from search.engine.proposer import BudgetedProposer, SpaceExhausted, parts_to_params
from search.engine.settings import SearchSettings
from search.engine.study import make_sampler
from search.store import records
from space import SearchSpace

SPACE = SearchSpace("resnet20", 8, 10, 1)
# Uniform P16's paper MACs: not one of 20,000 random part vectors fits as drawn.
TIGHT = int(SPACE.cost.paper_macs(np.array(SPACE.uniform_parts(16))))


def _proposer(sampler: str, budget: float, seed: int = 0) -> BudgetedProposer:
    settings = SearchSettings(sampler=sampler, seed=seed, budget=budget)
    directions = ["maximize"]
    study = optuna.create_study(sampler=make_sampler(settings), directions=directions)
    return BudgetedProposer(study, SPACE, Budgets(macs=budget))


def _statuses(study: optuna.Study) -> list[str]:
    return [t.user_attrs.get(records.STATUS) for t in study.get_trials(deepcopy=False)]


def test_random_vectors_almost_never_fit_the_tight_budget() -> None:
    """The premise of the next test, measured rather than assumed."""
    draws = SPACE.random_parts(np.random.default_rng(0), 20_000)
    assert not SPACE.fits(draws, TIGHT).any()


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_a_tight_budget_yields_feasible_proposals_and_no_rejected_rows(sampler: str) -> None:
    proposer = _proposer(sampler, TIGHT)
    rng = np.random.default_rng(1)
    for _ in range(24):  # past TPE's start-up and NSGA-II's first generation
        proposal = proposer.propose()
        assert proposal.architecture.macs <= TIGHT
        proposer.complete(proposal, float(rng.random()), None, 1, 1, finished=True)
    statuses = _statuses(proposer.study)
    assert records.REJECTED not in statuses and proposer.rejected == 0
    trained = [t for t in proposer.study.trials if t.user_attrs[records.STATUS] == records.COMPLETE]
    assert trained and all(t.user_attrs[records.BUDGET_CONSTRAINT] <= 0 for t in trained)
    # What was changed to fit says so: the sampler's suggestion is kept beside the parts.
    changed = [t for t in trained if records.REQUESTED_PARTS in t.user_attrs]
    assert changed, "random suggestions at this budget need projecting"
    for trial in changed:
        requested, parts = trial.user_attrs[records.REQUESTED_PARTS], trial.user_attrs[
            records.PARTS]
        assert all(p >= r for p, r in zip(parts, requested, strict=True))  # parts only raised
        assert trial.params == parts_to_params(requested)  # the sampler's own view


def test_projection_leaves_a_fitting_vector_alone_and_only_raises_parts() -> None:
    budgets = Budgets(macs=TIGHT)
    fits = SPACE.uniform_parts(16)
    assert budgets.project(SPACE, fits) == fits
    for parts in SPACE.random_parts(np.random.default_rng(2), 50):
        projected = budgets.project(SPACE, tuple(int(p) for p in parts))
        assert projected is not None and SPACE.fits(np.array([projected]), TIGHT)[0]
        assert all(p >= q for p, q in zip(projected, parts, strict=True))
        SPACE.check_parts(projected)  # every part one the layer allows


def test_a_repeated_proposal_is_answered_from_the_record_not_trained_again() -> None:
    proposer = _proposer("random", SPACE.max_macs)
    study = proposer.study
    parts = SPACE.uniform_parts(4)
    study.enqueue_trial(parts_to_params(parts))
    first = proposer.propose()
    assert first.architecture.parts == parts
    # The same architecture proposed again while the first run trains: it waits, unanswered.
    study.enqueue_trial(parts_to_params(parts))
    second = proposer.propose()
    assert second.architecture.parts != parts
    waiting = study.trials[1]
    assert waiting.state == TrialState.RUNNING and waiting.user_attrs[records.STATUS] == \
        records.REPEATED
    proposer.complete(first, 0.75, 0.7, 1, 1, finished=True)
    answered = study.trials[1]
    assert answered.state == TrialState.COMPLETE and answered.values == [0.75]
    assert answered.user_attrs[records.REPEAT_OF] == first.number
    # Proposed once more after it finished: answered at once from the record.
    study.enqueue_trial(parts_to_params(parts))
    third = proposer.propose()
    assert third.architecture.parts not in (parts, second.architecture.parts)
    again = next(t for t in study.trials if t.number not in (0, 1, second.number,
                                                             third.number))
    assert again.values == [0.75] and again.user_attrs[records.STATUS] == records.REPEATED
    # Repeats are never results of their own, nor counted as trained.
    from search.engine.study import trial_counts

    proposer.complete(second, 0.5, 0.5, 1, 1, finished=True)
    assert trial_counts(study).searched == 2
    assert [r.number for r in records.ranked(records.read_records(study))] == \
        [first.number, second.number]


def test_confirmation_seeds_of_a_trained_architecture_are_still_trained() -> None:
    proposer = _proposer("random", SPACE.max_macs)
    parts = SPACE.uniform_parts(2)
    proposer.study.enqueue_trial(parts_to_params(parts))
    first = proposer.propose()
    proposer.complete(first, 0.8, 0.8, 1, 1, finished=True)
    proposer.enqueue_confirmation(parts, None, replicate=1)
    seed = proposer.propose()
    assert seed.architecture.parts == parts and seed.replicate == 1


def test_a_failed_run_is_trained_again_when_proposed_again() -> None:
    proposer = _proposer("random", SPACE.max_macs)
    parts = SPACE.uniform_parts(8)
    proposer.study.enqueue_trial(parts_to_params(parts))
    proposer.fail(proposer.propose())
    proposer.study.enqueue_trial(parts_to_params(parts))
    assert proposer.propose().architecture.parts == parts


def test_start_up_proposals_are_random_within_the_budget_after_the_baselines() -> None:
    settings = SearchSettings(sampler="tpe", seed=4, budget=TIGHT * 2)
    study = optuna.create_study(sampler=make_sampler(settings), direction="maximize")
    proposer = BudgetedProposer(study, SPACE, Budgets(macs=TIGHT * 2), startup=5, seed=4)
    baselines = proposer.enqueue_baselines("all")
    handed = []
    for _ in range(len(baselines) + 8):
        proposal = proposer.propose()
        handed.append(proposal.trial.user_attrs)
        proposer.complete(proposal, 0.5, None, 1, 1, finished=True)
    roles = ["baseline" if a.get(records.BASELINE_PART) else
             "startup" if a.get(records.STARTUP) else "sampler" for a in handed]
    assert roles == ["baseline"] * len(baselines) + ["startup"] * 5 + ["sampler"] * 3
    startup = [tuple(a[records.PARTS]) for a in handed if a.get(records.STARTUP)]
    uniform = {SPACE.uniform_parts(p) for p in SPACE.uniform_choices()}
    assert len(set(startup)) == 5 and not set(startup) & uniform  # real random draws
    assert all(records.REQUESTED_PARTS not in a for a in handed if a.get(records.STARTUP))
    assert SPACE.fits(np.array(startup), TIGHT * 2).all()


def test_a_sampler_stuck_on_known_architectures_is_given_an_unseen_random_one() -> None:
    proposer = _proposer("random", TIGHT)
    parts = SPACE.uniform_parts(16)
    proposer.study.enqueue_trial(parts_to_params(parts))
    proposer.complete(proposer.propose(), 0.6, None, 1, 1, finished=True)
    for _ in range(15):  # a converged sampler: the same suggestion over and over
        proposer.study.enqueue_trial(parts_to_params(parts))
    fresh = proposer.propose()
    assert fresh.architecture.parts != parts and fresh.architecture.macs <= TIGHT
    assert _statuses(proposer.study).count(records.REPEATED) == 15


def test_a_space_smaller_than_the_trials_ends_instead_of_repeating_without_end() -> None:
    """Two layers of two parts each within the budget: four architectures, then the proposer
    says the space is used up, for trainings and estimates alike."""
    small = SearchSpace("tests.foreign_networks:foreign", 8, 10, 1)
    budget = float(small.max_macs)
    fits = len({tuple(int(p) for p in row) for row in small.random_parts(
        np.random.default_rng(0), 5_000)})
    for estimate in (False, True):
        settings = SearchSettings(sampler="tpe", seed=0, budget=budget)
        study = optuna.create_study(sampler=make_sampler(settings), direction="maximize")
        proposer = BudgetedProposer(study, small, Budgets(macs=budget))
        seen = set()
        with pytest.raises(SpaceExhausted, match="already"):
            for _ in range(fits + 1):
                proposal = proposer.propose(estimate=estimate)
                seen.add(proposal.architecture.parts)
                if estimate:
                    proposer.complete_estimate(proposal, 0.5)
                else:
                    proposer.complete(proposal, 0.5, None, 1, 1, finished=True)
        assert len(seen) == fits  # every architecture once, none twice
