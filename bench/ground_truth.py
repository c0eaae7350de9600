"""Build the ground-truth table: a pool of architectures, each trained with several seeds.

Every claim HetNAS makes (a search beats the paper's uniform parts, beats random search, a
supernet ranks architectures well) is measured against this table (``docs/BENCHMARKS.md``,
"Ground truth"). The pool, fixed by ``--pool-seed``:

* every uniform network the space allows (the paper's P1 ... P64);
* ``--per-band`` architectures drawn uniformly at random (each layer's part uniform over its
  allowed parts, kept when the paper MACs fall in the band) within two cost bands: an
  aggressive one (between uniform P16's and P8's paper MACs) and a moderate one (within ±5 % of
  uniform P4's);
* per band, two structured allocations built from one part per stage: K×K kernels kept early
  (the cheapest first stage in the band) and kept late (the cheapest last stage).

The runs go through HetNAS's own machinery: one Optuna study in ``--workdir`` (SQLite) whose
trials are the queued (architecture, seed) runs, trained by the search driver on Ray Tune, with
the seed index as the confirmation replicate (``search.jobs.protocol.TrialConfig``). Stopped at
any point, the same command continues where it stopped: from the study where ``--workdir``
still holds it, else from the runs already in the ``--out`` file (a committed table goes on
growing on another machine). The file is written when every run is in (``--export-only``
writes what is there now, also while a build runs).

    python bench/ground_truth.py --out bench/results/ground_truth.json          # this CPU
    python bench/ground_truth.py --full --gpus-per-trial 1 --out full.json      # on a GPU

``--full`` trains at full size (all 60,000 training images, 32 px, 30 epochs, batch 128).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import torch
from ground_truth_table import Band, Entry, GroundTruth, Run, Setting, load
from optuna.trial import TrialState
from zero_cost import PROXIES, score_all

from search.driver import run_search
from search.engine.proposer import parts_to_params
from search.engine.settings import SearchSettings
from search.engine.study import create_study
from search.store import records
from search.store.files import write_atomic
from search.store.storage import open_storage
from search.training.data import DataSplits, load_dataset
from search.training.trainer import trained_architecture
from space import Architecture, SearchSpace

STUDY = "ground-truth"
POOL_ATTR = "ground_truth_pool"  # the study's pool: a resumed build must train the same one
CPU_SETTING = {"input_size": 28, "train_images": 4000, "epochs": 2, "batch_size": 64}
FULL_SETTING = {"input_size": 32, "train_images": None, "epochs": 30, "batch_size": 128}
PROXY_BATCH = 64  # training images the cheap predictors see
PROXY_SEEDS = 3  # initialisations each predictor is averaged over


@dataclasses.dataclass(frozen=True)
class Member:
    """One architecture of the pool, before it is trained."""

    parts: tuple[int, ...]
    group: str
    label: str


def bands(space: SearchSpace) -> tuple[Band, ...]:
    """The aggressive and the moderate cost band, from the uniform networks' paper MACs."""
    macs = {p: int(space.cost.paper_macs(np.array(space.uniform_parts(p)))) for p in (4, 8, 16)}
    return (Band("aggressive", macs[16], macs[8], "between uniform P16's and P8's paper MACs"),
            Band("moderate", 0.95 * macs[4], 1.05 * macs[4],
                 "within ±5 % of uniform P4's paper MACs"))


def make_pool(space: SearchSpace, per_band: int, seed: int) -> list[Member]:
    """Uniform networks, then each band's random draws, then the structured allocations."""
    pool: list[Member] = []
    seen: set[tuple[int, ...]] = set()

    def add(parts: Sequence[int], group: str, label: str) -> None:
        parts = tuple(int(p) for p in parts)
        if parts not in seen:
            seen.add(parts)
            pool.append(Member(parts, group, label))

    for part in space.uniform_choices():
        add(space.uniform_parts(part), "uniform", f"uniform P{part}")
    rng = np.random.default_rng(seed)
    for band in bands(space):
        found = 0
        while found < per_band:
            draws = space.random_parts(rng, 100_000)
            macs = space.cost.paper_macs(draws)
            for parts in draws[(macs >= band.low) & (macs <= band.high)]:
                if found < per_band and tuple(parts) not in seen:
                    found += 1
                    add(parts, band.name, f"{band.name} {found}")
    for band in bands(space):
        for where, parts in _structured(space, band).items():
            add(parts, "structured", f"K×K {where} ({band.name})")
    return pool


def _structured(space: SearchSpace, band: Band) -> dict[str, tuple[int, ...]]:
    """One part per stage (the layers of one output width), within the band: K×K kernels kept
    early (the smallest first-stage part, then second) and kept late (the reverse)."""
    widths = sorted({layer.out_channels for layer in space.layers})
    choices = [sorted({p for layer in space.layers if layer.out_channels == w
                       for p in layer.allowed_parts}) for w in widths]
    combos = []
    for stage_parts in np.array(np.meshgrid(*choices, indexing="ij")).reshape(len(widths), -1).T:
        by_width = dict(zip(widths, stage_parts, strict=True))
        parts = tuple(max(p for p in layer.allowed_parts if p <= by_width[layer.out_channels])
                      for layer in space.layers)
        if band.holds(float(space.cost.paper_macs(np.array(parts)))):
            combos.append((tuple(int(p) for p in stage_parts), parts))
    if not combos:
        return {}
    early = min(combos, key=lambda c: (c[0][0], c[0][1], -c[0][-1]))[1]
    late = min(combos, key=lambda c: (c[0][-1], c[0][-2], -c[0][0]))[1]
    return {"early": early, "late": late}


def settings_from(args: argparse.Namespace) -> SearchSettings:
    """A search that trains exactly the queued runs: every architecture fits its MACs budget
    (the standard network's), no baselines of its own, no confirmation stage."""
    settings = SearchSettings(
        backbone=args.backbone, dataset=args.dataset,
        data_dir=args.data_dir, train_images=args.train_images, input_size=args.input_size,
        epochs=args.epochs, batch_size=args.batch_size, sampler="random", baselines="none",
        confirm_top=0, storage=f"sqlite:///{Path(args.workdir).resolve() / 'study.db'}",
        study=STUDY, artifacts_dir=str(Path(args.workdir) / "artifacts"),
        max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, seed=args.data_seed)
    return dataclasses.replace(settings, budget=settings.space.max_macs)


def _pool_json(pool: list[Member]) -> list[list]:
    return [[list(m.parts), m.group, m.label] for m in pool]


RunKey = tuple[tuple[int, ...], int]  # an architecture's parts and the seed's index


def queue_runs(settings: SearchSettings, pool: list[Member], seeds: int, data: DataSplits,
               done: set[RunKey]) -> optuna.Study:
    """The build's study, created with every run queued that ``done`` (the table file's) lacks,
    seed by seed so a stopped build has whole seeds; or reopened with the runs that failed
    queued again."""
    storage = open_storage(settings.storage)
    if STUDY in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=STUDY, storage=storage)
        if study.user_attrs.get(POOL_ATTR) != _pool_json(pool):
            raise SystemExit(f"{settings.storage} holds another pool (other --per-band, "
                             f"--pool-seed, --limit or setting); use another --workdir")
        alive = {(tuple(t.user_attrs[records.PARTS]), t.user_attrs.get(records.REPLICATE, 0))
                 for t in study.get_trials(deepcopy=False)
                 if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
                 and records.PARTS in t.user_attrs}
    else:
        study = create_study(storage, STUDY, settings, data)
        study.set_user_attr(POOL_ATTR, _pool_json(pool))
        alive = set(done)
    for replicate in range(seeds):
        for member in pool:
            if (member.parts, replicate) not in alive:
                # The parts go with the queued trial: Optuna shows a waiting trial's
                # parameters only once it is asked for.
                study.enqueue_trial(parts_to_params(member.parts), user_attrs={
                    records.REPLICATE: replicate, records.PARTS: list(member.parts)})
    return study


def _in_study(study: optuna.Study) -> tuple[int, int]:
    """First runs (seed index 0) the study holds, done or to do, and runs still to do."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    trials = [t for t in study.get_trials(deepcopy=False, states=states)
              if t.user_attrs.get(records.STATUS) != records.REJECTED]
    first = sum(1 for t in trials if not t.user_attrs.get(records.REPLICATE))
    return first, sum(1 for t in trials if t.state != TrialState.COMPLETE)


def _earlier_runs(path: Path, pool: list[Member], data: DataSplits,
                  settings: SearchSettings) -> dict[RunKey, Run]:
    """The runs an existing table file at ``path`` holds, when it was built with this pool and
    setting; none without a file; another table there is refused (it would be overwritten)."""
    if not path.exists():
        return {}
    table = load(path)
    train, val, test = data.sizes
    same = ([(e.parts, e.group, e.label) for e in table.entries]
            == [(m.parts, m.group, m.label) for m in pool]
            and (table.setting.dataset, table.setting.input_size, table.setting.train_images,
                 table.setting.val_images, table.setting.test_images, table.setting.epochs,
                 table.setting.batch_size, table.setting.data_seed)
            == (settings.dataset, settings.space.input_size, train, val, test, settings.epochs,
                settings.batch_size, settings.seed))
    if not same:
        raise SystemExit(f"{path} holds a table of another pool or setting; pass another --out")
    return {(e.parts, r.replicate): r for e in table.entries for r in e.runs}


def export(study: optuna.Study, pool: list[Member], space: SearchSpace, seeds: int,
           data: DataSplits, settings: SearchSettings, made: dict[str, object],
           earlier: dict[RunKey, Run]) -> GroundTruth:
    """The table as the study holds it now, over the ``earlier`` file's runs: every finished
    run of every pool member."""
    runs: dict[RunKey, Run] = dict(earlier)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get(records.STATUS) != records.COMPLETE or records.TEST_CORRECT not in attrs:
            continue
        key = (tuple(attrs[records.PARTS]), attrs.get(records.REPLICATE, 0))
        if key in earlier:
            continue
        runs.setdefault(key, Run(
            replicate=key[1], seed=attrs[records.SEED],
            val_curve=tuple(trial.intermediate_values[e]
                            for e in sorted(trial.intermediate_values)),
            val_accuracy=attrs[records.VAL_ACCURACY], test_accuracy=attrs[records.TEST_ACCURACY],
            seconds=attrs.get(records.WALL_SECONDS, 0.0), val_correct=attrs[records.VAL_CORRECT],
            test_correct=attrs[records.TEST_CORRECT]))
    images, labels = _proxy_batch(data)
    entries = []
    for member in pool:
        arch = Architecture(space.backbone, member.parts, space.input_size, space.num_classes,
                            space.in_channels)
        entries.append(Entry(
            parts=member.parts, group=member.group, label=member.label,
            paper_macs=arch.macs, executed_macs=arch.executed_macs, params=arch.params,
            proxies=_proxies(arch, data, images, labels),
            runs=tuple(runs[(member.parts, r)] for r in range(seeds)
                       if (member.parts, r) in runs)))
    train, val, test = data.sizes
    setting = Setting(space.backbone, settings.dataset, space.input_size, train, val, test,
                      settings.epochs, settings.batch_size, seeds, settings.seed)
    spent = sum(r.seconds for r in runs.values())
    return GroundTruth({**made, "cpu_seconds_in_runs": round(spent, 1)}, setting, bands(space),
                       tuple(entries))


def _proxy_batch(data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images every cheap predictor sees: a fixed, seed-drawn batch."""
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))
    index = order[:PROXY_BATCH]
    return data.train_x[index], data.train_y[index]


def _proxies(arch: Architecture, data: DataSplits, images: torch.Tensor,
             labels: torch.Tensor) -> dict[str, float]:
    """Each cheap predictor's mean over :data:`PROXY_SEEDS` initialisations of the network."""
    scores: dict[str, list[float]] = {name: [] for name in PROXIES}
    for seed in range(PROXY_SEEDS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = trained_architecture(arch, data).build()
        for name, value in score_all(model, images, labels, seed).items():
            scores[name].append(value)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def _made(argv: Sequence[str]) -> dict[str, object]:
    """How the table was made: the command, the commit (``-dirty`` with local changes), when and
    where."""
    root = Path(__file__).resolve().parents[1]

    def git(*words: str) -> str:
        result = subprocess.run(["git", *words], cwd=root, capture_output=True, text=True,
                                check=False)
        return result.stdout.strip()

    commit = git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--",
                                                         "hetconv", "space", "search",
                                                         "bench") else "")
    return {"command": " ".join(["python", "bench/ground_truth.py", *argv]), "commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, required=True, help="the table file (JSON) to write")
    add("--workdir", default="hetnas_ground_truth",
        help="the build's study (SQLite) and checkpoints; the same folder resumes")
    add("--full", action="store_true",
        help="the full-size setting (60k images, 32 px, 30 epochs, batch 128), for a GPU")
    add("--backbone", default="resnet20")
    add("--dataset", default="fashion-mnist")
    add("--data-dir", default=None)
    for name in ("input_size", "train_images", "epochs", "batch_size"):
        add(f"--{name.replace('_', '-')}", type=int, default=None,
            help=f"default: {CPU_SETTING[name]} (--full: {FULL_SETTING[name]})")
    add("--per-band", type=int, default=25, help="random architectures per cost band")
    add("--seeds", type=int, default=3, help="training seeds per architecture")
    add("--pool-seed", type=int, default=0, help="seed of the random draws in the bands")
    add("--data-seed", type=int, default=0, help="the validation split and the training subset")
    add("--limit", type=int, default=None, help="train only the pool's first N architectures")
    add("--max-concurrent", type=int, default=2)
    add("--cpus-per-trial", type=float, default=1.0)
    add("--gpus-per-trial", type=float, default=0.0)
    add("--export-only", action="store_true", help="write the file from the study as it is")
    args = parser.parse_args(argv)
    base = FULL_SETTING if args.full else CPU_SETTING
    for name, value in base.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> GroundTruth:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = settings_from(args)
    settings.validate()
    space = settings.space
    pool = make_pool(space, args.per_band, args.pool_seed)[:args.limit]
    data = load_dataset(settings.dataset, space.input_size, settings.data_dir,
                        seed=settings.seed, train_images=settings.train_images)
    print(f"# ground truth: {len(pool)} architectures x {args.seeds} seeds, {space.backbone} on "
          f"{settings.dataset} at {space.input_size} px, {data.sizes[0]} training images, "
          f"{settings.epochs} epochs; study in {settings.storage}", flush=True)
    earlier = _earlier_runs(args.out, pool, data, settings)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    study = queue_runs(settings, pool, args.seeds, data, set(earlier))
    first_runs, pending = _in_study(study)
    if pending and not args.export_only:
        # Every architecture's first run is a searched trial of the study, its other seeds
        # confirmation runs: --trials counts the first runs the study holds, so the driver
        # trains what is queued (or was left running) and proposes nothing new.
        run_search(dataclasses.replace(settings, resume=True, trials=first_runs))
    table = export(study, pool, space, args.seeds, data, settings, _made(argv), earlier)
    write_atomic(args.out, lambda path: path.write_text(table.to_json()))
    done = len(table.complete())
    print(f"# wrote {args.out}: {done}/{len(pool)} architectures with all {args.seeds} seeds, "
          f"{table.made['cpu_seconds_in_runs']} s of training", flush=True)
    return table


if __name__ == "__main__":
    main()
