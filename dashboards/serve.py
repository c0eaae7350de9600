"""``python -m dashboards.serve``: a live page of a storage's studies, redrawn as trials end."""

from __future__ import annotations

from dashboards.server import DEFAULT_HOST, DEFAULT_PORT, make_server
from search.cli import OneLineParser, run_cli
from search.storage import DEFAULT_STORAGE

PROG = "python -m dashboards.serve"


def main() -> int:
    parser = OneLineParser(prog=PROG, description="Serve a live page that lists the studies of "
                           "a storage and redraws their figures as trials finish (read-only).")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the studies "
                        f"(default {DEFAULT_STORAGE})")
    parser.add_argument("--study", default=None, help="study shown first (default: the newest)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default "
                        f"{DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the page)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number (0-65535)")
    server = make_server(args.storage, args.study, args.host, args.port)
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
