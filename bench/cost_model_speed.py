"""How fast the analytical cost model screens random architectures against a MACs budget.

Why this exists: the search draws and rejects many part vectors before it trains any, so the
screening must stay cheap. This times the vectorised path (``SearchSpace.random_parts`` then
``SearchSpace.fits`` over one ``(architectures, layers)`` array), generation and screening
separately, against the per-architecture path (``Architecture(...).macs``, which validates the
part vector and costs it one at a time), and checks that both give the same MACs.

Run from the repository root::

    python bench/cost_model_speed.py                     # 100,000 vgg16 architectures, 3e8 MACs
    python bench/cost_model_speed.py --count 1000000 --budget 2e8
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hetconv.errors import ConfigError
from hetconv.timing import median_seconds
from space import Architecture, SearchSpace


def _rate(seconds: float, count: int) -> str:
    return (f"{seconds * 1e3:9.2f} ms  {seconds / count * 1e6:8.3f} us/arch  "
            f"{count / seconds:12,.0f} arch/s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16", help="default vgg16")
    parser.add_argument("--count", type=int, default=100_000,
                        help="architectures to generate and screen (default 100000)")
    parser.add_argument("--budget", type=float, default=3e8, help="MACs budget (default 3e8)")
    parser.add_argument("--per-arch", type=int, default=1_000,
                        help="architectures costed one at a time for comparison (default 1000)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats, median reported (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    for name in ("count", "per_arch", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"# cost_model_speed: torch {torch.__version__}, numpy {np.__version__}, "
          f"{args.backbone}, budget {args.budget:.3g} MACs, median of {args.repeats}")

    # The first SearchSpace traces the network on the meta device; later ones hit the cache.
    start = time.perf_counter()
    try:
        space = SearchSpace(args.backbone)
        cold = time.perf_counter() - start
        space.check_budget(args.budget)
    except ConfigError as error:
        print(f"cost_model_speed: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"space setup (trace once, cold): {cold * 1e3:.1f} ms; {len(space.layers)} searchable "
          f"layers; MACs range {space.min_macs:.4g} .. {space.max_macs:.4g}")

    count = args.count
    gen_s, parts = median_seconds(
        lambda: space.random_parts(np.random.default_rng(args.seed), count), args.repeats)
    fit_s, fits = median_seconds(lambda: space.fits(parts, args.budget), args.repeats)
    total = gen_s + fit_s
    print(f"\nvectorised, {count:,} architectures ({int(fits.sum()):,} fit, "
          f"{fits.mean():.1%}):")
    print(f"  generate (random_parts): {_rate(gen_s, count)}")
    print(f"  screen   (fits)        : {_rate(fit_s, count)}")
    print(f"  both                   : {_rate(total, count)}")
    drawn = space.cost.paper_macs(parts)
    print(f"  MACs of the drawn architectures: min {drawn.min():.4g}, median "
          f"{np.median(drawn):.4g}, max {drawn.max():.4g}")

    rows = [tuple(int(p) for p in row) for row in parts[:args.per_arch]]
    n = len(rows)
    build_s, archs = median_seconds(lambda: [Architecture(args.backbone, row) for row in rows],
                           args.repeats)
    macs_s, macs = median_seconds(lambda: [a.macs for a in archs], args.repeats)
    whole_s, _ = median_seconds(lambda: [Architecture(args.backbone, row).macs for row in rows],
                       args.repeats)
    print(f"\nper architecture, {n:,} of the same part vectors:")
    print(f"  Architecture(...)      : {_rate(build_s, n)}")
    print(f"  .macs                  : {_rate(macs_s, n)}")
    print(f"  Architecture(...).macs : {_rate(whole_s, n)}")

    vectorised = space.cost.paper_macs(parts[:n])
    agree = bool(np.array_equal(np.array(macs, dtype=np.int64), vectorised))
    per_vec = total / count
    print(f"\nsame MACs on both paths: {agree}; vectorised is {whole_s / n / per_vec:,.0f}x "
          f"faster per architecture (generate + screen vs Architecture(...).macs)")


if __name__ == "__main__":
    main()
