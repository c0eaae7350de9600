"""Commands that read a search's database never create or alter anything in it.

A foreign database is refused in one line and left byte for byte as it was; a plain Optuna
SQLite file keeps its journal mode and gets no ``-wal``/``-shm`` files; the read-only storage
refuses writes on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from file_systems import read_only_folder
from test_dashboards_support import write_study

from hetconv.errors import ConfigError
from search.store.storage import open_existing, open_storage


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


READERS = {
    "search.export": ["--study", "s", "--out", "best.json"],
    "dashboards.report": ["--study", "s", "--out", "report.html"],
}


@pytest.mark.parametrize("module", READERS)
def test_a_foreign_database_with_a_studies_table_is_refused_untouched(module: str,
                                                                        tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO studies (name) VALUES ('s')")
    before = _digest(database)
    result = _cli(module, "--storage", f"sqlite:///{database}", *READERS[module], cwd=tmp_path)
    _one_line_error(result, "holds no Optuna study")
    assert _digest(database) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shop.db"]


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_reading_leaves_the_database_file_as_it_was(journal: str, tmp_path: Path) -> None:
    """The report of a plain Optuna file (rollback journal) and of a search's own (WAL)."""
    database = tmp_path / "study.db"
    url = f"sqlite:///{database}"
    writer = open_storage(url) if journal == "wal" else optuna.storages.RDBStorage(url)
    write_study(writer, "s")
    writer.engine.dispose()  # the last connection closes: SQLite removes a WAL's files
    before = _digest(database)
    result = _cli("dashboards.report", "--storage", url, "--study", "s", "--out", "r.html",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _digest(database) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.html", "study.db"]
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == (journal,)


def test_a_study_on_read_only_media_is_read(tmp_path: Path) -> None:
    """A search's WAL database on a read-only mount: SQLite cannot create the ``-shm`` file a
    WAL reader needs beside it ("unable to open database file"), so the readers' storage
    (``open_existing``, which every reading command uses) opens the file immutable and reads
    what the search wrote."""
    database = tmp_path / "study.db"
    writer = open_storage(f"sqlite:///{database}")
    write_study(writer, "s")
    written = optuna.load_study(study_name="s", storage=writer).get_trials()
    writer.engine.dispose()
    with read_only_folder(tmp_path / "media", {"study.db": database.read_bytes()}) as media:
        url = f"sqlite:///{media / 'study.db'}"
        reader = open_existing(url)
        assert optuna.load_study(study_name="s", storage=reader).get_trials() == written
        reader.engine.dispose()
        result = _cli("dashboards.report", "--storage", url, "--study", "s", "--out",
                      "report.html", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(path.name for path in media.iterdir()) == ["study.db"]
    assert (tmp_path / "report.html").stat().st_size > 0


def test_the_read_only_storage_refuses_writes(storage_url: str, study_name: str) -> None:
    optuna.create_study(storage=open_storage(storage_url), study_name=study_name)
    reader = open_existing(storage_url)
    study = optuna.load_study(study_name=study_name, storage=reader)
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        study.set_user_attr("written", True)
    assert re.search("(?i)read.only|readonly", str(refused.value.__cause__))
    reader.engine.dispose()
    stored = optuna.load_study(study_name=study_name, storage=storage_url)
    assert stored.user_attrs == {}


def test_tables_of_another_optuna_schema_version_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(storage=url, study_name="s")
    with sqlite3.connect(tmp_path / "old.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v0.9.0.a'")
    with pytest.raises(ConfigError, match="old.db: .*compatible"):
        open_existing(url)


def test_no_output_may_be_the_study_database(tmp_path: Path) -> None:
    """``dashboards.report --out s.db`` and ``search.export --weights s.db`` with the storage
    sqlite:///s.db would replace the study with a page or weights: refused in one line, the
    database left byte for byte."""
    database = tmp_path / "s.db"
    storage = f"sqlite:///{database}"
    optuna.create_study(study_name="kept", storage=storage)
    before = database.read_bytes()
    for command in (["dashboards.report", "--storage", storage, "--out", str(database)],
                    ["search.export", "--storage", storage, "--study", "kept", "--out",
                     str(tmp_path / "best.json"), "--weights", str(database)]):
        result = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "would overwrite the study database" in lines[0]
        assert database.read_bytes() == before
