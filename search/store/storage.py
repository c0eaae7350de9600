"""Open an Optuna RDB storage from a SQLAlchemy URL, turning every failure into one clear line.

Two ways in: the search opens (and creates) its database with :func:`open_storage`; every other
command opens an existing one with :func:`open_existing`, which never creates a table and never
changes a database's settings, and, unless asked to write, opens it read-only.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy

from hetconv.errors import ConfigError
from search.store.database import (
    DEFAULT_STORAGE,
    create_racing,
    database_errors,
    display_url,
    engine_kwargs,
    parse_url,
    share_sqlite,
)
from search.store.reconnecting import ReconnectingRDBStorage

__all__ = ["DEFAULT_STORAGE", "open_existing", "open_storage"]

# Tables only Optuna's schema has together: a foreign database that merely has a ``studies``
# table is not taken for one (and not given Optuna's other tables).
_OPTUNA_TABLES = ("version_info", "alembic_version", "studies", "trials")


def open_storage(url: str) -> ReconnectingRDBStorage:
    """The search's storage: connect, creating Optuna's tables when needed (SQLite in WAL mode),
    or raise :class:`ConfigError`."""
    parse_url(url)
    with database_errors(url):
        storage = create_racing(
            lambda: ReconnectingRDBStorage(url, engine_kwargs=engine_kwargs(url)))
    share_sqlite(storage.engine)
    return storage


def open_existing(url: str, *, writable: bool = False) -> ReconnectingRDBStorage:
    """A database a search wrote, for a command that reads it (or, ``writable``, annotates its
    studies): it must exist and hold Optuna's schema, or a :class:`ConfigError` says so.

    Read-only is enforced by the database itself: SQLite's ``query_only`` (not ``mode=ro``, which
    leaves ``-wal``/``-shm`` files behind on a WAL database) and PostgreSQL's read-only
    transactions.
    """
    parsed = parse_url(url)
    sqlite_file = parsed.get_backend_name() == "sqlite"
    if sqlite_file and not _is_file(parsed.database or ""):
        raise ConfigError(f"storage {url[:120]}: no such database file; check the path (the "
                          f"search writes {DEFAULT_STORAGE} in the folder it ran in)")
    options = engine_kwargs(url)
    if not writable:
        options = _read_only(options, parsed.database if sqlite_file else None)
    with database_errors(url):
        if not _holds_optuna_schema(url, options):
            raise ConfigError(f"storage {display_url(url)} holds no Optuna study; point "
                              f"--storage at the search's database")
        try:
            return ReconnectingRDBStorage(url, engine_kwargs=options, skip_table_creation=True)
        except RuntimeError as error:  # Optuna's schema check: another Optuna version's tables
            raise ConfigError(f"storage {display_url(url)}: {str(error).splitlines()[0]}") \
                from None


def _is_file(path: str) -> bool:
    """Whether ``path`` is a file; a path the system cannot look up (a name over 255 bytes, a
    folder this user may not enter) is none."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def _read_only(options: dict[str, Any], sqlite_path: str | None) -> dict[str, Any]:
    """``options`` with every connection made read-only."""
    if sqlite_path is not None:
        timeout = options["connect_args"]["timeout"]
        return {**options, "creator": functools.partial(_query_only_sqlite, sqlite_path, timeout)}
    connect_args = {**options.get("connect_args", {}),
                    "options": "-c default_transaction_read_only=on"}
    return {**options, "connect_args": connect_args}


def _query_only_sqlite(path: str, timeout: float) -> sqlite3.Connection:
    """A read-only connection. Where the file's folder takes no writes (read-only media, or a
    folder this user may not write), SQLite cannot create the ``-shm`` file a WAL database's
    readers share, and the file is opened immutable: read as it lies, without locks, which is
    right there, as no search can be writing it either."""
    if os.access(Path(path).resolve().parent, os.W_OK):
        connection = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    else:
        connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?immutable=1", uri=True,
                                     timeout=timeout, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    return connection


def _holds_optuna_schema(url: str, options: dict[str, Any]) -> bool:
    """Look before Optuna reads, by the tables only its schema has together."""
    engine = sqlalchemy.create_engine(url, **options)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        return tables.issuperset(_OPTUNA_TABLES)
    finally:
        engine.dispose()
