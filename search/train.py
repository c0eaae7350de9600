"""``python -m search.train best.json --epochs N --out final.pt``: train an exported architecture
to the end, from scratch or from its trained weights (``--weights``: fine-tuning).

Without an architecture file, ``--backbone`` or ``--model`` names a network whose dense form
(every part 1, the standard network) it trains instead: the weights ``search.run --init-from``
starts from, trained on the images as every HetNAS network sees them.

It writes the weights (``--out``) and, beside them with the same stem, an architecture file
(``final.json``) holding the training data's input normalisation and class names and the
result, so ``python -m search.check final.json --weights final.pt`` reads them back. Every epoch
is checkpointed in ``--checkpoint-dir``; ``--resume`` continues an interrupted run and ends
exactly where the uninterrupted one would. ``--workers N`` trains data-parallel over Ray Train
workers.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch

from hetconv.errors import ConfigError
from search.cli import OneLineParser, path_argument, path_text, run_cli
from search.cluster import connect_ray
from search.engine.settings import (
    SearchSettings,
    add_network_options,
    check_integer,
    network_named,
)
from search.jobs.final import FinalJob, TrainingFailed, train_job, train_on_workers
from search.store.files import check_target, sole_writer, write_atomic, write_together
from search.store.uncertainty import estimate, wilson_interval
from search.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from search.training.data import DATASETS, DataSplits, check_dataset, load_dataset
from search.training.exported import load_trained, read_architecture
from search.training.parallel import check_workers
from search.training.trainer import (
    Diverged,
    EpochResult,
    TrainConfig,
    TrainResult,
    resolve_device,
)
from space import Architecture, Normalization
from space.architecture import DOCUMENT_KEYS

PROG = "python -m search.train"
SCRATCH = "scratch"
STARTED_FROM = "started_from.txt"  # in the checkpoint folder: what a resumed run started from
_DEFAULTS = TrainConfig(epochs=1)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG,
        description="Train an exported architecture to the end, from scratch or fine-tuning its "
                    "weights; write the weights and, beside them, an architecture file with the "
                    "result.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("architecture", type=path_argument, nargs="?", default=None,
        help="architecture JSON (search.export); leave it out and name a network with "
             "--backbone or --model to train its dense form (every part 1), the weights "
             "search.run --init-from takes")
    add_network_options(parser, SearchSettings.backbone)
    add("--input-size", type=int, default=None,
        help="with --backbone or --model: image side the network sees (default: the "
             "backbone's own, as in search.run)")
    add("--weights", type=path_argument, default=None,
        help="start from these trained weights (fine-tuning; default: from scratch)")
    add("--epochs", type=int, required=True, help="training epochs")
    add("--out", type=path_argument, required=True,
        help="trained weights (a state dict) to write; the architecture file with the result "
             "goes beside it, with the same stem and .json")
    add("--dataset", default=None, choices=DATASETS,
        help="data set to train on (default: the one the architecture file's result names; "
             f"for a dense network {SearchSettings.dataset}, as in search.run)")
    add("--data-dir", type=path_text, default=None,
        help="folder holding the fashion-mnist, cifar or image-folder data (default: the "
             "folder the architecture file's result names, if any)")
    add("--train-images", type=int, default=None, metavar="N",
        help="train on about N of the training images (the same share of each class, drawn "
             "by --seed), as search.run --train-images; default: all of them")
    add("--batch-size", type=int, default=_DEFAULTS.batch_size, help="training batch size")
    add("--lr", type=float, default=_DEFAULTS.lr,
        help="learning rate at batch size 128 (scaled linearly with --batch-size, annealed by a "
             "cosine); the same for fine-tuning: 0.02 measured 1.2-2.5 points worse from "
             "converted dense weights (docs/BENCHMARKS.md)")
    add("--seed", type=int, default=_DEFAULTS.seed,
        help="seed of the validation split and of the training")
    add("--device", default=_DEFAULTS.device,
        help="auto (CUDA when available), cpu, cuda or cuda:N, with --workers 1")
    add("--threads", type=int, default=None,
        help="torch threads (per worker with --workers N; default: torch's own, 1 per worker)")
    add("--checkpoint-dir", type=path_argument, default=None,
        help="folder of the epoch checkpoint (default: --out without its suffix, plus "
             ".checkpoints)")
    add("--resume", action="store_true",
        help="continue the run whose checkpoint is in --checkpoint-dir")
    add("--workers", type=int, default=1,
        help="data-parallel Ray Train workers, each on its share of every batch; 1: train in "
             "this process")
    add("--gpus-per-worker", type=int, default=0,
        help="with --workers N: 1 trains each worker on a GPU (NCCL), 0 on CPUs (gloo)")
    add("--ray-address", default=None,
        help="with --workers N: host:port of a running Ray head (default: start a local Ray); "
             "the checkpoint folder, --weights and --data-dir must then be on storage every "
             "node reads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_options(args)
    network = network_named(args.model, args.backbone)
    described = _refuse_overwriting_inputs(args)
    data_dir = args.data_dir
    if args.architecture is not None:
        arch = read_architecture(args.architecture)
        recorded = _recorded_data(args.architecture)
        dataset = args.dataset or recorded["dataset"]
        if data_dir is None and dataset == recorded["dataset"]:
            data_dir = recorded["data_dir"]  # where the search found it
        if dataset is None:
            raise ConfigError(f"{args.architecture} does not name the data set it was trained "
                              f"on; pass --dataset")
    else:
        assert network is not None  # _check_options
        dataset = args.dataset or SearchSettings.dataset
        arch = dense_architecture(network, dataset, data_dir, args.input_size)
    folder = (args.checkpoint_dir or args.out.with_suffix(".checkpoints")).resolve()
    started_from = _started_from(args, folder)
    start = (load_trained(arch, args.weights).state_dict()
             if args.weights is not None and not args.resume else None)
    data = load_dataset(dataset, arch.space.input_size, data_dir, seed=args.seed,
                        train_images=args.train_images)
    if (arch.in_channels, arch.num_classes) != (data.channels, data.num_classes):
        raise ConfigError(f"{args.architecture} is a network for {arch.in_channels}-channel "
                          f"images and {arch.num_classes} classes, but dataset {dataset!r} has "
                          f"{data.channels}-channel images and {data.num_classes} classes; pass "
                          f"the --dataset it was searched on")
    job = FinalJob(
        architecture=arch.to_json(), dataset=dataset,
        data_dir=str(Path(data_dir).resolve()) if data_dir else None,
        train_images=args.train_images,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        device=(args.device if args.workers == 1 else "cuda" if args.gpus_per_worker else "cpu"),
        threads=args.threads, checkpoint_dir=str(folder), resume=args.resume,
        weights=None if start is None else started_from)
    # Two runs on one output would both train into its checkpoints and both write it.
    with sole_writer(folder, "wait for that run to finish, or pass another --out or "
                             "--checkpoint-dir"):
        epochs = f"{args.epochs} epoch" + ("s" if args.epochs > 1 else "")
        _say(f"training {arch.backbone}{'' if args.architecture else ' (dense)'} "
             f"({arch.macs:.4g} MACs) on {dataset}{f' in {job.data_dir}' if job.data_dir else ''} "
             f"({len(data.train_y)} training images) for {epochs} from {started_from}"
             + (f", data-parallel over {args.workers} Ray Train workers" if args.workers > 1
                else ""))
        if args.resume:
            _say(f"resuming after epoch {read_checkpoint(folder)['epoch']}/{args.epochs} "
                 f"({folder / CHECKPOINT_FILE})")
        else:
            write_atomic(folder / STARTED_FROM,
                         lambda path: path.write_text(started_from + "\n"))
        on_epoch = functools.partial(_print_epoch, epochs=args.epochs,
                                     val_images=len(data.val_y))
        if args.workers == 1:
            result = train_job(job, data, start, on_epoch=on_epoch)
        else:
            logging.getLogger("ray").setLevel(logging.WARNING)
            connect_ray(args.ray_address)
            result = train_on_workers(job, args.workers, args.gpus_per_worker > 0, on_epoch)
        state = read_checkpoint(folder)["model"]  # the last epoch's weights, from any process
        trained = arch.as_searched().trained_on(_normalization(state), data.class_names)
        document = trained.to_dict()
        document["result"] = _result(job, started_from, result, data)
        text = json.dumps(document, indent=2) + "\n"
        write_together({args.out: functools.partial(torch.save, state),
                        described: lambda path: path.write_text(text)})
        test, val = (estimate([accuracy], len(labels)).describe() for accuracy, labels in
                     ((result.test_accuracy, data.test_y), (result.val_accuracy, data.val_y)))
        _say(f"test accuracy {test} on {len(data.test_y)} images (95% Wilson interval); "
             f"validation {val} on {len(data.val_y)}")
        _say(f"wrote {args.out} and {described}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """The options' own rules, before anything is read or written."""
    named = args.backbone is not None or args.model is not None
    if args.architecture is None and not named:
        raise ConfigError("pass the architecture file to train (search.export), or --backbone "
                          "or --model to train a network's dense form")
    if args.architecture is not None and (named or args.input_size is not None):
        raise ConfigError("the architecture file names the network and its input size; "
                          "--backbone, --model and --input-size are for training a dense "
                          "network without one")
    check_integer("epochs", args.epochs)
    check_integer("batch_size", args.batch_size)
    check_integer("seed", args.seed, 0, "a non-negative integer")
    check_integer("workers", args.workers)
    if args.train_images is not None:
        check_integer("train_images", args.train_images)
    if args.threads is not None:
        check_integer("threads", args.threads)
    TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    check_workers(args.batch_size, args.workers)
    if args.gpus_per_worker not in (0, 1):
        raise ConfigError(f"--gpus-per-worker must be 0 (CPUs, gloo) or 1 (a GPU each, NCCL), "
                          f"got {args.gpus_per_worker}")
    if args.workers == 1:
        if args.gpus_per_worker or args.ray_address:
            raise ConfigError("--gpus-per-worker and --ray-address are for --workers N > 1; "
                              "one process trains where --device says")
        resolve_device(args.device)
    elif args.device != _DEFAULTS.device:
        raise ConfigError("--device is for --workers 1; data-parallel workers train on CPUs, "
                          "or on a GPU each with --gpus-per-worker 1")


def _refuse_overwriting_inputs(args: argparse.Namespace) -> Path:
    """The architecture file beside ``--out``, once neither would overwrite an input or a
    folder (``--out ''`` or ``/``, which has no name to put ``.json`` on)."""
    inputs = {args.architecture: "the architecture file", args.weights: "--weights"}
    check_target(args.out, "--out", inputs)
    described = args.out.with_suffix(".json")
    check_target(described, "--out's architecture file", inputs)
    if described.resolve() == args.out.resolve():
        raise ConfigError(f"--out {args.out} would be both the weights and the architecture "
                          f"file beside them; name the weights e.g. {args.out.with_suffix('.pt')}")
    return described


def dense_architecture(network: str, dataset: str, data_dir: str | None,
                       input_size: int | None) -> Architecture:
    """The standard network (every part 1) of ``network``, shaped for ``dataset``'s channels
    and classes as a search on it would shape it."""
    info = check_dataset(dataset, data_dir)
    return Architecture.uniform(network, 1, input_size, info.num_classes, info.channels)


def _recorded_data(path: Path) -> dict[str, str | None]:
    """The ``dataset`` and ``data_dir`` an exported architecture's result names, None where it
    names none (read_architecture checked the file)."""
    result = json.loads(path.read_text()).get("result")
    result = result if isinstance(result, dict) else {}
    return {key: value if isinstance(value := result.get(key), str) else None
            for key in ("dataset", "data_dir")}


def _started_from(args: argparse.Namespace, folder: Path) -> str:
    """The weights the run starts (or started) from, or :data:`SCRATCH`; refuses to start over
    an earlier run's checkpoint, or to resume without one or from other weights."""
    given = str(args.weights.resolve()) if args.weights is not None else SCRATCH
    checkpoint = folder / CHECKPOINT_FILE
    if not args.resume:
        if checkpoint.exists():
            raise ConfigError(f"{checkpoint} holds an earlier run's checkpoint; pass --resume to "
                              f"continue it, or remove it to start over")
        return given
    if not checkpoint.exists():
        raise ConfigError(f"--resume: no checkpoint in {folder}; run without --resume to start")
    record = folder / STARTED_FROM
    recorded = record.read_text().strip() if record.exists() else given
    if args.weights is not None and recorded != given:
        raise ConfigError(f"the run in {folder} started from {recorded}, not --weights "
                          f"{args.weights}; resume it with its own --weights, or without")
    return recorded


def _normalization(state: dict[str, torch.Tensor]) -> Normalization:
    """What the trained network normalises its input by (its ``normalize`` buffers): the
    training split's statistics from scratch, the starting weights' when fine-tuned."""
    mean, std = (tuple(state[f"normalize.{name}"].flatten().tolist()) for name in ("mean", "std"))
    return Normalization(mean, std)


def _result(job: FinalJob, started_from: str, result: TrainResult,
            data: DataSplits) -> dict[str, Any]:
    """The file's ``result`` block: what it was trained on, and accuracies with their 95 %
    Wilson intervals."""
    val_images, test_images = len(data.val_y), len(data.test_y)
    return {"dataset": job.dataset, "data_dir": job.data_dir, "train_images": job.train_images,
            "epochs": result.epochs_trained, "lr": job.lr, "batch_size": job.batch_size,
            "seed": job.seed, "started_from": started_from,
            "accuracy": result.val_accuracy, "val_images": val_images,
            "accuracy_interval": list(wilson_interval(result.val_accuracy, val_images)),
            "test_accuracy": result.test_accuracy, "test_images": test_images,
            "test_accuracy_interval": list(wilson_interval(result.test_accuracy, test_images))}


def _print_epoch(result: EpochResult, epochs: int, val_images: int) -> None:
    _say(f"epoch {result.epoch}/{epochs}  train loss {result.train_loss:.4f}  val "
         f"{result.val_accuracy:.2%} on {val_images} images  {result.seconds:.1f} s")


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a killed run has shown every epoch it finished


if __name__ == "__main__":
    run_cli(main, PROG, failures=(TrainingFailed, Diverged), flags=DOCUMENT_KEYS,
            resumable=True)
