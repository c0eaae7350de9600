"""What the orchestration (Ray Tune + Optuna + storage) costs per trial, with no training.

Runs real searches whose trainable reports its epochs at once, on SQLite and on PostgreSQL,
and prints the wall time per trial. A second table times the Optuna side alone (propose, report
each epoch, tell) without Ray, to show how much of the cost is the database.

    python bench/search_overhead.py [--trials 40] [--epochs 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna

from search.cluster import connect_ray
from search.driver import run_search
from search.engine.budgets import Budgets
from search.engine.proposer import BudgetedProposer
from search.engine.settings import SearchSettings
from search.engine.study import create_study
from search.jobs.protocol import TrialConfig, TrialReport
from search.store.storage import open_storage
from search.training.data import load_dataset

BUDGET = 3e8


def idle_trainable(config: dict[str, Any]) -> None:
    """Reports every epoch immediately: the trial costs only what the orchestration adds."""
    from ray import tune

    epochs = TrialConfig.from_config(config).job.epochs
    for epoch in range(1, epochs):
        tune.report(TrialReport(epoch, 0.5).to_result())
    tune.report(TrialReport(epochs, 0.5, test_accuracy=0.5, train_seconds=0.0,
                            done=True).to_result())


def time_search(storage: str, trials: int, epochs: int, workdir: Path) -> float:
    """Seconds per trial of a whole search (Ray already started)."""
    # No baselines and no confirmation: exactly ``trials`` trainings, as the division assumes.
    settings = SearchSettings(budget=BUDGET, trials=trials, epochs=epochs, storage=storage,
                              baselines="none", confirm_top=0,
                              study=f"overhead-{uuid.uuid4().hex[:8]}", sampler="tpe",
                              artifacts_dir=str(workdir / "artifacts"), max_concurrent=2)
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        run_search(settings, out=quiet, trainable=idle_trainable)
    return (time.perf_counter() - start) / trials


def time_optuna_side(storage: str, trials: int, epochs: int) -> float:
    """Seconds per trial of propose + per-epoch reports + tell, without Ray."""
    settings = SearchSettings(budget=BUDGET, storage=storage, sampler="tpe",
                              study=f"optuna-only-{uuid.uuid4().hex[:8]}")
    data = load_dataset(settings.dataset, settings.space.input_size, seed=settings.seed)
    study = create_study(open_storage(storage), settings.study, settings, data)
    proposer = BudgetedProposer(study, settings.space, Budgets(macs=BUDGET))
    start = time.perf_counter()
    for _ in range(trials):
        proposal = proposer.propose()
        for epoch in range(1, epochs + 1):
            proposer.report_epoch(proposal, epoch, 0.5)
        proposer.complete(proposal, 0.5, 0.5, epochs, epochs, finished=True, seconds=0.0)
    return (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        storages = {"SQLite": f"sqlite:///{workdir / 'bench.db'}", "PostgreSQL": args.postgres}
        connect_ray(None)
        print(f"{args.trials} trials x {args.epochs} epochs, TPE sampler, 2 concurrent\n")
        print("| storage | whole search, s/trial | Optuna side only, ms/trial |")
        print("|---|---|---|")
        for name, url in storages.items():
            search = time_search(url, args.trials, args.epochs, workdir)
            optuna_only = time_optuna_side(url, args.trials, args.epochs)
            print(f"| {name} | {search:.3f} | {optuna_only * 1000:.1f} |")


if __name__ == "__main__":
    main()
