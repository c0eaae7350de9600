"""What every HetNAS command line shares: one-line errors and exit status 2 for bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from hetconv.errors import ConfigError
from search.store.files import WriteFailed

USAGE_ERROR = 2
RUN_FAILED = 1
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


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
    exits with status 130 and one line, which tells a ``resumable`` command's user to continue
    with ``--resume``.
    """
    run_failures: tuple[type[Exception], ...] = (*failures, WriteFailed)
    try:
        status = main()
    except KeyboardInterrupt:
        hint = "; continue with --resume" if resumable else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED)
    except ConfigError as error:
        print(f"{prog}: error: {one_line(error.render(flags or {}))}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except run_failures as error:
        print(f"{prog}: failed: {one_line(str(error))}", file=sys.stderr)
        sys.exit(RUN_FAILED)
    sys.exit(status or 0)
