"""How well the per-layer latency table predicts a whole network's measured latency.

Why this exists: a latency budget is only as good as the prediction behind it. The model
(``space.latency.LatencyModel``) adds up each searchable layer measured alone in its deploy form
plus a constant remainder; the network itself runs as one deployed graph (TorchInductor fuses
across layers, the call overhead is paid once). This draws random architectures
(``SearchSpace.random_parts``), measures each end to end as ``deploy(build_model(...))`` with
the profiler's own timing (``search.profiling.profiler.measure_network``), and compares. The
latency table is read from ``--storage`` and measured first where it is missing.

Other processes may share the cores; the share of a core they used during each measurement
is printed (``others``, from ``/proc/stat``) so that a noisy row can be told apart; rerun when
the machine is quiet. Each architecture is measured over ``--deploys`` fresh deploys (mean),
and their spread is printed beside the error: it bounds how close any prediction can get.

Run from the repository root::

    python bench/latency_prediction.py                          # vgg16, batch 1 and 64, compiled
    python bench/latency_prediction.py --batches 1 --count 20 --runtime eager --deploys 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from layer_speed import CpuMeter, load_average

from hetconv.errors import ConfigError
from search.profiling.profiler import latency_model, measure_network
from space import LatencySpec, SearchSpace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16", help="default vgg16")
    parser.add_argument("--input-size", type=int, default=None,
                        help="default: the backbone's own")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64],
                        help="batch sizes (default 1 64)")
    parser.add_argument("--count", type=int, default=8,
                        help="random architectures per batch size (default 8)")
    parser.add_argument("--runtime", choices=("compiled", "eager"), default="compiled")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--storage", default="sqlite:///latency-bench.db",
                        help="database holding the latency table (default "
                             "sqlite:///latency-bench.db)")
    parser.add_argument("--deploys", type=int, default=2,
                        help="fresh deploys measured per architecture, averaged (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def compare(space: SearchSpace, spec: LatencySpec, storage: str, count: int, seed: int,
            deploys: int) -> list[float]:
    """Print predicted vs measured latency of ``count`` random architectures; the % errors.

    Each architecture is deployed ``deploys`` times afresh: two deploys of one architecture
    differ (kernel choice, memory placement), and that spread is the floor under any
    prediction's error.
    """
    start = time.perf_counter()
    model = latency_model(storage, space, spec, report=lambda line: print("  " + line,
                                                                           flush=True))
    print(f"  latency table ready in {time.perf_counter() - start:.0f} s; remainder "
          f"{model.remainder_ms:.3f} ms; fastest {model.min_ms:.3f} ms, slowest "
          f"{model.max_ms:.3f} ms")
    parts = space.random_parts(np.random.default_rng(seed), count)
    predicted = model.predict_ms(parts)
    print(f"  {'arch':>4}  {'predicted ms':>12}  {'measured ms':>12}  {'error':>7}  "
          f"{'deploy spread':>13}  {'others':>6}  parts")
    errors, spreads = [], []
    for i, (row, guess) in enumerate(zip(parts, predicted, strict=True)):
        meter = CpuMeter()
        runs = [measure_network(space, row, spec)[0] for _ in range(deploys)]
        busy = meter.other_cores()
        measured = statistics.mean(runs)
        errors.append(100.0 * (guess - measured) / measured)
        spreads.append(100.0 * (max(runs) - min(runs)) / measured)
        print(f"  {i:>4}  {guess:>12.3f}  {measured:>12.3f}  {errors[-1]:>+6.1f}%  "
              f"{spreads[-1]:>12.1f}%  {'n/a' if busy is None else f'{busy:.2f}':>6}  "
              f"{','.join(map(str, row))}", flush=True)
    absolute = [abs(e) for e in errors]
    print(f"  mean |error| {statistics.mean(absolute):.1f}%, max |error| {max(absolute):.1f}%, "
          f"mean signed error {statistics.mean(errors):+.1f}%; deploy-to-deploy spread mean "
          f"{statistics.mean(spreads):.1f}%, max {max(spreads):.1f}%")
    return errors


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        space = SearchSpace(args.backbone, args.input_size)
        specs = [LatencySpec.current(args.device, batch, args.runtime) for batch in args.batches]
    except ConfigError as error:
        sys.exit(f"latency_prediction: error: {error}")
    print(f"# {args.backbone} at {space.input_size}x{space.input_size}, {args.count} random "
          f"architectures per batch, seed {args.seed}; load {load_average()}")
    summary = []
    for spec in specs:
        print(f"\n## {spec.describe()}", flush=True)
        errors = compare(space, spec, args.storage, args.count, args.seed, args.deploys)
        summary.append((spec, errors))
    print(f"\n# summary (load {load_average()})")
    for spec, errors in summary:
        absolute = [abs(e) for e in errors]
        print(f"batch {spec.batch:>4} {spec.runtime}: mean |error| "
              f"{statistics.mean(absolute):5.1f}%, max |error| {max(absolute):5.1f}%")


if __name__ == "__main__":
    main()
