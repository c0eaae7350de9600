"""What every HetNAS command line shares: one-line errors and exit status 2 for bad input."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from hetconv.errors import ConfigError

USAGE_ERROR = 2
RUN_FAILED = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def macs_amount(text: str) -> float:
    """Parse a MACs figure such as ``3e8`` or ``300000000`` for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of MACs; write e.g. 3e8") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number of MACs")
    return value


def milliseconds(text: str) -> float:
    """Parse a latency budget such as ``2.5`` (milliseconds) for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of milliseconds; write e.g. 2.5") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number of ms")
    return value


def run_cli(main: Callable[[], int | None], prog: str,
            failures: tuple[type[Exception], ...] = ()) -> NoReturn:
    """Run ``main``; a :class:`ConfigError` becomes one line on stderr and exit status 2.

    Exceptions in ``failures`` (a run that went wrong, not bad input) exit with status 1.
    """
    try:
        status = main()
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except failures as error:
        print(f"{prog}: failed: {error}", file=sys.stderr)
        sys.exit(RUN_FAILED)
    sys.exit(status or 0)
