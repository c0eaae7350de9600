"""``python -m dashboards.serve``: a live page of a storage's studies, redrawn as trials end."""

from __future__ import annotations

import time

from dashboards.data import load_table
from dashboards.options import (
    add_listen_options,
    add_storage_option,
    check_listen,
    seconds,
    warn_if_exposed,
)
from dashboards.server import DEFAULT_PORT, PROG, make_server
from hetconv.errors import ConfigError
from search.cli import OneLineParser, run_cli


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Serve a live page that lists the studies of "
                           "a storage and redraws their figures as trials finish (read-only).")
    add_storage_option(parser)
    parser.add_argument("--study", default=None, help="study shown first (default: the newest)")
    add_listen_options(parser, DEFAULT_PORT, free_port=True)
    parser.add_argument("--wait", type=seconds, default=None, metavar="SECONDS",
                        help="while the storage holds no study with a trial yet, look again "
                             "this often instead of exiting (for a dashboard started before "
                             "the first search, as in docker-compose.yml)")
    return parser


def wait_for_study(storage_url: str, study_name: str | None, every_s: float) -> None:
    """Return once the storage holds the study (the newest when None) with a trial; each new
    reason why not yet is said once."""
    said = None
    while True:
        try:
            load_table(storage_url, study_name)
            return
        except ConfigError as error:
            if str(error) != said:
                print(f"waiting for a search's study: {error}", flush=True)
                said = str(error)
        time.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_listen(parser, args, free_port=True)
    if args.wait is not None:
        wait_for_study(args.storage, args.study, args.wait)
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
