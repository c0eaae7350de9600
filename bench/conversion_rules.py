"""How much each conversion rule keeps of a trained dense network (``--conversion``).

Trains the standard (every part 1) ResNet-20 on ``--train-images`` Fashion-MNIST training images
at 28 px for ``--dense-epochs`` (the user's trained network), then for each uniform part of
``--parts`` and each rule of :mod:`hetconv.reduction` starts the architecture from those dense
weights exactly as a search's trial does (``search.training.start.dense_start``) and scores it
on the 10,000 test images right after the conversion, and after each of ``--epochs`` of
fine-tuning (the trials' recipe: SGD, batch 128, at each learning rate of ``--lrs``) with each
training seed of ``--seeds``. Every rule and
seed is scored on the same test images, so the comparisons are paired: McNemar's test for the
single converted networks, the paired bootstrap over images and seeds for the fine-tuned ones
(``search.store.paired``). The validation split is cut to ``--val-images`` (never used for a
choice here) to save time. Prints markdown; asserts nothing.

    python bench/conversion_rules.py --parts 4 8 --seeds 0 1 2 --epochs 1 2 --lrs 0.1 0.02 \
        --json bench/results/conversion_rules.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from search.training.start import CONVERSION_IMAGES, DENSE_CONVERSION, dense_start
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
    parser.add_argument("--epochs", type=int, nargs="+", default=[1],
                        help="fine-tuning lengths, each its own run (the cosine schedule spans it)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[TrainConfig.lr],
                        help="fine-tuning learning rates at batch 128; the rules are compared at "
                             "the first, the others are tried with --lr-rules only")
    parser.add_argument("--lr-rules", nargs="+", choices=RULES, default=[DENSE_CONVERSION])
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--data-dir", default=None, help="IDX files (default: Debian's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run's test accuracy here (a small result file)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = _data(args.data_dir, args.train_images, args.val_images)
    started = time.perf_counter()
    print(f"$ python {' '.join(sys.argv)}\n{BACKBONE} on Fashion-MNIST at {INPUT_SIZE} px: "
          f"{len(data.train_y)} training, {len(data.val_y)} validation, {len(data.test_y)} test "
          f"images; {args.threads} thread(s); conversions calibrate on {CONVERSION_IMAGES} "
          f"training images", flush=True)
    first_lr = args.lrs[0]
    with tempfile.TemporaryDirectory() as folder:
        dense, dense_test = train_dense(BACKBONE, data, args.dense_epochs, Path(folder))
        print(f"dense network ({args.dense_epochs} epochs, {time.perf_counter() - started:.0f} "
              f"s): {100 * dense_test:.2f} % test\n", flush=True)
        converted: dict[tuple[int, str], np.ndarray] = {}
        tuned: dict[tuple[int, str, float, int], np.ndarray] = {}
        print("| P | rule | lr | converted, test % | conversion s | "
              + " | ".join(f"fine-tuned {n} epoch{'s' if n > 1 else ''}, test %"
                           for n in args.epochs)
              + " |\n|---|---|---|---|---|" + "---|" * len(args.epochs), flush=True)
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
                for lr in args.lrs if rule in args.lr_rules else [first_lr]:
                    for epochs in args.epochs:
                        tuned[part, rule, lr, epochs] = np.stack([
                            train(arch, data, TrainConfig(epochs=epochs, batch_size=128, lr=lr,
                                                          seed=seed, device="cpu"),
                                  initial_weights=start).test_correct.numpy()
                            for seed in args.seeds])
                    print(f"| {part} | {rule} | {lr:g} | {_percent(converted[part, rule])} | "
                          f"{seconds:.1f} | "
                          + " | ".join(_percent(tuned[part, rule, lr, n]) for n in args.epochs)
                          + " |", flush=True)
        print("\nPaired differences on the same 10,000 test images (a minus b; fine-tuned: "
              "paired bootstrap over images and seeds):\n", flush=True)
        comparisons = [(f"P{part}, {a} vs {b}", (part, a, first_lr), (part, b, first_lr))
                       for part in args.parts for a, b in COMPARISONS
                       if a in args.rules and b in args.rules]
        comparisons += [(f"P{part}, {rule} at lr {lr:g} vs {first_lr:g}", (part, rule, lr),
                         (part, rule, first_lr))
                        for part in args.parts for rule in args.lr_rules if rule in args.rules
                        for lr in args.lrs[1:]]
        for label, (part, a, lr_a), (_, b, lr_b) in comparisons:
            at_once = (mcnemar(converted[part, a], converted[part, b]).describe()
                       if a != b else "the same start")
            later = "; ".join(
                f"{n} epoch{'s' if n > 1 else ''} "
                + paired_bootstrap(tuned[part, a, lr_a, n], tuned[part, b, lr_b, n]).describe()
                for n in args.epochs)
            print(f"- {label}: converted {at_once}; fine-tuned {later}", flush=True)
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s", flush=True)
    if args.json is not None:
        _write_json(args, dense_test, converted, tuned, total)


def _write_json(args: argparse.Namespace, dense_test: float,
                converted: dict[tuple[int, str], np.ndarray],
                tuned: dict[tuple[int, str, float, int], np.ndarray], seconds: float) -> None:
    """Every run's test accuracy and the setting that made it, as a small committed file."""
    document = {
        "command": "python " + " ".join(sys.argv), "backbone": BACKBONE,
        "input_size": INPUT_SIZE, "train_images": args.train_images,
        "dense_epochs": args.dense_epochs, "dense_test_accuracy": dense_test,
        "seeds": args.seeds, "seconds": round(seconds),
        "converted": [{"part": part, "rule": rule, "test_accuracy": float(correct.mean())}
                      for (part, rule), correct in converted.items()],
        "fine_tuned": [{"part": part, "rule": rule, "lr": lr, "epochs": epochs,
                        "test_accuracy_per_seed": [float(row.mean()) for row in correct]}
                       for (part, rule, lr, epochs), correct in tuned.items()]}
    args.json.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
