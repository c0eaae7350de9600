"""Whole-network speed of HetConv VGG-16 against the standard network, before and after deploy.

Why this exists: HetConv's saving is counted in MACs, but users pay in time. For uniform part P
this prints the realized speedup over the standard VGG-16 (with batch norm) next to the
theoretical MACs ratio, for inference at each ``--batches`` size and for a training step:

* before: both networks as trained, in eager PyTorch (grouped K×K + dense 1×1 per layer);
* after: both networks through ``hetconv.deployment.deploy`` (batch norm folded, activations in
  class order, each layer in its fastest equivalent form, the batch in its fastest chunk size,
  channels-last, TorchInductor with freezing). The standard network gets the same treatment,
  so the speedup is HetConv's own, not the deploy form's;
* after vs eager standard: what a user who deploys the HetConv network gains over running the
  standard network as trained.

Every variant of one batch size is timed in the same interleaved rounds (order shuffled each
round; rounds during which other processes kept the cores busy are re-run, see
``layer_speed.time_gated_rounds``), so before and after are measured side by side.

Run from the repository root::

    python bench/network_speed.py                 # batches 64 and 1, P 2 4 8 16, training step
    python bench/network_speed.py --markdown      # tables for docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import time

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
from networks import trained_like
from torch import nn
from torch.utils.benchmark.utils.common import set_torch_threads

from hetconv.deployment import deploy
from hetconv.models import build_model
from space import Architecture

BACKBONE = "vgg16"
INPUT_SIZE = 32


def theoretical_speedup(part: int) -> float:
    """Standard network's paper MACs over the uniform-P network's, whole network included."""
    return (Architecture.uniform(BACKBONE, 1, INPUT_SIZE).macs
            / Architecture.uniform(BACKBONE, part, INPUT_SIZE).macs)


def inference_steps(parts: list[int], batch: int,
                    device: torch.device) -> tuple[dict[str, object], dict[str, str]]:
    """``before-P`` / ``after-P`` callables for every part, and each deploy form's layer forms."""
    x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    steps, forms = {}, {}
    for part in parts:
        model = trained_like(build_model(BACKBONE, None if part == 1 else [part] * 12), part)
        model = model.to(device)
        deployed = deploy(model, x)
        forms[part] = (", ".join(sorted(set(deployed.forms.values()))) or "dense") + \
            f" (chunk {deployed.chunk or batch})"

        def before(model: nn.Module = model) -> object:
            with torch.inference_mode():
                return model(x)

        steps[f"before-{part}"] = before
        steps[f"after-{part}"] = lambda deployed=deployed: deployed(x)
    return steps, forms


def training_steps(parts: list[int], batch: int, device: torch.device) -> dict[str, object]:
    """One SGD step (forward, backward, update) in NCHW and in channels-last, for every part."""
    steps = {}
    for part in parts:
        for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
            torch.manual_seed(part)
            model = build_model(BACKBONE, None if part == 1 else [part] * 12).to(device).train()
            model = model.to(memory_format=fmt)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
            x = x.contiguous(memory_format=fmt)
            y = torch.randint(0, 10, (batch,), device=device)

            def step(model=model, optimizer=optimizer, x=x, y=y) -> None:
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

            steps[f"{layout}-{part}"] = step
    return steps


def _row(label: str, values: list[str], markdown: bool) -> str:
    if markdown:
        return "| " + " | ".join([label, *values]) + " |"
    return f"{label:<44s}" + "".join(f"{v:>9s}" for v in values)


def speed_table(title: str, rows: list[tuple[str, list[float], str]], parts: list[int],
                markdown: bool) -> str:
    """Rows of (label, value per part, format) under a header of parts."""
    lines = [f"\n## {title}\n"]
    lines.append(_row("P", [str(p) for p in parts], markdown))
    if markdown:
        lines.append("|" + "---|" * (len(parts) + 1))
    for label, values, fmt in rows:
        lines.append(_row(label, [format(v, fmt) for v in values], markdown))
    return "\n".join(lines)


def inference_table(ms: dict[str, float], parts: list[int], batch: int,
                    markdown: bool) -> str:
    theory = [theoretical_speedup(p) for p in parts]
    before = [ms["before-1"] / ms[f"before-{p}"] for p in parts]
    after = [ms["after-1"] / ms[f"after-{p}"] for p in parts]
    versus_eager = [ms["before-1"] / ms[f"after-{p}"] for p in parts]
    return speed_table(
        f"inference, batch {batch} (standard network: {ms['before-1']:.2f} ms eager, "
        f"{ms['after-1']:.2f} ms deployed)",
        [("ms before (eager)", [ms[f"before-{p}"] for p in parts], ".2f"),
         ("ms after (deploy)", [ms[f"after-{p}"] for p in parts], ".2f"),
         ("realized speedup before", before, ".2f"),
         ("realized speedup after (both deployed)", after, ".2f"),
         ("theoretical (MACs)", theory, ".2f"),
         ("fraction before", [b / t for b, t in zip(before, theory, strict=True)], ".2f"),
         ("fraction after (both deployed)", [a / t for a, t in zip(after, theory, strict=True)],
          ".2f"),
         ("after vs eager standard: speedup", versus_eager, ".2f"),
         ("after vs eager standard: fraction",
          [v / t for v, t in zip(versus_eager, theory, strict=True)], ".2f")],
        parts, markdown)


def training_table(ms: dict[str, float], parts: list[int], batch: int, markdown: bool) -> str:
    theory = [theoretical_speedup(p) for p in parts]
    rows = []
    for layout, name in (("nchw", "NCHW"), ("cl", "channels-last")):
        speedup = [ms[f"{layout}-1"] / ms[f"{layout}-{p}"] for p in parts]
        rows += [(f"ms per step, {name}", [ms[f"{layout}-{p}"] for p in parts], ".1f"),
                 (f"realized speedup, {name}", speedup, ".2f"),
                 (f"fraction, {name}", [s / t for s, t in zip(speedup, theory, strict=True)],
                  ".2f")]
    return speed_table(
        f"training step (forward, backward, SGD), batch {batch} (standard network: "
        f"{ms['nchw-1']:.1f} ms NCHW, {ms['cl-1']:.1f} ms channels-last)", rows, parts, markdown)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--train-batch", type=int, default=64,
                        help="batch of the training-step table (0: skip it)")
    add_timing_options(parser, repeats=7, patience=300.0)
    parser.add_argument("--markdown", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    steady_malloc()
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    parts = sorted(set(args.parts))
    print(f"# network_speed: {BACKBONE} at {INPUT_SIZE}x{INPUT_SIZE}, torch {torch.__version__}, "
          f"{machine(device, threads)}, {args.repeats} interleaved rounds (median), fp32")
    print(f"# load average at start: {load_average()}")
    started, meter = time.perf_counter(), CpuMeter()
    gate = Gate(args.max_busy, args.patience)
    with set_torch_threads(threads):
        for batch in args.batches:
            steps, forms = inference_steps([1, *parts], batch, device)
            timing = time_gated_rounds(steps, device, 2, args.repeats, args.min_sample, gate)
            ms = {name: seconds * 1e3 for name, seconds in timing.median_s.items()}
            print(inference_table(ms, parts, batch, args.markdown))
            print("\nlayer forms chosen: " + "; ".join(f"P{p}: {forms[p]}" for p in parts)
                  + f"\n({timing.describe()})")
        if args.train_batch:
            steps = training_steps([1, *parts], args.train_batch, device)
            timing = time_gated_rounds(steps, device, 1, max(3, args.repeats // 2),
                                      args.min_sample, gate)
            ms = {name: seconds * 1e3 for name, seconds in timing.median_s.items()}
            print(training_table(ms, parts, args.train_batch, args.markdown))
            print(f"\n({timing.describe()})")
    print("\n" + closing_line(meter, started))


if __name__ == "__main__":
    main()
