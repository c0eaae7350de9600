"""The equal-work search benchmark (bench/search_regret.py) on tables whose answers are known."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import search_regret  # noqa: E402
from ground_truth_table import Band, Entry, GroundTruth, Run, Setting  # noqa: E402

from search.store.paired import pack_correct  # noqa: E402

EPOCHS = 4
LAYERS = 4


def _table(noise: float, seed: int = 0, in_band: int = 12) -> GroundTruth:
    """A band of ``in_band`` architectures whose accuracy falls with the sum of their log2
    parts, and four uniform networks (P1 and P2 over the band's cost, P4 in it, P8 below);
    each run's accuracies are the architecture's own plus ``noise`` times a normal draw, and its
    validation curve rises to its final accuracy, ranked as the final ones from the first
    epoch on."""
    rng = np.random.default_rng(seed)
    vectors = [v for v in itertools.product((1, 2, 4, 8), repeat=LAYERS) if len(set(v)) > 1]
    chosen = [vectors[i] for i in rng.choice(len(vectors), in_band, replace=False)]
    band = Band("aggressive", 10.0, 20.0, "test")
    entries = []

    def entry(parts: tuple[int, ...], group: str, macs: float) -> Entry:
        quality = 0.7 - 0.01 * float(np.log2(parts).sum())
        runs = []
        for replicate in range(3):
            final = quality + noise * rng.standard_normal()
            curve = tuple(final - 0.05 * (EPOCHS - 1 - e) for e in range(EPOCHS))
            bits = pack_correct(np.ones(10, dtype=bool))
            runs.append(Run(replicate, replicate, curve, final, quality + noise *
                            rng.standard_normal(), 1.0, bits, bits))
        return Entry(parts, group, f"{group} {parts}", int(macs), int(macs), 0, {}, tuple(runs))

    for index, parts in enumerate(chosen):
        entries.append(entry(parts, "aggressive", 11 + index % 8))
    for part, macs in ((1, 40), (2, 25), (4, 15), (8, 5)):
        entries.append(entry((part,) * LAYERS, "uniform", macs))
    setting = Setting("resnet20", "synthetic", 8, 100, 10, 10, EPOCHS, 32, 3, 0)
    return GroundTruth({"command": "test", "commit": "0" * 40}, setting, (band,), tuple(entries))


def _pick(table: GroundTruth, method: str, work: int, seed: int = 0) -> Entry:
    pool = search_regret.band_pool(table, "aggressive")
    found = search_regret.run_method(pool, table, search_regret.methods([3])[method], method,
                                     work, [seed])
    assert found is not None
    return found.picks[0]


def test_the_pool_is_the_band_and_the_uniform_networks_within_its_cost() -> None:
    table = _table(noise=0.0)
    pool = search_regret.band_pool(table, "aggressive")
    assert len(pool.searchable) == 13  # twelve drawn in the band, uniform P4 inside it
    assert sorted(e.uniform_part for e in pool.uniform) == [4, 8]  # P1, P2 cost too much
    assert pool.best_test == max(e.mean_test for e in pool.searchable)


def test_a_table_still_being_built_offers_the_architectures_with_enough_runs() -> None:
    table = _table(noise=0.0)
    first = next(e for e in table.entries if e.group == "aggressive")
    partial = dataclasses.replace(first, runs=first.runs[:2])
    table = dataclasses.replace(table, entries=tuple(partial if e is first else e
                                                     for e in table.entries))
    assert partial not in search_regret.band_pool(table, "aggressive").searchable
    assert partial in search_regret.band_pool(table, "aggressive", min_runs=2).searchable


@pytest.mark.parametrize("method", ["random", "TPE (3 start-up)", "random + ASHA",
                                    "TPE + ASHA (3 start-up)"])
def test_without_noise_a_search_that_can_afford_the_band_finds_its_best(method: str) -> None:
    table = _table(noise=0.0)
    pool = search_regret.band_pool(table, "aggressive")
    best = max(pool.searchable, key=lambda e: e.mean_test)
    assert _pick(table, method, work=EPOCHS * len(pool.searchable)) is best


def test_the_uniform_method_picks_the_best_uniform_network_within_the_budget() -> None:
    table = _table(noise=0.0)
    assert _pick(table, "uniform (best by validation)", work=EPOCHS).uniform_part in (4, 8)
    assert _pick(table, "uniform (best by validation)", work=4 * EPOCHS).uniform_part == 4


def test_work_limits_the_trainings_and_halving_stretches_it() -> None:
    """With work for three full trainings, random search trains three architectures; ASHA,
    stopping the bottom half of each rung early, starts more."""
    table = _table(noise=0.02)
    pool = search_regret.band_pool(table, "aggressive")
    rng = np.random.default_rng(0)
    started: list[Entry] = []

    def counting(propose: search_regret.Proposer) -> search_regret.Proposer:
        def wrapped() -> Entry:
            started.append(propose())
            return started[-1]
        return wrapped

    trainings = search_regret.Trainings(table, 3 * EPOCHS, rng)
    search_regret._train_each(trainings, counting(search_regret._random_proposer(pool, rng)),
                              None)
    assert len(started) == 3 and trainings.left == 0
    started.clear()
    trainings = search_regret.Trainings(table, 3 * EPOCHS, rng)
    search_regret._halving(trainings, counting(search_regret._random_proposer(pool, rng)), None)
    assert len(started) > 3 and trainings.left >= 0
    assert search_regret.rungs(EPOCHS) == [1, 2, 4]
    assert search_regret.rungs(30) == [1, 3, 7, 15, 30]


def test_tpe_never_trains_an_architecture_twice_and_learns_what_was_trained() -> None:
    table = _table(noise=0.02)
    pool = search_regret.band_pool(table, "aggressive")
    proposer = search_regret.TpeProposer(pool, seed=1, startup=3,
                                         rng=np.random.default_rng(1))
    trainings = search_regret.Trainings(table, 10 * EPOCHS, np.random.default_rng(1))
    search_regret._train_each(trainings, proposer, proposer.learn)
    learned = [tuple(2 ** t.params[name] for name in sorted(t.params))
               for t in proposer.study.trials if t.state.name == "COMPLETE"]
    assert len(learned) == 10 == len(set(learned))
    assert set(learned) <= {e.parts for e in pool.searchable}


def test_a_noisy_table_gives_regrets_with_intervals_and_the_report_has_every_method(
        tmp_path: Path) -> None:
    table = _table(noise=0.03)
    path = tmp_path / "t.json"
    path.write_text(table.to_json())
    text = search_regret.main([str(path), "--work", "8", "--search-seeds", "4",
                               "--startup", "2"])
    for method in ("uniform (best by validation)", "| random |", "random + ASHA",
                   "TPE (2 start-up)", "TPE + ASHA (2 start-up)", "no search"):
        assert method in text
    pool = search_regret.band_pool(table, "aggressive")
    outcome = search_regret.run_method(pool, table, search_regret.methods([2])["random"],
                                       "random", 8, range(4))
    assert outcome is not None and all(r >= 0 for r in outcome.regrets)
    assert f"| random | {search_regret._mean_interval(outcome.regrets)} |" in text


def _supernet(table: GroundTruth, seed: int, order: list[Entry]) -> dict:
    """A measured supernet as bench/oneshot_ranking.py writes it: work 2 trainings in 20 s,
    half a training's seconds per estimate, estimates falling along ``order``."""
    scores = {e.label: {"2048": [1.0 - 0.01 * i, 0.5]} for i, e in enumerate(order)}
    return {"recipe": "strata", "band": "aggressive", "seed": seed, "work": 2.0,
            "train_seconds": 20.0, "seconds_per_estimate": {"2048": 5.0}, "scores": scores}


def test_a_oneshot_search_pays_for_its_supernet_then_trains_the_best_estimates_first(
        tmp_path: Path) -> None:
    table = _table(noise=0.0)
    pool = search_regret.band_pool(table, "aggressive")
    drawn = [e for e in pool.searchable if e.group == "aggressive"]
    best = max(drawn, key=lambda e: e.mean_val)
    worst_first = sorted(drawn, key=lambda e: e.mean_val)
    # 12 estimates at half a training each and 2 trainings of supernet: 8 trainings, 32 epochs.
    overhead = search_regret.oneshot_overhead(_supernet(table, 0, worst_first), 12, "2048",
                                              EPOCHS)
    assert overhead == 32
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps({"supernets": [_supernet(table, 0, worst_first),
                                              _supernet(table, 1, worst_first[::-1])]}))
    method = search_regret.oneshot_methods(str(path), "aggressive", "2048")["one-shot (strata)"]
    # Seed 0's supernet ranks the best last, seed 1's first: with room for one finalist, only
    # seed 1 picks it; with too little work nothing is picked.
    picks = search_regret.run_method(pool, table, method, "one-shot", overhead + EPOCHS, [0, 1])
    assert picks is not None and picks.picks[0] is worst_first[0] and picks.picks[1] is best
    assert search_regret.run_method(pool, table, method, "one-shot", overhead, [0]) is None
    (tmp_path / "t.json").write_text(table.to_json())
    text = search_regret.main([str(tmp_path / "t.json"), "--work", "8", "36",
                               "--search-seeds", "2", "--startup", "2", "--oneshot", str(path)])
    assert "| one-shot (strata) | its supernet and estimates use up the work |" in text
    assert "| one-shot (strata) | " + search_regret._mean_interval(
        [100 * (pool.best_test - worst_first[0].mean_test), 0.0]) in text
