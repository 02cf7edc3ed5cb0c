"""Object2Vec hyperparameters under the hosted algorithm's names, with its ranges checked.

Values may arrive as strings (the hosted service passes every hyperparameter as a string), so
each field is parsed and then checked; a bad value raises `HyperparameterError` naming the
hyperparameter, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENCODERS = ("hcnn", "bilstm", "pooled_embedding")
COMPARATORS = ("hadamard", "concat", "abs_diff")
ACTIVATIONS = ("tanh", "relu", "linear")
OUTPUT_LAYERS = ("softmax", "mean_squared_error")
OPTIMIZERS = ("adam", "adagrad", "sgd", "rmsprop", "adadelta")
AUTO_LAYERS = {"hcnn": 4, "bilstm": 1, "pooled_embedding": 1}


class HyperparameterError(ValueError):
    """A hyperparameter value outside what the hosted algorithm allows."""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything one encoder needs, resolved (`auto` and `enc1_network: enc0` applied)."""

    network: str
    vocab_size: int
    max_seq_len: int
    token_embedding_dim: int
    layers: int
    cnn_filter_width: int
    pretrained_embedding_file: str
    vocab_file: str
    freeze_pretrained_embedding: bool


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    try:
        number = int(str(value).strip())
        if isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name}={value!r} is not an integer") from None
    if number < lo or (hi is not None and number > hi):
        allowed = f"{lo}–{hi}" if hi is not None else f">= {lo}"
        raise HyperparameterError(f"{name}={value!r} is out of range: allowed {allowed}")
    return number


def _float(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name}={value!r} is not a number") from None
    if number < lo or (hi is not None and number > hi):
        allowed = f"{lo}–{hi}" if hi is not None else f">= {lo}"
        raise HyperparameterError(f"{name}={value!r} is out of range: allowed {allowed}")
    return number


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip()
    if text not in allowed:
        raise HyperparameterError(f"{name}={value!r} is not allowed: choose one of {list(allowed)}")
    return text


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise HyperparameterError(f"{name}={value!r} is not a boolean: use true or false")


def _layers(name: str, value: Any) -> str | int:
    if str(value).strip() == "auto":
        return "auto"
    return _int(name, value, 1, 4)


def _comparators(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    names = tuple(_choice("comparator_list", item, COMPARATORS) for item in items if str(item))
    if not names:
        raise HyperparameterError(f"comparator_list is empty: choose from {list(COMPARATORS)}")
    # The hosted algorithm applies them in its own fixed order, whatever order is given.
    return tuple(c for c in COMPARATORS if c in names)


NEGATIVE_SAMPLING = ("batch", "uniform", "catalogue")


@dataclass(frozen=True)
class Hyperparameters:
    """The hosted algorithm's hyperparameters; `from_dict` is the checked way to build one."""

    enc0_max_seq_len: int
    enc0_vocab_size: int
    enc1_max_seq_len: int
    enc1_vocab_size: int
    enc0_network: str = "hcnn"
    enc1_network: str = "enc0"
    enc_dim: int = 4096
    enc0_token_embedding_dim: int = 300
    enc1_token_embedding_dim: int = 300
    enc0_layers: str | int = "auto"
    enc1_layers: str | int = "auto"
    enc0_cnn_filter_width: int = 3
    enc1_cnn_filter_width: int = 3
    enc0_pretrained_embedding_file: str = ""
    enc1_pretrained_embedding_file: str = ""
    enc0_vocab_file: str = ""
    enc1_vocab_file: str = ""
    enc0_freeze_pretrained_embedding: bool = True
    enc1_freeze_pretrained_embedding: bool = True
    tied_token_embedding_weight: bool = False
    comparator_list: tuple[str, ...] = field(default=COMPARATORS)
    mlp_layers: int = 2
    mlp_dim: int = 512
    mlp_activation: str = "linear"
    output_layer: str = "softmax"
    num_classes: int = 2
    dropout: float = 0.0
    learning_rate: float = 0.0004
    mini_batch_size: int = 32
    epochs: int = 30
    optimizer: str = "adam"
    weight_decay: float = 0.0
    negative_sampling_rate: int = 0
    # Not a hosted name: where negatives come from. `batch` (the hosted way): another row's in1,
    # so an item is drawn as often as it occurs, and a model learns to rank popular items down;
    # `uniform`: any distinct in1 of the training data, equally often; `catalogue`: every
    # distinct in1 at once, a softmax over the whole catalogue for each positive (the retrieval
    # recipe, docs/neighbours.md; negative_sampling_rate unused).
    negative_sampling: str = "batch"
    early_stopping_patience: int = 3
    early_stopping_tolerance: float = 0.01

    # name -> parser; `from_dict` runs every given value through it.
    @staticmethod
    def _parsers() -> dict[str, Any]:
        parsers: dict[str, Any] = {
            "enc_dim": lambda v: _int("enc_dim", v, 4, 10000),
            "enc1_network": lambda v: _choice("enc1_network", v, ("enc0",) + ENCODERS),
            "tied_token_embedding_weight": lambda v: _bool("tied_token_embedding_weight", v),
            "comparator_list": _comparators,
            "mlp_layers": lambda v: _int("mlp_layers", v, 0, 10),
            "mlp_dim": lambda v: _int("mlp_dim", v, 2, 10000),
            "mlp_activation": lambda v: _choice("mlp_activation", v, ACTIVATIONS),
            "output_layer": lambda v: _choice("output_layer", v, OUTPUT_LAYERS),
            "num_classes": lambda v: _int("num_classes", v, 2, 30),
            "dropout": lambda v: _float("dropout", v, 0.0, 1.0),
            "learning_rate": lambda v: _float("learning_rate", v, 1e-6, 1.0),
            "mini_batch_size": lambda v: _int("mini_batch_size", v, 1, 10000),
            "epochs": lambda v: _int("epochs", v, 1, 100),
            "optimizer": lambda v: _choice("optimizer", v, OPTIMIZERS),
            "weight_decay": lambda v: _float("weight_decay", v, 0.0, 10000.0),
            "negative_sampling_rate": lambda v: _int("negative_sampling_rate", v, 0),
            "negative_sampling": lambda v: _choice("negative_sampling", v, NEGATIVE_SAMPLING),
            "early_stopping_patience": lambda v: _int("early_stopping_patience", v, 1, 10),
            "early_stopping_tolerance": lambda v: _float("early_stopping_tolerance", v, 1e-6, 0.1),
        }
        for side in ("enc0", "enc1"):
            p = side + "_"
            parsers |= {
                p + "max_seq_len": lambda v, n=p + "max_seq_len": _int(n, v, 1, 5000),
                p + "vocab_size": lambda v, n=p + "vocab_size": _int(n, v, 2, 3_000_000),
                p + "token_embedding_dim": lambda v, n=p + "token_embedding_dim": _int(
                    n, v, 2, 1000
                ),
                p + "layers": lambda v, n=p + "layers": _layers(n, v),
                p + "cnn_filter_width": lambda v, n=p + "cnn_filter_width": _int(n, v, 1, 9),
                p + "pretrained_embedding_file": str,
                p + "vocab_file": str,
                p + "freeze_pretrained_embedding": lambda v, n=p + "freeze_pretrained_embedding": (
                    _bool(n, v)
                ),
            }
        parsers["enc0_network"] = lambda v: _choice("enc0_network", v, ENCODERS)
        return parsers

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Hyperparameters:
        parsers = cls._parsers()
        unknown = sorted(set(values) - set(parsers))
        if unknown:
            raise HyperparameterError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise HyperparameterError(f"missing required hyperparameter(s): {', '.join(missing)}")
        hp = cls(**{name: parsers[name](value) for name, value in values.items()})
        hp._check_combinations()
        return hp

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["comparator_list"] = list(self.comparator_list)
        return out

    def _check_combinations(self) -> None:
        if self.tied_token_embedding_weight:
            a, b = self.encoder(0), self.encoder(1)
            if a.vocab_size != b.vocab_size or a.token_embedding_dim != b.token_embedding_dim:
                raise HyperparameterError(
                    "tied_token_embedding_weight=true needs equal vocabularies and token "
                    f"embedding sizes: enc0 has {a.vocab_size}x{a.token_embedding_dim}, "
                    f"enc1 has {b.vocab_size}x{b.token_embedding_dim}"
                )
        if self.output_layer == "mean_squared_error" and self.negative_sampling_rate:
            raise HyperparameterError(
                "negative_sampling_rate applies to classification (output_layer=softmax) only"
            )

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.output_layer == "softmax" else 1

    def encoder(self, side: int) -> EncoderSpec:
        """The resolved spec of encoder `side` (0 or 1)."""
        own = f"enc{side}_"
        # enc1_network: enc0 copies enc0's architecture; vocabulary, length and files stay enc1's.
        arch = "enc0_" if side == 1 and self.enc1_network == "enc0" else own
        network = getattr(self, arch + "network")
        layers = getattr(self, arch + "layers")
        embedding_dim = getattr(self, arch + "token_embedding_dim")
        if network == "pooled_embedding":
            embedding_dim = self.enc_dim  # as the hosted service does: the mean is the embedding
        return EncoderSpec(
            network=network,
            vocab_size=getattr(self, own + "vocab_size"),
            max_seq_len=getattr(self, own + "max_seq_len"),
            token_embedding_dim=embedding_dim,
            layers=AUTO_LAYERS[network] if layers == "auto" else layers,
            cnn_filter_width=getattr(self, arch + "cnn_filter_width"),
            pretrained_embedding_file=getattr(self, own + "pretrained_embedding_file"),
            vocab_file=getattr(self, own + "vocab_file"),
            freeze_pretrained_embedding=getattr(self, own + "freeze_pretrained_embedding"),
        )
