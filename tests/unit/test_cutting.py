"""Cutting a network's instances into calls: the cheapest cuts, every row exactly once."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.frontdoor.cutting import CallCost, cut


def _cost(calls, lengths, cost: CallCost) -> float:
    return sum(cost.call_s + cost.token_s * len(c) * lengths[c].max(axis=0).sum() for c in calls)


@settings(max_examples=200)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=9),
    call=st.floats(0, 50),
    token=st.floats(0.01, 5),
    max_batch=st.integers(1, 10),
)
def test_the_cuts_are_the_cheapest_and_cover_every_row_once(lengths, call, token, max_batch):
    lengths = np.array(lengths)[:, None]
    cost = CallCost(call, token)
    capped = cut(lengths, max_batch, cost)
    assert sorted(np.concatenate(capped).tolist()) == list(range(len(lengths)))
    assert all(1 <= len(c) <= max_batch for c in capped)
    # Without a batch cap, brute force: every set of cuts of the rows sorted by length.
    calls = cut(lengths, len(lengths), cost)
    order = np.argsort(lengths[:, 0], kind="stable")
    best = np.inf
    for mask in itertools.product((0, 1), repeat=len(order) - 1):
        bounds = [0] + [i + 1 for i, m in enumerate(mask) if m] + [len(order)]
        parts = [order[a:b] for a, b in itertools.pairwise(bounds)]
        best = min(best, _cost(parts, lengths, cost))
    assert _cost(calls, lengths, cost) <= best + 1e-9 * max(best, 1)


def test_no_cost_means_one_call_split_only_above_the_batch_size():
    lengths = np.array([[3], [30], [4], [29]])
    assert [c.tolist() for c in cut(lengths, 4096, None)] == [[0, 1, 2, 3]]
    assert [c.tolist() for c in cut(lengths, 3, None)] == [[0, 1, 2], [3]]
    # dear tokens: short with short, long with long
    assert sorted(sorted(c.tolist()) for c in cut(lengths, 4096, CallCost(1, 1))) == [
        [0, 2],
        [1, 3],
    ]


def test_many_distinct_lengths_are_cut_quickly_and_completely():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 5000, size=(10_000, 2))
    calls = cut(lengths, 4096, CallCost(1e-4, 1e-8))
    assert sorted(np.concatenate(calls).tolist()) == list(range(len(lengths)))


@settings(max_examples=200)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=30),
    costed=st.booleans(),
    max_tokens=st.integers(1, 400),
    max_batch=st.integers(1, 12),
)
def test_no_call_passes_the_token_budget_unless_it_is_one_row(
    lengths, costed, max_tokens, max_batch
):
    lengths = np.array(lengths)
    calls = cut(lengths, max_batch, CallCost(1.0, 0.5) if costed else None, max_tokens)
    assert sorted(np.concatenate(calls).tolist()) == list(range(len(lengths)))
    for c in calls:
        padded = len(c) * int(lengths[c].max(axis=0).sum())
        assert len(c) <= max_batch and (padded <= max_tokens or len(c) == 1)
