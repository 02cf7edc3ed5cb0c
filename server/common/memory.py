"""Handing memory back after big requests, so a process holds its working set, not the peak
of the largest request it ever served (bench/memory_rounds.py measures it)."""

from __future__ import annotations

import ctypes

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
