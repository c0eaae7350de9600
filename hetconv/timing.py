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
K = TypeVar("K")


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


def interleaved_samples(calls: dict[K, Callable[[], object]], device: torch.device | None,
                        rounds: int, sample_seconds: float, min_calls: int = 3,
                        max_calls: int = 400) -> dict[K, tuple[list[float], int]]:
    """Each call's median seconds in each of ``rounds`` rounds, and its calls per round.

    Other work may share the machine, and a burst of it slows whatever runs at that moment.
    So the calls take turns within every round (a burst hits them alike), and each round's
    figure is the median of about ``sample_seconds`` of back-to-back calls (never fewer than
    ``min_calls`` nor more than ``max_calls``). Callers reduce the rounds as they need: the
    quickest round is the machine when quiet, the median the machine as it is.
    """
    per_round: dict[K, int] = {}
    for key, call in calls.items():
        estimate, _ = median_seconds(call, 3, warmup=3, device=device)
        wanted = sample_seconds / max(estimate, 1e-7)
        per_round[key] = int(min(max_calls, max(min_calls, wanted)))
    samples: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            seconds, _ = median_seconds(call, per_round[key], warmup=1, device=device)
            samples[key].append(seconds)
    return {key: (samples[key], per_round[key]) for key in calls}
