"""Right-padding of token sequences with id 0, shared by training and the server's front door."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad(sequences: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """[N, L] int64, each sequence truncated to `max_len` and right-padded with 0.

    L is the longest (truncated) sequence, at least 1, so an empty batch still has a shape the
    exported graphs accept.
    """
    lengths = np.fromiter((min(len(s), max_len) for s in sequences), dtype=np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for row, (seq, n) in enumerate(zip(sequences, lengths, strict=True)):
        out[row, :n] = seq[:n]
    return out
