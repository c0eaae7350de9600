"""The one home of database setup shared by the Optuna storage and the latency table: the URL
check, the engine options, the race when two processes create tables at once, SQLite's WAL mode
and how a database failure reads as one line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from hetconv.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///hetnas.db"

_CREATE_ATTEMPTS = 3
_SQLITE_BUSY_TIMEOUT = 60  # seconds SQLite waits on a lock held by another writer

T = TypeVar("T")


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite storage URL; None for another database (or no valid URL)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database \
            or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def parse_url(url: str) -> URL:
    """The parsed URL, or a ConfigError that shows what one looks like."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {url!r} is not a SQLAlchemy URL; use e.g. "
                          f"{DEFAULT_STORAGE} or postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite" and (
            parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"):
        raise ConfigError(f"storage {url!r} is an in-memory SQLite database, which keeps "
                          f"nothing once the command ends; give a file, e.g. {DEFAULT_STORAGE}")
    return parsed


def engine_kwargs(url: str) -> dict[str, Any]:
    """Engine options: SQLite waits on another writer's lock; a server connection is checked
    before use (replacing ones the server dropped) and a host that does not answer is given up
    on instead of hanging."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def create_engine(url: str) -> Engine:
    return sqlalchemy.create_engine(url, **engine_kwargs(url))


STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
"""What a storage raises when its database fails (a full disk, a lost server) rather than when
it is asked for something absent."""


def _reason(error: BaseException) -> str:
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def storage_reason(error: BaseException) -> str:
    """The database's own words for a storage failure, in one line: the driver's message under
    SQLAlchemy's and Optuna's wrappers ("database or disk is full")."""
    cause: BaseException | None = error
    while cause is not None and getattr(cause, "orig", None) is None:
        cause = cause.__cause__
    return _reason(cause if cause is not None else error)


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a driver or connection failure inside the block into one ConfigError line."""
    try:
        yield
    except NoSuchModuleError:
        raise ConfigError(f"storage {display_url(url)}: unknown database scheme; use "
                          f"sqlite:/// or postgresql:// (with psycopg installed)") from None
    except (SQLAlchemyError, OSError, ImportError) as error:
        raise ConfigError(f"cannot open storage {display_url(url)}: {_reason(error)}; check the "
                          f"URL and that the database server is reachable") from None


def create_racing(create: Callable[[], T]) -> T:
    """Run ``create`` (which makes tables); when another process is creating the same tables at
    that moment, the loser sees "already exists" (or a duplicate catalogue row) and simply tries
    again: by then the tables are there."""
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return create()
        except SQLAlchemyError as error:
            lost_race = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not lost_race or attempt == _CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def share_sqlite(engine: Engine) -> None:
    """WAL mode on a SQLite file, so readers (dashboards) and several writers share it without
    blocking; nothing on other databases."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("PRAGMA journal_mode=WAL"))
