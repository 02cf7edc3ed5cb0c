"""Flat token sequences: every operation agrees with the same done sequence by sequence."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from contract.padding import pad
from server.frontdoor.ragged import Ragged

_sequences = st.lists(st.lists(st.integers(1, 50), min_size=0, max_size=7), max_size=9)


@given(sequences=_sequences, cap=st.integers(1, 8), data=st.data())
def test_ragged_operations_agree_with_per_sequence_ones(sequences, cap, data):
    ragged = Ragged.of(sequences)
    assert len(ragged) == len(sequences)
    assert [ragged[i].tolist() for i in range(len(ragged))] == sequences
    truncated = ragged.truncated(cap)
    assert [truncated[i].tolist() for i in range(len(truncated))] == [s[:cap] for s in sequences]
    rows = data.draw(st.lists(st.integers(0, max(len(sequences) - 1, 0)), max_size=12))
    rows = rows if sequences else []
    taken = ragged.take(np.array(rows, dtype=np.int64))
    assert [taken[i].tolist() for i in range(len(taken))] == [sequences[r] for r in rows]
    # the padded array is the one contract.padding builds sequence by sequence
    np.testing.assert_array_equal(ragged.padded(), pad(sequences, 1 << 30))
    halves = [
        Ragged.of(sequences[: len(sequences) // 2]),
        Ragged.of(sequences[len(sequences) // 2 :]),
    ]
    joined = Ragged.concat(halves)
    assert [joined[i].tolist() for i in range(len(joined))] == sequences


def test_views_share_the_flat_array():
    ragged = Ragged.of([[1, 2], [3, 4, 5]])
    ragged[1][:] = 9
    assert ragged.ids.tolist() == [1, 2, 9, 9, 9]
