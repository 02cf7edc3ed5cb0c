"""A request's answers: per instance, its key (`embeddings` or `scores`) and its vector.

The usual request asks one network for every instance, so its answers are the rows of one
matrix under one key; they are kept that way, and written as JSON in one orjson call
(server.frontdoor.payload.format_response) instead of one call a vector. A request whose
instances go to several networks keeps a (key, vector) pair per instance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class Answers(Sequence):
    """A Sequence of (key, vector), one per instance, in instance order. `matrix` is not None
    when every instance has the same key and its vector is row `i` of it."""

    __slots__ = ("key", "matrix", "_pairs")

    def __init__(self, pairs: list | None = None, key: str = "", matrix: np.ndarray | None = None):
        self._pairs, self.key, self.matrix = pairs, key, matrix

    @classmethod
    def of(cls, blocks: list[tuple[str, np.ndarray, np.ndarray]], count: int) -> Answers:
        """From blocks of (key, instance indexes, their rows) that cover `count` instances."""
        keys = {key for key, _, _ in blocks}
        shapes = {(rows.shape[1:], rows.dtype) for _, _, rows in blocks}
        if len(keys) == 1 and len(shapes) == 1 and all(rows.ndim == 2 for _, _, rows in blocks):
            key, instances, rows = blocks[0]
            if len(blocks) == 1 and len(rows) == count and (instances == np.arange(count)).all():
                return cls(key=key, matrix=rows)  # one call, in order: its output as it is
            matrix = np.empty((count, rows.shape[1]), dtype=rows.dtype)
            for _, instances, rows in blocks:
                matrix[instances] = rows
            return cls(key=key, matrix=matrix)
        pairs: list = [None] * count
        for key, instances, rows in blocks:
            for i, row in zip(instances.tolist(), rows, strict=True):
                pairs[i] = (key, row)
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
