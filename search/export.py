"""``python -m search.export``: write a study's best architecture (and weights) to files."""

from __future__ import annotations

import json

from search.cli import OneLineParser, path_argument, run_cli
from search.engine.best import export_best
from search.store.storage import DEFAULT_STORAGE

PROG = "python -m search.export"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Export the most accurate architecture that "
                           "trained all its epochs within the budget: by its mean over seeds "
                           "where the search confirmed architectures, else by its single run.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the study")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--out", type=path_argument, required=True,
                        help="architecture JSON to write")
    parser.add_argument("--weights", type=path_argument, default=None,
                        help="also write its trained weights (a state_dict) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    best = export_best(args.storage, args.study, args.out, args.weights)
    confirmed = json.loads(args.out.read_text())["result"].get("confirmed")
    noise = "" if confirmed is None else (
        f" (confirmed: mean {confirmed['accuracy_mean']:.2%} ± "
        f"{100 * (confirmed['accuracy_std'] or 0):.2f} over {confirmed['runs']} seeds)")
    print(f"trial {best.number}: accuracy {best.accuracy:.2%}{noise}, {best.paper_macs:.4g} "
          f"MACs -> {args.out}" + (f" and {args.weights}" if args.weights else ""))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
