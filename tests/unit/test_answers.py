"""A request's answers kept as one matrix (server.frontdoor.answers) are written byte for byte
as the general path writes them a vector at a time."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from contract.names import JSON, JSONLINES
from server.frontdoor.answers import Answers
from server.frontdoor.payload import MATRIX_ROWS, format_response

_matrices = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        st.tuples(st.sampled_from([1, 2, 5, MATRIX_ROWS, MATRIX_ROWS + 3]), st.integers(0, 5)),
        elements=st.floats(width=32 if dtype == np.float32 else 64),
    )
)


@given(
    matrix=_matrices,
    key=st.sampled_from(["embeddings", "scores"]),
    accept=st.sampled_from([JSON, JSONLINES]),
)
def test_a_matrix_is_written_as_its_rows_are(matrix, key, accept):
    pairs = [(key, row) for row in matrix]
    assert format_response(Answers(key=key, matrix=matrix), accept) == format_response(
        pairs, accept
    )
    # a view of a bigger matrix (not contiguous) too
    wide = np.repeat(matrix, 2, axis=1)[:, ::2]
    assert format_response(Answers(key=key, matrix=wide), accept) == format_response(pairs, accept)


@given(
    matrix=_matrices,
    cuts=st.lists(st.integers(0, 6), max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_blocks_in_any_order_make_the_matrix(matrix, cuts, order):
    """Calls answer a request's instances in blocks; the answers are its rows in order."""
    count = len(matrix)
    shuffled = np.array(order.sample(range(count), count))
    edges = sorted({0, count, *(c for c in cuts if c < count)})
    # each block's instances ascending, as a call's rows of one request are
    parts = [np.sort(shuffled[a:b]) for a, b in itertools.pairwise(edges)]
    blocks = [("embeddings", part, matrix[part]) for part in parts]
    answers = Answers.of(blocks, count)
    assert answers.matrix is not None
    np.testing.assert_array_equal(answers.vectors(), matrix)
    assert [k for k, _ in answers] == ["embeddings"] * count


def test_mixed_keys_keep_a_pair_each():
    blocks = [
        ("embeddings", np.array([0, 2]), np.ones((2, 3), np.float32)),
        ("scores", np.array([1]), np.zeros((1, 2), np.float32)),
    ]
    answers = Answers.of(blocks, 3)
    assert answers.matrix is None
    assert [k for k, _ in answers] == ["embeddings", "scores", "embeddings"]
    assert answers[1][1].tolist() == [0.0, 0.0]
