"""The measured latencies, kept in the study's own database (SQLite or PostgreSQL).

Measuring every layer at every part takes minutes, so each figure is stored once per
:class:`~space.latency.LatencySpec` and reused by every later search and profiler run on the
same kind of machine. Two tables, defined with SQLAlchemy Core in their own ``MetaData`` so that
creating them never touches Optuna's tables:

``hetnas_layer_latency``
    one row per (device, layer shape, part, batch, dtype, runtime, torch version): the median
    milliseconds of the searchable layer with its ReLU in its deploy form, alone. The layer
    shape is (in_channels, out_channels, kernel_size, stride, padding, input_height,
    input_width), so layers of different backbones with the same shape share a row.
``hetnas_network_latency_v2``
    one row per (device, backbone, input size, num_classes, in_channels, batch, dtype, runtime,
    torch version): how whole networks differ from the sum of their layers measured alone, fitted
    over a few measured uniform-P networks: ``remainder_ms`` (stem, pools, classifier,
    shortcuts, call overhead; may be negative) and ``ms_per_weight_mb`` (a layer measured alone
    finds its weights in cache, inside a network whose weights outgrow the cache it reads them
    from memory each call). A separate table because its key has nothing in common with a
    layer's shape. (``_v2``: keyed by the input channels too since HetNAS 0.2; the rows of
    the older ``hetnas_network_latency`` are left alone and unused.)

Writers never fail on a key another profiler inserted first (``ON CONFLICT DO NOTHING``;
``replace=True`` overwrites, for ``--force``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from search.store.database import (
    DEFAULT_STORAGE,
    create_engine,
    create_racing,
    database_errors,
    parse_url,
    share_sqlite,
)
from space.latency import LatencySpec

LAYER_TABLE = "hetnas_layer_latency"
NETWORK_TABLE = "hetnas_network_latency_v2"

_metadata = MetaData()

_SPEC_COLUMNS = ("device", "batch", "dtype", "runtime", "torch_version")
_SHAPE_COLUMNS = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                  "input_height", "input_width")
_LAYER_KEY = (*_SHAPE_COLUMNS, "part", *_SPEC_COLUMNS)
_NETWORK_KEY = ("backbone", "input_size", "num_classes", "in_channels", *_SPEC_COLUMNS)


def _spec_columns() -> list[Column]:
    return [Column("device", String(255), nullable=False),
            Column("batch", Integer, nullable=False),
            Column("dtype", String(32), nullable=False),
            Column("runtime", String(32), nullable=False),
            Column("torch_version", String(64), nullable=False)]


def _measurement_columns(*values: str) -> list[Column]:
    return [*(Column(value, Float, nullable=False) for value in values),
            Column("samples", Integer, nullable=False),
            Column("measured_at", DateTime(timezone=True), nullable=False)]


layer_table = Table(
    LAYER_TABLE, _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    *(Column(name, Integer, nullable=False) for name in _SHAPE_COLUMNS),
    Column("part", Integer, nullable=False),
    *_spec_columns(),
    *_measurement_columns("milliseconds"),
    UniqueConstraint(*_LAYER_KEY, name=f"uq_{LAYER_TABLE}_key"),
)

network_table = Table(
    NETWORK_TABLE, _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("backbone", String(64), nullable=False),
    Column("input_size", Integer, nullable=False),
    Column("num_classes", Integer, nullable=False),
    Column("in_channels", Integer, nullable=False),
    *_spec_columns(),
    *_measurement_columns("remainder_ms", "ms_per_weight_mb"),
    UniqueConstraint(*_NETWORK_KEY, name=f"uq_{NETWORK_TABLE}_key"),
)


@dataclass(frozen=True)
class LayerShape:
    """Everything about a searchable layer that its latency depends on, besides its part."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    input_height: int
    input_width: int

    def label(self) -> str:
        """``256->256 3x3/1 @8x8``: channels, kernel/stride, input size."""
        return (f"{self.in_channels}->{self.out_channels} {self.kernel_size}x{self.kernel_size}"
                f"/{self.stride} @{self.input_height}x{self.input_width}")


@dataclass(frozen=True)
class NetworkKey:
    """A backbone at one input shape and class count: what the remainder belongs to."""

    backbone: str
    input_size: int
    num_classes: int
    in_channels: int


@dataclass(frozen=True)
class Measurement:
    """One stored layer figure: milliseconds per call over ``samples`` timed calls."""

    milliseconds: float
    samples: int
    measured_at: datetime


@dataclass(frozen=True)
class Calibration:
    """How a whole network differs from its layers' sum, fitted over ``samples`` networks."""

    remainder_ms: float
    ms_per_weight_mb: float
    samples: int
    measured_at: datetime


def _spec_values(spec: LatencySpec) -> dict[str, Any]:
    return {"device": spec.device, "batch": spec.batch, "dtype": spec.dtype,
            "runtime": spec.runtime, "torch_version": spec.torch}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LatencyStore:
    """The latency tables of one database; created (next to any Optuna tables) on first use."""

    def __init__(self, url: str = DEFAULT_STORAGE) -> None:
        """Connect and create the tables when missing; a bad URL or unreachable server is a
        :class:`ConfigError`."""
        parse_url(url)
        self.url = url
        with database_errors(url):
            self.engine = create_engine(url)
            # CREATE TABLE for the missing latency tables only.
            create_racing(lambda: _metadata.create_all(self.engine, checkfirst=True))
        share_sqlite(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LatencyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layers -----------------------------------------------------------------------------

    def layer_rows(self, spec: LatencySpec,
                   keys: Iterable[tuple[LayerShape, int]]) -> dict[tuple[LayerShape, int],
                                                                   Measurement]:
        """The stored figures among ``keys`` ((shape, part) pairs) for ``spec``."""
        wanted = set(keys)
        query = sqlalchemy.select(layer_table).where(
            *(layer_table.c[name] == value for name, value in _spec_values(spec).items()))
        found = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query).mappings():
                key = (LayerShape(*(row[name] for name in _SHAPE_COLUMNS)), row["part"])
                if key in wanted:
                    found[key] = Measurement(row["milliseconds"], row["samples"],
                                             row["measured_at"])
        return found

    def add_layers(self, spec: LatencySpec,
                   measured: Mapping[tuple[LayerShape, int], tuple[float, int]],
                   replace: bool = False) -> None:
        """Store ``{(shape, part): (milliseconds, samples)}``; a key already there is kept,
        unless ``replace``."""
        stamp = _now()
        rows = [{**vars(shape), "part": part, **_spec_values(spec), "milliseconds": float(ms),
                 "samples": int(samples), "measured_at": stamp}
                for (shape, part), (ms, samples) in measured.items()]
        with self.engine.begin() as connection:
            _insert(connection, layer_table, rows, _LAYER_KEY, replace)

    # -- network calibration ----------------------------------------------------------------

    def calibration(self, spec: LatencySpec, network: NetworkKey) -> Calibration | None:
        """The stored calibration of ``network`` for ``spec``, if any."""
        values = {**vars(network), **_spec_values(spec)}
        query = sqlalchemy.select(network_table).where(
            *(network_table.c[name] == value for name, value in values.items()))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else Calibration(row["remainder_ms"], row["ms_per_weight_mb"],
                                                    row["samples"], row["measured_at"])

    def add_calibration(self, spec: LatencySpec, network: NetworkKey, remainder_ms: float,
                        ms_per_weight_mb: float, samples: int, replace: bool = False) -> None:
        """Store ``network``'s calibration; one already there is kept, unless ``replace``."""
        row = {**vars(network), **_spec_values(spec), "remainder_ms": float(remainder_ms),
               "ms_per_weight_mb": float(ms_per_weight_mb), "samples": int(samples),
               "measured_at": _now()}
        with self.engine.begin() as connection:
            _insert(connection, network_table, [row], _NETWORK_KEY, replace)


def _insert(connection: Connection, table: Table, rows: list[dict[str, Any]],
            key: tuple[str, ...], replace: bool) -> None:
    """Insert ``rows``, skipping (or, with ``replace``, overwriting) keys already present.

    SQLite and PostgreSQL do it in one statement (``ON CONFLICT``), race-free; other databases
    row by row in savepoints.
    """
    rows = list({tuple(row[name] for name in key): row for row in rows}.values())
    if not rows:
        return
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(connection.dialect.name)
    if dialect is not None:
        statement = dialect.insert(table)
        if replace:
            values = [name for name in rows[0] if name not in key]
            statement = statement.on_conflict_do_update(
                index_elements=list(key), set_={name: statement.excluded[name] for name in values})
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(key))
        connection.execute(statement, rows)
        return
    for row in rows:
        try:
            with connection.begin_nested():
                connection.execute(table.insert(), row)
        except IntegrityError:
            if replace:
                connection.execute(table.update().where(
                    *(table.c[name] == row[name] for name in key)).values(row))
