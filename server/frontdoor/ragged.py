"""Token sequences of many instances as one flat array and their lengths.

The front door keeps a request's token ids this way from parsing to padding: checking,
truncating, routing and padding 10,000 instances are then a few NumPy operations on one array,
not 10,000 small arrays (a 1 MB body: docs/performance.md). Sequence `i` is
`ids[starts[i] : starts[i] + lengths[i]]`, and the sequences lie in order, back to back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Ragged:
    ids: np.ndarray  # int64 [sum of lengths]
    lengths: np.ndarray  # int64 [n]

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int] | np.ndarray]) -> Ragged:
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        parts = [np.asarray(s, dtype=np.int64) for s in sequences]
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return cls(ids, lengths)

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return EMPTY
        return cls(
            np.concatenate([p.ids for p in parts]), np.concatenate([p.lengths for p in parts])
        )

    def __len__(self) -> int:
        return len(self.lengths)

    @cached_property
    def starts(self) -> np.ndarray:
        ends = np.cumsum(self.lengths)
        return ends - self.lengths

    def __getitem__(self, row: int) -> np.ndarray:
        """Sequence `row`, a view into `ids`."""
        start = int(self.starts[row])
        return self.ids[start : start + int(self.lengths[row])]

    def _positions(self) -> np.ndarray:
        """Each id's position within its own sequence."""
        return np.arange(len(self.ids)) - np.repeat(self.starts, self.lengths)

    def truncated(self, cap: int) -> Ragged:
        """Every sequence cut to its first `cap` ids."""
        if not len(self) or int(self.lengths.max()) <= cap:
            return self
        return Ragged(self.ids[self._positions() < cap], np.minimum(self.lengths, cap))

    def take(self, rows: np.ndarray) -> Ragged:
        """The sequences `rows` (indexes, in the order given)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (np.diff(rows) == 1).all():  # a run of rows: a view, nothing copied
            first, last = int(rows[0]), int(rows[-1]) + 1
            if first == 0 and last == len(self):
                return self
            start = int(self.starts[first])
            end = start + int(self.lengths[first:last].sum())
            return Ragged(self.ids[start:end], self.lengths[first:last])
        lengths = self.lengths[rows]
        # index of each kept id: its sequence's start, plus its position in the sequence
        firsts = np.cumsum(lengths) - lengths
        index = np.arange(int(lengths.sum())) - np.repeat(firsts - self.starts[rows], lengths)
        return Ragged(self.ids[index], lengths)

    def padded(self) -> np.ndarray:
        """[n, longest] int64, each sequence right-padded with id 0; at least one column, so
        an empty batch still has a shape the exported graphs accept."""
        width = max(int(self.lengths.max(initial=0)), 1)
        out = np.zeros((len(self), width), dtype=np.int64)
        # Row-major order of the mask's True cells is the order of `ids`.
        out[np.arange(width) < self.lengths[:, None]] = self.ids
        return out


EMPTY = Ragged(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))  # no sequences
