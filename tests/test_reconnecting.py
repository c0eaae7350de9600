"""The reconnecting storage earns its place: a fault that loses plain RDBStorage's operation and
not this one's, and one retry budget per call however deep the storage calls itself."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from sqlalchemy.exc import DBAPIError

from search.store.reconnecting import ATTEMPTS, ReconnectingRDBStorage, _retrying
from search.store.storage import open_storage


def _record_while_terminated(storage: RDBStorage, postgres_url: str, tag: str,
                             trial_id: int) -> dict[str, Any]:
    """Record a trial's attribute (as the search records every result) while its connection
    waits for a table lock, and terminate that connection the way a database restart or an
    administrator would; the call's outcome."""
    admin = sqlalchemy.create_engine(postgres_url)
    outcome: dict[str, Any] = {}

    def record() -> None:
        try:
            storage.set_trial_user_attr(trial_id, "val_accuracy", 0.9)
        except Exception as error:  # the outcome under test
            outcome["error"] = error

    try:
        with admin.connect() as locker:
            locker.execute(sqlalchemy.text(
                "lock table trial_user_attributes in access exclusive mode"))
            worker = threading.Thread(target=record)
            worker.start()
            waiting: list[int] = []
            deadline = time.monotonic() + 30
            while not waiting and time.monotonic() < deadline:
                time.sleep(0.1)
                with admin.connect() as watcher:
                    waiting = list(watcher.execute(sqlalchemy.text(
                        "select pid from pg_stat_activity where application_name = :tag "
                        "and wait_event_type = 'Lock'"), {"tag": tag}).scalars())
            assert waiting, "the storage's connection never waited for the lock"
            with admin.connect() as killer:
                killer.execute(sqlalchemy.text("select pg_terminate_backend(pid) from "
                                               "pg_stat_activity where pid = any(:pids)"),
                               {"pids": waiting})
            time.sleep(0.5)  # the failed attempt is seen before the lock goes
            locker.rollback()
        worker.join(timeout=60)
    finally:
        admin.dispose()
    return outcome


@pytest.mark.parametrize("kind", ["plain", "reconnecting"])
def test_an_operation_whose_connection_is_terminated(postgres_url: str, study_name: str,
                                                     kind: str) -> None:
    tag = f"hetnas-{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?application_name={tag}"
    storage = RDBStorage(url) if kind == "plain" else open_storage(url)
    study_id = storage.create_new_study([StudyDirection.MAXIMIZE], study_name)
    trial_id = storage.create_new_trial(study_id)
    outcome = _record_while_terminated(storage, postgres_url, tag, trial_id)
    recorded = storage.get_trial(trial_id).user_attrs
    if kind == "plain":  # the search's driver would stop here, the result unrecorded
        assert isinstance(outcome.get("error"), optuna.exceptions.StorageInternalError)
        assert recorded == {}
    else:  # retried on a fresh connection once the database answers again
        assert "error" not in outcome, outcome
        assert recorded == {"val_accuracy": 0.9}


def test_a_dead_database_costs_one_retry_budget_per_call(tmp_path) -> None:
    """A public call goes through a private one; both are retried methods, but only the
    outer call retries: ATTEMPTS attempts and about 3 s, not ATTEMPTS squared and 18 s."""
    attempts = 0

    def lose_connection(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise DBAPIError("select", {}, Exception("terminating connection"),
                         connection_invalidated=True)

    class DeadDatabase(ReconnectingRDBStorage):
        _get_trials = _retrying(lose_connection)

    storage = DeadDatabase(f"sqlite:///{tmp_path / 'dead.db'}")
    study_id = storage.create_new_study([StudyDirection.MAXIMIZE], "dead")
    started = time.monotonic()
    with pytest.raises(DBAPIError):
        storage.get_all_trials(study_id)
    assert attempts == ATTEMPTS
    assert time.monotonic() - started < 6
