"""Does the one-shot supernet rank architectures as stand-alone training does, what does it cost,
and should the finalists start from its weights?

The one-shot strategy (``search/oneshot``) trusts three things this benchmark measures, each in
its own table; it prints figures and never asserts.

(a) **Ranking.** One supernet is trained as a search trains it: ``--recipe largest`` (the default)
    trains the largest network alone; ``--recipe sandwich`` the sandwich rule (``--sandwich`` random
    subnets per step beside the largest and the smallest network, unless ``--no-smallest``,
    distilled from the largest unless ``--no-distill``), its random subnets drawn from the
    architectures within the budget (uniform P = ``--budget-part``'s MACs). ``--architectures``
    architectures within the budget are then picked: every uniform-P network within it (the search's
    baselines) and random draws spread evenly over the MACs range of the budget-fitting draws. Each
    is estimated by the supernet (batch norm re-estimated, validation accuracy:
    ``SupernetEvaluator``) and trained stand-alone from scratch with ``--seeds`` seeds. Kendall's
    tau and Spearman's rho between the estimates and the stand-alone validation (and test) accuracy
    say how far the estimates can be trusted to rank; MACs alone (more is better) is the trivial
    predictor the supernet must beat, and with two or more seeds seed 0 against seed 1 is the noise
    ceiling.
(b) **Cost.** Wall seconds of the supernet's training and of all the estimates, in units of one
    stand-alone training of the full network (part 1 everywhere) with the same epochs, timed in
    the same run.
(c) **Scratch or fine-tuned.** The ``--finalists`` best-estimated architectures, trained
    stand-alone from scratch (their runs of (a)) and fine-tuned from their weights in the
    supernet (``supernet_start``, same recipe and epochs), mean ± sd over the seeds: the
    measurement behind the default of ``--finalist-init``.

Everything runs in this process, one training at a time (``--threads`` torch threads), on the
first ``--train-images`` training images: for Fashion-MNIST they are written as IDX files to a
scratch folder and 10 % of them become the validation split, the test split being the full
10,000 images; for the digits they cap the training split
(1,295 images at most; validation 143 and test 359 images). Say so when quoting the figures.

    python bench/oneshot_quality.py --dataset digits --input-size 16 --epochs 3 \
        --supernet-epochs 3 --architectures 12 --seeds 2 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from search.engine.budgets import Budgets
from search.engine.console import parts_summary
from search.oneshot.estimates import CALIBRATION_IMAGES, SupernetEvaluator
from search.oneshot.sandwich import (
    SandwichRecipe,
    SupernetRun,
    largest_only,
    recipe_for,
    supernet_architecture,
)
from search.training.augment import unit_range
from search.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from search.training.data import DataSplits, load_dataset
from search.training.datasets.fashion_mnist import write_prefix
from search.training.start import supernet_start
from search.training.trainer import (
    TrainConfig,
    TrainingRun,
    TrainResult,
    resolve_device,
    train,
    trained_architecture,
)
from space import Architecture, SearchSpace

BATCH_SIZE = 128
FASHION_TEST_IMAGES = 10_000


@dataclass
class Candidate:
    """One architecture of the ranking: how it was picked, its estimate, its trainings."""

    label: str  # "uniform P4" or "random"
    arch: Architecture
    estimate: float = float("nan")
    scratch: list[TrainResult] = field(default_factory=list)
    finetuned: list[TrainResult] = field(default_factory=list)

    def val(self, runs: list[TrainResult] | None = None) -> float:
        return statistics.fmean(r.val_accuracy for r in (self.scratch if runs is None else runs))

    def test(self, runs: list[TrainResult] | None = None) -> float:
        return statistics.fmean(r.test_accuracy for r in (self.scratch if runs is None else runs))


@dataclass
class Clock:
    """Wall seconds of each stage; ``unit`` is one stand-alone training of the part-1 network."""

    unit: float = float("nan")
    supernet: float = 0.0
    estimates: float = 0.0
    scratch: list[float] = field(default_factory=list)
    finetuned: list[float] = field(default_factory=list)


def _data(args: argparse.Namespace, root: Path) -> DataSplits:
    if args.dataset == "fashion-mnist":
        write_prefix(root / "data", args.train_images, FASHION_TEST_IMAGES)
        return load_dataset("fashion-mnist", args.input_size, root / "data", seed=args.seed,
                            download=False)
    data = load_dataset(args.dataset, args.input_size, seed=args.seed)
    return dataclasses.replace(data, train_x=data.train_x[:args.train_images],
                               train_y=data.train_y[:args.train_images])


def _arch(space: SearchSpace, parts: Sequence[int]) -> Architecture:
    return Architecture(space.backbone, tuple(parts), space.input_size, space.num_classes,
                        space.in_channels)


def _candidates(space: SearchSpace, budgets: Budgets, count: int, seed: int,
                draws: int = 20_000) -> list[Candidate]:
    """The uniform networks within the budget (at most half of ``count``, the costliest
    first), then random draws within it whose MACs are nearest to evenly spaced targets over the
    draws' MACs range (one per target, all distinct)."""
    uniform = [Candidate(f"uniform P{p}", _arch(space, space.uniform_parts(p)))
               for p in reversed(space.uniform_choices())]
    chosen = [c for c in uniform if budgets.within(space, np.array([c.arch.parts]))[0]]
    chosen = sorted(chosen, key=lambda c: -c.arch.macs)[:count // 2]
    taken = {c.arch.parts for c in chosen}
    rng = np.random.default_rng([seed, 17])  # not the supernet pool's draws
    parts = space.random_parts(rng, draws)
    parts = parts[budgets.within(space, parts)]
    rng.shuffle(parts)
    macs = space.cost.paper_macs(parts).astype(float)
    targets = (np.linspace(macs.min(), macs.max(), count - len(chosen)) if len(parts)
               else np.empty(0))
    free = np.ones(len(parts), dtype=bool)
    for target in targets:
        order = np.argsort(np.abs(macs - target), kind="stable")
        for i in order:
            row = tuple(int(p) for p in parts[i])
            if free[i] and row not in taken:
                free[i] = False
                taken.add(row)
                chosen.append(Candidate("random", _arch(space, row)))
                break
    return sorted(chosen, key=lambda c: c.arch.macs)


def _warm_up(arch: Architecture, data: DataSplits, device: str) -> None:
    """One forward and backward pass, so that no timed run pays the process's first-call costs
    (thread pools, allocator, kernel selection)."""
    with torch.random.fork_rng(devices=[]):
        model = trained_architecture(arch, data).build().to(resolve_device(device))
    batch = unit_range(data.train_x[:BATCH_SIZE]).to(resolve_device(device))
    model(batch).sum().backward()


def _timed_train(arch: Architecture, data: DataSplits,
                 config: TrainConfig) -> tuple[TrainResult, float]:
    started = time.perf_counter()
    result = train(arch, data, config)
    return result, time.perf_counter() - started


def _train_supernet(space: SearchSpace, data: DataSplits, recipe: SandwichRecipe,
                    config: TrainConfig, folder: Path) -> TrainResult:
    def factory(arch: Architecture, split: DataSplits, cfg: TrainConfig,
                device: torch.device) -> TrainingRun:
        return SupernetRun(arch, split, cfg, device, recipe)

    return train(supernet_architecture(space), data, config, checkpoint_dir=folder,
                 run_factory=factory)


def _correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float, float]:
    """Kendall's tau-b and its p-value, Spearman's rho and its p-value (nan when constant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y)
        rho = stats.spearmanr(x, y)
    return float(tau.statistic), float(tau.pvalue), float(rho.statistic), float(rho.pvalue)


def _pct(values: Sequence[float]) -> str:
    """``71.33 ± 1.20`` (percent; the sd only with two or more values)."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def _ranks(values: Sequence[float]) -> list[int]:
    """1 for the highest value; ties share the better rank."""
    return [int(r) for r in stats.rankdata([-v for v in values], method="min")]


def _ranking_table(candidates: list[Candidate], seeds: int) -> list[str]:
    est_rank = _ranks([c.estimate for c in candidates])
    val_rank = _ranks([c.val() for c in candidates])
    sd = " ± sd" if seeds > 1 else ""
    lines = [f"| # | picked as | parts (count per part) | part vector | MACs | supernet "
             f"estimate | stand-alone val{sd} | stand-alone test{sd} | rank: estimate | "
             f"rank: stand-alone val |",
             "|--:|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for i, c in enumerate(candidates):
        vector = ",".join(str(p) for p in c.arch.parts)
        lines.append(f"| {i + 1} | {c.label} | {parts_summary(c.arch.parts)} | `{vector}` | "
                     f"{c.arch.macs / 1e6:.2f} M | {100 * c.estimate:.2f} | "
                     f"{_pct([r.val_accuracy for r in c.scratch])} | "
                     f"{_pct([r.test_accuracy for r in c.scratch])} | {est_rank[i]} | "
                     f"{val_rank[i]} |")
    return lines


def _correlation_table(candidates: list[Candidate], seeds: int) -> tuple[list[str], float]:
    estimates = [c.estimate for c in candidates]
    macs = [float(c.arch.macs) for c in candidates]
    val = [c.val() for c in candidates]
    test = [c.test() for c in candidates]
    rows = [("supernet estimate", "stand-alone val", estimates, val),
            ("supernet estimate", "stand-alone test", estimates, test),
            ("MACs (more is better)", "stand-alone val", macs, val),
            ("MACs (more is better)", "stand-alone test", macs, test),
            ("stand-alone val", "stand-alone test", val, test)]
    if seeds > 1:
        first = [c.scratch[0].val_accuracy for c in candidates]
        second = [c.scratch[1].val_accuracy for c in candidates]
        rows.append(("stand-alone val, seed 0", "seed 1 (noise ceiling)", first, second))
    lines = ["| predictor | against | Kendall tau | p | Spearman rho | p |",
             "|---|---|--:|--:|--:|--:|"]
    tau_val = float("nan")
    for name, against, x, y in rows:
        tau, tau_p, rho, rho_p = _correlation(x, y)
        if (name, against) == ("supernet estimate", "stand-alone val"):
            tau_val = tau
        lines.append(f"| {name} | {against} | {tau:+.3f} | {tau_p:.3f} | {rho:+.3f} | "
                     f"{rho_p:.3f} |")
    return lines, tau_val


def _cost_table(clock: Clock, args: argparse.Namespace, count: int,
                reference: TrainResult) -> list[str]:
    def row(what: str, seconds: float) -> str:
        return f"| {what} | {seconds:.1f} | {seconds / clock.unit:.3f} |"

    lines = ["| stage | wall s | stand-alone part-1 trainings |", "|---|--:|--:|",
             row(f"stand-alone training of the part-1 network, {args.epochs} epochs (the unit; "
                 f"val {100 * reference.val_accuracy:.2f}, test "
                 f"{100 * reference.test_accuracy:.2f})", clock.unit),
             row(f"supernet training, {args.supernet_epochs} epochs: {_recipe_words(args)} "
                 f"(pool drawing included)", clock.supernet),
             row(f"all {count} estimates (evaluator set-up included)", clock.estimates),
             row("one estimate (mean)", clock.estimates / count),
             row(f"stand-alone training from scratch of a picked architecture (mean of "
                 f"{len(clock.scratch)})", statistics.fmean(clock.scratch))]
    if clock.finetuned:
        lines.append(row(f"fine-tuning a finalist from the supernet (mean of "
                         f"{len(clock.finetuned)}, weight extraction included)",
                         statistics.fmean(clock.finetuned)))
    return lines


def _finalist_table(finalists: list[Candidate]) -> tuple[list[str], list[float], list[float]]:
    lines = ["| finalist (by estimate) | MACs | estimate | val: scratch | val: fine-tuned | "
             "test: scratch | test: fine-tuned | test: fine-tuned − scratch |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    val_diffs: list[float] = []
    test_diffs: list[float] = []
    for c in finalists:
        diffs = [100 * (f.test_accuracy - s.test_accuracy)
                 for f, s in zip(c.finetuned, c.scratch, strict=True)]
        val_diffs += [100 * (f.val_accuracy - s.val_accuracy)
                      for f, s in zip(c.finetuned, c.scratch, strict=True)]
        test_diffs += diffs
        lines.append(f"| {c.label}: {parts_summary(c.arch.parts)} | {c.arch.macs / 1e6:.2f} M | "
                     f"{100 * c.estimate:.2f} | {_pct([r.val_accuracy for r in c.scratch])} | "
                     f"{_pct([r.val_accuracy for r in c.finetuned])} | "
                     f"{_pct([r.test_accuracy for r in c.scratch])} | "
                     f"{_pct([r.test_accuracy for r in c.finetuned])} | "
                     f"{statistics.fmean(diffs):+.2f} |")
    return lines, val_diffs, test_diffs


def _paired(name: str, diffs: list[float]) -> str:
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    wins = sum(d > 0 for d in diffs)
    return (f"{name} {statistics.fmean(diffs):+.2f} ± {sd:.2f} points (fine-tuned higher in "
            f"{wins}/{len(diffs)})")


def _seed_names(seeds: int) -> str:
    return "seed 0" if seeds == 1 else f"seeds 0..{seeds - 1}"


def _recipe_words(args: argparse.Namespace) -> str:
    """What each supernet step trains, in words."""
    if args.recipe == "largest":
        return "the largest network alone per step"
    target = "against the labels" if args.no_distill else "distilled from the largest"
    ends = "largest" if args.no_smallest else "largest + smallest"
    return f"{ends} + {args.sandwich} random per step, {target}"


def _command(argv: list[str] | None) -> str:
    given = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "bench/oneshot_quality.py", *given])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--input-size", type=int, default=32,
                        help="image side in pixels (default 32; the digits are 8x8 natively)")
    parser.add_argument("--train-images", type=int, default=3000,
                        help="Fashion-MNIST: the first N training images, 10%% of them for "
                             "validation; digits: cap on the training split (default 3000)")
    parser.add_argument("--epochs", type=int, default=3, help="every stand-alone training")
    parser.add_argument("--supernet-epochs", type=int, default=None,
                        help="the supernet's epochs (default: --epochs)")
    parser.add_argument("--recipe", choices=["largest", "sandwich"], default="largest",
                        help="what a supernet step trains: the largest network alone (the "
                             "search's default) or the sandwich rule (default largest)")
    parser.add_argument("--no-smallest", action="store_true",
                        help="sandwich recipe without the smallest network in each step")
    parser.add_argument("--sandwich", type=int, default=2,
                        help="random subnets per supernet step beside the two ends (default 2)")
    parser.add_argument("--no-distill", action="store_true",
                        help="train the smaller networks against the labels, not the largest's "
                             "outputs")
    parser.add_argument("--budget-part", type=int, default=4,
                        help="the MACs budget is uniform P at this part (default 4)")
    parser.add_argument("--architectures", type=int, default=12,
                        help="architectures ranked: the uniform ones within the budget, then "
                             "random draws spread over its MACs range (default 12)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="training seeds 0..S-1 per stand-alone architecture (default 1)")
    parser.add_argument("--finalists", type=int, default=3,
                        help="best estimates also fine-tuned from the supernet (default 3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="data split, supernet and architecture draws (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the data and the supernet checkpoint here (default: scratch)")
    args = parser.parse_args(argv)
    if args.supernet_epochs is None:
        args.supernet_epochs = args.epochs
    if args.architectures < 3 or args.seeds < 1 or args.finalists < 0:
        parser.error("need --architectures >= 3, --seeds >= 1 and --finalists >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = _command(argv)
    print(f"# {command}", flush=True)
    load_start = os.getloadavg()
    started = time.perf_counter()
    clock = Clock()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        data = _data(args, root)
        space = SearchSpace(args.backbone, args.input_size, data.num_classes, data.channels)
        budget = _arch(space, space.uniform_parts(args.budget_part)).macs
        budgets = Budgets(macs=budget)
        candidates = _candidates(space, budgets, args.architectures, args.seed)
        print(f"# {data.name}: {data.sizes} train/val/test images at {args.input_size} px; "
              f"budget {budget / 1e6:.2f} M MACs; {len(candidates)} architectures, "
              f"{sum(c.label == 'random' for c in candidates)} of them random; "
              f"{torch.get_num_threads()} threads", flush=True)

        def config(seed: int, epochs: int | None = None) -> TrainConfig:
            return TrainConfig(epochs=epochs or args.epochs, batch_size=BATCH_SIZE, seed=seed,
                               device=args.device)

        full = _arch(space, space.uniform_parts(1))
        _warm_up(full, data, args.device)
        reference, clock.unit = _timed_train(full, data, config(args.seed))
        print(f"# part-1 network stand-alone: val {reference.val_accuracy:.2%}, "
              f"{clock.unit:.1f} s", flush=True)

        t0 = time.perf_counter()
        recipe = (largest_only() if args.recipe == "largest" else
                  recipe_for(space, budgets, "sandwich", args.sandwich, args.seed,
                             distill=not args.no_distill, smallest=not args.no_smallest))
        supernet = _train_supernet(space, data, recipe, config(args.seed, args.supernet_epochs),
                                   root / "supernet")
        clock.supernet = time.perf_counter() - t0
        checkpoint = root / "supernet" / CHECKPOINT_FILE
        print(f"# supernet: largest network val {supernet.val_accuracy:.2%}, "
              f"{clock.supernet:.1f} s", flush=True)

        t0 = time.perf_counter()
        evaluator = SupernetEvaluator(supernet_architecture(space).to_json(), data,
                                      read_checkpoint(checkpoint)["model"], CALIBRATION_IMAGES,
                                      BATCH_SIZE, args.seed, args.device)
        for c in candidates:
            c.estimate = evaluator.estimate(c.arch.parts)
        clock.estimates = time.perf_counter() - t0
        del evaluator
        print(f"# estimates: {len(candidates)} in {clock.estimates:.1f} s", flush=True)

        for i, c in enumerate(candidates):
            for seed in range(args.seeds):
                result, seconds = _timed_train(c.arch, data, config(seed))
                c.scratch.append(result)
                clock.scratch.append(seconds)
                print(f"# {i + 1}/{len(candidates)} {c.label} {c.arch.macs / 1e6:.2f} M seed "
                      f"{seed}: estimate {c.estimate:.2%}, stand-alone val "
                      f"{result.val_accuracy:.2%} test {result.test_accuracy:.2%}, "
                      f"{seconds:.1f} s", flush=True)

        finalists = sorted(candidates, key=lambda c: (-c.estimate, c.arch.macs))
        finalists = finalists[:args.finalists]
        for c in finalists:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                weights = supernet_start(c.arch, data, str(checkpoint))
                result = train(c.arch, data, config(seed), initial_weights=weights)
                clock.finetuned.append(time.perf_counter() - t0)
                c.finetuned.append(result)
                print(f"# finalist {c.label} {c.arch.macs / 1e6:.2f} M seed {seed}: fine-tuned "
                      f"val {result.val_accuracy:.2%} test {result.test_accuracy:.2%} (scratch "
                      f"{c.scratch[seed].test_accuracy:.2%})", flush=True)

    wall = time.perf_counter() - started
    load_end = os.getloadavg()
    train_n, val_n, test_n = data.sizes
    print(f"\n{args.backbone} on {data.name} at {args.input_size} px: {train_n} training, "
          f"{val_n} validation, {test_n} test images; {args.epochs} epochs, batch {BATCH_SIZE}; "
          f"budget uniform P{args.budget_part} = {budget / 1e6:.2f} M MACs; supernet "
          f"{args.supernet_epochs} epochs, {_recipe_words(args)}, pool of "
          f"{len(recipe.pool)}; {len(candidates)} architectures × {args.seeds} seed(s); "
          f"{torch.get_num_threads()} threads; load {load_start[0]:.2f} at the start, "
          f"{load_end[0]:.2f} at the end; {wall / 60:.1f} min wall\n")
    print(f"    {command}\n")
    print(f"### (a) ranking: {len(candidates)} architectures, estimates on {val_n} validation "
          f"images, stand-alone val on {val_n} and test on {test_n}\n")
    print("\n".join(_ranking_table(candidates, args.seeds)))
    print()
    correlations, tau = _correlation_table(candidates, args.seeds)
    print("\n".join(correlations))
    by_val = sorted(candidates, key=lambda c: (-c.val(), c.arch.macs))
    top = max(candidates, key=lambda c: (c.estimate, -c.arch.macs))
    top_rank = by_val.index(top) + 1
    print(f"\nThe supernet's top pick ({top.label}, {top.arch.macs / 1e6:.2f} M) is #{top_rank} "
          f"of {len(candidates)} stand-alone on validation, "
          f"{100 * (by_val[0].val() - top.val()):.2f} points below the best there.")
    print("\n### (b) cost, in stand-alone trainings of the part-1 network\n")
    print("\n".join(_cost_table(clock, args, len(candidates), reference)))
    oneshot_units = (clock.supernet + clock.estimates) / clock.unit
    summary = (f"one-shot {args.backbone}/{data.name}: Kendall tau {tau:+.3f} (estimate vs "
               f"stand-alone val, {len(candidates)} architectures, {val_n} val images); "
               f"supernet + estimates = {oneshot_units:.2f} part-1 trainings")
    if finalists:
        print(f"\n### (c) the {len(finalists)} best estimates: from scratch or fine-tuned from "
              f"the supernet ({args.epochs} epochs each, "
              f"{_seed_names(args.seeds)})\n")
        lines, val_diffs, test_diffs = _finalist_table(finalists)
        print("\n".join(lines))
        print(f"\nPaired over finalists × seeds: {_paired('val', val_diffs)}; "
              f"{_paired('test', test_diffs)}.")
        summary += (f"; fine-tuned − scratch test {statistics.fmean(test_diffs):+.2f} points "
                    f"over {len(test_diffs)} runs")
    print(f"\n{summary}")


if __name__ == "__main__":
    main()
