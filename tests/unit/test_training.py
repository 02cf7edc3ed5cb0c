"""Training's parts: MXNet's lazy Adam for the token tables, and where negatives come from."""

import pytest
import torch
from torch import nn

from export.data import PairData
from export.hyperparameters import HyperparameterError, Hyperparameters
from export.train import LazyAdam, _uniform_pool, _with_negatives


def _steps(optimizer_kind, weight_decay: float = 0.0, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    table = nn.Embedding(20, 4, sparse=True)
    optimizer = (
        optimizer_kind(table.parameters(), lr=0.01, weight_decay=weight_decay)
        if weight_decay
        else optimizer_kind(table.parameters(), lr=0.01)
    )
    ids = torch.tensor([[1, 3, 3], [5, 1, 7]])
    for _ in range(steps):
        optimizer.zero_grad()
        (table(ids) - 1).pow(2).sum().backward()  # not proportional to the weights
        optimizer.step()
    return table.weight.detach()


def test_lazy_adam_is_sparse_adam_without_weight_decay():
    torch.testing.assert_close(_steps(LazyAdam), _steps(torch.optim.SparseAdam))


def test_lazy_adam_decays_only_the_rows_a_batch_touched():
    torch.manual_seed(0)
    untouched = nn.Embedding(20, 4).weight.detach()[[0, 2, 4, 6, 8]]
    decayed = _steps(LazyAdam, weight_decay=0.1)
    torch.testing.assert_close(decayed[[0, 2, 4, 6, 8]], untouched)
    assert not torch.allclose(decayed[[1, 3, 5, 7]], _steps(LazyAdam)[[1, 3, 5, 7]])


def _hp(**values) -> Hyperparameters:
    base = {"enc0_max_seq_len": 3, "enc1_max_seq_len": 3, "enc0_vocab_size": 50}
    return Hyperparameters.from_dict(base | {"enc1_vocab_size": 50} | values)


def test_uniform_negatives_draw_every_distinct_in1_equally_often():
    """Rows where item 1 is 98% of the in1s: the batch's negatives are mostly 1, uniform
    ones hold each distinct sequence (truncated, padded) about equally."""
    in1 = [[1]] * 98 + [[2, 3]] + [[4, 5, 6, 7]]
    data = PairData([[1]] * 100, in1, torch.ones(100).numpy())
    hp = _hp(output_layer="softmax", negative_sampling="uniform", negative_sampling_rate=300)
    pool = _uniform_pool(hp, data)
    assert pool.tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    generator = torch.Generator().manual_seed(0)
    batch = torch.tensor([[1, 0], [1, 0]])
    in0, negatives, labels = _with_negatives(
        torch.ones(2, 1, dtype=torch.long), batch, torch.ones(2), 300, generator, pool
    )
    assert negatives.shape == (602, 3) and labels.sum() == 2 and len(in0) == 602
    drawn = [tuple(row) for row in negatives[2:].tolist()]
    shares = [drawn.count(tuple(row)) / 600 for row in pool.tolist()]
    assert all(0.25 < share < 0.42 for share in shares), shares
    assert _uniform_pool(_hp(output_layer="softmax", negative_sampling_rate=3), data) is None


def test_negative_sampling_is_batch_or_uniform():
    assert _hp().negative_sampling == "batch"
    with pytest.raises(HyperparameterError, match="negative_sampling"):
        _hp(negative_sampling="popular")
