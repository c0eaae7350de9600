"""Library errors name parameters; each command shows its own flag for them."""

from __future__ import annotations

import pytest

from hetconv.errors import ConfigError, param
from search.cli import run_cli
from search.run import LIBRARY_FLAGS
from space import LatencySpec


def test_a_library_caller_reads_parameter_names() -> None:
    error = ConfigError(f"use {param('input_size')} 32 or {param('runtime')} eager")
    assert str(error) == "use input_size 32 or runtime eager"
    assert error.render({}) == "use --input-size 32 or --runtime eager"
    assert error.render({"runtime": "--latency-runtime"}) == \
        "use --input-size 32 or --latency-runtime eager"


def _cli_line(capsys: pytest.CaptureFixture[str], flags: dict[str, str] | None) -> str:
    def main() -> None:
        LatencySpec.current("cpu", runtime="jit")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, "prog", flags=flags)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_each_command_shows_its_own_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_line(capsys, None) == ("prog: error: runtime 'jit' is unknown; use --runtime "
                                       "compiled or --runtime eager")
    assert _cli_line(capsys, LIBRARY_FLAGS).endswith(
        "use --latency-runtime compiled or --latency-runtime eager")
