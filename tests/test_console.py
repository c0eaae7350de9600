"""What the search prints after it: the storage and the next commands, never a password."""

from __future__ import annotations

import io
import shlex

import pytest

from search.engine.budgets import Budgets
from search.engine.console import SearchConsole

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
