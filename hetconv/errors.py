"""The one exception type for mistakes a user can make.

Every package raises :class:`ConfigError` for bad user input (layer sizes, part vectors,
architecture files, budgets, options). It subclasses :class:`ValueError` so library callers
can catch it the usual way; the commands turn it into one line on stderr and exit status 2.

A library does not know which command called it, so its messages name *parameters*, marked
with :func:`param`; ``str(error)`` shows the parameter's name (``runtime``), and a command
shows its own flag for it (``--latency-runtime`` in ``search.run``, ``--runtime`` in
``search.profile``) through :meth:`ConfigError.render`. This module imports only the standard
library, so every package, the torch-free readers included, can import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MARK = "\x1e"  # brackets a parameter name inside a message


def param(name: str) -> str:
    """How a message names the caller's parameter ``name`` (e.g. ``input_size``)."""
    return f"{_MARK}{name}{_MARK}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message, without terminal colour codes; its type if empty:
    what a one-line message quotes of a library's or a user's exception."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def default_flag(name: str) -> str:
    """The command-line flag of a parameter where a command does not say otherwise."""
    return "--" + name.replace("_", "-")


class ConfigError(ValueError):
    """A user-caused error whose message names the problem and the fix."""

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with each marked parameter shown as a command's flag: ``flags[name]``,
        else :func:`default_flag`; with ``flags`` None, as the parameter's own name."""
        pieces = str(self.args[0] if self.args else "").split(_MARK)
        for index in range(1, len(pieces), 2):
            name = pieces[index]
            pieces[index] = name if flags is None else flags.get(name, default_flag(name))
        return "".join(pieces)

    def __str__(self) -> str:
        return self.render(None)
