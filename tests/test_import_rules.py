"""The one direction of dependency (docs/ARCHITECTURE.md), read from the source.

hetconv -> space -> search -> (database) -> dashboards: the layer knows nothing of search spaces,
the search space nothing of Ray or Optuna, and the dashboards read the store alone (plus the
command-line helper every command shares). Checked on every import statement, lazy ones inside
functions included, so a rule cannot be broken quietly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project modules it may import besides its own
ALLOWED = {
    "hetconv": (),
    "space": ("hetconv",),
    "dashboards": ("search.store", "search.cli", "hetconv.errors"),
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
    broken = _broken(package, sorted((ROOT / package).rglob("*.py")))
    assert not broken, "\n".join(broken)


def test_the_checker_sees_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def later():\n    from search.runner import run_search\n"
                   "from search.store import records\n")
    assert _broken("dashboards", [bad]) == ["bad.py:2 imports search.runner",
                                            "bad.py:2 imports search.runner.run_search"]
    assert _broken("space", [bad]) == [f"bad.py:{line} imports {module}" for line, module in
                                       _imports(bad)]
