"""Re-estimate a network's batch-norm statistics on given images.

A network whose layers changed (converted to HetConv layers, or a supernet set to other parts)
keeps running statistics measured on the old layers' outputs; a forward pass over a few
images in training mode measures the new ones. It lives at the bottom floor so that
conversion (:func:`hetconv.conversion.convert`) and the one-shot estimates share it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def reestimate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every batch norm's running statistics by their exact mean over ``batches``
    (a cumulative average, ``momentum=None``), passed in training mode; leaves ``model`` in
    eval mode, with each batch norm's momentum as it was."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
