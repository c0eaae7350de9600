"""``python -m dashboards.report``: write a study's dashboard as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

from dashboards.page import write_report
from search.cli import OneLineParser, path_argument, run_cli
from search.store.storage import DEFAULT_STORAGE

PROG = "python -m dashboards.report"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Write accuracy-against-MACs, the Pareto "
                           "front's parts and the search progress of a study to one HTML file "
                           "that opens offline.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the study "
                        f"(default {DEFAULT_STORAGE})")
    parser.add_argument("--study", default=None, help="study name (default: the newest study)")
    parser.add_argument("--out", type=path_argument, default=Path("report.html"),
                        help="HTML file to write (default report.html)")
    parser.add_argument("--top", type=int, default=10,
                        help="searched architectures in the table (default 10)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be a positive integer")
    table = write_report(args.storage, args.study, args.out, args.top)
    print(f"study {table.name}: {len(table)} trials -> {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
