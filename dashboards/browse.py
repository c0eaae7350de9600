"""``python -m dashboards.browse``: optuna-dashboard on a storage, with the HetNAS figures added.

Attaches the figures to the studies (see :mod:`dashboards.optuna_figures`; with ``--refresh``,
again whenever a study's trials change), then serves
optuna-dashboard's own WSGI app, bound to 127.0.0.1 unless ``--host`` says otherwise, behind the
``Host`` check the live page has (:mod:`dashboards.hosts`); optuna-dashboard has none. The app
is served read-only (its API renames and deletes studies and tells trials, with no login) unless
``--allow-writes`` says otherwise, and each connection gets its own thread: bottle's default
server answers one at a time, so one idle client held every other request.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

PROG = "python -m dashboards.browse"
READ_METHODS = frozenset({"GET", "HEAD"})  # every write of optuna-dashboard's API is another


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
    parser.add_argument("--allow-writes", action="store_true",
                        help="let the page change the storage (rename or delete studies, notes, "
                             "tell trials); default: read-only, such requests get 405")
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
    from optuna_dashboard import wsgi  # seconds to import; not needed for --attach-only

    hosts = HostCheck.for_bind(args.host, args.allowed_hosts)
    warn_if_exposed(PROG, args.host, hosts)
    app = wsgi(storage)
    if not args.allow_writes:
        app = read_only(app)
    try:
        server = make_server(args.host, args.port, host_checked(app, hosts),
                             server_class=_ThreadingServer6 if ":" in args.host
                             else _ThreadingServer, handler_class=_QuietHandler)
    except OSError as error:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: "
                          f"{error.strerror or error}; pass another --port") from None
    print(f"optuna-dashboard at http://{args.host}:{args.port}/"
          f"{'' if args.allow_writes else ' (read-only)'} (Ctrl+C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()
    return 0


def read_only(app: WSGIApplication) -> WSGIApplication:
    """``app`` answering reads only: any other method gets 405 before it reaches the app."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] in READ_METHODS:
            return app(environ, start_response)
        text = b"this dashboard is read-only; start it with --allow-writes to change studies"
        start_response("405 Method Not Allowed", [
            ("Allow", ", ".join(sorted(READ_METHODS))), ("Content-Type", "text/plain"),
            ("Content-Length", str(len(text)))])
        return [text]

    return guarded


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, so an idle or slow client blocks no other."""

    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet: a line per request would bury the address the user needs."""


def _say_added(tables: list[StudyTable]) -> None:
    if tables:
        print("figures added to " + ", ".join(f"{t.name} ({len(t)} trials)" for t in tables),
              flush=True)


if __name__ == "__main__":
    run_cli(main, PROG)
