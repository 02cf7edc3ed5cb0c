"""A request's answers: per instance, its key (`embeddings` or `scores`) and its vector.

The usual request asks one network for every instance, so its answers are the rows of one
matrix under one key; they are kept that way (no Python object a vector), and a long JSON
Lines answer is written in one orjson call (server.frontdoor.payload.format_response) instead
of one call a line. A request whose instances go to several networks keeps a (key, vector)
pair per instance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class Answers(Sequence):
    """A Sequence of (key, vector), one per instance, in instance order. `matrix` is not None
    when every instance has the same key and its vector is row `i` of it."""

    __slots__ = ("key", "matrix", "_pairs")

    def __init__(self, pairs: list | None = None, key: str = "", matrix: np.ndarray | None = None):
        # rows written by orjson must be C-contiguous (a network's output is; a view may not be)
        self._pairs, self.key = pairs, key
        self.matrix = None if matrix is None else np.ascontiguousarray(matrix)

    @classmethod
    def of(cls, blocks: list[tuple[str, np.ndarray, np.ndarray]], count: int) -> Answers:
        """From blocks of (key, instance indexes, their rows) that cover `count` instances,
        each block's indexes ascending (a call's rows of one request are in instance order:
        server.frontdoor.dispatch.plan)."""
        key, instances, rows = blocks[0]
        if len(blocks) == 1 and len(rows) == count and rows.ndim == 2:
            # ascending, from 0 to count - 1: every instance in order, the output as it is
            if instances[0] == 0 and instances[-1] == count - 1:
                return cls(key=key, matrix=rows)
        if all(
            k == key and r.ndim == 2 and r.shape[1:] == rows.shape[1:] and r.dtype == rows.dtype
            for k, _, r in blocks
        ):
            matrix = np.empty((count, rows.shape[1]), dtype=rows.dtype)
            for _, where, part in blocks:
                matrix[where] = part
            return cls(key=key, matrix=matrix)
        pairs: list = [None] * count
        for name, where, part in blocks:
            for i, row in zip(where.tolist(), part, strict=True):
                pairs[i] = (name, row)
        return cls(pairs)

    def __len__(self) -> int:
        return len(self.matrix) if self.matrix is not None else len(self._pairs)

    def __getitem__(self, i):
        if self.matrix is None:
            return self._pairs[i]
        if isinstance(i, slice):
            return [(self.key, row) for row in self.matrix[i]]
        return self.key, self.matrix[i]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.matrix is None:
            return iter(self._pairs)
        return ((self.key, row) for row in self.matrix)

    def vectors(self) -> np.ndarray:
        """Every instance's vector, [instances, width]."""
        if self.matrix is not None:
            return self.matrix
        return np.stack([vector for _, vector in self._pairs])
