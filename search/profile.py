"""``python -m search.profile --backbone vgg16``: the latency table of one backbone on this machine.

Measures each searchable layer at every allowed part in its deploy form (see
``search.profiling.profiler``), stores the figures in the database next to the studies, and prints
them with the predicted latency of the paper's uniform-P networks. Figures already stored for this
device, batch, dtype, runtime and torch version are reused; ``--force`` measures them again.
"""

from __future__ import annotations

import numpy as np

from hetconv.models import BACKBONES
from search.cli import OneLineParser, path_text, run_cli
from search.profiling.profiler import Profile, profile
from search.store.latency_table import LatencyStore
from search.store.storage import DEFAULT_STORAGE
from search.training.data import DATASETS, check_dataset
from space.latency import DEVICES, RUNTIMES, LatencySpec
from space.search_space import SearchSpace

PROG = "python -m search.profile"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Measure (or read back) the per-layer latency "
                           "table of a backbone on this machine and predict network latency.")
    parser.add_argument("--backbone", default="vgg16",
                        help=f"model family: {', '.join(BACKBONES)} (default vgg16)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--runtime", default="compiled", choices=RUNTIMES,
                        help="compiled: TorchInductor (default); eager: no compiler")
    parser.add_argument("--input-size", type=int, default=None,
                        help="image side in pixels (default: the backbone's own)")
    parser.add_argument("--dataset", default="digits", choices=DATASETS,
                        help="the data set the search will use: its input channels and class "
                             "count shape the network (default digits, as search.run)")
    parser.add_argument("--data-dir", type=path_text, default=None,
                        help="folder holding the data set (as for search.run)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL of the study database (default {DEFAULT_STORAGE})")
    parser.add_argument("--force", action="store_true", help="measure everything again")
    return parser


def format_table(result: Profile, space: SearchSpace) -> str:
    """Per layer and part: milliseconds alone (stored or just measured) and as the model counts
    them inside the network; then the network terms and the uniform-P predictions."""
    model = result.model
    lines = [f"{'layer':<6}{'name':<22}{'shape':<24}{'part':>5}{'alone ms':>10}"
             f"{'in net ms':>11}  source"]
    for index, (layer, shape) in enumerate(zip(space.layers, result.shapes, strict=True)):
        for column, part in enumerate(model.choices):
            if part not in layer.allowed_parts:
                continue
            key = (shape, part)
            source = "measured" if key in result.measured else "cached"
            lines.append(f"{index:<6}{layer.name:<22}{shape.label():<24}{part:>5}"
                         f"{result.layers[key].milliseconds:>10.4f}"
                         f"{model.layer_ms[index, column]:>11.4f}  {source}")
    calibration = result.calibration
    lines.append(f"whole network = layers + {calibration.remainder_ms:.4f} ms (stem, pools, "
                 f"classifier, overhead) + {calibration.ms_per_weight_mb:.4f} ms per MB of layer "
                 f"weights; fitted to {calibration.samples} uniform networks "
                 f"({'measured' if result.calibration_measured else 'cached'})")
    lines.append("")
    lines.append(f"predicted latency of {space.backbone} at {space.input_size}x"
                 f"{space.input_size} on "
                 f"{model.spec.describe() if model.spec else 'this machine'}:")
    for part in space.uniform_choices():
        parts = np.array(space.uniform_parts(part))
        lines.append(f"  uniform P{part:<4}{float(model.predict_ms(parts)):>10.4f} ms")
    lines.append(f"  fastest architecture {model.min_ms:.4f} ms, slowest {model.max_ms:.4f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Every check on the input comes before the database is touched: bad input writes nothing.
    info = check_dataset(args.dataset, args.data_dir)
    space = SearchSpace(args.backbone, args.input_size, info.num_classes, info.channels)
    spec = LatencySpec.current(args.device, args.batch, args.runtime)
    with LatencyStore(args.storage) as store:
        result = profile(store, space, spec, force=args.force,
                         report=lambda line: print(line, flush=True))
    print(format_table(result, space))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
