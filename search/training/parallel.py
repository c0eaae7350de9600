"""Data-parallel training: one run split over ``world`` processes, each training on its share of
every batch.

The processes form a ``torch.distributed`` process group that whoever starts them sets up (Ray
Train's ``TorchTrainer`` in HetNAS: gloo on CPUs, NCCL on GPUs). Every process starts from rank
0's initial weights and averages the gradients once per step, with one all-reduce. A supernet
step runs several backward passes (the sandwich rule) and ``DistributedDataParallel`` would
synchronise after each of them, so a step sums them locally and reduces once. Each process
keeps the batch-norm statistics of its own shares; rank 0 writes the checkpoint, and every
process resumes from it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from hetconv.errors import ConfigError, param
from search.training.trainer import TrainingRun


def check_workers(batch_size: int, workers: int) -> None:
    """Refuse a worker count that does not split a batch evenly: every worker trains an equal
    share, so the averaged gradient is the whole batch's."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{param('workers')} must be a positive integer, got {workers!r}")
    if batch_size % workers:
        raise ConfigError(f"{param('batch_size')} {batch_size} does not split evenly over "
                          f"{param('workers')} {workers}; pass a multiple of it (every worker "
                          f"trains an equal share of each batch)")


class DataParallel(TrainingRun):
    """A training run that is process ``rank`` of ``world`` data-parallel ones.

    Alone it trains the plain recipe; listed before another run class
    (``class DistributedSupernetRun(DataParallel, SupernetRun)``) it makes that run
    data-parallel: ``rank`` and ``world`` are taken here, the other arguments passed on.
    """

    def __init__(self, *args: Any, rank: int, world: int, **kwargs: Any) -> None:
        self.rank, self.world = rank, world
        super().__init__(*args, **kwargs)
        with torch.no_grad():  # every process starts from rank 0's initial weights
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, 0)

    def settings(self) -> dict[str, Any]:
        # Batch norm sees each worker's share of a batch: the worker count shapes the result.
        return {**super().settings(), "workers": self.world}

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        return index[self.rank::self.world]

    def reduce_gradients(self) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
