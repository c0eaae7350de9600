"""The one exception type for mistakes a user can make.

Every package raises :class:`ConfigError` for bad user input (layer sizes, part vectors,
architecture files, budgets, CLI options). It subclasses :class:`ValueError` so library callers
can catch it the usual way; the CLIs turn it into one line on stderr and exit status 2.
"""


class ConfigError(ValueError):
    """A user-caused error whose message names the problem and the fix."""
