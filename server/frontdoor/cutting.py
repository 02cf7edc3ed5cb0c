"""How one network's instances are cut into calls: by what a call and a padded token cost.

A call pads every sequence to the longest in it, and on a CPU a padded position costs as much
as a real token; a call also costs a fixed amount (ONNX Runtime's dispatch, the padding and
slicing around it). `CallCost` holds the two prices for one network on this host, measured when
the front door loads (`measure`); `cut` sorts the instances by length and places the cuts that
minimise `calls x call + padded tokens x token` (exactly, below the batch size cap: cuts between
equal lengths never pay; a group above the cap is split in length order). A big body of
mixed lengths is cut in a call per length; a request of three short instances stays one call,
because a second call costs more than the padding it saves (docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Cut points are placed between distinct lengths; beyond this many, between groups of lengths
# (the cost of placing them grows with the square of their number).
MAX_CUT_POINTS = 128


@dataclass(frozen=True)
class CallCost:
    """Seconds of one call to a network: `call + token x padded tokens`."""

    call_s: float
    token_s: float

    def __str__(self) -> str:
        return f"{self.call_s * 1e6:.1f} us a call + {self.token_s * 1e9:.1f} ns a padded token"


def _chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def cut(
    lengths: np.ndarray, max_batch_size: int, cost: CallCost | None, max_tokens: int | None = None
) -> list[np.ndarray]:
    """The rows of each call, each call's in ascending order (lengths: [rows, inputs]; a call's
    padded size is its row count times the sum of its inputs' longest). No cost: one call,
    split only above max_batch_size rows or max_tokens padded tokens (a call of one row may
    pass max_tokens: a sequence is never split)."""

    def cap(width: int) -> int:
        """The most rows of a call whose rows are `width` padded tokens."""
        if max_tokens is None:
            return max_batch_size
        return max(1, min(max_batch_size, max_tokens // max(width, 1)))

    rows = np.arange(len(lengths))
    if not len(lengths):
        return []
    # A bound on one call's padded tokens (one NumPy call: a small request stops here).
    bound = lengths.size * int(lengths.max())
    whole = max_batch_size
    if max_tokens is not None and bound > max_tokens:
        whole = cap(int(lengths.max(axis=0).sum()))
    if cost is None or len(lengths) < 2 or bound * cost.token_s <= cost.call_s:
        return _chunks(rows, whole)  # whatever padding there is costs less than a call
    key = lengths.sum(axis=1)
    if (len(key) * int(lengths.max(axis=0).sum()) - int(key.sum())) * cost.token_s <= cost.call_s:
        return _chunks(rows, whole)
    order = np.argsort(key, kind="stable")
    values, counts = np.unique(key, return_counts=True)
    if len(values) == 1:
        return _chunks(rows, whole)
    ends = np.cumsum(counts)  # rows of the sorted order up to each distinct length
    if len(values) > MAX_CUT_POINTS:
        keep = np.unique(np.linspace(0, len(values) - 1, MAX_CUT_POINTS).astype(np.int64))
        values, ends = values[keep], ends[keep]
    ends = np.concatenate([[0], ends])
    caps = np.array([cap(int(v)) for v in values])
    # best[j]: the cheapest way to answer the rows before cut point j; back[j]: its last cut.
    best = np.zeros(len(ends))
    back = np.zeros(len(ends), dtype=np.int64)
    for j in range(1, len(ends)):
        sizes = ends[j] - ends[:j]
        costs = (
            best[:j]
            + cost.call_s * np.ceil(sizes / caps[j - 1])
            + cost.token_s * sizes * values[j - 1]
        )
        back[j] = int(np.argmin(costs))
        best[j] = costs[back[j]]
    calls, j = [], len(ends) - 1
    while j > 0:
        group = order[ends[back[j]] : ends[j]]
        width = int(lengths[group].max(axis=0).sum())
        calls[:0] = [np.sort(chunk) for chunk in _chunks(group, cap(width))]
        j = back[j]
    return calls


def measure(call_for: Callable[[int, int], Callable[[], object]], width: int) -> CallCost:
    """The prices of one call on this host. `call_for(rows, width)` prepares a call of `rows`
    sequences of `width` padded tokens and returns the function that makes it, everything a
    call costs the front door included (padding, slicing, scattering); the line through the
    fastest of 20 calls of 1 x 1 and of 10 of 64 x `width` gives the two prices (the fastest:
    what other work on the host adds to a call is not the call's own cost)."""

    def fastest(rows: int, columns: int, times: int) -> float:
        call = call_for(rows, columns)
        call()  # warm-up: the first call of a shape plans its kernels
        samples = []
        for _ in range(times):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return min(samples)

    rows = 64
    small, big = fastest(1, 1, 20), fastest(rows, width, 10)
    token = max((big - small) / (rows * width - 1), 1e-12)
    return CallCost(max(small - token, 0.0), token)
