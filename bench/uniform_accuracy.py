"""Accuracy of the paper's uniform-P networks on Fashion-MNIST, with its noise.

Trains ``Architecture.uniform(backbone, P)`` for every backbone, part and training seed with one
recipe (``search.training.trainer``: SGD + Nesterov, lr 0.1 at batch 128, cosine, weight decay 5e-4,
random crop and flip), on the first ``--train-images`` images of the training split (validation
split drawn by data seed 0), and scores each on the full 10,000-image test split. Prints one
markdown row per (backbone, P): paper MACs and parameters, test accuracy as mean ± standard
deviation over the seeds with min–max, and the 95 % binomial half-width of one run at that test
size, so the spread over seeds and the sampling noise of the test split can be told apart.

    python bench/uniform_accuracy.py --backbones resnet20 vgg16 --parts 1 2 4 8 --seeds 0 1 \
        --train-images 10000 --epochs 4 --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from search.training.data import DataSplits, load_dataset
from search.training.trainer import TrainConfig, train
from space import Architecture

INPUT_SIZE = 32  # 28x28 images centred on a 32x32 canvas (search.training.data)


@functools.cache
def _data(data_dir: str | None, train_images: int) -> DataSplits:
    data = load_dataset("fashion-mnist", INPUT_SIZE, data_dir, seed=0)
    return dataclasses.replace(data, train_x=data.train_x[:train_images],
                               train_y=data.train_y[:train_images])


def run_one(backbone: str, part: int, seed: int, epochs: int, train_images: int,
            data_dir: str | None, threads: int, device: str) -> dict:
    """Train one uniform network; its accuracies and seconds."""
    torch.set_num_threads(threads)
    data = _data(data_dir, train_images)
    arch = Architecture.uniform(backbone, part, INPUT_SIZE, data.num_classes, data.channels)
    started = time.perf_counter()
    result = train(arch, data, TrainConfig(epochs=epochs, batch_size=128, seed=seed,
                                           device=device))
    return {"backbone": backbone, "part": part, "seed": seed, "val": result.val_accuracy,
            "test": result.test_accuracy, "seconds": time.perf_counter() - started,
            "macs": arch.macs, "params": arch.params, "test_images": len(data.test_y)}


def table(runs: list[dict]) -> str:
    lines = ["| backbone | P | paper MACs | params | test accuracy, mean ± sd | min–max | "
             "±95 % one run | seeds | s/run |", "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted({(r["backbone"], r["part"]) for r in runs}):
        group = [r for r in runs if (r["backbone"], r["part"]) == key]
        tests = [100 * r["test"] for r in group]
        mean = statistics.fmean(tests)
        sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        n = group[0]["test_images"]
        half = 100 * 1.96 * math.sqrt(mean / 100 * (1 - mean / 100) / n)
        lines.append(f"| {key[0]} | {key[1]} | {group[0]['macs'] / 1e6:.1f} M | "
                     f"{group[0]['params'] / 1e6:.3f} M | {mean:.2f} ± {sd:.2f} | "
                     f"{min(tests):.2f}–{max(tests):.2f} | ±{half:.2f} | {len(group)} | "
                     f"{statistics.fmean(r['seconds'] for r in group):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet20", "vgg16"])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--data-dir", default=None, help="IDX files (default: Debian's)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    args = parser.parse_args(argv)
    jobs = [(b, p, s, args.epochs, args.train_images, args.data_dir, args.threads, args.device)
            for b in args.backbones for p in args.parts for s in args.seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        runs = []
        for run in pool.map(run_one, *zip(*jobs, strict=True)):
            runs.append(run)
            print(f"# {run['backbone']} P{run['part']} seed {run['seed']}: test "
                  f"{run['test']:.2%}, val {run['val']:.2%}, {run['seconds']:.0f} s", flush=True)
    print(f"\nFashion-MNIST, {args.train_images} training images, {args.epochs} epochs, "
          f"batch 128, test on {runs[0]['test_images']} images; {args.jobs} trainings at once, "
          f"{(time.perf_counter() - started) / 3600:.2f} h wall\n")
    print(table(runs))


if __name__ == "__main__":
    main()
