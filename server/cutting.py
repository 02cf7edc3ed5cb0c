"""How one network's instances are cut into calls: by what a call and a padded token cost.

A call pads every sequence to the longest in it, and on a CPU a padded position costs as much
as a real token; a call also costs a fixed amount (ONNX Runtime's dispatch, the padding and
slicing around it). `CallCost` holds the two prices for one network on this host, measured when
the front door loads (`measure`); `cut` sorts the instances by length and places the cuts that
minimise `calls x call + padded tokens x token` (exactly, below the batch size cap: cuts between
equal lengths never pay; a group above the cap is split in length order). A 1 MB body
of 3-29-token lines is cut in a call per length (padding 1.81x -> 1.00x of the real tokens);
a request of three short instances stays one call, because a second call costs more than the
padding it saves (docs/performance.md).
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


def cut(lengths: np.ndarray, max_batch_size: int, cost: CallCost | None) -> list[np.ndarray]:
    """The rows of each call, each call's in ascending order (lengths: [rows, inputs]; a call's
    padded size is its row count times the sum of its inputs' longest). No cost: one call,
    split only above max_batch_size."""
    rows = np.arange(len(lengths))
    if cost is None or len(lengths) < 2:
        return _chunks(rows, max_batch_size)
    # Whatever padding there is costs less than a call: one call. (The bound first: one NumPy
    # call, and a small request stops there.)
    if lengths.size * int(lengths.max()) * cost.token_s <= cost.call_s:
        return _chunks(rows, max_batch_size)
    key = lengths.sum(axis=1)
    if (len(key) * int(lengths.max(axis=0).sum()) - int(key.sum())) * cost.token_s <= cost.call_s:
        return _chunks(rows, max_batch_size)
    order = np.argsort(key, kind="stable")
    values, counts = np.unique(key, return_counts=True)
    if len(values) == 1:
        return _chunks(rows, max_batch_size)
    ends = np.cumsum(counts)  # rows of the sorted order up to each distinct length
    if len(values) > MAX_CUT_POINTS:
        keep = np.unique(np.linspace(0, len(values) - 1, MAX_CUT_POINTS).astype(np.int64))
        values, ends = values[keep], ends[keep]
    ends = np.concatenate([[0], ends])
    # best[j]: the cheapest way to answer the rows before cut point j; back[j]: its last cut.
    best = np.zeros(len(ends))
    back = np.zeros(len(ends), dtype=np.int64)
    for j in range(1, len(ends)):
        sizes = ends[j] - ends[:j]
        costs = (
            best[:j]
            + cost.call_s * np.ceil(sizes / max_batch_size)
            + cost.token_s * sizes * values[j - 1]
        )
        back[j] = int(np.argmin(costs))
        best[j] = costs[back[j]]
    cuts, j = [], len(ends) - 1
    while j > 0:
        cuts.append((ends[back[j]], ends[j]))
        j = back[j]
    return [
        np.sort(chunk) for a, b in reversed(cuts) for chunk in _chunks(order[a:b], max_batch_size)
    ]


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
