"""Which parts the search offers a layer: the search policy, kept apart from the layer.

The layer (``hetconv``) takes any part that divides both channel counts. The search offers
only powers of two up to :data:`MAX_PART`: they nest (the K×K channels of part 2P are a subset of
those of part P, ``docs/HETCONV.md``), Optuna can treat their base-2 logarithm as an ordinal
parameter, and part 64 is the largest the paper uses.
"""

from __future__ import annotations

MAX_PART = 64
"""Largest part the search offers; admits the paper's P = 64 on VGG-16."""


def allowed_parts(in_channels: int, out_channels: int, cap: int = MAX_PART) -> tuple[int, ...]:
    """Powers of two that divide both channel counts, up to ``cap``."""
    parts, part = [], 1
    while part <= cap and in_channels % part == 0 and out_channels % part == 0:
        parts.append(part)
        part *= 2
    return tuple(parts)
