import json

import numpy as np
import pytest
import torch

from contract.padding import pad
from export import demo
from export.data import PairData
from export.hyperparameters import Hyperparameters
from export.network import Object2Vec
from export.train import train
from tests.helpers import SMALL_MODEL, small_model

BASE = SMALL_MODEL
small = small_model


ENCODER_SETUPS = [
    {"enc0_network": "pooled_embedding"},
    {"enc0_network": "hcnn"},
    {"enc0_network": "hcnn", "enc0_layers": 1, "enc0_cnn_filter_width": 4},  # even width
    {"enc0_network": "bilstm"},
    {"enc0_network": "bilstm", "enc0_layers": 3},
]


@pytest.mark.parametrize("setup", ENCODER_SETUPS, ids=lambda s: "-".join(map(str, s.values())))
def test_padding_never_changes_an_answer(setup):
    model = small(**setup)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 300, size=n).tolist() for n in (1, 5, 17, 33)]
    with torch.no_grad():
        alone = [model.encode(0, torch.tensor([s]))[0] for s in sequences]
        batched = model.encode(0, torch.from_numpy(pad(sequences, 40)))
        extra = np.zeros((len(sequences), 40), dtype=np.int64)
        extra[:, :33] = pad(sequences, 40)
        padded_more = model.encode(0, torch.from_numpy(extra))
    for i, vector in enumerate(alone):
        torch.testing.assert_close(batched[i], vector, atol=1e-5, rtol=0)
        torch.testing.assert_close(padded_more[i], vector, atol=1e-5, rtol=0)
    assert not torch.allclose(alone[0], alone[1])  # the encoder is not constant


def test_empty_sequence_gets_a_finite_vector():
    for setup in ENCODER_SETUPS:
        with torch.no_grad():
            out = small(**setup).encode(0, torch.zeros((2, 3), dtype=torch.int64))
        assert torch.isfinite(out).all()


def test_hcnn_embeddings_are_non_negative_as_the_hosted_ones():
    with torch.no_grad():
        out = small(enc0_network="hcnn").encode(0, torch.tensor([[5, 6, 7, 8]]))
    assert (out >= 0).all()


def test_enc1_as_enc0_has_the_same_architecture_and_its_own_weights():
    model = small(enc0_network="bilstm")
    assert type(model.enc1) is type(model.enc0)
    assert model.enc1.embedding is not model.enc0.embedding
    tokens = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert not torch.allclose(model.encode(0, tokens), model.encode(1, tokens))


@pytest.mark.parametrize("network", ["hcnn", "bilstm"])
def test_enc1_as_enc0_starts_from_enc0s_weights_and_keeps_its_own(network):
    model = small(enc0_network=network, tied_token_embedding_weight=True)
    tokens = torch.tensor([[3, 4, 5]])
    with torch.no_grad():  # one table, one starting point: the same sentence, the same vector
        torch.testing.assert_close(model.encode(0, tokens), model.encode(1, tokens))
    shared = {id(p) for p in model.enc0.parameters()} & {id(p) for p in model.enc1.parameters()}
    assert shared == {id(model.enc0.embedding.weight)}  # the rest are copies, not shared


def test_tied_token_embedding_weight_shares_one_table():
    model = small(
        tied_token_embedding_weight=True,
        enc1_network="pooled_embedding",
        enc0_network="pooled_embedding",
    )
    assert model.enc0.embedding is model.enc1.embedding
    tokens = torch.tensor([[3, 4, 5]])
    with torch.no_grad():  # pooled encoders with one table give equal vectors
        torch.testing.assert_close(model.encode(0, tokens), model.encode(1, tokens))


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_embeddings_load_and_freeze(tmp_path, freeze):
    vocab = {"<pad>": 0, "cat": 1, "dog": 2, "fish": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    vectors = {"cat": [0.5] * 8, "dog": [-0.25] * 8, "bird": [9.0] * 8}
    (tmp_path / "glove.txt").write_text(
        "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items())
    )
    model = small(
        enc0_pretrained_embedding_file=str(tmp_path / "glove.txt"),
        enc0_vocab_file=str(tmp_path / "vocab.json"),
        enc0_freeze_pretrained_embedding=freeze,
        mlp_layers=0,
        epochs=1,
    )
    table = model.enc0.embedding.weight
    torch.testing.assert_close(table[1], torch.full((8,), 0.5))
    torch.testing.assert_close(table[2], torch.full((8,), -0.25))
    assert table.requires_grad is not freeze


def test_frozen_pretrained_table_does_not_move_in_training(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 1, "b": 2}))
    (tmp_path / "glove.txt").write_text("a " + " ".join(["0.1"] * 8) + "\n")
    hp = Hyperparameters.from_dict(
        BASE
        | {
            "enc0_pretrained_embedding_file": str(tmp_path / "glove.txt"),
            "enc0_vocab_file": str(tmp_path / "vocab.json"),
            "epochs": 1,
        }
    )
    data = demo.synthetic_pairs(64, seed=0)
    data.in0 = [[t % 300 or 1 for t in s] for s in data.in0]
    data.in1 = [[t % 300 or 1 for t in s] for s in data.in1]
    torch.manual_seed(0)  # train() seeds the same way, so both tables start equal
    before = Object2Vec(hp).enc0.embedding.weight.detach().clone()
    model, _ = train(hp, data, seed=0, progress=False)
    torch.testing.assert_close(model.enc0.embedding.weight.detach(), before)


def test_a_short_training_run_lowers_the_loss():
    """Ratings that are a user effect plus an item effect: learnable by pooled encoders."""
    rng = np.random.default_rng(3)
    users, items = rng.integers(1, 50, 2000), rng.integers(1, 80, 2000)
    effect_u, effect_i = rng.normal(0, 1, 50), rng.normal(0, 1, 80)
    data = PairData(
        [[int(u)] for u in users],
        [[int(i)] for i in items],
        (3 + effect_u[users] + effect_i[items]).astype(np.float32),
    )
    hp = Hyperparameters.from_dict(
        {
            "enc0_network": "pooled_embedding",
            "enc1_network": "pooled_embedding",
            "enc0_vocab_size": 50,
            "enc1_vocab_size": 80,
            "enc0_max_seq_len": 1,
            "enc1_max_seq_len": 1,
            "enc_dim": 16,
            "mlp_layers": 1,
            "mlp_dim": 32,
            "mlp_activation": "tanh",
            "output_layer": "mean_squared_error",
            "learning_rate": 0.01,
            "epochs": 3,
        }
    )
    _, reports = train(hp, data, progress=False)
    assert reports[-1].train_loss < 0.5 * reports[0].train_loss
