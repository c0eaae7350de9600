"""What every HetNAS command line shares: one-line errors and exit status 2 for bad input."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from hetconv.errors import ConfigError
from search.store.files import WriteFailed

USAGE_ERROR = 2
RUN_FAILED = 1
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)
TERMINATED = 143  # the shell's status for a command stopped by SIGTERM (128 + SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``docker stop``, systemd, Kubernetes, SLURM). A ``KeyboardInterrupt``,
    so every clean-up written for Ctrl-C runs for it too, and Ray Tune does not take it for a
    trial's error."""


_command_handles_sigterm = False  # set by run_cli: this process is a HetNAS command
_sigterm_received = False  # Ray's core re-raises an interrupt as a plain KeyboardInterrupt


def _terminate(signum: int, frame: object) -> None:
    global _sigterm_received
    _sigterm_received = True
    raise Terminated


def stop_on_sigterm() -> None:
    """Make SIGTERM stop a :func:`run_cli` command as Ctrl-C does. Installed by
    :func:`run_cli`, and again after anything that installs its own handler (``ray.init``
    installs a Python one that exits with status 15 and then a C++ one that dumps a stack and
    aborts with status 134); a no-op outside a command, so a library caller keeps its own."""
    if _command_handles_sigterm:
        signal.signal(signal.SIGTERM, _terminate)


_LINE_BREAKS = {ord(c): ascii(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """``message`` with every line break escaped (``\\n``): a value the user typed may hold
    one, and an error must stay one line."""
    return message.translate(_LINE_BREAKS)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def number_of(unit: str, example: str) -> Callable[[str], float]:
    """An argparse type for a number of ``unit`` (``example`` in the hint). Whether the value is
    acceptable is the library's rule (``SearchSpace.check_budget``,
    ``space.latency.check_latency_budget``), checked once, where the settings are validated."""
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of {unit}; write e.g. {example}") from None

    return parse


macs_amount = number_of("MACs", "3e8")  # a MACs budget such as 3e8
milliseconds = number_of("milliseconds", "2.5")  # a latency budget in ms


def path_text(text: str) -> str:
    """An argparse type for a path, kept as text: one the system cannot even look up (a name
    longer than the file system's 255 bytes, a folder this user may not enter) is refused here,
    in one line, rather than as an ``OSError`` wherever the path is first touched."""
    try:
        Path(text).exists()
    except (OSError, ValueError) as error:  # ValueError: a NUL byte, which no argv holds
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is no usable path ({reason})") from None
    return text


def path_argument(text: str) -> Path:
    """:func:`path_text` as a :class:`~pathlib.Path`."""
    return Path(path_text(text))


def run_cli(main: Callable[[], int | None], prog: str,
            failures: tuple[type[Exception], ...] = (),
            flags: Mapping[str, str] | None = None, resumable: bool = False) -> NoReturn:
    """Run ``main``; a :class:`ConfigError` becomes one line on stderr and exit status 2.

    The error's parameters are shown as this command's flags: ``flags`` maps the parameters
    whose flag is not ``--name-with-hyphens``. Exceptions in ``failures`` (a run that went
    wrong, not bad input), and a file system that refuses a write, exit with status 1. Ctrl-C
    exits with status 130 and SIGTERM with 143, each with one line, which tells a ``resumable``
    command's user to continue with ``--resume``.
    """
    run_failures: tuple[type[Exception], ...] = (*failures, WriteFailed)
    global _command_handles_sigterm
    _command_handles_sigterm = True
    stop_on_sigterm()
    try:
        status = main()
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated) or _sigterm_received
        hint = "; continue with --resume" if resumable else ""
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr,
              flush=True)
        sys.exit(TERMINATED if terminated else INTERRUPTED)
    except ConfigError as error:
        print(f"{prog}: error: {one_line(error.render(flags or {}))}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except run_failures as error:
        print(f"{prog}: failed: {one_line(str(error))}", file=sys.stderr)
        sys.exit(RUN_FAILED)
    sys.exit(status or 0)
