"""What the search prints after it: its best architectures in rank order, the storage and the
next commands, never a password."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest

from search.engine.budgets import Budgets
from search.engine.console import SearchConsole
from search.store import records
from tests.test_dashboards_support import write_study

SECRET = "s3cret-Pw"
URL = f"postgresql://hetnas:{SECRET}@postgres:5432/hetnas"


@pytest.mark.parametrize("in_environment", [False, True])
def test_the_summary_names_the_storage_without_its_password(
        monkeypatch: pytest.MonkeyPatch, in_environment: bool) -> None:
    """In a container whose HETNAS_STORAGE holds the URL the next commands name the variable
    (they run as printed there); elsewhere the URL with its password as ***."""
    if in_environment:
        monkeypatch.setenv("HETNAS_STORAGE", URL)
    else:
        monkeypatch.delenv("HETNAS_STORAGE", raising=False)
    out = io.StringIO()
    SearchConsole(Budgets(3e8, None, None), out).summary([], URL, "s")
    printed = out.getvalue()
    assert SECRET not in printed
    assert "storage: postgresql://hetnas:***@postgres:5432/hetnas   study: s" in printed
    exports = [line for line in printed.splitlines() if line.startswith("export:")]
    assert len(exports) == 1
    words = shlex.split(exports[0].removeprefix("export:"), posix=True)
    named = words[words.index("--storage") + 1]
    assert named == ("$HETNAS_STORAGE" if in_environment else
                     "postgresql://hetnas:***@postgres:5432/hetnas")


def test_the_summary_lists_its_rows_in_rank_order(tmp_path: Path) -> None:
    """The best architecture first, the ``top`` searched ones and every baseline among them at
    their own rank (trials 5, 12 searched; 0, 1, 2 the uniform P2, P4, P8)."""
    study = write_study(f"sqlite:///{tmp_path / 'study.db'}", "s")
    out = io.StringIO()
    SearchConsole(Budgets(1e8, None, None), out).summary(records.read_records(study), URL, "s",
                                                         top=2)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("single runs")) + 2
    rows = [line.split()[:3] for line in lines[start:start + 5]]
    assert rows == [["1", "5", "searched"], ["2", "12", "searched"], ["3", "0", "uniform"],
                    ["6", "1", "uniform"], ["7", "2", "uniform"]]
    assert not lines[start + 5].strip()
