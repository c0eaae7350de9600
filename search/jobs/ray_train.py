"""Ray Train jobs: one training loop run by several workers at once, data-parallel.

Ray Train's ``TorchTrainer`` starts the workers and their process group (gloo on CPUs, NCCL
with a GPU per worker); each runs the loop, which learns its place with :func:`worker_rank` and
trains a :class:`~search.training.parallel.DataParallel` run. The one-shot supernet and
``python -m search.train --workers N`` run this way, straight from the driver: a Tune trial
around the job would hold resources its own workers need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


def worker_rank() -> tuple[int, int]:
    """This worker's rank and the number of workers, inside a Ray Train loop."""
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def fit_data_parallel(loop: Callable[[dict[str, Any]], dict[str, Any]],
                      loop_config: dict[str, Any], *, workers: int, use_gpu: bool,
                      cpus_per_worker: float, name: str, storage_path: str,
                      max_failures: int = 0) -> dict[str, Any]:
    """Run ``loop(loop_config)`` on ``workers`` Ray Train workers; rank 0's return value.

    Ray Train retries the whole worker group up to ``max_failures`` times (the loop continues
    from its checkpoint then) and keeps its run's files under ``storage_path/name``."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    # Ray Train v2 (the default) passes the loop's return value back; the stubs are v1's.
    worker: Any = loop
    trainer = TorchTrainer(
        worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures)))
    result: Any = trainer.fit()
    return dict(result.return_value or {})
