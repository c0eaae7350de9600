"""Open an Optuna RDB storage from a SQLAlchemy URL, turning every failure into one clear line."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from hetconv.errors import ConfigError
from search.store.database import (
    DEFAULT_STORAGE,
    create_engine,
    create_racing,
    database_errors,
    display_url,
    engine_kwargs,
    parse_url,
    share_sqlite,
)
from search.store.reconnecting import ReconnectingRDBStorage

__all__ = ["DEFAULT_STORAGE", "open_storage"]


def _has_optuna_tables(url: str) -> bool:
    """Look before Optuna's constructor creates its tables, so readers never write."""
    engine = create_engine(url)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def open_storage(url: str, must_exist: bool = False) -> ReconnectingRDBStorage:
    """Connect (creating Optuna's tables when needed) or raise :class:`ConfigError`.

    Readers pass ``must_exist`` so that a mistyped SQLite path is an error, not a new empty file.
    """
    parsed = parse_url(url)
    if must_exist and parsed.get_backend_name() == "sqlite" \
            and not Path(parsed.database or "").is_file():
        raise ConfigError(f"storage {url}: no such database file; check the path (the "
                          f"search writes {DEFAULT_STORAGE} in the folder it ran in)")
    with database_errors(url):
        if must_exist and not _has_optuna_tables(url):
            raise ConfigError(f"storage {display_url(url)} holds no Optuna study; point "
                              f"--storage at the search's database")
        storage = create_racing(
            lambda: ReconnectingRDBStorage(url, engine_kwargs=engine_kwargs(url)))
    share_sqlite(storage.engine)
    return storage
