"""Does a whole one-shot search find a better architecture than the standard TPE search given the
same wall time, and does it beat the uniform baselines at matched cost?

``bench/oneshot_quality.py`` measures the one-shot strategy's parts (how the supernet ranks, what
it costs, scratch against fine-tuned finalists); this benchmark measures the whole search end to
end, as a user runs it, because only the end result answers whether to choose ``--strategy
oneshot``. It prints figures with their noise and never asserts.

1. **One-shot search** (``run_search`` in this process, a local Ray, a fresh SQLite file):
   ``--supernet-epochs`` of supernet, ``--candidates`` estimates, the ``--finalists`` best and the
   uniform baselines (``--baselines``) trained stand-alone, then the confirmation stage
   (``--confirm-top``, ``--confirm-seeds``). Its wall time W1 and its export (``export_best``):
   the exported architecture's runs over seeds, on the test split.
2. **Standard search** (TPE, the same epochs, baselines, confirmation and seed) whose ``--trials``
   makes its wall time about W1: the one-shot search's stand-alone trials give the mean wall
   seconds of one training, so W1 holds W1 × (trainings at once) / mean trainings, less the
   baselines and confirmation runs both searches train. Its wall time W2 and its export.
3. **The unit**: one stand-alone training of the full network (part 1 everywhere) with the same
   epochs, timed in this process with ``--cpus-per-trial`` threads, so W1 and W2 read as "so many
   trainings of the standard network" on any machine.

Each export is compared with the confirmed uniform baseline nearest at or below its cost, and the
two exports with each other: the difference of test means with its 95 % interval (Welch's t over
the seeds, never narrower than the test split's binomial noise: ``search.store.uncertainty``).
The supernet's Kendall tau (estimate against stand-alone validation accuracy over the trained
architectures) says how far its ranking was worth trusting in this very run.

Training uses the first ``--train-images`` Fashion-MNIST training images (written as IDX files to
a scratch folder; 10 % become the validation split) and the first ``--test-images`` test images;
say so when quoting the figures. The searches' own console output
goes to log files in the scratch folder, which is kept (its path is printed).

    python bench/oneshot_search.py --train-images 3000 --epochs 3 --supernet-epochs 6 \
        --candidates 300 --finalists 3
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import torch

from search.driver import SearchOutcome, run_search
from search.engine.best import export_best
from search.engine.console import duration, parts_summary
from search.engine.settings import FINALIST_INITS, OneShotSettings, SearchSettings
from search.engine.study import trial_counts
from search.oneshot.strategy import SupernetRecord
from search.store import records
from search.store.agreement import agreement
from search.store.records import ArchitectureRuns, TrialRecord
from search.store.storage import open_existing
from search.store.uncertainty import Estimate, difference_interval, estimate, verdict
from search.training.augment import unit_range
from search.training.data import DataSplits, check_dataset, load_dataset
from search.training.datasets.fashion_mnist import write_prefix
from search.training.trainer import TrainConfig, train, trained_architecture
from space import Architecture

BATCH_SIZE = 128


@dataclass(frozen=True)
class SearchResult:
    """One finished search as this benchmark reads it."""

    name: str  # "one-shot" or "standard (TPE)"
    wall: float  # seconds, run_search's call alone
    outcome: SearchOutcome
    test_images: int | None
    exported: ArchitectureRuns  # the export's architecture with all its runs
    baseline: ArchitectureRuns | None  # nearest other uniform baseline at or below its cost
    searched: ArchitectureRuns | None  # the best searched (not uniform) architecture
    log: Path

    @property
    def exported_uniform(self) -> bool:
        """The export is one of the uniform baselines: nothing searched beat it on validation."""
        return self.exported.first.baseline_part is not None

    @property
    def trained(self) -> list[TrialRecord]:
        """Stand-alone trainings that finished (baselines and confirmation runs included)."""
        return [r for r in self.outcome.records if r.is_full_result and not r.estimate]

    def export_estimate(self) -> Estimate:
        return estimate(self.exported.test_accuracies, self.test_images)

    def baseline_estimate(self) -> Estimate | None:
        if self.baseline is None or not self.baseline.test_accuracies:
            return None
        return estimate(self.baseline.test_accuracies, self.test_images)


def _load_study(outcome: SearchOutcome) -> optuna.Study:
    return optuna.load_study(study_name=outcome.study_name,
                             storage=open_existing(outcome.storage))


def _nearest_baseline(groups: list[ArchitectureRuns], macs: int) -> ArchitectureRuns | None:
    """The costliest uniform baseline at or below ``macs``: confirmed ones first (the search's
    own verdict compares over seeds too), else one with a single run."""
    cheaper = [g for g in groups if g.first.baseline_part and (g.first.paper_macs or 0) <= macs
               and g.test_accuracies]
    confirmed = [g for g in cheaper if g.confirmed]
    pool = confirmed or cheaper
    return max(pool, key=lambda g: (g.first.paper_macs or 0, -g.first.number)) if pool else None


def _search(name: str, settings: SearchSettings, root: Path, tag: str) -> SearchResult:
    """Run one search with its console output in ``root/<tag>.log``, export its best."""
    log = root / f"{tag}.log"
    print(f"# {name}: search console output in {log}", flush=True)
    started = time.perf_counter()
    try:
        with log.open("w") as out:
            outcome = run_search(settings, out=out)
    finally:
        wall = time.perf_counter() - started
        ray.shutdown()  # each search starts its own Ray, as `search.run` does
    best = export_best(outcome.storage, outcome.study_name, root / f"{tag}-best.json")
    groups = records.runs_by_architecture(outcome.records)
    exported = next(g for g in groups if g.first.parts == best.parts)
    study = _load_study(outcome)
    others = [g for g in groups if g is not exported]
    searched = next((g for g in groups if not g.first.baseline_part), None)
    result = SearchResult(name, wall, outcome, study.user_attrs.get(records.STUDY_TEST_IMAGES),
                          exported, _nearest_baseline(others, exported.first.paper_macs or 0),
                          searched, log)
    print(f"# {name}: {duration(wall)} wall, {len(result.trained)} stand-alone trainings, "
          f"export {parts_summary(best.parts)} ({(best.paper_macs or 0) / 1e6:.2f} M MACs), "
          f"test {result.export_estimate().describe()}", flush=True)
    return result


def _matched_trials(oneshot: SearchResult, slots: int) -> tuple[int, str]:
    """``--trials`` for a standard search lasting about the one-shot's wall time, and how."""
    trained = oneshot.trained
    seconds = [r.wall_seconds for r in trained if r.wall_seconds]
    mean = statistics.fmean(seconds)
    affordable = oneshot.wall * slots / mean
    fixed = sum(1 for r in trained if r.baseline_part or r.replicate)
    trials = max(1, round(affordable - fixed))
    how = (f"the one-shot search's {len(seconds)} stand-alone trainings took {mean:.1f} s each "
           f"on average (records' wall_seconds); W1 = {oneshot.wall:.0f} s × {slots} at once / "
           f"{mean:.1f} s = {affordable:.1f} trainings, less the {fixed} baselines and "
           f"confirmation runs the standard search also trains (counted in the one-shot "
           f"search) = {affordable - fixed:.1f} → --trials {trials}")
    return trials, how


def _time_full_network(args: argparse.Namespace, data: DataSplits) -> float:
    """Wall seconds of one stand-alone training of the part-1 network, after a warm-up pass so
    the timed run pays none of the process's first-call costs."""
    arch = Architecture.uniform(args.backbone, 1, args.input_size, data.num_classes,
                                data.channels)
    with torch.random.fork_rng(devices=[]):
        model = trained_architecture(arch, data).build()
        model(unit_range(data.train_x[:BATCH_SIZE])).sum().backward()
    started = time.perf_counter()
    result = train(arch, data, TrainConfig(epochs=args.epochs, batch_size=BATCH_SIZE,
                                           seed=args.seed))
    seconds = time.perf_counter() - started
    print(f"# the unit: part-1 network stand-alone, {args.epochs} epochs, "
          f"{torch.get_num_threads()} thread(s): {seconds:.1f} s (val "
          f"{result.val_accuracy:.2%}, test {result.test_accuracy:.2%})", flush=True)
    return seconds


def _pct(value: Estimate | None) -> str:
    """``71.33 ± 1.20 (3 seeds)`` in percent, or ``71.33 (1 run)``."""
    if value is None:
        return "-"
    spread = f" ± {100 * value.spread:.2f}" if value.spread is not None else ""
    runs = len(value.runs)
    return f"{100 * value.mean:.2f}{spread} ({runs} {'seeds' if runs > 1 else 'run'})"


def _difference(a: Estimate, b: Estimate | None) -> str:
    """``+1.20 [−0.40, +2.80]: not distinguishable`` in test points."""
    if b is None:
        return "no (other) uniform baseline at or below its cost"
    found = difference_interval(a, b)
    gap = 100 * (a.mean - b.mean)
    if found is None:
        return f"{gap:+.2f} (noise unknown)"
    (low, high), _ = found
    word = ("better beyond noise" if low > 0 else "worse beyond noise" if high < 0
            else "not distinguishable")
    return f"{gap:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]: {word}"


def _row(result: SearchResult, unit: float, budget: float) -> str:
    first = result.exported.first
    mine = result.export_estimate()
    base = result.baseline_estimate()
    rival = result.baseline
    base_name = "-" if rival is None else (
        f"P{rival.first.baseline_part} ({(rival.first.paper_macs or 0) / 1e6:.2f} M): "
        f"{_pct(base)}")
    uniform = f" (= uniform P{first.baseline_part})" if result.exported_uniform else ""
    return (f"| {result.name} | {result.wall / 60:.1f} | {result.wall / unit:.1f} | "
            f"{parts_summary(first.parts)}{uniform} | {(first.paper_macs or 0) / 1e6:.2f} M "
            f"({(first.paper_macs or 0) / budget:.0%}) | {_pct(mine)} | {base_name} | "
            f"{_difference(mine, base)} |")


def _searched_line(result: SearchResult) -> str:
    """``; its best searched architecture ...``: that one against its nearest baseline."""
    best = result.searched
    if best is None or not best.test_accuracies:
        return "; no searched architecture finished"
    groups = records.runs_by_architecture(result.outcome.records)
    rival = _nearest_baseline(groups, best.first.paper_macs or 0)
    mine = estimate(best.test_accuracies, result.test_images)
    words = (f"; its best searched architecture ({parts_summary(best.first.parts)}, "
             f"{(best.first.paper_macs or 0) / 1e6:.2f} M MACs, trial {best.first.number}) "
             f"tested {_pct(mine)}")
    if rival is None or not rival.test_accuracies:
        return words + ", with no uniform baseline at or below its cost"
    return words + ": " + verdict(mine, estimate(rival.test_accuracies, result.test_images),
                                  "it", f"uniform P{rival.first.baseline_part}", "the test split")


def _command(argv: list[str] | None) -> str:
    given = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "bench/oneshot_search.py", *given])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--dataset", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    add("--backbone", default="resnet20")
    add("--input-size", type=int, default=32)
    add("--train-images", type=int, default=3000,
        help="Fashion-MNIST: the first N training images, 10%% of them for validation")
    add("--test-images", type=int, default=10_000,
        help="Fashion-MNIST: the first N test images (default all 10,000)")
    add("--epochs", type=int, default=3, help="every stand-alone training")
    add("--supernet-epochs", type=int, default=6)
    add("--candidates", type=int, default=300)
    add("--finalists", type=int, default=3)
    add("--finalist-init", choices=FINALIST_INITS, default=OneShotSettings.finalist_init,
        help="how the one-shot search's stand-alone runs start (default: the search's own)")
    add("--baselines", choices=["all", "near", "none"], default="near")
    add("--confirm-top", type=int, default=1)
    add("--confirm-seeds", type=int, default=3)
    add("--budget-part", type=int, default=4,
        help="the MACs budget is uniform P at this part (default 4)")
    add("--seed", type=int, default=0, help="both searches' seed (sampler, data, training)")
    add("--cpus-per-trial", type=int, default=1,
        help="CPUs (torch threads) per training, also for the timed part-1 training")
    add("--max-concurrent", type=int, default=None,
        help="trainings at once (default: this machine's CPUs / --cpus-per-trial)")
    add("--workdir", type=Path, default=None,
        help="where the data, studies, checkpoints and logs go (default: a new scratch folder, "
             "kept)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    slots = args.max_concurrent or max(1, (cpus or 1) // args.cpus_per_trial)
    # As `search.run` does: the search prints its own lines; Ray Tune's tables would drown them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.cpus_per_trial)
    command = _command(argv)
    print(f"# {command}", flush=True)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="oneshot_search-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# scratch folder (kept): {root}", flush=True)
    load_start = os.getloadavg()
    started = time.perf_counter()

    data_dir = None
    if args.dataset == "fashion-mnist":
        data_dir = str(root / "data")
        write_prefix(root / "data", args.train_images, args.test_images)
    info = check_dataset(args.dataset, data_dir, download=False)
    budget = Architecture.uniform(args.backbone, args.budget_part, args.input_size,
                                  info.num_classes, info.channels).macs
    data = load_dataset(args.dataset, args.input_size, data_dir, seed=args.seed, download=False)
    train_n, val_n, test_n = data.sizes
    print(f"# {args.backbone} on {args.dataset}: {train_n} training, {val_n} validation, "
          f"{test_n} test images at {args.input_size} px; budget uniform P{args.budget_part} = "
          f"{budget / 1e6:.2f} M MACs; {slots} training(s) at once, {args.cpus_per_trial} "
          f"CPU(s) each, {cpus} CPUs here", flush=True)

    unit = _time_full_network(args, data)
    del data

    common = SearchSettings(
        budget=budget, backbone=args.backbone, dataset=args.dataset, data_dir=data_dir,
        input_size=args.input_size, epochs=args.epochs, batch_size=BATCH_SIZE,
        baselines=args.baselines, confirm_top=args.confirm_top,
        confirm_seeds=args.confirm_seeds, seed=args.seed, sampler="tpe",
        cpus_per_trial=args.cpus_per_trial, max_concurrent=slots,
        artifacts_dir=str(root / "artifacts"))

    def settings(tag: str, **changes: Any) -> SearchSettings:
        return dataclasses.replace(common, storage=f"sqlite:///{root / f'{tag}.db'}", study=tag,
                                   **changes)

    oneshot = _search("one-shot", settings(
        "oneshot", strategy="oneshot", oneshot=OneShotSettings(
            supernet_epochs=args.supernet_epochs, candidates=args.candidates,
            finalists=args.finalists, finalist_init=args.finalist_init)),
        root, "oneshot")
    study = _load_study(oneshot.outcome)
    supernet = SupernetRecord.of(study)
    estimates = trial_counts(study).estimates
    tau = agreement(records.runs_by_architecture(oneshot.outcome.records))

    trials, how = _matched_trials(oneshot, slots)
    print(f"# standard search: {how}", flush=True)
    standard = _search("standard (TPE)", settings("standard", strategy="standard",
                                                   trials=trials), root, "standard")
    wall = time.perf_counter() - started
    load_end = os.getloadavg()

    results = (oneshot, standard)
    print(f"\n{args.backbone} on {args.dataset} at {args.input_size} px: {train_n} training, "
          f"{val_n} validation, {test_n} test images; {args.epochs} epochs per stand-alone "
          f"training, batch {BATCH_SIZE}; budget uniform P{args.budget_part} = "
          f"{budget / 1e6:.2f} M MACs; baselines {args.baselines}; confirmation: best "
          f"{args.confirm_top}, {args.confirm_seeds} seeds; seed {args.seed}; {slots} "
          f"training(s) at once × {args.cpus_per_trial} CPU(s) on {cpus} CPUs; load "
          f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
          f"{wall / 60:.1f} min wall in all\n")
    print(f"    {command}\n")
    supernet_words = ("no supernet record" if supernet is None else
                      f"supernet {supernet.epochs} epochs ({supernet.recipe}) in "
                      f"{supernet.seconds:.0f} s = {supernet.seconds / unit:.1f} units, largest "
                      f"network val {supernet.val_accuracy:.2%}")
    print(f"one-shot: {supernet_words}; {estimates} candidates estimated; {args.finalists} "
          f"finalists, stand-alone runs start from "
          f"{'the supernet' if args.finalist_init == 'supernet' else 'scratch'}; "
          f"{len(oneshot.trained)} stand-alone trainings")
    print(f"standard: TPE, --trials {trials}: {how}; {len(standard.trained)} stand-alone "
          f"trainings, {standard.outcome.rejected} proposals rejected over the budget; W2/W1 = "
          f"{standard.wall / oneshot.wall:.2f}")
    print(f"unit: one stand-alone training of the part-1 network, {args.epochs} epochs, "
          f"{args.cpus_per_trial} thread(s), alone: {unit:.1f} s\n")
    images = f"{test_n} test images" if standard.test_images is None else (
        f"{standard.test_images} test images")
    print(f"| strategy | wall (min) | in part-1 trainings | exported: parts | MACs (of budget) "
          f"| export's test, mean ± sd ({images}) | nearest confirmed uniform baseline at or "
          f"below its cost: test | export − baseline, test points [95 % interval] |")
    print("|---|--:|--:|---|--:|--:|--:|--:|")
    for result in results:
        print(_row(result, unit, budget))
    print()
    for result in results:
        base = result.baseline_estimate()
        if base is not None and result.baseline is not None:
            print(f"{result.name}: " + verdict(
                result.export_estimate(), base, "the export",
                f"uniform P{result.baseline.first.baseline_part}", "the test split"))
        if result.exported_uniform:
            print(f"{result.name}: the export is uniform P{result.exported.first.baseline_part} "
                  f"itself: no searched architecture beat it on validation"
                  + _searched_line(result))
    print("one-shot vs standard: " + verdict(
        oneshot.export_estimate(), standard.export_estimate(), "one-shot's export",
        "the standard search's export", "the test split"))
    if oneshot.exported.first.parts == standard.exported.first.parts:
        print(f"  (both searches exported the same architecture, "
              f"{parts_summary(oneshot.exported.first.parts)}: the gap is one of training, "
              f"not of architecture)")
    if args.finalist_init == "supernet":
        print(f"  (the one-shot search's stand-alone runs, its baselines included, start from "
              f"the supernet's weights, {args.supernet_epochs} epochs trained, and the standard "
              f"search's from scratch: a gap between the two exports mixes the architecture "
              f"with that training)")
    print("one-shot supernet: " + (tau.describe() if tau else
                                   "Kendall tau undefined (fewer than two estimated "
                                   "architectures with different results)"))
    print(f"\nlogs: {oneshot.log}, {standard.log}; exports: {root / 'oneshot-best.json'}, "
          f"{root / 'standard-best.json'}")


if __name__ == "__main__":
    main()
