"""Optuna's RDB storage, made to carry on when the database drops its connection.

A database restart, a failover or an administrator's ``pg_terminate_backend`` kills the
connections a long search holds. ``pool_pre_ping`` replaces dead connections that are idle in
the pool, but one killed in the middle of an operation fails that operation. This storage
retries such an operation on a fresh connection a few times before giving up.

Retrying is safe for reads and for writes that set a value. A write whose commit reached the
server just before the connection died could in principle be applied twice (creating an extra
trial); that needs the connection to die in the instant between the commit and its reply.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import DBAPIError

ATTEMPTS = 5
_FIRST_WAIT_S = 0.2


def _lost_connection(raised: BaseException) -> bool:
    """True when ``raised`` (or what caused it) says the database connection was lost."""
    error: BaseException | None = raised
    while error is not None:
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, DBAPIError) and "terminat" in str(error.orig).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def _drop_connections(storage: RDBStorage) -> None:
    """Forget the failed transaction and every pooled connection (all may be dead)."""
    session = getattr(storage, "scoped_session", None)
    if session is not None:
        session.remove()
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


_retrying_now = threading.local()  # the storages whose call this thread is retrying


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` retried on a fresh connection after a lost one, with one budget per call:
    the methods it calls in turn (a public method through a private one) run once each, and a
    lost connection inside them retries the whole outer call, so a dead database costs
    :data:`ATTEMPTS` attempts and about 3 s, not ``ATTEMPTS ** depth``."""
    @functools.wraps(method)
    def call(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        active: set[int] = _retrying_now.__dict__.setdefault("storages", set())
        if id(self) in active:
            return method(self, *args, **kwargs)
        active.add(id(self))
        try:
            for attempt in range(ATTEMPTS):
                try:
                    return method(self, *args, **kwargs)
                except (DBAPIError, optuna.exceptions.StorageInternalError) as error:
                    if attempt == ATTEMPTS - 1 or not _lost_connection(error):
                        raise
                    _drop_connections(self)
                    time.sleep(_FIRST_WAIT_S * 2 ** attempt)
            raise AssertionError("unreachable")
        finally:
            active.discard(id(self))

    return call


class ReconnectingRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` whose operations survive a dropped connection."""


# Everything that opens a database session: the public storage API, the private methods that
# Optuna's caching layer calls directly, and the constructor (it creates and checks tables).
_SESSION_METHODS = (
    *(name for name, value in vars(BaseStorage).items()
      if callable(value) and not name.startswith("_") and name != "remove_session"),
    "_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id",
    "_get_stale_trial_ids", "__init__",
)
for _name in _SESSION_METHODS:
    setattr(ReconnectingRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
