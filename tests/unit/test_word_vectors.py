"""Word vectors trained on the user's sentences, and the file the hosted algorithm reads."""

import json

import numpy as np
import torch

from export.word_vectors import ppmi_svd, write_glove
from tests.helpers import small_model


def _two_topics(rng: np.random.Generator) -> list[list[int]]:
    """Sentences of words 2..6 or of words 7..11, never mixed."""
    topics = (np.arange(2, 7), np.arange(7, 12))
    return [list(rng.choice(topics[i % 2], size=6)) for i in range(400)]


def test_words_that_occur_together_get_closer_vectors():
    vectors = ppmi_svd(_two_topics(np.random.default_rng(0)), vocab_size=14, dim=4)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    same = [cosine[a, b] for a in range(2, 7) for b in range(2, 7) if a != b]
    across = [cosine[a, b] for a in range(2, 7) for b in range(7, 12)]
    assert min(same) > max(across)
    assert not vectors[[0, 1, 12, 13]].any()  # padding, unknown and unseen ids stay zero
    np.testing.assert_allclose(np.linalg.norm(vectors[2:12], axis=1), 2.0, rtol=1e-5)


def test_written_vectors_load_as_a_pretrained_embedding(tmp_path):
    vocabulary = {"<pad>": 0, "<unk>": 1} | {f"w{i}": i for i in range(2, 12)}
    vectors = ppmi_svd(_two_topics(np.random.default_rng(1)), vocab_size=12, dim=8)
    assert write_glove(tmp_path / "vectors.txt", vocabulary, vectors) == 10
    (tmp_path / "vocab.json").write_text(json.dumps(vocabulary))
    model = small_model(
        enc0_vocab_size=12,
        enc1_vocab_size=12,
        enc0_pretrained_embedding_file=str(tmp_path / "vectors.txt"),
        enc0_vocab_file=str(tmp_path / "vocab.json"),
        mlp_layers=0,
        epochs=1,
    )
    table = model.enc0.embedding.weight
    torch.testing.assert_close(table[2:12], torch.from_numpy(vectors[2:12]), atol=1e-5, rtol=0)
    assert not table.requires_grad  # frozen, the hosted default
