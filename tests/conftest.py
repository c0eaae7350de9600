"""Shared fixtures: a real local Ray, real SQLite and PostgreSQL storages, a full file system.

PostgreSQL is the machine's server on 127.0.0.1:5432 (database ``test``), or the URL in
``HETNAS_TEST_POSTGRES_URL``. Where it is missing the tests that need it skip, except under CI
(``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from file_systems import filling_folder

POSTGRES_URL = os.environ.get("HETNAS_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        return str(error).splitlines()[0]
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = _postgres_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required under CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each test using this runs once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped afterwards (for a test that changes
    a whole database, or needs one that holds no other test's rows)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"hetnas_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def study_name() -> str:
    """Unique per test, so tests can share the PostgreSQL database."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder that fills up after ``file_systems.FULL_AT`` bytes."""
    with filling_folder(tmp_path / "small") as folder:
        yield folder
