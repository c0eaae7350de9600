"""One live driver per study: the lease in the study's database (SQLite and PostgreSQL).

A second real driver is refused in ``tests/test_resume.py``; here the rules, with lease rows of
drivers on other machines written as such a driver would.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy

from hetconv.errors import ConfigError
from search.store.lease import STALE_S, DriverLease, Holder, LeaseLost, lease_table
from search.store.storage import open_storage


@pytest.fixture
def engine(storage_url: str) -> sqlalchemy.Engine:
    return open_storage(storage_url).engine


def _plant(engine: sqlalchemy.Engine, study: str, host: str, pid: int, silent_s: float) -> None:
    """The lease row of a driver elsewhere, last heard from ``silent_s`` ago."""
    with DriverLease(engine, study):  # creates the table when missing
        pass
    with engine.begin() as connection:
        connection.execute(lease_table.insert().values(
            study=study, owner="elsewhere", host=host, pid=pid, heartbeat=time.time() - silent_s))


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_a_live_driver_elsewhere_keeps_its_study(engine: sqlalchemy.Engine,
                                                 study_name: str) -> None:
    _plant(engine, study_name, "node-7", 4242, silent_s=5)
    with pytest.raises(ConfigError, match=r"being run by another driver \(pid 4242 on node-7"):
        DriverLease(engine, study_name).take()
    holder = DriverLease(engine, study_name).holder()
    assert holder is not None and holder.owner == "elsewhere"


@pytest.mark.parametrize(("host", "silent_s"), [
    ("node-7", STALE_S + 1),  # silent too long
    (socket.gethostname(), 1),  # fresh, but the process on this machine is gone
])
def test_a_stale_lease_is_taken_over_with_a_message(engine: sqlalchemy.Engine, study_name: str,
                                                    host: str, silent_s: float) -> None:
    pid = _dead_pid()
    _plant(engine, study_name, host, pid, silent_s)
    said: list[str] = []
    with DriverLease(engine, study_name, report=said.append) as lease:
        holder = lease.holder()
        assert holder is not None and holder.owner == lease.owner
    assert len(said) == 1 and f"taking over study {study_name!r}" in said[0]
    assert f"pid {pid}" in said[0]
    assert DriverLease(engine, study_name).holder() is None  # given back on leaving


def test_the_lease_is_renewed_and_only_its_owner_gives_it_back(engine: sqlalchemy.Engine,
                                                               study_name: str) -> None:
    lease = DriverLease(engine, study_name, heartbeat_s=0.05)
    lease.take()
    first = lease.holder()
    time.sleep(0.5)
    renewed = lease.holder()
    assert first is not None and renewed is not None
    assert renewed.heartbeat > first.heartbeat and renewed.is_live(time.time())
    with pytest.raises(ConfigError, match="being run by another driver"):
        DriverLease(engine, study_name).take()
    lease.release()
    successor = DriverLease(engine, study_name)
    successor.take()
    lease.release()  # a second release of a lease no longer held leaves the successor's
    assert successor.holder() == Holder(successor.owner, socket.gethostname(),
                                        *_pid_and_beat(successor))
    successor.release()


def _pid_and_beat(lease: DriverLease) -> tuple[int, float]:
    holder = lease.holder()
    assert holder is not None
    return holder.pid, holder.heartbeat


def _take_over(engine: sqlalchemy.Engine, study: str, host: str, pid: int) -> None:
    """What a successor's takeover does to the row: its owner, host, pid and heartbeat."""
    with engine.begin() as connection:
        connection.execute(lease_table.update().where(lease_table.c.study == study).values(
            owner="successor", host=host, pid=pid, heartbeat=time.time()))


def test_a_driver_whose_lease_was_taken_learns_it_and_ends_in_lease_lost(
        engine: sqlalchemy.Engine, study_name: str) -> None:
    """A driver stopped past STALE_S and continued finds at its next heartbeat that another
    driver holds its study: it is told to stop, ends in LeaseLost naming the successor, and
    leaves the successor's row alone."""
    told = threading.Event()
    lost = r"taken over by pid 4343 on node-9 .*this driver stopped"
    with (pytest.raises(LeaseLost, match=lost),
          DriverLease(engine, study_name, heartbeat_s=0.05, on_lost=told.set)):
        _take_over(engine, study_name, "node-9", 4343)
        assert told.wait(10)
    holder = DriverLease(engine, study_name).holder()
    assert holder is not None and (holder.owner, holder.pid) == ("successor", 4343)


def test_a_held_lease_is_never_reported_lost(engine: sqlalchemy.Engine, study_name: str) -> None:
    told = threading.Event()
    with DriverLease(engine, study_name, heartbeat_s=0.05, on_lost=told.set):
        time.sleep(0.5)
    assert not told.is_set()


def test_a_driver_that_fails_after_its_study_was_taken_over_ends_in_lease_lost(
        engine: sqlalchemy.Engine, study_name: str) -> None:
    """The successor's writes can break this driver (UpdateFinishedTrialError) before its next
    heartbeat: the error it ends in is then the lost lease, which says what happened."""
    with pytest.raises(LeaseLost, match="taken over by pid 4343 on node-9"), \
            DriverLease(engine, study_name, heartbeat_s=60):
        _take_over(engine, study_name, "node-9", 4343)
        raise RuntimeError("a trial this driver thought running was finished by another")
