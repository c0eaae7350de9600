"""Training-step speed of whole HetConv networks with the layer before and after a change.

Why this exists: a change to :class:`hetconv.layer.HetConv2d` (such as training the paper's exact
layer, whose 1×1 kernel is materialised from compact weights on every call) must not slow
training down unnoticed. For uniform VGG-16 and ResNet-20 at each part this times one training
step (forward, backward, SGD with momentum and weight decay) with the layer of the working tree
("after") and with the layer of a git revision ("before"), side by side.

The "before" layer is read at run time with ``git show REV:hetconv/layer.py``, so no copy of old
code is kept; ``--before`` names the revision (``HEAD`` while a change to the layer is not
committed yet; ``3a38838`` is the last over-parameterised layer). Each network is built once;
the "before" network is a copy whose every HetConv layer is replaced by the old class's layer
with the same function (through the dense kernel), checked on one batch before timing.

Every variant is timed in the same interleaved rounds, order shuffled each round, with contended
rounds re-run (``layer_speed.time_gated_rounds``, as ``network_speed.py`` does); medians reported.
On a shared 2-core CPU one step varies by about ±10 % from run to run, so differences of a few
per cent between before and after are noise; the defaults (15 rounds) take about two minutes.

Run from the repository root::

    python bench/train_step.py --before 3a38838      # VGG-16 and ResNet-20, P 2 4 8, batch 64
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from layer_speed import (
    CpuMeter,
    Gate,
    add_timing_options,
    closing_line,
    load_average,
    machine,
    steady_malloc,
    time_gated_rounds,
)
from torch import nn
from torch.utils.benchmark.utils.common import set_torch_threads

from hetconv.layer import HetConv2d
from hetconv.layout import replace_submodule
from hetconv.models import build_model
from space.trace import searchable_layers

ROOT = Path(__file__).resolve().parent.parent
LAYER_PATH = "hetconv/layer.py"
BACKBONES = ("vgg16", "resnet20")
INPUT_SIZE = 32


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def load_layer_module(rev: str) -> types.ModuleType:
    """``hetconv/layer.py`` as of ``rev``, imported as a module of its own."""
    source = _git("show", f"{rev}:{LAYER_PATH}")
    name = "hetconv_layer_before"
    module = types.ModuleType(name)
    sys.modules[name] = module  # as an import would: dataclasses and pickle look classes up there
    exec(compile(source, f"{rev}:{LAYER_PATH}", "exec"), module.__dict__)
    return module


def with_layer_class(model: nn.Module, layer_class: type[nn.Module]) -> nn.Module:
    """A copy of ``model`` whose HetConv layers are ``layer_class`` layers, same function."""
    model = copy.deepcopy(model)
    for name, layer in list(model.named_modules()):
        if not isinstance(layer, HetConv2d):
            continue
        other = layer_class(layer.in_channels, layer.out_channels, layer.kernel_size,
                            layer.stride, layer.padding, layer.part, layer.bias is not None)
        other = other.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            other.load_dense_weight(layer.dense_weight())
            if layer.bias is not None:
                other.bias.copy_(layer.bias)
        replace_submodule(model, name, other)
    return model


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD step with the CIFAR recipe's momentum and weight decay."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def variants(old_class: type[nn.Module], parts: list[int], batch: int,
             device: torch.device) -> tuple[dict[str, Callable[[], None]], dict[str, int]]:
    """Steps named ``BACKBONE/P/before`` and ``.../after``, and each one's trainable count."""
    steps, params = {}, {}
    x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    for backbone in BACKBONES:
        for part in parts:
            torch.manual_seed(part)
            after = build_model(backbone, [part] * len(searchable_layers(backbone))).to(device)
            before = with_layer_class(after, old_class)
            with torch.no_grad():
                torch.testing.assert_close(before.eval()(x), after.eval()(x), rtol=1e-4,
                                           atol=1e-4)
            for label, model in (("before", before), ("after", after)):
                key = f"{backbone}/{part}/{label}"
                steps[key] = training_step(model.train(), x, y)
                params[key] = trainable(model)
    return steps, params


def table(ms: dict[str, float], params: dict[str, int], parts: list[int]) -> str:
    lines = ["| network | P | ms/step before | ms/step after | after/before "
             "| trainable params before | trainable params after |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for backbone in BACKBONES:
        for part in parts:
            before, after = f"{backbone}/{part}/before", f"{backbone}/{part}/after"
            lines.append(f"| {backbone} | {part} | {ms[before]:.1f} | {ms[after]:.1f} "
                         f"| {ms[after] / ms[before]:.3f} | {params[before]:,} "
                         f"| {params[after]:,} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, metavar="REV",
                        help="git revision whose hetconv/layer.py is 'before' (HEAD while a "
                             "layer change is uncommitted; 3a38838: the last layer with "
                             "duplicated 1x1 weights)")
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch", type=int, default=64)
    add_timing_options(parser, repeats=15, patience=120.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rev = args.before
    old_class = load_layer_module(rev).HetConv2d
    steady_malloc()
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    parts = sorted(set(args.parts))
    print(f"# train_step: before = {LAYER_PATH} at {rev} ({_git('rev-parse', '--short', rev)}), "
          f"after = working tree; batch {args.batch}, {INPUT_SIZE}x{INPUT_SIZE}, fp32, "
          f"torch {torch.__version__}, {machine(device, threads)}, {args.repeats} interleaved "
          f"rounds (median)")
    print(f"# load average at start: {load_average()}")
    started, meter = time.perf_counter(), CpuMeter()
    with set_torch_threads(threads):
        steps, params = variants(old_class, parts, args.batch, device)
        timing = time_gated_rounds(steps, device, 1, args.repeats, args.min_sample,
                                  Gate(args.max_busy, args.patience))
    ms = {name: seconds * 1e3 for name, seconds in timing.median_s.items()}
    print("\n" + table(ms, params, parts))
    print(f"\n({timing.describe()})\n" + closing_line(meter, started))


if __name__ == "__main__":
    main()
