"""``python -m search.run --budget 3e8``: search per-layer HetConv parts under a MACs budget.

``--latency-budget MS`` adds (or, alone, replaces it with) a budget on the latency predicted
from the latency table of ``python -m search.profile``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

import optuna

from hetconv.reduction import RULES
from search.cli import OneLineParser, macs_amount, milliseconds, path_text, run_cli
from search.driver import SearchFailed, run_search
from search.engine.settings import (
    BASELINES,
    FINALIST_INITS,
    SAMPLERS,
    SCHEDULERS,
    STRATEGIES,
    SUPERNET_RECIPES,
    OneShotSettings,
    SearchSettings,
    add_network_options,
    network_named,
)
from search.oneshot.strategy import SupernetFailed
from search.store.lease import LeaseLost
from search.store.objectives import OBJECTIVES
from search.store.storage import DEFAULT_STORAGE
from search.training.data import DATASETS
from search.training.normalization import DATA, PRESETS
from search.training.start import CONVERSION_IMAGES
from space.latency import DEVICES, RUNTIMES

PROG = "python -m search.run"
# Library parameters whose flag here is not ``--name``: the latency options are prefixed.
LIBRARY_FLAGS = {"device": "--latency-device", "batch": "--latency-batch",
                 "runtime": "--latency-runtime", "workers": "--supernet-workers"}


def build_parser() -> OneLineParser:
    defaults = SearchSettings()
    parser = OneLineParser(
        prog=PROG,
        description="Search one HetConv part per layer that maximises accuracy while the "
                    "network stays under a MACs budget, a latency budget, or both. Ray Tune "
                    "runs the training trials, "
                    "Optuna proposes the architectures, and every trial is kept in the "
                    "storage database for optuna-dashboard and the HetNAS dashboards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--budget", type=macs_amount, default=None,
        help="MACs budget per image in the paper's convention (e.g. 3e8); architectures over "
             "it are never trained")
    add("--latency-budget", type=milliseconds, default=None,
        help="latency budget in ms for one batch of --latency-batch in the deploy form, "
             "predicted from the latency table (measured first where it lacks layers); "
             "alone or with --budget")
    add("--latency-device", default=defaults.latency_device, choices=DEVICES,
        help="device the latencies are measured on (this machine's)")
    add("--latency-batch", type=int, default=defaults.latency_batch,
        help="batch size the latencies are measured at")
    add("--latency-runtime", default=defaults.latency_runtime, choices=RUNTIMES,
        help="compiled: the deploy form under TorchInductor; eager: without it")
    add_network_options(parser, defaults.backbone)
    add("--init-from", type=path_text, default=None, metavar="DENSE.pt",
        help="trained dense weights (a state dict of the network with every part 1; for the "
             "built-in ImageNet ResNets also torchvision's layout) that every trial, and the "
             "one-shot supernet, starts from instead of a random initialisation")
    add("--conversion", default=defaults.conversion, choices=RULES,
        help="with --init-from: each trial's 1x1 weights off its KxK pattern are the dense "
             "kernel's centre tap (centre, as before), the sum of its taps (tap-sum), or fitted "
             f"layer by layer to the dense network's outputs on {CONVERSION_IMAGES} training "
             "images (least-squares); all but centre re-estimate batch norm on those images "
             "(docs/HETCONV.md; measured in bench/conversion_rules.py)")
    add("--input-normalization", default=defaults.input_normalization,
        metavar="|".join((DATA, *PRESETS, "MEAN,...:STD,...")),
        help="with --init-from: the per-channel mean and std (0..1 scale) that the dense weights "
             f"expect their input normalised by: {DATA} (the training split's own, as HetNAS "
             "trains), imagenet (0.485,0.456,0.406:0.229,0.224,0.225, timm's and "
             "torchvision's), or one mean and one std per channel; every network of the search "
             "normalises by it, and the export records it")
    add("--dataset", default=defaults.dataset, choices=DATASETS,
        help="digits (bundled with scikit-learn), fashion-mnist (IDX files in --data-dir, else "
             "Debian's dataset-fashion-mnist, else downloaded), cifar10, cifar100 (python-batch "
             "files in --data-dir) or imagefolder (--data-dir/train/<class>/*.png); the network "
             "takes its input channels and class count from it")
    add("--data-dir", type=path_text, default=None,
        help="folder holding the fashion-mnist, cifar or image-folder data")
    add("--train-images", type=int, default=None, metavar="N",
        help="train every trial on about N of the training images (the same share of each "
             "class, drawn by --seed; validation and test unchanged), recorded in the study; "
             "default: all")
    add("--input-size", type=int, default=None,
        help="image side the network sees; images are resized to it (default: the "
             "backbone's own, 32 for vgg16 and the CIFAR ResNets, 224 for the ImageNet ones)")
    add("--strategy", default=defaults.strategy, choices=STRATEGIES,
        help="standard: train every searched architecture; oneshot: train one supernet, score "
             "--candidates architectures with it, and train only the best --finalists "
             "stand-alone (docs/ONESHOT.md says when to choose which)")
    add("--trials", type=int, default=defaults.trials,
        help="standard strategy: searched architectures to train (rejected proposals, the "
             "uniform baselines and the confirmation runs come on top)")
    add("--supernet-epochs", type=int, default=None,
        help="oneshot: the supernet's training epochs (default: --epochs)")
    add("--candidates", type=int, default=defaults.oneshot.candidates,
        help="oneshot: architectures the supernet scores (each an Optuna trial marked as an "
             "estimate)")
    add("--finalists", type=int, default=defaults.oneshot.finalists,
        help="oneshot: best-estimated architectures then trained stand-alone")
    add("--finalist-init", default=defaults.oneshot.finalist_init, choices=FINALIST_INITS,
        help="oneshot: stand-alone runs (finalists, baselines, confirmation) start from "
             "their weights inside the supernet (fine-tuning: measured better in "
             "docs/BENCHMARKS.md) or from scratch")
    add("--supernet-recipe", default=defaults.oneshot.supernet_recipe, choices=SUPERNET_RECIPES,
        help="oneshot: what each supernet step trains beside the largest network: nothing "
             "(largest), the smallest and --sandwich random architectures near the budgets "
             "(sandwich), one architecture from each of --sandwich cost strata near the budgets "
             "(strata), or every layer's parts once each (fair); the smaller ones distilled "
             "from the largest (docs/ONESHOT.md)")
    add("--sandwich", type=int, default=defaults.oneshot.sandwich,
        help="oneshot, sandwich and strata recipes: architectures near the budgets trained in "
             "each supernet step beside the largest")
    add("--supernet-workers", type=int, default=defaults.oneshot.supernet_workers,
        help="oneshot: data-parallel Ray Train workers for the supernet (each takes "
             "--cpus-per-trial CPUs)")
    add("--baselines", default=defaults.baselines, choices=BASELINES,
        help="uniform-P networks trained beside the search: all within the budgets, near (the "
             "two costliest within them) or none")
    add("--confirm-top", type=int, default=defaults.confirm_top,
        help="after the search, train the best N searched architectures and the uniform "
             "baselines nearest them in cost again with more seeds (0: no confirmation)")
    add("--confirm-seeds", type=int, default=defaults.confirm_seeds,
        help="runs per confirmed architecture, the search's own included")
    add("--epochs", type=int, default=defaults.epochs, help="training epochs per trial")
    add("--batch-size", type=int, default=defaults.batch_size, help="training batch size")
    add("--sampler", default=defaults.sampler, choices=SAMPLERS, help="Optuna sampler")
    add("--objective", default=defaults.objective, choices=list(OBJECTIVES),
        help="; ".join(f"{o.name}: {o.description}" for o in OBJECTIVES.values())
        + " (the budgets are constraints in each)")
    add("--storage", default=DEFAULT_STORAGE,
        help="SQLAlchemy URL of the study database (sqlite:///file.db or postgresql://...)")
    add("--study", default=None,
        help="study name (default: <backbone>-<dataset>-<timestamp>; with --resume, the "
             "latest study in the storage)")
    add("--ray-address", default=None,
        help="host:port of a running Ray head (default: start a local Ray)")
    add("--gpus-per-trial", type=float, default=defaults.gpus_per_trial,
        help="GPUs each trial reserves (fractions share a GPU)")
    add("--cpus-per-trial", type=float, default=defaults.cpus_per_trial,
        help="CPUs each trial reserves; also its torch thread count")
    add("--max-concurrent", type=int, default=None,
        help="trials running at once (default: as many as the cluster's resources hold)")
    add("--scheduler", default=defaults.scheduler, choices=SCHEDULERS,
        help="fifo: every trial trains all epochs; asha: stop weak trials early (they are "
             "recorded as pruned and never count as best)")
    add("--seed", type=int, default=defaults.seed, help="seed for the sampler, data and training")
    add("--resume", action="store_true",
        help="continue the study after an interrupted run: trials left running are retried, "
             "finished ones are kept")
    add("--artifacts-dir", type=path_text, default=defaults.artifacts_dir,
        help="where trial checkpoints go (a shared folder on a multi-host cluster)")
    add("--max-failures", type=int, default=defaults.max_failures,
        help="times Ray retries a trial whose worker died, from its last epoch checkpoint")
    return parser


def settings_from(args: argparse.Namespace) -> SearchSettings:
    """The settings the parsed command line asks for: ``--model`` and ``--backbone`` both name
    the network (``SearchSettings.backbone``), a factory or a family."""
    options = dict(vars(args))
    network = network_named(options.pop("model"), options.pop("backbone"))
    if network is not None:
        options["backbone"] = network
    oneshot = {f.name: options.pop(f.name) for f in dataclasses.fields(OneShotSettings)}
    return SearchSettings(**options, oneshot=OneShotSettings(**oneshot))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The search prints its own trial lines; Ray Tune's tables would drown them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_search(settings_from(args))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG, failures=(SearchFailed, SupernetFailed, LeaseLost), flags=LIBRARY_FLAGS,
            resumable=True)
