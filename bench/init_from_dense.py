"""Trials started from trained dense weights (``--init-from``) against trials from scratch.

Trains the standard (every part 1) ``--backbone`` on the first ``--train-images`` images of
Fashion-MNIST's training split for ``--dense-epochs`` (the user's trained network), then trains
each uniform-P architecture of ``--parts`` for ``--epochs`` both from scratch and from those
dense weights (``search.training.start``: K×K kernels on the part's pattern, the 1×1 weights of
``--conversion`` elsewhere; the figures in docs/BENCHMARKS.md are ``centre``'s), one run per
``--seeds`` seed and arm, with the same training seed in both arms so the runs pair up. Every
accuracy is on the full 10,000-image test split. Prints one markdown row per part: both arms'
mean ± sd, the paired difference with its 95 % t-interval, and the dense network's own accuracy.

    python bench/init_from_dense.py --parts 4 8 --seeds 0 1 2 --train-images 10000 \
        --epochs 2 --dense-epochs 6 --conversion centre
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

from hetconv.reduction import RULES
from search.training.checkpoint import read_checkpoint
from search.training.data import DataSplits, load_dataset
from search.training.start import DENSE_CONVERSION, dense_start
from search.training.trainer import TrainConfig, train
from space import Architecture

INPUT_SIZE = 32  # 28x28 images centred on a 32x32 canvas (search.training.data)


def _data(data_dir: str | None, train_images: int) -> DataSplits:
    data = load_dataset("fashion-mnist", INPUT_SIZE, data_dir, seed=0)
    return dataclasses.replace(data, train_x=data.train_x[:train_images],
                               train_y=data.train_y[:train_images])


def train_dense(backbone: str, data: DataSplits, epochs: int, folder: Path) -> tuple[Path, float]:
    """The standard network trained on ``data``, saved as a plain state dict (as a user has it);
    the file and its test accuracy."""
    arch = Architecture.uniform(backbone, 1, data.input_size, data.num_classes, data.channels)
    result = train(arch, data, TrainConfig(epochs=epochs, batch_size=128, seed=1000),
                   checkpoint_dir=folder)
    state = {key: value for key, value in read_checkpoint(folder)["model"].items()
             if not key.startswith("normalize.")}
    path = folder / "dense.pt"
    torch.save(state, path)
    return path, result.test_accuracy


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean paired difference and its 95 % t-interval."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) \
        / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--parts", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dense-epochs", type=int, default=6)
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--data-dir", default=None, help="IDX files (default: Debian's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conversion", choices=RULES, default=DENSE_CONVERSION)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = _data(args.data_dir, args.train_images)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        dense, dense_test = train_dense(args.backbone, data, args.dense_epochs, Path(folder))
        dense_seconds = time.perf_counter() - started
        print(f"{args.backbone} on Fashion-MNIST: {len(data.train_y)} training, "
              f"{len(data.val_y)} validation, {len(data.test_y)} test images; dense network "
              f"({args.dense_epochs} epochs, {dense_seconds:.0f} s): {100 * dense_test:.2f} % "
              f"test", flush=True)
        print("| P | paper MACs | from scratch, test % | from dense, test % | paired difference "
              "[95 % t] | seeds | s/run |\n|---|---|---|---|---|---|---|", flush=True)
        for part in args.parts:
            arch = Architecture.uniform(args.backbone, part, INPUT_SIZE, data.num_classes,
                                        data.channels)
            scratch, warm, seconds = [], [], []
            for seed in args.seeds:
                config = TrainConfig(epochs=args.epochs, batch_size=128, seed=seed)
                began = time.perf_counter()
                scratch.append(100 * train(arch, data, config).test_accuracy)
                start = dense_start(arch, data, str(dense), args.conversion)
                warm.append(100 * train(arch, data, config, initial_weights=start).test_accuracy)
                seconds.append((time.perf_counter() - began) / 2)
            mean, low, high = paired_interval([w - s for w, s in zip(warm, scratch, strict=True)])
            spread = [statistics.stdev(v) if len(v) > 1 else float("nan") for v in (scratch, warm)]
            print(f"| {part} | {arch.macs / 1e6:.1f} M | {statistics.fmean(scratch):.2f} ± "
                  f"{spread[0]:.2f} | {statistics.fmean(warm):.2f} ± {spread[1]:.2f} | "
                  f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] | {len(args.seeds)} | "
                  f"{statistics.fmean(seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
