"""Equal-work search benchmark on the ground-truth table: each method's regret at each band.

Every method gets the same training compute, counted in epochs summed over all the trainings it
runs (a full training is the table's ``epochs``), picks an architecture on validation, and is
scored by its **regret**: the best mean test accuracy among the architectures it could have
picked minus its pick's mean test accuracy (both over the table's seeds). A training is read
from the table instead of run: the search seed decides which of the table's training seeds
answers each training, so a method sees exactly the noise a real search would (one seed per
training), and many search seeds cost nothing (the tabular protocol of NAS-Bench-201).

The methods, for one band (``bench/ground_truth.py``'s aggressive or moderate cost band):

* **uniform**: the paper's single part: the best by mean validation accuracy among every uniform
  network at or below the band's upper cost, the work spent training each of them again (one
  table seed after another) until it is used up;
* **random**: architectures of the band drawn at random, each trained once;
* **TPE**: HetNAS's sampler (``search.engine.study.make_sampler``) on its own parameters (the
  log2 part per layer), after ``--startup`` random start-up architectures; each suggestion is
  answered by the band's architecture nearest to it (L1 over log2 parts) not yet trained, and
  TPE learns the answered architecture;
* **random + ASHA**, **TPE + ASHA**: the same proposals trained by asynchronous successive
  halving (Li et al., MLSys 2020), reduction factor 2, with rungs at the epochs
  ``epochs / 2**k``: a training goes on to the next rung when its validation accuracy is in the
  top half of those its rung has seen (Optuna's ``SuccessiveHalvingPruner`` rule), else stops
  there, costing only its epochs so far; the pick is the best fully trained;
* **no search**: one architecture of the band at random, for scale;
* **one-shot** (with ``--oneshot``, a ``bench/oneshot_ranking.py`` results file; a row per
  recipe): the supernet's training and its estimates of the band's architectures are charged
  first (the supernet's work in trainings; each estimate in trainings by its wall seconds
  against the supernet's seconds per training, both timed in the same run), then the
  architectures are trained in the order of their estimates while the work lasts, and the best
  on validation is picked. Search seed ``s`` uses supernet seed ``s`` modulo those measured.

The band's architectures are those drawn or built in it plus the uniform networks inside it;
the reference's candidates add every uniform network at or below the band's upper cost. The
interval of a mean regret is Student's t over search seeds (it covers the search's draws on
this table, not the table's own seed noise: a new table could crown another best). "vs uniform"
pairs the two methods on each search seed.

This restricts the search to the table's architectures (about 30 per band): it measures how
well each method selects under seed noise at equal work, not how a sampler explores the full
space (HetNAS's ResNet-20 space holds 6.1e13 vectors: 5 to 7 parts in each of 18 layers);
where TPE's suggestion is far from every architecture of the band, its model of the space
counts for little here.

    python bench/search_regret.py bench/results/ground_truth.json --work 8 16 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from ground_truth_table import Entry, GroundTruth, Run, load
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.engine.proposer import param_name, parts_to_params
from search.engine.settings import SearchSettings
from search.engine.study import STARTUP_TRIALS, make_sampler
from search.store.uncertainty import t95

REDUCTION_FACTOR = 2  # ASHA's η: the top half of a rung goes on


class WorkSpent(Exception):
    """The method's next training does not fit in what is left of its work."""


class Trainings:
    """A method's trainings, read from the table: each answered by one of the architecture's
    seeds, in an order the search seed fixes, and charged in epochs against the work."""

    def __init__(self, table: GroundTruth, work: int, rng: np.random.Generator) -> None:
        self.epochs = table.setting.epochs
        self.left = work
        self._rng = rng
        self._orders: dict[tuple[int, ...], list[Run]] = {}

    def start(self, entry: Entry) -> Run:
        """A new training of ``entry`` (another seed than its earlier ones); charges nothing."""
        order = self._orders.setdefault(
            entry.parts, [entry.runs[i] for i in self._rng.permutation(len(entry.runs))])
        if not order:
            raise WorkSpent  # every seed of the table used: nothing more to learn here
        return order.pop(0)

    def charge(self, epochs: int) -> None:
        if epochs > self.left:
            raise WorkSpent
        self.left -= epochs

    def affords(self, epochs: int) -> bool:
        return epochs <= self.left


@dataclass(frozen=True)
class Pool:
    """What one band offers a method."""

    band: str
    searchable: tuple[Entry, ...]  # the band's architectures, uniform ones inside it included
    uniform: tuple[Entry, ...]  # uniform networks at or below the band's upper cost
    epochs: int

    @property
    def best_test(self) -> float:
        return max(e.mean_test for e in (*self.searchable, *self.uniform))


def band_pool(table: GroundTruth, band_name: str, min_runs: int | None = None) -> Pool:
    """The band's architectures and the uniform ones at or below its cost, those with at least
    ``min_runs`` runs (default: every seed of the table)."""
    band = table.band(band_name)
    complete = set(id(e) for e in table.with_runs(
        table.setting.seeds if min_runs is None else min_runs))
    inside = [e for e in table.in_band(band_name) if id(e) in complete]
    uniform = [e for e in table.uniform() if id(e) in complete and e.paper_macs <= band.high]
    inside += [e for e in uniform if band.holds(e.paper_macs)]
    return Pool(band_name, tuple(inside), tuple(uniform), table.setting.epochs)


Proposer = Callable[[], Entry]  # the next architecture a method trains


def _in_order(entries: Sequence[Entry]) -> Proposer:
    """``entries`` one after another, each once."""
    order = list(entries)

    def propose() -> Entry:
        if not order:
            raise WorkSpent
        return order.pop(0)

    return propose


def _random_proposer(pool: Pool, rng: np.random.Generator) -> Proposer:
    """The band's architectures in a random order, each once."""
    return _in_order([pool.searchable[i] for i in rng.permutation(len(pool.searchable))])


class TpeProposer:
    """HetNAS's TPE on the log2 part per layer, each suggestion answered by the band's nearest
    architecture not yet proposed; the first ``startup`` are random architectures of the band."""

    def __init__(self, pool: Pool, seed: int, startup: int, rng: np.random.Generator) -> None:
        settings = dataclasses.replace(SearchSettings(), sampler="tpe", seed=seed)
        self.study = optuna.create_study(direction="maximize", sampler=make_sampler(settings))
        self.pool = pool.searchable
        self._left = list(pool.searchable)
        self._rng = rng
        self._startup = startup
        top = max(int(np.log2(p)) for e in pool.searchable for p in e.parts)
        self._distributions: dict[str, BaseDistribution] = {param_name(i): IntDistribution(0, top)
                               for i in range(len(pool.searchable[0].parts))}
        self._log_parts = {e.parts: np.log2(e.parts) for e in pool.searchable}

    def __call__(self) -> Entry:
        if not self._left:
            raise WorkSpent
        if len(self.pool) - len(self._left) < self._startup:
            entry = self._left[int(self._rng.integers(len(self._left)))]
        else:
            trial = self.study.ask(self._distributions)
            wanted = np.array([trial.params[name] for name in self._distributions])
            entry = min(self._left, key=lambda e: np.abs(self._log_parts[e.parts] - wanted).sum())
            self.study.tell(trial, state=TrialState.FAIL)  # the answered architecture learns
        self._left.remove(entry)
        return entry

    def learn(self, entry: Entry, curve: Sequence[float], finished: bool) -> None:
        """Tell TPE the validation accuracy of ``entry``'s training: final, or stopped early."""
        steps = {epoch + 1: value for epoch, value in enumerate(curve)}
        self.study.add_trial(create_trial(
            params=parts_to_params(entry.parts), distributions=self._distributions,
            state=TrialState.COMPLETE if finished else TrialState.PRUNED,
            value=curve[-1] if finished else None, intermediate_values=steps))


def _train_each(trainings: Trainings, propose: Proposer,
                learn: Callable[[Entry, Sequence[float], bool], None] | None) -> Entry:
    """Train each proposal in full while the work lasts; the best on validation."""
    done: list[tuple[float, Entry]] = []
    while trainings.affords(trainings.epochs):
        try:
            entry = propose()
        except WorkSpent:
            break
        run = trainings.start(entry)
        trainings.charge(trainings.epochs)
        done.append((run.val_accuracy, entry))
        if learn is not None:
            learn(entry, run.val_curve, True)
    if not done:
        raise WorkSpent
    return max(done, key=lambda d: d[0])[1]


def rungs(epochs: int) -> list[int]:
    """ASHA's rungs: the epochs ``epochs / η**k`` (at least one), ascending, up to ``epochs``."""
    found = {max(1, epochs // REDUCTION_FACTOR ** k) for k in range(epochs.bit_length())}
    return sorted(found)


def _promoted(value: float, seen: list[float]) -> bool:
    """Optuna's SuccessiveHalvingPruner rule: in the top 1/η of the rung's values (its own
    included), the rung's first value always."""
    index = max(len(seen) // REDUCTION_FACTOR - 1, 0)
    return value >= sorted(seen, reverse=True)[index]


def _halving(trainings: Trainings, propose: Proposer,
             learn: Callable[[Entry, Sequence[float], bool], None] | None) -> Entry:
    """Asynchronous successive halving: each proposal trains rung by rung while it is promoted
    and the work lasts; the best fully trained on validation."""
    steps = rungs(trainings.epochs)
    seen: dict[int, list[float]] = {rung: [] for rung in steps}
    done: list[tuple[float, Entry]] = []
    while trainings.affords(steps[0]):
        try:
            entry = propose()
        except WorkSpent:
            break
        run, trained = trainings.start(entry), 0
        for rung in steps:
            if not trainings.affords(rung - trained):
                break
            trainings.charge(rung - trained)
            trained = rung
            value = run.val_curve[rung - 1]
            seen[rung].append(value)
            if rung == steps[-1] or not _promoted(value, seen[rung]):
                break
        if trained == steps[-1]:
            done.append((run.val_accuracy, entry))
        if learn is not None:
            learn(entry, run.val_curve[:trained], trained == steps[-1])
    if not done:
        raise WorkSpent
    return max(done, key=lambda d: d[0])[1]


def best_uniform(pool: Pool, trainings: Trainings) -> Entry:
    """The best uniform network by mean validation accuracy, each trained again while the work
    lasts (all once before any twice)."""
    seen: dict[tuple[int, ...], list[float]] = {e.parts: [] for e in pool.uniform}
    try:
        while True:
            for entry in pool.uniform:
                run = trainings.start(entry)
                trainings.charge(trainings.epochs)
                seen[entry.parts].append(run.val_accuracy)
    except WorkSpent:
        pass
    trained = [e for e in pool.uniform if seen[e.parts]]
    return max(trained, key=lambda e: statistics.fmean(seen[e.parts]))


Method = Callable[[Pool, Trainings, int, np.random.Generator], Entry]


def methods(startups: Sequence[int]) -> dict[str, Method]:
    """The benchmark's methods by name; TPE once per start-up count."""
    found: dict[str, Method] = {
        "uniform (best by validation)": lambda pool, t, seed, rng: best_uniform(pool, t),
        "random": lambda pool, t, seed, rng: _train_each(t, _random_proposer(pool, rng), None),
        "random + ASHA": lambda pool, t, seed, rng: _halving(t, _random_proposer(pool, rng),
                                                             None),
    }
    for startup in startups:
        def tpe(pool: Pool, t: Trainings, seed: int, rng: np.random.Generator,
                startup: int = startup) -> Entry:
            proposer = TpeProposer(pool, seed, startup, rng)
            return _train_each(t, proposer, proposer.learn)

        def tpe_asha(pool: Pool, t: Trainings, seed: int, rng: np.random.Generator,
                     startup: int = startup) -> Entry:
            proposer = TpeProposer(pool, seed, startup, rng)
            return _halving(t, proposer, proposer.learn)

        found[f"TPE ({startup} start-up)"] = tpe
        found[f"TPE + ASHA ({startup} start-up)"] = tpe_asha
    return found


def oneshot_method(supernets: Sequence[dict], calibration: str) -> Method:
    """One-shot search read from measured supernets (module docstring): supernet and estimates
    charged, then the band's architectures trained best estimate first."""
    def method(pool: Pool, trainings: Trainings, seed: int, rng: np.random.Generator) -> Entry:
        supernet = supernets[seed % len(supernets)]
        scores = supernet["scores"]
        ranked = sorted((e for e in pool.searchable if e.label in scores),
                        key=lambda e: -scores[e.label][calibration][0])
        trainings.charge(oneshot_overhead(supernet, len(ranked), calibration, pool.epochs))
        return _train_each(trainings, _in_order(ranked), None)
    return method


def oneshot_overhead(supernet: dict, candidates: int, calibration: str, epochs: int) -> int:
    """Epochs (of stand-alone training) a one-shot search spends before its first finalist:
    the supernet's training and ``candidates`` estimates."""
    seconds_per_training = supernet["train_seconds"] / supernet["work"]
    estimates = candidates * supernet["seconds_per_estimate"][calibration] / seconds_per_training
    return math.ceil((supernet["work"] + estimates) * epochs)


def oneshot_methods(path: str | None, band: str, calibration: str) -> dict[str, Method]:
    """A one-shot method per recipe measured for ``band`` in the results file at ``path``."""
    if path is None:
        return {}
    supernets = [s for s in json.loads(Path(path).read_text())["supernets"]
                 if s["band"] in (band, "all")]
    recipes = dict.fromkeys(s["recipe"] for s in supernets)
    return {f"one-shot ({recipe})": oneshot_method(
                sorted((s for s in supernets if s["recipe"] == recipe), key=lambda s: s["seed"]),
                calibration)
            for recipe in recipes}


def no_search(pool: Pool, trainings: Trainings, seed: int, rng: np.random.Generator) -> Entry:
    return pool.searchable[int(rng.integers(len(pool.searchable)))]


@dataclass(frozen=True)
class Outcome:
    """One method's picks at one band and work, over the search seeds."""

    method: str
    picks: tuple[Entry, ...]
    regrets: tuple[float, ...]  # test points


def run_method(pool: Pool, table: GroundTruth, method: Method, name: str, work: int,
               search_seeds: Sequence[int]) -> Outcome | None:
    """The method's picks over the search seeds; None where its work does not reach a pick
    (a one-shot search whose supernet and estimates use it up)."""
    picks = []
    for seed in search_seeds:
        rng = np.random.default_rng([seed, work])
        try:
            picks.append(method(pool, Trainings(table, work, rng), seed, rng))
        except WorkSpent:
            return None
    regrets = tuple(100 * (pool.best_test - p.mean_test) for p in picks)
    return Outcome(name, tuple(picks), regrets)


def _mean_interval(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    half = t95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


def _against(outcome: Outcome, rival: Outcome) -> str:
    differences = [a - b for a, b in zip(rival.regrets, outcome.regrets, strict=True)]
    wins = sum(d > 1e-9 for d in differences)
    losses = sum(d < -1e-9 for d in differences)
    return (f"{_mean_interval(differences)} ({wins} better, {losses} worse, "
            f"{len(differences) - wins - losses} same)")


def report(table: GroundTruth, works: Sequence[int], search_seeds: Sequence[int],
           startups: Sequence[int], min_runs: int | None = None, oneshot: str | None = None,
           calibration: str = "2048") -> str:
    lines = []
    for band in table.bands:
        pool = band_pool(table, band.name, min_runs)
        if len(pool.searchable) < 2 or not pool.uniform:
            continue
        best = max((*pool.searchable, *pool.uniform), key=lambda e: e.mean_test)
        lines += [f"**{band.name}** band ({len(pool.searchable)} architectures, "
                  f"{len(pool.uniform)} uniform at or below its cost); best mean test "
                  f"{100 * best.mean_test:.2f} % ({best.label})", ""]
        for work in works:
            lines += [f"Work: {work} epochs ({work / table.setting.epochs:g} full trainings), "
                      f"{len(search_seeds)} search seeds", "",
                      "| method | regret, test points [95 %] | picks the best | mean test of "
                      "the pick | better than uniform by (points) [95 %] |",
                      "|---|---|---|---|---|"]
            every = {**methods(startups), "no search": no_search,
                     **oneshot_methods(oneshot, band.name, calibration)}
            chosen = {name: run_method(pool, table, method, name, work, search_seeds)
                      for name, method in every.items()}
            uniform = chosen["uniform (best by validation)"]
            assert uniform is not None  # the uniform networks are trained first
            for name, outcome in chosen.items():
                if outcome is None:
                    lines.append(f"| {name} | its supernet and estimates use up the work | | "
                                 f"| |")
                    continue
                hits = sum(p is best for p in outcome.picks)
                mean_test = statistics.fmean(100 * p.mean_test for p in outcome.picks)
                versus = "" if outcome is uniform else _against(outcome, uniform)
                lines.append(f"| {name} | {_mean_interval(outcome.regrets)} | "
                             f"{hits}/{len(outcome.picks)} | {mean_test:.2f} | {versus} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="a ground-truth table (bench/ground_truth.py's file)")
    parser.add_argument("--work", type=int, nargs="+", default=[16],
                        help="each method's training compute, in epochs summed over trainings")
    parser.add_argument("--search-seeds", type=int, default=30)
    parser.add_argument("--startup", type=int, nargs="+", default=[STARTUP_TRIALS],
                        help="TPE's random start-up architectures (several: one row each)")
    parser.add_argument("--min-seeds", type=int, default=None,
                        help="use architectures with at least this many runs (default: all "
                             "the table's seeds; fewer for a table still being built)")
    parser.add_argument("--oneshot", default=None,
                        help="a bench/oneshot_ranking.py results file: a one-shot row per recipe")
    parser.add_argument("--calibration", default="2048",
                        help="with --oneshot: the estimates' batch-norm calibration size")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = load(args.table)
    if args.min_seeds is not None and not 1 <= args.min_seeds <= table.setting.seeds:
        parser.error(f"--min-seeds must be from 1 to the table's {table.setting.seeds} seeds")
    text = report(table, args.work, range(args.search_seeds), args.startup, args.min_seeds,
                  args.oneshot, args.calibration)
    seeds = (f"the table's {table.setting.seeds} seeds" if args.min_seeds is None else
             f"architectures with at least {args.min_seeds} of the table's "
             f"{table.setting.seeds} seeds")
    print(f"{table.setting.backbone} on {table.setting.dataset}, {table.setting.epochs} epochs a "
          f"training, {seeds}; table made by "
          f"{table.made.get('command')} at {table.made.get('commit')}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
