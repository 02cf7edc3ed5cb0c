"""Word vectors trained on the user's own sentences, for `pretrained_embedding_file`.

A sentence-pair set of a few thousand labelled pairs is far too small to learn what words mean
from the labels alone (STS Benchmark: the encoders memorise the training pairs and score
Pearson 0.15 on dev). The sentences themselves still say which words occur together, so the
vectors here come from them: positive pointwise mutual information of words within a window,
reduced by a truncated SVD (Levy, Goldberg and Dagan, 2015). The result is written as the
hosted algorithm reads it: a GloVe-style text file plus the JSON vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def cooccurrences(
    sentences: Iterable[list[int]], window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, weights) of word pairs within `window` tokens, weighted 1/distance."""
    rows, columns, weights = [], [], []
    for ids in sentences:
        ids = np.asarray(ids)
        for distance in range(1, window + 1):
            if len(ids) <= distance:
                break
            a, b = ids[:-distance], ids[distance:]
            rows += [a, b]
            columns += [b, a]
            weights += [np.full(2 * len(a), 1.0 / distance)]
    if not rows:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return np.concatenate(rows), np.concatenate(columns), np.concatenate(weights)


def ppmi_svd(
    sentences: list[list[int]], vocab_size: int, dim: int, window: int = 5, seed: int = 0
) -> np.ndarray:
    """[vocab_size, dim] vectors of length sqrt(dim); rows of words never seen stay zero."""
    rows, columns, weights = cooccurrences(sentences, window)
    counts = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, columns])),
        torch.from_numpy(weights),
        (vocab_size, vocab_size),
        check_invariants=True,
    ).coalesce()
    (i, j), c = counts.indices(), counts.values()
    word = torch.zeros(vocab_size, dtype=torch.float64).index_add_(0, i, c)
    # Context counts raised to 0.75 (as word2vec's negative sampling) keep rare words from
    # dominating the association scores.
    context = word**0.75
    pmi = torch.log(c * context.sum() / (word[i] * context[j]))
    keep = pmi > 0
    ppmi = torch.sparse_coo_tensor(
        torch.stack([i[keep], j[keep]]), pmi[keep], (vocab_size, vocab_size), check_invariants=True
    ).coalesce()
    torch.manual_seed(seed)
    u, s, _ = torch.svd_lowrank(ppmi, q=min(dim, vocab_size - 1), niter=4)
    vectors = (u * s.sqrt()).numpy()
    vectors[(word == 0).numpy()] = 0  # the SVD leaves rounding noise there
    # Length sqrt(dim): components of about unit size, the scale of a token embedding's own
    # N(0, 1) initialisation, which the encoders' layers are initialised for.
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) / np.sqrt(vectors.shape[1])
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    if vectors.shape[1] < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - vectors.shape[1])))
    return vectors.astype(np.float32)


def write_glove(path: Path, vocabulary: dict[str, int], vectors: np.ndarray) -> int:
    """One `word v1 v2 ...` line per word that has a vector (never padding, id 0); returns how
    many were written."""
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for word, index in vocabulary.items():
            if 0 < index < len(vectors) and vectors[index].any():
                out.write(word + " " + " ".join(f"{x:.6f}" for x in vectors[index]) + "\n")
                written += 1
    return written
