"""Estimating a candidate with the supernet: its batch-norm statistics re-estimated, then its
validation accuracy.

A supernet's running batch-norm statistics are averages over every network it trained, and fit
none of them; a candidate's own statistics, re-estimated on a few training batches in a
forward pass, are what make its estimate worth ranking (Once-for-All, BigNAS). The same images
serve every candidate, so estimates differ only by architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hetconv.batchnorm import reestimate_batch_norm
from hetconv.conversion import batches
from hetconv.supernet import set_parts
from search.training.augment import unit_range
from search.training.data import DataSplits, draw_calibration
from search.training.start import build_supernet
from search.training.trainer import evaluate, resolve_device
from space import Architecture

CALIBRATION_IMAGES = 2048  # training images a candidate's batch-norm statistics come from


def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Replace every batch norm's running statistics by their exact mean over ``images``
    (:func:`hetconv.batchnorm.reestimate_batch_norm`), fed in batches; leaves eval mode."""
    reestimate_batch_norm(model, (unit_range(batch)
                                  for batch in batches(model, images, batch_size)))


def calibrate(model: nn.Module, parts: Sequence[int], calibration: torch.Tensor,
              batch_size: int) -> None:
    """Set the supernet to ``parts`` with its batch norm re-estimated on ``calibration``."""
    set_parts(model, parts)
    recalibrate_batch_norm(model, calibration, batch_size)


def estimate_parts(model: nn.Module, parts: Sequence[int], calibration: torch.Tensor,
                   batch_size: int, images: torch.Tensor, labels: torch.Tensor,
                   device: torch.device) -> float:
    """The supernet's accuracy at ``parts`` on ``images``: batch norm re-estimated on
    ``calibration`` first."""
    calibrate(model, parts, calibration, batch_size)
    return evaluate(model, images, labels, device)


class SupernetEvaluator:
    """Holds one trained supernet and the data; estimates one candidate per call. A Ray actor
    in a search (the weights arrive once, through the object store), a plain object in tests."""

    def __init__(self, arch_json: str, data: DataSplits, weights: Mapping[str, torch.Tensor],
                 calibration_images: int, batch_size: int, seed: int, device: str = "auto",
                 threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.data = data
        self.model = build_supernet(Architecture.from_json(arch_json), data, weights)
        self.model.to(self.device)
        self.calibration = draw_calibration(data, calibration_images, seed)
        self.batch_size = batch_size

    def estimate(self, parts: Sequence[int]) -> float:
        """Validation accuracy of the candidate with ``parts``, batch norm re-estimated."""
        return estimate_parts(self.model, parts, self.calibration, self.batch_size,
                              self.data.val_x, self.data.val_y, self.device)
