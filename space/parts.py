"""Which parts the search offers a layer: the search policy, kept apart from the layer.

The layer (``hetconv``) takes any part that divides both channel counts. The search offers
only powers of two (the rule is :func:`hetconv.layer.power_of_two_parts`) up to
:data:`MAX_PART`: they nest (the K×K channels of part 2P are a subset of
those of part P, ``docs/HETCONV.md``), Optuna can treat their base-2 logarithm as an ordinal
parameter, and part 64 is the largest the paper uses.
"""

from __future__ import annotations

from hetconv.layer import power_of_two_parts

MAX_PART = 64
"""Largest part the search offers; admits the paper's P = 64 on VGG-16."""


def allowed_parts(in_channels: int, out_channels: int, cap: int = MAX_PART) -> tuple[int, ...]:
    """Powers of two that divide both channel counts, up to ``cap``."""
    return power_of_two_parts(in_channels, out_channels, cap)
