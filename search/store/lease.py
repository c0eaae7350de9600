"""One live driver per study: a lease row with a heartbeat, in the study's own database.

Two drivers of one study would each mark the other's running trials as interrupted and queue
them again, and one of them crashes. So a driver takes the study's lease before it touches the
study, renews it every ``HEARTBEAT_S`` seconds from a background thread, and gives it back when
it stops (a finished search, an error, Ctrl-C). A second driver is refused in one line while the
lease is live. A lease is stale, and taken over with a message, when its heartbeat is older than
``STALE_S`` seconds, or at once when its holder was a process on this machine that no longer
exists (a killed driver resumed on the same machine waits for nothing). A driver whose lease
was taken over (it was stopped with SIGSTOP, or cut off from the database, past ``STALE_S``)
learns it at its next heartbeat, which finds its row gone: it stops as Ctrl-C stops it, and
ends with :class:`LeaseLost` instead of training beside its successor.

The table ``hetnas_driver_leases`` has its own ``MetaData``, beside Optuna's tables, like the
latency tables. Taking a lease is one INSERT (the study name is the primary key) or one
conditional UPDATE of the stale row, so two drivers racing for it cannot both win. Heartbeats
use each machine's clock: the machines of a cluster are expected to keep time (NTP).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hetconv.errors import ConfigError
from search.store.database import create_racing

LEASE_TABLE = "hetnas_driver_leases"
HEARTBEAT_S = 10.0
STALE_S = 60.0

_metadata = MetaData()
lease_table = Table(
    LEASE_TABLE, _metadata,
    Column("study", String(512), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("heartbeat", Float, nullable=False),  # seconds since the epoch
)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its row says."""

    owner: str
    host: str
    pid: int
    heartbeat: float

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.heartbeat)

    def is_live(self, now: float) -> bool:
        """Renewed within ``STALE_S``, by a process that (on this machine) still exists."""
        if self.silent_for(now) >= STALE_S:
            return False
        return self.host != socket.gethostname() or _process_exists(self.pid)

    def describe(self) -> str:
        where = "this machine" if self.host == socket.gethostname() else self.host
        return f"pid {self.pid} on {where}"


class LeaseLost(RuntimeError):
    """Another driver took this driver's study over; this one stopped."""


def interrupt_this_process() -> None:
    """Stop the main thread as Ctrl-C does (the one way to stop a running Ray Tune search)."""
    os.kill(os.getpid(), signal.SIGINT)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class DriverLease:
    """The lease of one study for this process; a context manager that takes, renews and gives
    it back. ``report`` receives the one line said when a stale lease is taken over; ``on_lost``
    is called (from the heartbeat thread) when another driver has taken the lease, to stop the
    block, which then ends in :class:`LeaseLost` whatever stopped it."""

    def __init__(self, engine: Engine, study: str, report: Callable[[str], None] = print,
                 heartbeat_s: float = HEARTBEAT_S,
                 on_lost: Callable[[], None] = interrupt_this_process) -> None:
        self.engine = engine
        self.study = study
        self.report = report
        self.heartbeat_s = heartbeat_s
        self.on_lost = on_lost
        self.owner = uuid.uuid4().hex
        self.lost = False  # another driver took the lease while this one held it
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> DriverLease:
        self.take()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            self.release()
        except KeyboardInterrupt:  # the heartbeat's interrupt, landing here
            if not self.lost:
                raise
        if kind is not None and not self.lost:
            self.lost = self._taken_by_another()  # e.g. the successor's writes broke this one
        if self.lost:
            holder = self.holder()
            successor = "another driver" if holder is None else holder.describe()
            raise LeaseLost(f"study {self.study!r} was taken over by {successor} while this "
                            f"driver was silent for over {STALE_S:.0f} s; this driver stopped "
                            f"so that one driver runs it (see its output)") from None

    def take(self) -> None:
        """Hold the lease, taking over a stale one, or raise :class:`ConfigError` naming the
        live driver; then renew it in the background."""
        create_racing(lambda: _metadata.create_all(self.engine, checkfirst=True))
        if not self._insert():
            self._take_from(self.holder())
        self._renewer = threading.Thread(target=self._renew, name="hetnas-lease", daemon=True)
        self._renewer.start()

    def _take_from(self, holder: Holder | None) -> None:
        """Take the lease from ``holder`` (None: it was given back a moment ago) if stale."""
        now = time.time()
        if holder is not None and holder.is_live(now):
            raise ConfigError(
                f"study {self.study!r} is being run by another driver ({holder.describe()}, "
                f"heard from {holder.silent_for(now):.0f} s ago); wait for it to finish or stop "
                f"it (a driver silent for {STALE_S:.0f} s is taken over)")
        taken = self._insert() if holder is None else self._replace(holder)
        if not taken:
            raise ConfigError(f"study {self.study!r} was taken by another driver at the same "
                              f"moment; run one driver per study")
        if holder is not None:
            self.report(f"taking over study {self.study!r} from its previous driver "
                        f"({holder.describe()}), silent for {holder.silent_for(now):.0f} s")

    def _taken_by_another(self) -> bool:
        try:
            holder = self.holder()
        except SQLAlchemyError:
            return False
        return holder is not None and holder.owner != self.owner

    def holder(self) -> Holder | None:
        with self.engine.connect() as connection:
            row = connection.execute(lease_table.select().where(
                lease_table.c.study == self.study)).first()
        return None if row is None else Holder(row.owner, row.host, row.pid, row.heartbeat)

    def release(self) -> None:
        """Stop renewing and delete the row, if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            with self.engine.begin() as connection:
                connection.execute(lease_table.delete().where(
                    lease_table.c.study == self.study, lease_table.c.owner == self.owner))
        except SQLAlchemyError:
            pass  # a database that fails now (a full disk): the row goes stale, and a resume
            # on this machine takes it over at once, this process being gone

    def _insert(self) -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(lease_table.insert().values(
                    study=self.study, owner=self.owner, host=socket.gethostname(),
                    pid=os.getpid(), heartbeat=time.time()))
        except IntegrityError:
            return False
        return True

    def _replace(self, stale: Holder) -> bool:
        """Take the row from ``stale``, unless another driver changed it meanwhile."""
        with self.engine.begin() as connection:
            taken = connection.execute(lease_table.update().where(
                lease_table.c.study == self.study, lease_table.c.owner == stale.owner,
                lease_table.c.heartbeat == stale.heartbeat,
            ).values(owner=self.owner, host=socket.gethostname(), pid=os.getpid(),
                     heartbeat=time.time()))
        return taken.rowcount == 1

    def _renew(self) -> None:
        """Refresh the heartbeat until released; a database hiccup is retried at the next beat
        (the lease only goes stale after ``STALE_S``)."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(lease_table.update().where(
                        lease_table.c.study == self.study, lease_table.c.owner == self.owner,
                    ).values(heartbeat=time.time()))
            except SQLAlchemyError:
                continue
            if renewed.rowcount == 0:  # the row is another driver's now, or gone
                self.lost = True
                if not self._stop.is_set():
                    self.on_lost()
                return
