"""Wall-clock timing shared by the deploy form's layer choice, the latency profiler and bench/.

A CUDA kernel returns before it runs, so every sample synchronises the device it measures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], T], repeats: int, warmup: int = 0,
                   device: torch.device | None = None) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones) and the
    last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result
