"""Hands a family's searchable layers their parts, in construction order."""

from __future__ import annotations

from collections.abc import Sequence

from hetconv.errors import ConfigError
from hetconv.layer import HetConv2d


class PartSupply:
    """Gives out one part per searchable layer, in order, and checks the vector's length.

    ``parts=None`` means every layer at part 1 (the standard network); then any number of layers
    may be drawn, which is how a family's searchable layers are discovered.
    """

    def __init__(self, backbone: str, parts: Sequence[int] | None) -> None:
        self.backbone = backbone
        self.parts = None if parts is None else list(parts)
        self.used = 0

    def conv(self, in_channels: int, out_channels: int, stride: int = 1) -> HetConv2d:
        """The next searchable 3×3 layer."""
        if self.parts is None:
            part = 1
        elif self.used < len(self.parts):
            part = self.parts[self.used]
        else:
            raise ConfigError(f"{self.backbone}: got {len(self.parts)} parts but it has more "
                              f"searchable layers; pass one part per searchable layer")
        self.used += 1
        return HetConv2d(in_channels, out_channels, 3, stride, part=part)

    def finish(self) -> None:
        """Fail when parts were left over."""
        if self.parts is not None and self.used != len(self.parts):
            raise ConfigError(f"{self.backbone}: got {len(self.parts)} parts but it has "
                              f"{self.used} searchable layers; pass one part per searchable layer")
