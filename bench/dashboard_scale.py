"""How long the dashboards take on a big study: 10,000 synthetic trials, report timed end to end.

Fills a study through Optuna's own API (``optuna.create_trial`` + ``Study.add_trials``) with the
record keys of ``search.store.records``: VGG-16 part vectors drawn at random and costed with the
real cost model, the over-budget ones rejected, some early-stopped and failed, the uniform baselines
marked, synthetic accuracies and completion times 30 s apart. Then times each step of
``python -m dashboards.report`` (read the trials, draw the figures, write the HTML) and the
live page's answers (the first, a poll with nothing new, a poll after one more trial) and
attaching the figures for optuna-dashboard, on SQLite and, with ``--postgres``, on PostgreSQL.
Timing adds a few trials to the study.

    python bench/dashboard_scale.py [--trials 10000] [--db FILE] [--postgres URL] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from dashboards.data import load_table
from dashboards.figures import all_figures
from dashboards.optuna_figures import attach_figures
from dashboards.page import render_report
from dashboards.server import LiveStudies
from hetconv.timing import median_seconds
from search.engine.proposer import param_name
from search.store import objectives, records
from search.store.storage import open_existing, open_storage
from space import Architecture, SearchSpace

BACKBONE = "vgg16"
BUDGET = 1.5e8


def synthetic_trials(space: SearchSpace, budget: float, count: int,
                     seed: int = 0) -> list[FrozenTrial]:
    """``count`` finished trials as a HetNAS search writes them (single objective)."""
    rng = np.random.default_rng(seed)
    parts = space.random_parts(rng, count)
    baselines = [p for p in space.uniform_choices()
                 if space.cost.paper_macs(np.array(space.uniform_parts(p))) <= budget]
    for row, part in enumerate(baselines):
        parts[row] = space.uniform_parts(part)
    macs = space.cost.paper_macs(parts)
    executed = space.cost.executed_macs(parts)
    params = space.cost.paper_params(parts)
    share = macs / space.max_macs
    accuracy = np.clip(0.55 + 0.4 * share ** 0.3 + rng.normal(0, 0.02, count), 0, 1)
    roll = rng.random(count)
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    distributions = {param_name(i): IntDistribution(0, int(np.log2(layer.allowed_parts[-1])))
                     for i, layer in enumerate(space.layers)}
    document = Architecture(space.backbone, tuple(int(p) for p in parts[0]), space.input_size,
                            space.num_classes).to_dict()
    trials = []
    for i in range(count):
        vector = [int(p) for p in parts[i]]
        over = float(macs[i] - budget)
        attrs: dict[str, Any] = {
            records.PARTS: vector, records.PAPER_MACS: int(macs[i]),
            records.EXECUTED_MACS: int(executed[i]), records.PARAMS: int(params[i]),
            records.BUDGET_CONSTRAINT: over,
            # What Architecture.to_json() writes, without validating 10,000 vectors again.
            records.ARCHITECTURE: json.dumps({**document, "parts": vector}, indent=2)}
        if i < len(baselines):
            attrs[records.BASELINE_PART] = baselines[i]
        state, values = TrialState.COMPLETE, [float(accuracy[i])]
        if over > 0:
            attrs.update({records.STATUS: records.REJECTED, records.EPOCHS_TRAINED: 0})
            values = [0.0]
        elif roll[i] < 0.02 and i >= len(baselines):
            attrs[records.STATUS] = records.FAILED
            state, values = TrialState.FAIL, None
        elif roll[i] < 0.12 and i >= len(baselines):
            attrs.update({records.STATUS: records.EARLY_STOPPED, records.EPOCHS_TRAINED: 1,
                          records.EPOCHS_PLANNED: 4,
                          records.VAL_ACCURACY: float(accuracy[i]) - 0.1})
            state, values = TrialState.PRUNED, None
        else:
            attrs.update({records.STATUS: records.COMPLETE, records.EPOCHS_TRAINED: 4,
                          records.EPOCHS_PLANNED: 4, records.VAL_ACCURACY: float(accuracy[i]),
                          records.TEST_ACCURACY: float(accuracy[i]) - 0.01,
                          records.WALL_SECONDS: 30.0})
        trial = optuna.create_trial(
            state=state, values=values, user_attrs=attrs, distributions=distributions,
            params={param_name(j): int(np.log2(p)) for j, p in enumerate(vector)},
            constraints={records.BUDGET_CONSTRAINT: over})
        trial.datetime_start = start + datetime.timedelta(seconds=30 * i)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=29)
        trials.append(trial)
    return trials


def fill_study(storage: str, count: int) -> tuple[str, float | None]:
    """A study of ``count`` synthetic trials: reused when the storage already holds it (filling
    10,000 trials through Optuna takes minutes); returns its name and the seconds filling took.
    """
    name = f"dashboard-scale-{count}"
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        if len(study.get_trials(deepcopy=False)) >= count:  # timing adds a few
            return name, None
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    space = SearchSpace(BACKBONE)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objectives.ACCURACY_METRIC])
    for key, value in ((records.STUDY_BACKBONE, BACKBONE), (records.STUDY_DATASET, "digits"),
                       (records.STUDY_BUDGET, BUDGET), (records.STUDY_INPUT_SIZE, 32),
                       (records.STUDY_OBJECTIVE, "accuracy"), (records.STUDY_EPOCHS, 4)):
        study.set_user_attr(key, value)
    start = time.perf_counter()
    study.add_trials(synthetic_trials(space, BUDGET, count))
    return name, time.perf_counter() - start


def time_report(storage: str, name: str, out: Path, repeat: int) -> dict[str, float]:
    """Median seconds of each step of building the report, and of the live page's answers."""
    load_s, table = median_seconds(lambda: load_table(storage, name), repeat)
    figures_s, _ = median_seconds(lambda: all_figures(table), repeat)
    render_s, page = median_seconds(lambda: render_report(table), repeat)

    def whole() -> None:
        out.write_text(render_report(load_table(storage, name)), encoding="utf-8")

    total_s, _ = median_seconds(whole, repeat)
    live = LiveStudies(open_existing(storage))
    first_s, payload = median_seconds(lambda: live.study_json(name), 1)
    poll_s, _ = median_seconds(lambda: live.study_json(name), repeat)
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get(records.STATUS) == records.COMPLETE][0]

    def one_more() -> bytes:
        study.add_trial(optuna.create_trial(
            value=finished.value, user_attrs=finished.user_attrs,
            constraints={records.BUDGET_CONSTRAINT: -1.0}))
        return live.study_json(name)

    redraw_s, _ = median_seconds(one_more, repeat)
    attach_s, _ = median_seconds(lambda: attach_figures(storage, name), 1)
    return {"read trials": load_s, "figures": figures_s, "figures + HTML": render_s,
            "report end to end": total_s, "live: first answer": first_s,
            "live: poll, no news": poll_s, "live: poll + redraw": redraw_s,
            "attach to optuna-dashboard": attach_s,
            "report MB": len(page.encode()) / 1e6, "live JSON MB": len(payload) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per step; median printed")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file to fill and keep (a rerun reuses its study); "
                        "default: a temporary file")
    parser.add_argument("--postgres", default=None, help="also time on this PostgreSQL URL "
                        "(the study is deleted afterwards: test databases stay small)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        db = args.db or Path(folder) / "scale.db"
        storages = [("SQLite", f"sqlite:///{db.resolve()}")]
        if args.postgres:
            storages.append(("PostgreSQL", args.postgres))
        print(f"{args.trials} synthetic {BACKBONE} trials, budget {BUDGET:.3g} MACs, "
              f"median of {args.repeat} runs")
        for label, storage in storages:
            open_storage(storage)  # WAL for SQLite, as the search writes it
            name, fill_s = fill_study(storage, args.trials)
            table = load_table(storage, name)
            counts = ", ".join(f"{n} {s}" for s, n in sorted(table.counts.items()))
            filled = "reused" if fill_s is None else f"filled in {fill_s:.0f} s"
            print(f"\n{label}: study {name} {filled} ({counts})")
            for step, value in time_report(storage, name, Path(folder) / "report.html",
                                           args.repeat).items():
                unit = "" if step.endswith("MB") else " s"
                print(f"  {step:<26s} {value:7.2f}{unit}")
            if label == "PostgreSQL":
                optuna.delete_study(study_name=name, storage=storage)


if __name__ == "__main__":
    main()
