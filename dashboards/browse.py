"""``python -m dashboards.browse``: optuna-dashboard on a storage, with the HetNAS figures added.

Attaches the figures to the studies (see :mod:`dashboards.optuna_figures`; with ``--refresh``,
again whenever a study's trials change), then serves
optuna-dashboard's own WSGI app, bound to 127.0.0.1 unless ``--host`` says otherwise, behind the
``Host`` check the live page has (:mod:`dashboards.hosts`); optuna-dashboard has none.
"""

from __future__ import annotations

import contextlib
import functools

from optuna.storages import BaseStorage

from dashboards.data import StudyTable
from dashboards.hosts import HostCheck, host_checked
from dashboards.options import (
    add_listen_options,
    add_storage_option,
    check_listen,
    seconds,
    warn_if_exposed,
)
from dashboards.optuna_figures import FigureRefresher, attach_figures
from hetconv.errors import ConfigError
from search.cli import OneLineParser, run_cli

PROG = "python -m dashboards.browse"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Add the accuracy-MACs (and accuracy-"
                           "latency), parts and progress figures to the studies, then open "
                           "optuna-dashboard on the storage.")
    add_storage_option(parser)
    parser.add_argument("--study", default=None,
                        help="add the figures to this study only (default: every study)")
    add_listen_options(parser, 8080, free_port=False)
    parser.add_argument("--attach-only", action="store_true",
                        help="add the figures and exit, for a dashboard that is already running")
    parser.add_argument("--refresh", type=seconds, default=None, metavar="SECONDS",
                        help="draw a study's figures again this often when its trials changed, "
                             "and wait for the database if no search has written it yet (for a "
                             "dashboard beside a running search; default: draw once)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_listen(parser, args, free_port=False)
    if args.refresh is not None and args.attach_only:
        parser.error("--refresh keeps a served dashboard's figures current; --attach-only "
                     "serves none: drop one of them")
    if args.refresh is None:
        storage: str | BaseStorage = args.storage
        _say_added(attach_figures(args.storage, args.study))
    else:
        refresher = FigureRefresher(args.storage, args.study, args.refresh,
                                    report=functools.partial(print, flush=True))
        storage = refresher.storage()
        _say_added(refresher.refresh(storage))
        refresher.start(storage)
    if args.attach_only:
        return 0
    # Seconds to import; not needed for --attach-only. What optuna_dashboard.run_server does,
    # with the Host check in front of the app.
    from bottle import run
    from optuna_dashboard import wsgi

    hosts = HostCheck.for_bind(args.host, args.allowed_hosts)
    warn_if_exposed(PROG, args.host, hosts)
    print(f"optuna-dashboard at http://{args.host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            run(host_checked(wsgi(storage), hosts), host=args.host, port=args.port)
        except OSError as error:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: "
                              f"{error.strerror or error}; pass another --port") from None
    return 0


def _say_added(tables: list[StudyTable]) -> None:
    if tables:
        print("figures added to " + ", ".join(f"{t.name} ({len(t)} trials)" for t in tables),
              flush=True)


if __name__ == "__main__":
    run_cli(main, PROG)
