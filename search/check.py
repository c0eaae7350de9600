"""``python -m search.check best.json [--weights best.pt]``: check an exported architecture."""

from __future__ import annotations

from search.cli import OneLineParser, path_argument, run_cli
from search.training.exported import describe, load_trained, read_architecture, stated_verdict
from space.architecture import DOCUMENT_KEYS

PROG = "python -m search.check"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Validate an architecture JSON (and its "
                           "weights) and print what it costs.")
    parser.add_argument("architecture", type=path_argument,
                        help="architecture JSON (search.export)")
    parser.add_argument("--weights", type=path_argument, default=None,
                        help="state dict to check against the architecture")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    arch = read_architecture(args.architecture)
    if args.weights is not None:
        load_trained(arch, args.weights)
    print(describe(arch))
    verdict = stated_verdict(args.architecture)
    if verdict is not None:
        print(f"verdict      {verdict}")
    if args.weights is not None:
        print(f"weights      {args.weights} match")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG, flags=DOCUMENT_KEYS)
