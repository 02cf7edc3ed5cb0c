"""The one in-process timing helper every benchmark uses (network load: bench.load).

seconds = repeat(fn, rounds=7)                  # each call's time
seconds = repeat(fn, seconds=1.0, at_least=20)  # for a while, and at least so many calls
per_second = rate(fn, seconds=2.0, per_call=64) # items a second, calls back to back
took, result = timed(fn, *args)                 # one call
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def repeat(
    fn: Callable[[], Any], rounds: int = 0, seconds: float = 0.0, at_least: int = 1
) -> list[float]:
    """Seconds of each call of `fn`: `rounds` calls, or as many as fit in `seconds` (and at
    least `at_least`)."""
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < max(rounds, at_least) or time.perf_counter() < stop:
        times.append(timed(fn)[0])
    return times


def rate(fn: Callable[[], Any], seconds: float, per_call: int = 1) -> float:
    """Items a second over `seconds` of calls back to back (`per_call` items each)."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += per_call
    return done / (time.perf_counter() - start)
