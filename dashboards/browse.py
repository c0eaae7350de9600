"""``python -m dashboards.browse``: optuna-dashboard on a storage, with the HetNAS figures added.

Attaches the figures to the studies (see :mod:`dashboards.optuna_figures`), then runs
optuna-dashboard's own server, bound to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import contextlib

from dashboards.optuna_figures import attach_figures
from hetconv.errors import ConfigError
from search.cli import OneLineParser, run_cli
from search.storage import DEFAULT_STORAGE

PROG = "python -m dashboards.browse"


def main() -> int:
    parser = OneLineParser(prog=PROG, description="Add the accuracy-MACs, parts and progress "
                           "figures to the studies, then open optuna-dashboard on the storage.")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the studies "
                        f"(default {DEFAULT_STORAGE})")
    parser.add_argument("--study", default=None,
                        help="add the figures to this study only (default: every study)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--attach-only", action="store_true",
                        help="add the figures and exit, for a dashboard that is already running")
    args = parser.parse_args()
    if not 0 < args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number (1-65535)")
    tables = attach_figures(args.storage, args.study)
    print("figures added to " + ", ".join(f"{t.name} ({len(t)} trials)" for t in tables),
          flush=True)
    if args.attach_only:
        return 0
    from optuna_dashboard import run_server  # seconds to import; not needed for --attach-only

    print(f"optuna-dashboard at http://{args.host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            run_server(args.storage, host=args.host, port=args.port)
        except OSError as error:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: "
                              f"{error.strerror or error}; pass another --port") from None
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
