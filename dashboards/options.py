"""Command-line options the dashboard commands share, spelled once."""

from __future__ import annotations

import argparse

from search.store.storage import DEFAULT_STORAGE

LOOPBACK = "127.0.0.1"


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL of the studies (default {DEFAULT_STORAGE})")


def add_listen_options(parser: argparse.ArgumentParser, default_port: int,
                       free_port: bool) -> None:
    """``--host`` (loopback unless told otherwise) and ``--port`` (with ``free_port``, 0 picks
    a free one)."""
    parser.add_argument("--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK}: "
                        f"this machine only; 0.0.0.0 exposes the page)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port (default {default_port}"
                             f"{'; 0 picks a free one' if free_port else ''})")


def check_port(parser: argparse.ArgumentParser, port: int, free_port: bool) -> None:
    lowest = 0 if free_port else 1
    if not lowest <= port <= 65535:
        parser.error(f"--port {port} is not a port number ({lowest}-65535)")
