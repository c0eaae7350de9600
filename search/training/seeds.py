"""The one rule for a seed, shared by the settings, the data split and the trainer."""

from __future__ import annotations

from hetconv.errors import ConfigError

MAX_SEED = 2**32 - 1
"""The largest seed: Optuna's samplers seed numpy's ``RandomState``, which takes no larger one
(and torch's generators overflow not far beyond)."""


def check_seed(seed: object, label: str = "seed") -> None:
    """Refuse what is not an integer from 0 to :data:`MAX_SEED`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{label} must be an integer from 0 to {MAX_SEED}, got {seed!r}")
