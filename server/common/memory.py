"""Handing memory back after big requests, so a process holds its working set, not the peak
of the largest request it ever served (bench/memory_rounds.py measures it); and a garbage
collector that does not walk a bulk body's objects again and again."""

from __future__ import annotations

import ctypes
import gc

# Requests carrying more than this are followed by a trim (about a millisecond; a small
# request never pays it).
RELEASE_ABOVE_BYTES = 1 << 20
# The process's own symbols, libc's among them: ctypes.util.find_library would run
# `ldconfig -p` as a child process at import (in the launcher and in every stub).
_LIBC = ctypes.CDLL(None)


def release_memory() -> None:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim): glibc keeps
    what a big request freed for the next one, and a process keeps its peak."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


# A bulk body makes tens of thousands of acyclic containers (orjson's dicts and lists, one per
# record) that live for one execute and are freed by their reference counts. CPython's default
# collector runs a young collection every 700 allocations, walks each of them again, promotes
# the survivors and so triggers full collections over everything the process holds (ONNX
# Runtime's sessions, NumPy): measured on the documentation's 1 MB body in docs/performance.md
# ("The front door's garbage collector"). Every 10,000 allocations keeps that gain; 50,000 kept
# it too but held 80-150 MB more in the stub under maximal bodies (bench.memory_rounds).
COLLECTOR_THRESHOLDS = (10_000, 10, 10)


def quiet_collector() -> None:
    """Freezes what start-up made (never walked again) and collects young objects every
    10,000 allocations instead of 700. For a process that serves requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
