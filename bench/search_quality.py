"""Does per-layer search beat the paper's uniform part, and random search? Fashion-MNIST.

Follows the NAS best-practice checklist (Lindauer & Hutter, JMLR 2020): the same training
pipeline, budget and number of trained architectures for every method; several independent
search seeds; the choice made on validation and reported on the held-out test split; mean ±
standard deviation and a paired comparison over seeds; the search cost in CPU-hours.

For each search seed ``s`` and one MACs budget (uniform P = ``--budget-part``'s cost):

* **per-layer search**: ``search.run`` with TPE, ``--trials`` searched architectures, the two
  uniform baselines nearest the budget trained beside it (``--baselines near``);
* **random search**: ``search.run`` with the random sampler and the same number of trained
  architectures (no baselines);
* **uniform**: the paper's single part, the best on validation of the uniform networks within
  the budget (from the first search; each trained with seed ``s``).

Each method's pick is its best architecture on validation; the table shows that pick's test
accuracy on the full 10,000-image test split. Training uses the first ``--train-images``
training images (written as IDX files to a scratch folder), so the run fits a 2-core machine;
say so when quoting it.

    python bench/search_quality.py --seeds 0 1 2 --trials 16 --train-images 3000 --epochs 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from search.driver import run_search
from search.engine.settings import SearchSettings
from search.store import records
from search.store.records import TrialRecord
from search.training.datasets.fashion_mnist import write_prefix
from space import Architecture

INPUT_SIZE = 32


def _search(args: argparse.Namespace, root: Path, seed: int, sampler: str,
            baselines: str) -> list[TrialRecord]:
    settings = SearchSettings(
        budget=args.budget, backbone=args.backbone, dataset="fashion-mnist",
        data_dir=str(root / "data"), input_size=INPUT_SIZE, trials=args.trials,
        epochs=args.epochs, batch_size=128, sampler=sampler, baselines=baselines,
        confirm_top=0, seed=seed, storage=f"sqlite:///{root / 'quality.db'}",
        study=f"{sampler}-seed{seed}", artifacts_dir=str(root / "artifacts"),
        max_concurrent=args.jobs, cpus_per_trial=1)
    log = io.StringIO()
    outcome = run_search(settings, out=log)
    (root / f"{sampler}-seed{seed}.log").write_text(log.getvalue())
    return [r for r in outcome.records if r.status == records.COMPLETE]


def _pick(trained: list[TrialRecord]) -> TrialRecord:
    """The best on validation (fewer MACs breaks ties), as the search itself picks."""
    return records.ranked(trained)[0]


def _row(name: str, picks: list[TrialRecord]) -> str:
    tests = [100 * (p.test_accuracy or 0) for p in picks]
    sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
    return (f"| {name} | {statistics.fmean(tests):.2f} ± {sd:.2f} | "
            f"{', '.join(f'{t:.2f}' for t in tests)} | "
            f"{statistics.fmean(p.paper_macs or 0 for p in picks) / 1e6:.2f} M | "
            f"{statistics.fmean(100 * (p.accuracy or 0) for p in picks):.2f} |")


def _paired(name: str, a: list[TrialRecord], b: list[TrialRecord]) -> str:
    diffs = [100 * ((x.test_accuracy or 0) - (y.test_accuracy or 0)) for x, y in zip(a, b,
                                                                                       strict=True)]
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    wins = sum(d > 0 for d in diffs)
    return (f"| {name} | {statistics.fmean(diffs):+.2f} ± {sd:.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in diffs)} | {wins}/{len(diffs)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--budget-part", type=int, default=4,
                        help="the MACs budget is uniform P at this part (default 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="searched architectures per run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the studies and logs here (default: a scratch folder)")
    args = parser.parse_args(argv)
    args.budget = Architecture.uniform(args.backbone, args.budget_part, INPUT_SIZE, 10, 1).macs
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        write_prefix(root / "data", args.train_images, 10_000)
        searched, randomised, uniform, hours = [], [], [], 0.0
        for seed in args.seeds:
            tpe = _search(args, root, seed, "tpe", "near")
            rnd = _search(args, root, seed, "random", "none")
            found = [r for r in tpe if not r.baseline_part]
            searched.append(_pick(found))
            randomised.append(_pick(rnd))
            uniform.append(_pick([r for r in tpe if r.baseline_part]))
            hours += sum(r.wall_seconds or 0 for r in tpe + rnd) / 3600
            print(f"# seed {seed}: per-layer {searched[-1].test_accuracy:.2%} "
                  f"({(searched[-1].paper_macs or 0) / 1e6:.2f} M MACs), random "
                  f"{randomised[-1].test_accuracy:.2%}, uniform P{uniform[-1].baseline_part} "
                  f"{uniform[-1].test_accuracy:.2%}", flush=True)
    wall = (time.perf_counter() - started) / 3600
    print(f"\n{args.backbone} on Fashion-MNIST: {args.train_images} training images (10% of them "
          f"for validation), {args.epochs} epochs, batch 128, test on 10,000 images; budget "
          f"uniform P{args.budget_part} = {args.budget / 1e6:.2f} M MACs; {args.trials} searched "
          f"architectures per search, search seeds {args.seeds}; {hours:.2f} CPU-hours of "
          f"training, {wall:.2f} h wall with {args.jobs} at once\n")
    print("| method (pick: best on validation) | test accuracy, mean ± sd | per seed | "
          "MACs | validation |")
    print("|---|---|---|---|---|")
    print(_row("per-layer search (TPE)", searched))
    print(_row("random search, same trainings", randomised))
    print(_row("uniform P (best within budget)", uniform))
    print("\n| paired over seeds (test points) | mean ± sd | per seed | wins |")
    print("|---|---|---|---|")
    print(_paired("per-layer − uniform", searched, uniform))
    print(_paired("per-layer − random", searched, randomised))


if __name__ == "__main__":
    main()
