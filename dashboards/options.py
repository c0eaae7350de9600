"""Command-line options the dashboard commands share, spelled once."""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from dashboards.hosts import HostCheck, is_loopback, parse_name
from search.store.storage import DEFAULT_STORAGE

LOOPBACK = "127.0.0.1"


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL of the studies (default {DEFAULT_STORAGE})")


def add_listen_options(parser: argparse.ArgumentParser, default_port: int,
                       free_port: bool) -> None:
    """``--host`` (loopback unless told otherwise), ``--port`` (with ``free_port``, 0 picks a
    free one) and ``--allowed-hosts``, which a bind beyond loopback needs (see
    :func:`check_listen`)."""
    parser.add_argument("--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK}: "
                        f"this machine only; another, e.g. 0.0.0.0, exposes the page and needs "
                        f"--allowed-hosts)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port (default {default_port}"
                             f"{'; 0 picks a free one' if free_port else ''})")
    parser.add_argument("--allowed-hosts", type=host_names, default=(), metavar="NAME,...",
                        help="the host names or addresses the page is reached by, comma-"
                             "separated; requests for any other Host are refused (loopback "
                             "names are always allowed)")


def host_names(text: str) -> tuple[str, ...]:
    """``--allowed-hosts``: names or addresses, comma-separated, without ports."""
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if parse_name(name) is None:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a host name or address; list them without ports, e.g. "
                f"--allowed-hosts dash.example,192.0.2.7")
    return names


def check_listen(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 free_port: bool) -> None:
    """A bad ``--port``, or a bind beyond loopback without ``--allowed-hosts``, is a one-line
    usage error, found before anything is read, written or bound."""
    lowest = 0 if free_port else 1
    if not lowest <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number ({lowest}-65535)")
    if not is_loopback(args.host) and not args.allowed_hosts:
        parser.error(f"--host {shlex.quote(args.host)} makes the page reachable from other "
                     f"machines: add --allowed-hosts with the names it is reached by (e.g. "
                     f"--allowed-hosts dash.example), or bind {LOOPBACK}")


def warn_if_exposed(prog: str, host: str, hosts: HostCheck) -> None:
    """One line on stderr when the page is reachable from other machines: it has no login."""
    if not is_loopback(host):
        print(f"{prog}: warning: --host {shlex.quote(host)} makes the page reachable from other "
              f"machines, with no authentication; it answers Host "
              f"{', '.join(sorted(hosts.names))} only", file=sys.stderr, flush=True)


def seconds(text: str) -> float:
    """``--refresh`` and ``--wait``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds; "
                                         f"write e.g. 10")
    return value
