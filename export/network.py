"""The Object2Vec network in PyTorch: two encoders, a comparator and an MLP.

Token id 0 is padding, and padding never changes an answer: every encoder masks padded positions
out of its result, so a sequence gets the same vector alone, right-padded, or batched with longer
sequences. Server-side batching relies on this.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from export.hyperparameters import EncoderSpec, HyperparameterError, Hyperparameters


def padding_mask(tokens: Tensor) -> Tensor:
    """[B, L] bool, True on real tokens."""
    return tokens != 0


class PooledEmbedding(nn.Module):
    """The mean of the token embeddings over the real tokens."""

    def __init__(self, spec: EncoderSpec, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding

    separator = 1  # the flat form needs one zero position after each sequence (contract.flat)

    def forward(self, tokens: Tensor) -> Tensor:
        mask = padding_mask(tokens).unsqueeze(-1).to(torch.float32)
        summed = (self.embedding(tokens) * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1.0)

    def flat(self, tokens: Tensor, gather: Tensor) -> Tensor:
        """The same answers from contract.flat's form: [1, T] ids and a [N, L] gather."""
        row = tokens[0]
        x = self.embedding(row) * padding_mask(row).unsqueeze(-1).to(torch.float32)  # [T, E]
        counts = padding_mask(row[gather]).sum(dim=1, keepdim=True).to(torch.float32)
        return x[gather].sum(dim=1) / counts.clamp(min=1.0)


class HierarchicalCNN(nn.Module):
    """Stacked 'same' convolutions with ReLU, then max-pooling over the real positions.

    Padded positions are zeroed before every convolution, so they look exactly like the zero
    padding a lone sequence sees at its ends: the outputs at real positions do not depend on how
    much padding follows. Each layer widens the receptive field by `width - 1` tokens, which is
    the hierarchy: layer k sees phrases of 1 + k * (width - 1) tokens. Layers after the first
    add their phrases to what the layers below found (residual), so the short phrases still
    reach the pool: without it the 4-layer hcnn learned nothing that carried over to STS dev
    pairs (Pearson 0.11; 0.37 with it).
    ReLU outputs are >= 0, so zeroed padding never wins the max, and the embedding is
    non-negative with exact zeros.
    """

    def __init__(self, spec: EncoderSpec, embedding: nn.Embedding, enc_dim: int):
        super().__init__()
        self.embedding = embedding
        channels = [spec.token_embedding_dim] + [enc_dim] * spec.layers
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, spec.cnn_filter_width, padding="same")
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        # The flat form's zeros after each sequence: a kernel's reach on either side.
        self.separator = max(1, spec.cnn_filter_width - 1)
        for conv in self.convs:
            # He initialisation keeps the activations' scale through ReLU layers. PyTorch's
            # default shrinks their variance about six-fold per layer: after the 4 layers of
            # `auto`, the encodings were ~1e-3 of the input's scale and the MLP read noise.
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def _features(self, tokens: Tensor) -> Tensor:
        """[B, C, L], zero at padded positions."""
        mask = padding_mask(tokens).unsqueeze(1).to(torch.float32)  # [B, 1, L]
        x = self.embedding(tokens).transpose(1, 2)  # [B, C, L]
        for index, conv in enumerate(self.convs):
            phrases = torch.relu(conv(x * mask))
            x = phrases if index == 0 else x + phrases
        return x * mask

    def forward(self, tokens: Tensor) -> Tensor:
        return self._features(tokens).amax(dim=2)

    def flat(self, tokens: Tensor, gather: Tensor) -> Tensor:
        """The same answers from contract.flat's form: [1, T] ids and a [N, L] gather; the
        convolutions run over the real tokens and separators only."""
        features = self._features(tokens)[0].transpose(0, 1)  # [T, C]
        return features[gather].amax(dim=1)


class BiLSTM(nn.Module):
    """`layers` bidirectional LSTM layers, max-pooled over real positions, projected to enc_dim.

    A bidirectional LSTM over right-padded input is not padding-invariant by itself: the
    backward direction would read the padding first. So the backward direction runs on each
    sequence reversed within its own length (padding stays at the end), and its outputs are
    reversed back the same way.
    """

    def __init__(self, spec: EncoderSpec, embedding: nn.Embedding, enc_dim: int):
        super().__init__()
        self.embedding = embedding
        hidden = (enc_dim + 1) // 2
        sizes = [spec.token_embedding_dim] + [2 * hidden] * spec.layers
        self.forward_lstms = nn.ModuleList(
            nn.LSTM(size, hidden, batch_first=True) for size in sizes[:-1]
        )
        self.backward_lstms = nn.ModuleList(
            nn.LSTM(size, hidden, batch_first=True) for size in sizes[:-1]
        )
        self.project = nn.Linear(2 * hidden, enc_dim)

    @staticmethod
    def _reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, L]
        lengths = lengths.unsqueeze(1)
        index = torch.where(positions < lengths, lengths - 1 - positions, positions)
        return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def forward(self, tokens: Tensor) -> Tensor:
        mask = padding_mask(tokens)
        positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device).unsqueeze(0)
        lengths = (positions * mask.to(positions.dtype)).amax(dim=1)  # up to the last real token
        x = self.embedding(tokens)
        for fwd, bwd in zip(self.forward_lstms, self.backward_lstms, strict=True):
            ahead, _ = fwd(x)
            behind, _ = bwd(self._reverse_within_length(x, lengths))
            x = torch.cat([ahead, self._reverse_within_length(behind, lengths)], dim=2)
        pooled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
        return self.project(pooled)


def load_pretrained_embedding(spec: EncoderSpec, embedding: nn.Embedding) -> int:
    """Fill rows of `embedding` from a GloVe-style text file, by a JSON vocabulary.

    The vocabulary maps token -> id. Returns how many rows were filled.
    """
    vocab = json.loads(Path(spec.vocab_file).read_text())
    filled = 0
    with torch.no_grad(), open(spec.pretrained_embedding_file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, 1):
            word, *numbers = line.rstrip().split(" ")
            if word not in vocab:
                continue
            if len(numbers) != spec.token_embedding_dim:
                raise HyperparameterError(
                    f"{spec.pretrained_embedding_file}:{line_number}: vector of length "
                    f"{len(numbers)}, but the token embedding size is {spec.token_embedding_dim}"
                )
            index = int(vocab[word])
            if not 0 < index < spec.vocab_size:
                raise HyperparameterError(
                    f"{spec.vocab_file}: id {index} of {word!r} is outside 1..{spec.vocab_size - 1}"
                )
            embedding.weight[index] = torch.tensor([float(n) for n in numbers])
            filled += 1
    embedding.weight.requires_grad_(not spec.freeze_pretrained_embedding)
    return filled


def _init_pooled(embedding: nn.Embedding) -> None:
    # A pooled encoder's rows are the embeddings themselves. With PyTorch's N(0, 1) rows and a
    # large enc_dim, the comparator's products are huge, saturate the MLP and overfit within an
    # epoch; Xavier-scale rows train smoothly. (Convolutional and recurrent encoders keep
    # N(0, 1): their own layers set the scale.)
    nn.init.xavier_uniform_(embedding.weight)
    with torch.no_grad():
        embedding.weight[0] = 0


def build_encoder(spec: EncoderSpec, enc_dim: int, embedding: nn.Embedding | None = None):
    if embedding is None:
        embedding = nn.Embedding(spec.vocab_size, spec.token_embedding_dim, padding_idx=0)
        if spec.network == "pooled_embedding":
            _init_pooled(embedding)
        if spec.pretrained_embedding_file:
            load_pretrained_embedding(spec, embedding)
    if spec.network == "pooled_embedding":
        return PooledEmbedding(spec, embedding)
    if spec.network == "hcnn":
        return HierarchicalCNN(spec, embedding, enc_dim)
    return BiLSTM(spec, embedding, enc_dim)


class Comparator(nn.Module):
    """Concatenates the chosen operators on the two encodings, in the hosted order."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = names

    def output_dim(self, enc_dim: int) -> int:
        return sum(2 * enc_dim if name == "concat" else enc_dim for name in self.names)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        parts = {
            "hadamard": lambda: [a * b],
            "concat": lambda: [a, b],
            "abs_diff": lambda: [torch.abs(a - b)],
        }
        return torch.cat([t for name in self.names for t in parts[name]()], dim=1)


def _activation(name: str) -> nn.Module:
    return {"tanh": nn.Tanh(), "relu": nn.ReLU(), "linear": nn.Identity()}[name]


class Object2Vec(nn.Module):
    """enc0, enc1, comparator and MLP. `forward` gives logits (or the regression value)."""

    def __init__(self, hp: Hyperparameters):
        super().__init__()
        self.hp = hp
        spec0, spec1 = hp.encoder(0), hp.encoder(1)
        self.enc0 = build_encoder(spec0, hp.enc_dim)
        shared = self.enc0.embedding if hp.tied_token_embedding_weight else None
        self.enc1 = build_encoder(spec1, hp.enc_dim, shared)
        if hp.enc1_network == "enc0":
            # Own weights, but starting as a copy of enc0's: two independently initialised
            # encoders map a sentence into unrelated feature spaces, and the comparator's
            # hadamard / abs_diff of unrelated features carry no similarity at all until the
            # pairs teach an alignment (STS: hcnn and bilstm never learned one from 5,700
            # pairs). Token tables stay each side's own unless tied_token_embedding_weight.
            start = {
                k: v for k, v in self.enc0.state_dict().items() if not k.startswith("embedding.")
            }
            self.enc1.load_state_dict(start, strict=False)
        self.comparator = Comparator(hp.comparator_list)
        layers: list[nn.Module] = []
        width = self.comparator.output_dim(hp.enc_dim)
        for _ in range(hp.mlp_layers):
            layers += [nn.Linear(width, hp.mlp_dim), _activation(hp.mlp_activation)]
            layers += [nn.Dropout(hp.dropout)] if hp.dropout else []
            width = hp.mlp_dim
        layers.append(nn.Linear(width, hp.output_dim))
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(hp.dropout)

    def encode(self, side: int, tokens: Tensor) -> Tensor:
        return (self.enc0 if side == 0 else self.enc1)(tokens)

    def forward(self, in0: Tensor, in1: Tensor) -> Tensor:
        a = self.dropout(self.enc0(in0))
        b = self.dropout(self.enc1(in1))
        return self.mlp(self.comparator(a, b))

    def scores(self, in0: Tensor, in1: Tensor) -> Tensor:
        """What the service answers: class probabilities, or the regression value."""
        out = self.forward(in0, in1)
        return torch.softmax(out, dim=1) if self.hp.output_layer == "softmax" else out
