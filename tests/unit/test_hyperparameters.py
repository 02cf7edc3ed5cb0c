import pytest

from export.hyperparameters import HyperparameterError, Hyperparameters

REQUIRED = {
    "enc0_max_seq_len": 10,
    "enc1_max_seq_len": 10,
    "enc0_vocab_size": 100,
    "enc1_vocab_size": 100,
}


def test_strings_are_parsed_like_the_hosted_service_sends_them():
    hp = Hyperparameters.from_dict(
        {k: str(v) for k, v in REQUIRED.items()}
        | {
            "enc_dim": "64",
            "comparator_list": "abs_diff,hadamard",
            "dropout": "0.1",
            "tied_token_embedding_weight": "true",
        }
    )
    assert hp.enc_dim == 64 and hp.dropout == 0.1 and hp.tied_token_embedding_weight
    assert hp.comparator_list == ("hadamard", "abs_diff")  # the hosted order, not the given one


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("enc_dim", 3, "4–10000"),
        ("enc_dim", 10001, "4–10000"),
        ("enc0_max_seq_len", 5001, "1–5000"),
        ("enc0_vocab_size", 1, "2–3000000"),
        ("enc0_layers", 5, "1–4"),
        ("enc0_cnn_filter_width", 10, "1–9"),
        ("num_classes", 31, "2–30"),
        ("mlp_layers", 11, "0–10"),
        ("enc0_network", "transformer", "hcnn"),
        ("mlp_activation", "gelu", "tanh"),
        ("comparator_list", "dot", "hadamard"),
        ("enc_dim", "wide", "not an integer"),
        ("tied_token_embedding_weight", "maybe", "true or false"),
    ],
)
def test_a_wrong_value_is_refused_naming_hyperparameter_value_and_range(name, value, words):
    with pytest.raises(HyperparameterError) as error:
        Hyperparameters.from_dict(REQUIRED | {name: value})
    message = str(error.value)
    assert name in message and str(value) in message and words in message


def test_missing_and_unknown_names_are_refused():
    with pytest.raises(HyperparameterError, match="enc1_vocab_size"):
        Hyperparameters.from_dict({k: v for k, v in REQUIRED.items() if k != "enc1_vocab_size"})
    with pytest.raises(HyperparameterError, match="enc_dimension"):
        Hyperparameters.from_dict(REQUIRED | {"enc_dimension": 8})


def test_auto_layers_and_enc1_as_enc0():
    hp = Hyperparameters.from_dict(
        REQUIRED | {"enc0_network": "bilstm", "enc1_vocab_size": 50, "enc1_max_seq_len": 7}
    )
    enc0, enc1 = hp.encoder(0), hp.encoder(1)
    assert enc0.layers == 1 and enc1.network == "bilstm" and enc1.layers == 1
    assert (enc1.vocab_size, enc1.max_seq_len) == (50, 7)  # its own vocabulary and length
    assert Hyperparameters.from_dict(REQUIRED).encoder(0).layers == 4  # hcnn


def test_pooled_embedding_forces_the_token_embedding_size_to_enc_dim():
    hp = Hyperparameters.from_dict(
        REQUIRED
        | {"enc0_network": "pooled_embedding", "enc_dim": 24, "enc0_token_embedding_dim": 300}
    )
    assert hp.encoder(0).token_embedding_dim == 24


def test_tied_weights_need_matching_tables():
    with pytest.raises(HyperparameterError, match="tied_token_embedding_weight"):
        Hyperparameters.from_dict(
            REQUIRED | {"tied_token_embedding_weight": True, "enc1_vocab_size": 99}
        )
