"""The optimizer of the token tables: MXNet's lazy Adam."""

import torch
from torch import nn

from export.train import LazyAdam


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
