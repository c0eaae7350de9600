"""The one direction of dependency (docs/ARCHITECTURE.md), read from the source.

hetconv -> space -> search -> (database) -> dashboards: the layer knows nothing of search spaces,
the search space nothing of Ray or Optuna, and the dashboards read the store alone (plus the
command-line helper every command shares). Inside ``search`` the floors go one way too:
store -> training (and profiling) -> jobs -> engine -> oneshot -> the top level (the driver, the
cluster and the commands); no subpackage imports a module of the top level. Checked on every
import statement, lazy ones inside functions included, so a rule cannot be broken quietly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project modules it may import besides its own
_BELOW_SEARCH = ("hetconv", "space")
ALLOWED = {
    "hetconv": (),
    "space": ("hetconv",),
    "dashboards": ("search.store", "search.cli", "hetconv.errors"),
    "search.store": _BELOW_SEARCH,
    "search.training": (*_BELOW_SEARCH, "search.store"),
    "search.profiling": (*_BELOW_SEARCH, "search.store"),
    "search.jobs": (*_BELOW_SEARCH, "search.store", "search.training"),
    "search.engine": (*_BELOW_SEARCH, "search.store", "search.training", "search.profiling",
                      "search.jobs"),
    "search.oneshot": (*_BELOW_SEARCH, "search.store", "search.training", "search.profiling",
                       "search.jobs", "search.engine"),
}
PROJECT = ("hetconv", "space", "search", "dashboards")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module a file imports, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _broken(package: str, paths: list[Path]) -> list[str]:
    """Imports of project modules outside ``package`` that its rule does not allow."""
    broken = []
    for path in paths:
        for line, module in _imports(path):
            foreign = any(_is_under(module, p) for p in PROJECT) and not _is_under(module, package)
            if foreign and not any(_is_under(module, a) for a in ALLOWED[package]):
                broken.append(f"{path.name}:{line} imports {module}")
    return broken


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_data_flow(package: str) -> None:
    broken = _broken(package, sorted((ROOT / package.replace(".", "/")).rglob("*.py")))
    assert not broken, "\n".join(broken)


def test_every_package_of_search_has_a_rule() -> None:
    """A new subpackage of ``search`` must say where it stands before it can be imported."""
    packages = {f"search.{p.parent.name}" for p in (ROOT / "search").glob("*/__init__.py")}
    assert packages <= set(ALLOWED), sorted(packages - set(ALLOWED))


def test_the_checker_sees_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def later():\n    from search.driver import run_search\n"
                   "from search.store import records\n")
    assert _broken("dashboards", [bad]) == ["bad.py:2 imports search.driver",
                                            "bad.py:2 imports search.driver.run_search"]
    assert _broken("space", [bad]) == [f"bad.py:{line} imports {module}" for line, module in
                                       _imports(bad)]
    # Back edges inside search: a lower floor importing a higher one, or the top level.
    back = tmp_path / "back.py"
    back.write_text("from search.driver import run_search\nfrom search.engine import proposer\n"
                    "from search.store import records\n")
    assert _broken("search.training", [back]) == [
        "back.py:1 imports search.driver", "back.py:1 imports search.driver.run_search",
        "back.py:2 imports search.engine", "back.py:2 imports search.engine.proposer"]
    assert _broken("search.oneshot", [back]) == [
        "back.py:1 imports search.driver", "back.py:1 imports search.driver.run_search"]
