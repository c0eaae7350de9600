"""The one wall-clock timer: the deploy form's layer choice, the latency profiler and every
script in bench/ time calls with these functions.

A CUDA kernel returns before it runs, so every sample synchronises the device it measures.
:func:`seconds_per_call` is the primitive (back-to-back calls between two synchronisations);
:func:`median_seconds` and :func:`interleaved_samples` build on it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

T = TypeVar("T")
K = TypeVar("K")


def synchronize(device: torch.device | None) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], number: int,
                     device: torch.device | None = None) -> float:
    """Seconds per call of ``fn`` over ``number`` back-to-back calls: fast GPU kernels are timed
    as a run, not one launch at a time."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / number


def median_seconds(fn: Callable[[], T], repeats: int, warmup: int = 0,
                   device: torch.device | None = None) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones) and the
    last call's result."""
    results: list[T] = []

    def call() -> None:
        results[:] = [fn()]

    for _ in range(warmup):
        call()
    times = [seconds_per_call(call, 1, device) for _ in range(max(1, repeats))]
    return statistics.median(times), results[0]


def interleaved_samples(calls: Mapping[K, Callable[[], object]], device: torch.device | None,
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
