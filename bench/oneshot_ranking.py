"""How well does each supernet recipe rank a budget's architectures? Measured on the
ground-truth table (``bench/ground_truth.py``), in its setting.

For every ``--recipes`` recipe and ``--supernet-seeds`` seed, one supernet is trained on the
table's own data (the same training subset, validation split and batch size), at equal work
across recipes: ``--work`` stand-alone trainings of the table's setting, counted as network
passes (a step that trains four networks is four passes; a stand-alone training is one pass a
step for the table's epochs), so a recipe with more networks a step gets fewer epochs. The
recipes (``search.oneshot.sandwich``) that draw from the budgets get one supernet per band,
its budget the band's upper cost; ``largest`` and ``fair`` do not depend on the budget and
serve both bands.

Each band's own architectures (the table's random and structured ones) are then scored by the
supernet, batch norm re-estimated on ``--calibration`` training images (each size measured), by
validation accuracy and by validation loss (lower is better), on the first ``--val-images`` of the
table's validation images (the same for every architecture). Kendall τ against the table's mean
validation accuracy over seeds, with its 95 % bootstrap interval over architectures, is the
figure; beside it the best cheap predictor of the band (MACs, parameters, zero-cost proxies) and
the noise ceiling (one seed against the mean of the others), which no estimator can be judged
above.

Each finished supernet's scores go into ``--out`` at once, and a supernet stopped mid-training
continues from its checkpoint in ``--workdir``: the same command resumes.

    python bench/oneshot_ranking.py bench/results/ground_truth.json \\
        --out bench/results/oneshot_ranking.json
    python bench/oneshot_ranking.py bench/results/ground_truth.json \\
        --out bench/results/oneshot_ranking.json --report-only
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ground_truth_report import predictors
from ground_truth_table import Entry, GroundTruth, load

from search.engine.budgets import Budgets
from search.engine.settings import SUPERNET_RECIPES
from search.oneshot.estimates import calibrate, draw_calibration
from search.oneshot.sandwich import (
    SandwichRecipe,
    SupernetRun,
    fair_draw,
    largest_only,
    recipe_for,
    supernet_architecture,
)
from search.store.files import write_atomic
from search.store.paired import kendall_tau, noise_ceiling
from search.training.augment import unit_range
from search.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from search.training.data import DataSplits, load_dataset
from search.training.start import build_supernet
from search.training.trainer import TrainConfig, train
from space import SearchSpace

FORMAT = "hetnas-oneshot-ranking/1"
BAND_FREE = ("largest", "fair")  # recipes whose supernet does not depend on the budget
ALL_BANDS = "all"


def networks_per_step(recipe_name: str, recipe: SandwichRecipe, space: SearchSpace) -> int:
    """Networks one supernet step trains: the largest and the recipe's smaller ones."""
    if recipe_name == "fair":
        return 1 + len(fair_draw(space, torch.Generator()))
    return 1 + int(recipe.smallest) + recipe.random_subnets


def make_recipe(name: str, space: SearchSpace, budget: float | None, subnets: int,
                seed: int) -> SandwichRecipe:
    if name == "largest":
        return largest_only()
    budgets = Budgets(macs=budget if budget is not None else float(space.max_macs))
    # The sandwich's smallest network counts as one of its ``subnets``: equal work a step.
    return recipe_for(space, budgets, name, subnets - (name == "sandwich"), seed)


def table_data(table: GroundTruth, data_dir: str | None) -> DataSplits:
    """The table's data: its training subset and validation split, checked by their sizes."""
    setting = table.setting
    data = load_dataset(setting.dataset, setting.input_size, data_dir, seed=setting.data_seed,
                        train_images=setting.train_images)
    expected = (setting.train_images, setting.val_images, setting.test_images)
    if data.sizes != expected:
        raise SystemExit(f"the data loaded has {data.sizes} images (train, val, test), the "
                         f"table {expected}; pass the table's --data-dir")
    return data


def table_space(table: GroundTruth, data: DataSplits) -> SearchSpace:
    return SearchSpace(table.setting.backbone, table.setting.input_size, data.num_classes,
                       data.channels)


@torch.no_grad()
def score(model: torch.nn.Module, parts: Sequence[int], calibration: torch.Tensor,
          images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of the supernet at ``parts`` on ``images``, batch norm
    re-estimated on ``calibration`` first."""
    calibrate(model, parts, calibration, batch_size)
    correct, loss = 0, 0.0
    for start in range(0, len(labels), 1024):
        logits = model(unit_range(images[start:start + 1024])).float()
        batch = labels[start:start + 1024]
        correct += int((logits.argmax(1) == batch).sum())
        loss += float(F.cross_entropy(logits, batch, reduction="sum"))
    return correct / len(labels), loss / len(labels)


def train_supernet(space: SearchSpace, data: DataSplits, recipe: SandwichRecipe, epochs: int,
                   batch_size: int, seed: int, folder: Path) -> float:
    """Train (or continue from ``folder``) one supernet; returns the largest network's
    validation accuracy."""
    resume = folder if (folder / CHECKPOINT_FILE).exists() else None
    result = train(supernet_architecture(space), data,
                   TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed),
                   checkpoint_dir=folder, resume_from=resume,
                   run_factory=functools.partial(SupernetRun, recipe=recipe))
    return result.val_accuracy


def measure(table: GroundTruth, data: DataSplits, space: SearchSpace, name: str, band: str,
            seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one supernet and score the bands' architectures with it."""
    budget = None if band == ALL_BANDS else table.band(band).high
    recipe = make_recipe(name, space, budget, args.subnets, seed)
    per_step = networks_per_step(name, recipe, space)
    epochs = max(1, round(args.work * table.setting.epochs / per_step))
    folder = Path(args.workdir) / f"{name}-{band}-{seed}"
    started = time.perf_counter()
    largest_val = train_supernet(space, data, recipe, epochs, table.setting.batch_size, seed,
                                 folder)
    train_seconds = time.perf_counter() - started
    weights = read_checkpoint(folder)["model"]
    model = build_supernet(supernet_architecture(space), data, weights)
    bands = [b.name for b in table.bands] if band == ALL_BANDS else [band]
    scores: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    val_x, val_y = data.val_x[:args.val_images], data.val_y[:args.val_images]
    for images in args.calibration:
        calibration = draw_calibration(data, images, seed)
        started = time.perf_counter()
        count = 0
        for band_name in bands:
            for entry in table.in_band(band_name):
                if entry.runs:
                    scores.setdefault(entry.label, {})[str(images)] = list(score(
                        model, entry.parts, calibration, val_x, val_y,
                        table.setting.batch_size))
                    count += 1
        seconds[str(images)] = (time.perf_counter() - started) / max(1, count)
    return {"recipe": name, "band": band, "seed": seed, "epochs": epochs,
            "networks_per_step": per_step, "val_images": len(val_y),
            "work": per_step * epochs / table.setting.epochs,
            "train_seconds": round(train_seconds, 1), "seconds_per_estimate": seconds,
            "largest_val": largest_val, "scores": scores}


def _made(argv: Sequence[str], table_path: Path) -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "hetconv", "space", "search",
                            "bench"], cwd=root, capture_output=True, text=True,
                           check=False).stdout.strip()
    return {"command": shlex.join(["python", "bench/oneshot_ranking.py", *argv]),
            "commit": commit + ("-dirty" if dirty else ""), "table": str(table_path),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": FORMAT, "supernets": []}
    document = json.loads(path.read_text())
    if document.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a {FORMAT} file; pass another --out")
    return document


def _tau(values: Sequence[float], truth: Sequence[float]) -> tuple[float, str]:
    """Kendall τ and ``+0.41 [+0.12, +0.66]`` (nan and ``n/a`` where undefined)."""
    found = kendall_tau(values, truth)
    if found.coefficient is None:
        return math.nan, "n/a"
    low, high = found.interval or (math.nan, math.nan)
    return found.coefficient, f"{found.coefficient:+.2f} [{low:+.2f}, {high:+.2f}]"


def _band_truth(table: GroundTruth, band: str) -> list[Entry]:
    return [e for e in table.in_band(band) if e.runs]


def report(table: GroundTruth, document: dict[str, Any]) -> str:
    """Per band: each recipe's τ per supernet seed and scoring, then the bars to beat."""
    lines = ["| band | recipe | work (trainings) | supernet epochs | scored by | calibration "
             "images | τ per supernet seed [95 %] | mean τ over seeds | wall s: supernet, "
             "per estimate |", "|---|---|--:|--:|---|--:|---|--:|---|"]
    bars = ["| band | architectures | best cheap predictor: τ [95 %] | noise ceiling: one seed "
            "vs mean of the others [95 %] |", "|---|--:|---|---|"]
    for band in table.bands:
        entries = _band_truth(table, band.name)
        truth = [e.mean_val for e in entries]
        runs = [e for e in entries if len(e.runs) >= 2]
        seeds = min((len(e.runs) for e in runs), default=0)
        ceiling = noise_ceiling(np.array([[r.val_accuracy for r in sorted(
            e.runs, key=lambda r: r.replicate)][:seeds] for e in runs])) if seeds >= 2 else None
        found = {name: _tau([f(e) for e in entries], truth)
                 for name, f in predictors(table).items()}
        best = max(found, key=lambda name: np.nan_to_num(found[name][0], nan=-2.0))
        bars.append(f"| {band.name} | {len(entries)} | {best}: {found[best][1]} | "
                    f"{ceiling.held_out.describe() if ceiling else 'n/a'} |")
        done = [s for s in document["supernets"] if s["band"] in (band.name, ALL_BANDS)]
        for name in SUPERNET_RECIPES:
            mine = sorted((s for s in done if s["recipe"] == name), key=lambda s: s["seed"])
            if not mine:
                continue
            for images in sorted({k for s in mine for v in s["scores"].values() for k in v},
                                 key=int):
                for scored_by, sign, index in (("accuracy", 1, 0), ("loss", -1, 1)):
                    taus, texts = [], []
                    for s in mine:
                        values = [sign * s["scores"][e.label][images][index] for e in entries]
                        tau, text = _tau(values, truth)
                        taus.append(tau)
                        texts.append(f"s{s['seed']} {text}")
                    walls = "; ".join(f"s{s['seed']} {s['train_seconds']:.0f}, "
                                      f"{s['seconds_per_estimate'][images]:.2f}" for s in mine)
                    lines.append(f"| {band.name} | {name} | {mine[0]['work']:.1f} | "
                                 f"{mine[0]['epochs']} | {scored_by} | {images} | "
                                 f"{'; '.join(texts)} | {np.mean(taus):+.2f} | {walls} |")
    return "\n".join(["### The bars", "", *bars, "", "### The recipes", "", *lines]) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("table", type=Path, help="the ground-truth table (bench/ground_truth.py's file)")
    add("--out", type=Path, required=True, help="the results file (JSON); the same resumes")
    add("--workdir", default="hetnas_oneshot_ranking", help="the supernets' checkpoints")
    add("--recipes", nargs="+", choices=SUPERNET_RECIPES, default=list(SUPERNET_RECIPES))
    add("--supernet-seeds", nargs="+", type=int, default=[0, 1])
    add("--work", type=float, default=4.0,
        help="each supernet's training, in stand-alone trainings of the table's setting")
    add("--subnets", type=int, default=3,
        help="sandwich and strata: smaller networks in each step (the sandwich's smallest "
             "one of them)")
    add("--calibration", nargs="+", type=int, default=[256, 2048],
        help="training images batch norm is re-estimated on (each size is scored)")
    add("--val-images", type=int, default=1000,
        help="the estimates score the first N of the table's validation images")
    add("--data-dir", default=None)
    add("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add("--report-only", action="store_true", help="print the report of --out, train nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = load(args.table)
    document = _read(args.out)
    if not args.report_only:
        data = table_data(table, args.data_dir)
        space = table_space(table, data)
        done = {(s["recipe"], s["band"], s["seed"]) for s in document["supernets"]}
        for seed in args.supernet_seeds:
            for name in args.recipes:
                for band in ([ALL_BANDS] if name in BAND_FREE else [b.name for b in table.bands]):
                    if (name, band, seed) in done:
                        continue
                    print(f"# {name} supernet, band {band}, seed {seed}", flush=True)
                    document["supernets"].append(
                        measure(table, data, space, name, band, seed, args))
                    document["made"] = _made(argv, args.table)
                    write_atomic(args.out, lambda path: path.write_text(
                        json.dumps(document, indent=1) + "\n"))
    text = report(table, document)
    print(text)
    return text


if __name__ == "__main__":
    main()
