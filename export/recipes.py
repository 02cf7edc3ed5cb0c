"""Recipes measured on public data, and how a ranking of recommendations is scored.

One source for what the docs print, the benchmarks train and the tests check:
docs/neighbours.md's retrieval recipe is MOVIELENS_RETRIEVAL, `python -m bench.neighbours`
serves it, and tests/unit/test_recipes.py trains it on a slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# MovieLens 100k as `export.converters movielens --task retrieval` writes it: every training
# rating a positive, scored against the whole catalogue (a softmax over the 1,682 movies).
# Negatives from the batch (the hosted way) draw a movie as often as it is rated and teach the
# model to rank popular movies down; ten uniform negatives a positive with binary cross-entropy
# ranked worse than the softmax (docs/neighbours.md). The head is linear (hadamard, no hidden
# layer), so the served ranking is one matrix product over the catalogue, exactly.
MOVIELENS_RETRIEVAL: dict[str, str] = {
    "enc0_network": "pooled_embedding",
    "enc1_network": "pooled_embedding",
    "enc0_vocab_size": "944",
    "enc1_vocab_size": "1683",
    "enc0_max_seq_len": "1",
    "enc1_max_seq_len": "1",
    "output_layer": "softmax",
    "negative_sampling": "catalogue",
    "comparator_list": "hadamard",
    "mlp_layers": "0",
    "enc_dim": "128",
    "learning_rate": "0.002",
    "mini_batch_size": "512",
    "epochs": "14",
    "weight_decay": "0.0001",
}


def assignments(recipe: Mapping[str, str]) -> list[str]:
    """The recipe as export.train's command line writes it: name=value."""
    return [f"{name}={value}" for name, value in recipe.items()]


def ranking_quality(
    ranked: Mapping[int, Sequence[int]],
    liked: Mapping[int, set],
    seen: Mapping[int, set],
    at: int = 10,
) -> tuple[float, float]:
    """(hit rate@at, NDCG@at) over the users of `liked`: each user's ranking with the items
    they were trained on left out, against the held-out items they liked."""
    hits, gains = [], []
    for user, wanted in liked.items():
        top = [item for item in ranked[user] if item not in seen[user]][:at]
        relevant = [item in wanted for item in top]
        hits.append(any(relevant))
        dcg = sum(1 / np.log2(i + 2) for i, r in enumerate(relevant) if r)
        ideal = sum(1 / np.log2(i + 2) for i in range(min(len(wanted), at)))
        gains.append(dcg / ideal)
    return float(np.mean(hits)), float(np.mean(gains))
