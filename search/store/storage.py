"""Open an Optuna RDB storage from a SQLAlchemy URL, turning every failure into one clear line."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from hetconv.errors import ConfigError
from search.store.reconnecting import ReconnectingRDBStorage

DEFAULT_STORAGE = "sqlite:///hetnas.db"

_CREATE_ATTEMPTS = 3

# Seconds SQLite waits on a lock held by another writer before giving up.
_SQLITE_BUSY_TIMEOUT = 60


def _display(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT}}
    # Replace connections the server dropped instead of failing the next query on them, and
    # give up on a host that does not answer instead of hanging.
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def _has_optuna_tables(url: str) -> bool:
    """Look before Optuna's constructor creates its tables, so readers never write."""
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def _create(url: str) -> ReconnectingRDBStorage:
    """Construct the storage; when another process is creating Optuna's tables in a new
    database at the same moment, the loser sees "already exists" (or a duplicate schema
    version row) and simply tries again: by then the tables are there."""
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return ReconnectingRDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except SQLAlchemyError as error:
            lost_race = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not lost_race or attempt == _CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def open_storage(url: str, must_exist: bool = False) -> ReconnectingRDBStorage:
    """Connect (creating Optuna's tables when needed) or raise :class:`ConfigError`.

    Readers pass ``must_exist`` so that a mistyped SQLite path is an error, not a new empty file.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {url!r} is not a SQLAlchemy URL; use e.g. "
                          f"{DEFAULT_STORAGE} or postgresql://user@host/db") from None
    if must_exist and parsed.get_backend_name() == "sqlite" \
            and not Path(parsed.database or "").is_file():
        raise ConfigError(f"storage {url}: no such database file; check the path (the "
                          f"search writes {DEFAULT_STORAGE} in the folder it ran in)")
    try:
        if must_exist and not _has_optuna_tables(url):
            raise ConfigError(f"storage {_display(url)} holds no Optuna study; point --storage "
                              f"at the search's database")
        storage = _create(url)
    except NoSuchModuleError:
        raise ConfigError(f"storage {_display(url)}: unknown database scheme; use sqlite:/// "
                          f"or postgresql:// (with psycopg installed)") from None
    except (SQLAlchemyError, OSError, ImportError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise ConfigError(f"cannot open storage {_display(url)}: {reason}; check the URL and "
                          f"that the database server is reachable") from None
    if url.startswith("sqlite"):
        # WAL lets readers (dashboards) and several writers share the file without blocking.
        with storage.engine.connect() as connection:
            connection.execute(sqlalchemy.text("PRAGMA journal_mode=WAL"))
    return storage
