"""Training's parts: MXNet's lazy Adam for the token tables, where negatives come from, and the
softmax over the catalogue."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from export.data import PairData
from export.hyperparameters import HyperparameterError, Hyperparameters
from export.network import Object2Vec
from export.train import LazyAdam, _uniform_pool, _with_negatives, catalogue_logits, train


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


def test_negative_sampling_is_batch_uniform_or_catalogue():
    assert _hp().negative_sampling == "batch"
    with pytest.raises(HyperparameterError, match="negative_sampling"):
        _hp(negative_sampling="popular")


@pytest.mark.parametrize(
    "head",
    [
        {"comparator_list": "hadamard", "mlp_layers": 0},  # linear: one matrix product
        {"comparator_list": "hadamard,concat", "mlp_layers": 0},
        {"comparator_list": "hadamard,abs_diff", "mlp_layers": 1, "mlp_activation": "relu"},
    ],
)
def test_catalogue_logits_are_the_heads_own_on_every_pair(head):
    torch.manual_seed(0)
    model = Object2Vec(_hp(output_layer="softmax", enc_dim=8, mlp_dim=6, **head)).eval()
    queries, items = torch.randn(5, 8), torch.randn(7, 8)
    with torch.no_grad():
        found = catalogue_logits(model, queries, items)
        for i in range(5):
            out = model.mlp(model.comparator(queries[i].expand(7, 8), items))
            torch.testing.assert_close(found[i], out[:, 1] - out[:, 0], rtol=1e-5, atol=1e-5)


def test_catalogue_softmax_trains_on_positives_only():
    hp = _hp(output_layer="softmax", negative_sampling="catalogue", epochs=1)
    data = PairData([[1], [2]], [[3], [4]], np.array([1, 0]))
    with pytest.raises(ValueError, match="positives only .label 1.: 1 of 2 rows"):
        train(hp, data, progress=False, verbose=False)
    with pytest.raises(ValueError, match="output_layer=softmax"):
        train(replace(hp, output_layer="mean_squared_error"), data, verbose=False)


def test_catalogue_softmax_learns_which_item_goes_with_which_query():
    """Query q rated items 10 + q and 20 + q only: after training, each query's two items are
    its best two of the catalogue of 20."""
    in0 = [[q] for q in range(1, 11)] * 2
    in1 = [[10 + q] for q in range(1, 11)] + [[20 + q] for q in range(1, 11)]
    hp = _hp(
        output_layer="softmax",
        negative_sampling="catalogue",
        comparator_list="hadamard",
        mlp_layers=0,
        enc_dim=16,
        learning_rate=0.01,
        mini_batch_size=20,
        epochs=80,
    )
    model, reports = train(hp, PairData(in0, in1, np.ones(20)), progress=False, verbose=False)
    assert reports[-1].train_loss < 0.8  # log 2: each positive shares its query with one other
    pool = torch.tensor(sorted(set(map(tuple, in1))))
    with torch.no_grad():
        logits = catalogue_logits(model, model.enc0(torch.tensor(in0[:10])), model.enc1(pool))
    best = logits.topk(2).indices + 11  # pool row r is item 11 + r
    assert [sorted(row) for row in best.tolist()] == [[10 + q, 20 + q] for q in range(1, 11)]
