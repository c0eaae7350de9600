"""How much each conversion rule keeps of a trained dense network (``--conversion``).

Trains the standard (every part 1) ResNet-20 on ``--train-images`` Fashion-MNIST training images
at 28 px for ``--dense-epochs`` (the user's trained network), then for each uniform part of
``--parts`` and each rule of :mod:`hetconv.reduction` starts the architecture from those dense
weights exactly as a search's trial does (``search.training.start.dense_start``) and scores it
on the 10,000 test images right after the conversion, and after one epoch of fine-tuning
(the trials' recipe: SGD, batch 128) with each training seed of ``--seeds``. Every rule and
seed is scored on the same test images, so the comparisons are paired: McNemar's test for the
single converted networks, the paired bootstrap over images and seeds for the fine-tuned ones
(``search.store.paired``). The validation split is cut to ``--val-images`` (never used for a
choice here) to save time. Prints markdown; asserts nothing.

    python bench/conversion_rules.py --parts 4 8 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from init_from_dense import train_dense

from hetconv.reduction import CENTRE, LEAST_SQUARES, RULES, TAP_SUM
from search.store.paired import mcnemar, paired_bootstrap
from search.training.data import DataSplits, load_dataset
from search.training.start import CONVERSION_IMAGES, dense_start
from search.training.trainer import TrainConfig, correct_images, train
from space import Architecture

BACKBONE, INPUT_SIZE = "resnet20", 28
COMPARISONS = ((TAP_SUM, CENTRE), (LEAST_SQUARES, CENTRE), (LEAST_SQUARES, TAP_SUM))


def _data(data_dir: str | None, train_images: int, val_images: int) -> DataSplits:
    data = load_dataset("fashion-mnist", INPUT_SIZE, data_dir, seed=0, train_images=train_images)
    return dataclasses.replace(data, val_x=data.val_x[:val_images],
                               val_y=data.val_y[:val_images])


def _percent(correct: np.ndarray) -> str:
    """Mean test accuracy over seeds ± their sd, in %."""
    per_seed = [100 * float(row.mean()) for row in np.atleast_2d(correct)]
    spread = f" ± {statistics.stdev(per_seed):.2f}" if len(per_seed) > 1 else ""
    return f"{statistics.fmean(per_seed):.2f}{spread}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--data-dir", default=None, help="IDX files (default: Debian's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = _data(args.data_dir, args.train_images, args.val_images)
    started = time.perf_counter()
    print(f"$ python {' '.join(sys.argv)}\n{BACKBONE} on Fashion-MNIST at {INPUT_SIZE} px: "
          f"{len(data.train_y)} training, {len(data.val_y)} validation, {len(data.test_y)} test "
          f"images; {args.threads} thread(s); conversions calibrate on {CONVERSION_IMAGES} "
          f"training images", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        dense, dense_test = train_dense(BACKBONE, data, args.dense_epochs, Path(folder))
        print(f"dense network ({args.dense_epochs} epochs, {time.perf_counter() - started:.0f} "
              f"s): {100 * dense_test:.2f} % test\n", flush=True)
        converted: dict[tuple[int, str], np.ndarray] = {}
        tuned: dict[tuple[int, str], np.ndarray] = {}
        print("| P | rule | converted, test % | conversion s | fine-tuned 1 epoch, test % "
              "(mean ± sd over seeds) |\n|---|---|---|---|---|", flush=True)
        for part in args.parts:
            arch = Architecture.uniform(BACKBONE, part, INPUT_SIZE, data.num_classes,
                                        data.channels)
            for rule in args.rules:
                began = time.perf_counter()
                start = dense_start(arch, data, str(dense), rule)
                seconds = time.perf_counter() - began
                model = arch.build()
                model.load_state_dict(start)
                converted[part, rule] = correct_images(model, data.test_x, data.test_y,
                                                       "cpu").numpy()
                tuned[part, rule] = np.stack([
                    train(arch, data, TrainConfig(epochs=1, batch_size=128, seed=seed,
                                                  device="cpu"),
                          initial_weights=start).test_correct.numpy()
                    for seed in args.seeds])
                print(f"| {part} | {rule} | {_percent(converted[part, rule])} | {seconds:.1f} | "
                      f"{_percent(tuned[part, rule])} |", flush=True)
        print("\nPaired differences on the same 10,000 test images (a minus b):\n", flush=True)
        for part in args.parts:
            for a, b in COMPARISONS:
                if a in args.rules and b in args.rules:
                    at_once = mcnemar(converted[part, a], converted[part, b])
                    later = paired_bootstrap(tuned[part, a], tuned[part, b])
                    print(f"- P{part}, {a} vs {b}: converted {at_once.describe()}; fine-tuned "
                          f"{later.describe()}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
