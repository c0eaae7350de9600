"""What every HetNAS command line shares: one-line errors and exit status 2 for bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

from hetconv.errors import ConfigError
from search.store.files import WriteFailed

USAGE_ERROR = 2
RUN_FAILED = 1
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


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
        print(f"{prog}: error: {error.render(flags or {})}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except run_failures as error:
        print(f"{prog}: failed: {error}", file=sys.stderr)
        sys.exit(RUN_FAILED)
    sys.exit(status or 0)
