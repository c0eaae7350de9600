"""``python -m dashboards.serve``: a live page of a storage's studies, redrawn as trials end."""

from __future__ import annotations

from dashboards.options import (
    add_listen_options,
    add_storage_option,
    check_listen,
    warn_if_exposed,
)
from dashboards.server import DEFAULT_PORT, make_server
from search.cli import OneLineParser, run_cli

PROG = "python -m dashboards.serve"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Serve a live page that lists the studies of "
                           "a storage and redraws their figures as trials finish (read-only).")
    add_storage_option(parser)
    parser.add_argument("--study", default=None, help="study shown first (default: the newest)")
    add_listen_options(parser, DEFAULT_PORT, free_port=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_listen(parser, args, free_port=True)
    server = make_server(args.storage, args.study, args.host, args.port, args.allowed_hosts)
    warn_if_exposed(PROG, args.host, server.hosts)
    print(f"serving study {server.default_study} at {server.url} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
