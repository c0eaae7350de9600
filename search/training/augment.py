"""Per-batch augmentation and scaling, on whatever device the batch is on.

The data stay ``uint8`` in memory; each batch is cropped, mirrored and scaled to ``[0, 1]``
where it is trained, in a few tensor operations over the whole batch (no per-image Python loop).
The networks normalise their input themselves. The random draws come from a caller-owned
:class:`torch.Generator`, so a seeded run, and a resumed one, see the same augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_padding(input_size: int) -> int:
    """Zero padding of the random crop: the CIFAR recipe's 4 px at 32 px, scaled, at least 1."""
    return max(1, round(4 * input_size / 32))


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int,
                     hflip: bool) -> torch.Tensor:
    """Random crop of the zero-padded batch, back to its size; mirror half of it if ``hflip``.

    ``images`` is ``(B, C, H, W)`` of any dtype; padding is zero in the stored scale (black for
    ``uint8``, as torchvision pads before normalising). Draws ``2·B`` integers, plus ``B`` floats
    when ``hflip``, from ``generator`` (on its own device) and then gathers rows and columns.
    """
    b, c, h, w = images.shape
    if padding == 0 and not hflip:
        return images
    draw_on = generator.device
    shifts = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=draw_on)
    rows = shifts[0, :, None] + torch.arange(h, device=draw_on)
    cols = shifts[1, :, None] + torch.arange(w, device=draw_on)
    if hflip:
        flips = torch.rand(b, generator=generator, device=draw_on) < 0.5
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = rows.to(images.device)[:, None, :, None].expand(b, c, h, w + 2 * padding)
    cols = cols.to(images.device)[:, None, None, :].expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def unit_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images as ``dtype`` in ``[0, 1]``: ``uint8`` is divided by 255, floats are copied.

    What every network built here takes: it normalises by its training statistics itself.
    """
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    return images.to(dtype, copy=True)
