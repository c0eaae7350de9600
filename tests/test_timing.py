"""The one timer (hetconv.timing): call counts, results and rounds as its callers rely on them."""

from __future__ import annotations

import time

from hetconv.timing import interleaved_samples, median_seconds, seconds_per_call


def test_seconds_per_call_divides_a_back_to_back_run() -> None:
    calls = []
    seconds = seconds_per_call(lambda: (calls.append(1), time.sleep(0.002)), 5)
    assert len(calls) == 5
    assert 0.002 <= seconds < 0.05


def test_median_seconds_runs_warmup_untimed_and_returns_the_last_result() -> None:
    calls = []

    def fn() -> int:
        calls.append(1)
        return len(calls)

    seconds, last = median_seconds(fn, repeats=3, warmup=2)
    assert len(calls) == 5 and last == 5
    assert seconds >= 0


def test_interleaved_samples_gives_every_call_each_round_within_its_call_bounds() -> None:
    quick, slow = [], []
    samples = interleaved_samples({"quick": lambda: quick.append(1),
                                   "slow": lambda: (slow.append(1), time.sleep(0.01))},
                                  device=None, rounds=4, sample_seconds=0.02, min_calls=2,
                                  max_calls=50)
    (quick_rounds, quick_calls), (slow_rounds, slow_calls) = samples["quick"], samples["slow"]
    assert len(quick_rounds) == len(slow_rounds) == 4
    assert quick_calls == 50 and slow_calls == 2  # bounded by max_calls and min_calls
    assert min(slow_rounds) > max(quick_rounds)
