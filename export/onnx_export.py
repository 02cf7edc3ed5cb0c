"""Export a checkpoint into the model repository as ONNX graphs that verify themselves.

    python -m export.onnx_export model.pt [--repository model_repository]

Writes enc0/1/model.onnx, enc1/1/model.onnx (token ids -> embedding), pair/1/model.onnx (both
token lists -> scores) and facts.json; for hcnn and pooled_embedding encoders also their flat
and ragged forms (contract.flat, export.ragged); a catalogue index already in the repository is
rebuilt with the new enc1 (export.neighbours). Each graph is checked by ONNX's checker and run
by ONNX Runtime against PyTorch on several batch sizes and lengths; a graph that disagrees by
more than the tolerance is refused and nothing is written.

The tolerance is relative to the outputs' size: the largest difference is divided by the
largest output magnitude of the same feed, or by 1 where outputs are smaller (scores,
probabilities). float32 keeps about 7 significant digits, so a deep encoder whose outputs reach
tens or hundreds differs from PyTorch by round-off alone beyond any fixed absolute bound (the
realistic benchmark model, hcnn with residual layers: 1.5e-05 absolute), while a wrong weight
or operator moves outputs by far more than 1e-5 of their size.
"""

from __future__ import annotations

import argparse
import io
import itertools
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from contract.facts import Facts
from contract.flat import (
    FLAT_FILE,
    FLAT_INPUTS,
    RAGGED_FILE,
    RAGGED_LENGTHS,
    SEPARATOR_KEY,
    flat_layout,
)
from contract.names import (
    ENCODER_INPUT,
    ENCODER_MODELS,
    ENCODER_OUTPUT,
    PAIR_INPUTS,
    PAIR_MODEL,
    PAIR_OUTPUT,
)
from contract.neighbours import HEAD_FILE, HEAD_INPUTS, NEIGHBOURS_MODEL, Catalogue
from contract.padding import pad
from export import checkpoint, neighbours
from export.network import Object2Vec
from export.ragged import ragged_graph

TOLERANCE = 1e-5
OPSET = 17


class ExportMismatch(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


def guard(tokens: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens safe to look up, which rows are valid) for ids straight from a caller.

    The networks can be called directly, and on the NGC image the C++ ONNX Runtime backend
    checks nothing: an id out of range would fail the whole batch (or, negative, wrap around
    and answer silently). So the graph itself replaces bad ids by padding and marks their row
    invalid; a row is valid when every id is in [0, vocab_size) and it has at least one
    position. One padding column is appended so an empty sequence still has a shape every
    encoder accepts; padding never changes an answer.
    """
    in_range = (tokens >= 0) & (tokens < vocab_size)
    positions = torch.ones_like(tokens).sum(dim=1)
    valid = in_range.all(dim=1) & (positions > 0)
    safe = torch.where(in_range, tokens, torch.zeros_like(tokens))
    column = torch.zeros_like(tokens.sum(dim=1, keepdim=True))  # [N, 1] even when L is 0
    return torch.cat([safe, column], dim=1), valid


def _invalid_as_nan(output: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Rows of invalid input answered with NaN: defined, and no batch-mate is touched."""
    return torch.where(valid.unsqueeze(1), output, torch.full_like(output, float("nan")))


class _EncoderGraph(nn.Module):
    def __init__(self, model: Object2Vec, side: int):
        super().__init__()
        self.model, self.side = model, side
        self.vocab_size = (model.hp.enc0_vocab_size, model.hp.enc1_vocab_size)[side]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        safe, valid = guard(tokens, self.vocab_size)
        return _invalid_as_nan(self.model.encode(self.side, safe), valid)


class _FlatEncoderGraph(nn.Module):
    """An encoder's flat form (contract.flat), with the same id guard: a sequence holding an id
    outside the vocabulary is answered with NaN, its batch-mates untouched."""

    def __init__(self, model: Object2Vec, side: int):
        super().__init__()
        self.encoder = model.enc0 if side == 0 else model.enc1
        self.vocab_size = (model.hp.enc0_vocab_size, model.hp.enc1_vocab_size)[side]

    def forward(self, tokens: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
        in_range = (tokens >= 0) & (tokens < self.vocab_size)
        safe = torch.where(in_range, tokens, torch.zeros_like(tokens))
        valid = in_range[0][gather].all(dim=1)
        return _invalid_as_nan(self.encoder.flat(safe, gather), valid)


class _PairGraph(nn.Module):
    def __init__(self, model: Object2Vec):
        super().__init__()
        self.model = model

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        hp = self.model.hp
        safe0, valid0 = guard(in0, hp.enc0_vocab_size)
        safe1, valid1 = guard(in1, hp.enc1_vocab_size)
        return _invalid_as_nan(self.model.scores(safe0, safe1), valid0 & valid1)


class _HeadGraph(nn.Module):
    """The pair network after its encoders: two encodings -> the answer's scores (the
    comparator and the MLP). The catalogue index ranks items by it (export.neighbours)."""

    def __init__(self, model: Object2Vec):
        super().__init__()
        self.model = model

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        out = self.model.mlp(self.model.comparator(in0, in1))
        return torch.softmax(out, dim=1) if self.model.hp.output_layer == "softmax" else out


@dataclass
class GraphReport:
    name: str
    bytes: int
    max_difference: float  # |onnxruntime - torch| over the outputs' size (or 1)
    seconds: float


def facts_of(model: Object2Vec) -> Facts:
    hp = model.hp
    return Facts(
        vocab_sizes=(hp.enc0_vocab_size, hp.enc1_vocab_size),
        max_seq_lens=(hp.enc0_max_seq_len, hp.enc1_max_seq_len),
        enc_dim=hp.enc_dim,
        output_layer=hp.output_layer,
        output_dim=hp.output_dim,
    )


def _to_onnx(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    names: Sequence[str],
    output: str,
    metadata: dict[str, str] | None = None,
    axes: dict[str, dict[int, str]] | None = None,
) -> bytes:
    """The checked ONNX graph of `module`; by default every input [batch, its length] and the
    output [batch, ...]."""
    buffer = io.BytesIO()
    if axes is None:
        axes = {name: {0: "batch", 1: f"{name}_length"} for name in names} | {output: {0: "batch"}}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is legacy, and about LSTM batch sizes; the
        # verification below runs several batch sizes, which is what those warnings ask for.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        torch.onnx.export(
            module,
            inputs,
            buffer,
            input_names=list(names),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _random_tokens(rng: np.random.Generator, batch: int, length: int, vocab: int) -> np.ndarray:
    """Random sequences of random lengths up to `length`, right-padded: real serving batches."""
    seqs = [rng.integers(1, vocab, size=rng.integers(1, length + 1)).tolist() for _ in range(batch)]
    seqs[0] = rng.integers(1, vocab, size=length).tolist()  # one full row fixes the width
    return pad(seqs, length)


def verification_inputs(
    facts: Facts, samples: Sequence[tuple[list[int], list[int]]] = (), seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of padded token arrays: the given real samples, then random ones of several shapes."""
    rng = np.random.default_rng(seed)
    cases = []
    if samples:
        cases.append(
            (
                pad([s[0] for s in samples], facts.max_seq_lens[0]),
                pad([s[1] for s in samples], facts.max_seq_lens[1]),
            )
        )
    for batch in (1, 3, 17):
        for length in (1, 7, 40):
            cases.append(
                tuple(
                    _random_tokens(
                        rng, batch, min(length, facts.max_seq_lens[side]), facts.vocab_sizes[side]
                    )
                    for side in (0, 1)
                )
            )
    # The id guard: rows with a negative id and an id at the vocabulary size, beside good rows.
    bad = [_random_tokens(rng, 4, 5, facts.vocab_sizes[side]) for side in (0, 1)]
    bad[0][1, 2], bad[1][2, 0] = -3, facts.vocab_sizes[1]
    cases.append(tuple(bad))
    return cases


def _verify(
    name: str, graph: bytes, module: nn.Module, feeds: list[dict[str, np.ndarray]], tolerance: float
) -> float:
    with torch.no_grad():
        expected = [module(*(torch.from_numpy(v) for v in feed.values())) for feed in feeds]
    return _verify_against(name, graph, feeds, expected, tolerance)


def _verify_against(
    name: str,
    graph: bytes,
    feeds: list[dict[str, np.ndarray]],
    expected: list[torch.Tensor],
    tolerance: float,
) -> float:
    """The largest difference of ONNX Runtime's answers to `feeds` from `expected`, over the
    outputs' size (or 1); ExportMismatch above `tolerance`."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed, reference in zip(feeds, expected, strict=True):
        wanted = reference.detach().numpy()
        (actual,) = session.run(None, feed)
        if not np.array_equal(np.isnan(actual), np.isnan(wanted)):
            raise ExportMismatch(f"{name}: ONNX Runtime and PyTorch reject different rows")
        difference = float(np.nan_to_num(np.abs(actual - wanted), nan=0.0).max())
        scale = max(1.0, float(np.nan_to_num(np.abs(wanted), nan=0.0).max()))
        worst = max(worst, difference / scale)
    if not worst <= tolerance:
        raise ExportMismatch(
            f"{name}: ONNX Runtime differs from PyTorch by {worst:.3g} of the outputs' size "
            f"(> {tolerance:g}); the model was not written"
        )
    return worst


def export(
    model: Object2Vec,
    repository: Path,
    samples: Sequence[tuple[list[int], list[int]]] = (),
    tolerance: float = TOLERANCE,
) -> list[GraphReport]:
    """Exports, verifies and only then writes the three graphs and facts.json."""
    model = model.eval()
    facts = facts_of(model)
    cases = verification_inputs(facts, samples)
    example = tuple(torch.from_numpy(a) for a in max(cases, key=lambda case: case[0].size))
    plans = [
        (
            ENCODER_MODELS[side],
            _EncoderGraph(model, side).eval(),
            (example[side],),
            [ENCODER_INPUT],
            ENCODER_OUTPUT,
            [{ENCODER_INPUT: case[side]} for case in cases],
        )
        for side in (0, 1)
    ]
    plans.append(
        (
            PAIR_MODEL,
            _PairGraph(model).eval(),
            example,
            list(PAIR_INPUTS),
            PAIR_OUTPUT,
            [dict(zip(PAIR_INPUTS, case, strict=True)) for case in cases],
        )
    )
    # The head's feeds: the encodings of the same cases (bad ids made padding).
    with torch.no_grad():
        encoded = [
            tuple(
                model.encode(
                    side, torch.from_numpy(np.clip(case[side], 0, facts.vocab_sizes[side] - 1))
                ).numpy()
                for side in (0, 1)
            )
            for case in cases
        ]
    plans.append(
        (
            f"{PAIR_MODEL}/1/{HEAD_FILE}",
            _HeadGraph(model).eval(),
            tuple(torch.from_numpy(a) for a in max(encoded, key=lambda e: e[0].shape[0])),
            list(HEAD_INPUTS),
            PAIR_OUTPUT,
            [dict(zip(HEAD_INPUTS, e, strict=True)) for e in encoded],
        )
    )
    reports, graphs = [], {}
    for name, module, inputs, input_names, output, feeds in plans:
        start = time.perf_counter()
        axes = None
        if name.endswith(HEAD_FILE):
            axes = {n: {0: "batch"} for n in (*input_names, output)}
        graph = _to_onnx(module, inputs, input_names, output, axes=axes)
        diff = _verify(name, graph, module, feeds, tolerance)
        graphs[name if "/" in name else f"{name}/1/model.onnx"] = graph
        label = name.replace(f"/1/{HEAD_FILE}", " head")
        reports.append(GraphReport(label, len(graph), diff, time.perf_counter() - start))
    for side in (0, 1):
        encoder = model.enc0 if side == 0 else model.enc1
        if not hasattr(encoder, "flat"):
            continue  # bilstm: its time steps are padded by nature; calls are cut by length
        start = time.perf_counter()
        name = f"{ENCODER_MODELS[side]}/1/{FLAT_FILE}"
        feeds = [_flat_feed(case[side], encoder.separator) for case in cases]
        example_feed = max(feeds, key=lambda feed: feed[FLAT_INPUTS[1]].size)
        graph = _to_onnx(
            _FlatEncoderGraph(model, side).eval(),
            tuple(torch.from_numpy(a) for a in example_feed.values()),
            FLAT_INPUTS,
            ENCODER_OUTPUT,
            {SEPARATOR_KEY: str(encoder.separator)},
            {
                "tokens": {1: "positions"},
                "gather": {0: "batch", 1: "longest"},
                ENCODER_OUTPUT: {0: "batch"},
            },
        )
        # Checked against the padded graph's module on the same sequences: the same answers.
        padded = _EncoderGraph(model, side).eval()
        with torch.no_grad():
            reference = [padded(torch.from_numpy(case[side])) for case in cases]
        diff = _verify_against(name, graph, feeds, reference, tolerance)
        graphs[name] = graph
        reports.append(
            GraphReport(
                f"{ENCODER_MODELS[side]} flat", len(graph), diff, time.perf_counter() - start
            )
        )
        # Its ragged form (export.ragged), fed as Triton's ragged batching feeds it: each
        # sequence its own request, and the same rows as padded [B, L] requests.
        start = time.perf_counter()
        ragged = ragged_graph(graph, encoder.separator)
        name = f"{ENCODER_MODELS[side]}/1/{RAGGED_FILE}"
        feeds = [_ragged_feed(case[side], alone) for case in cases for alone in (True, False)]
        reference = [r for r in reference for _ in (True, False)]
        diff = _verify_against(name, ragged, feeds, reference, tolerance)
        graphs[name] = ragged
        reports.append(
            GraphReport(
                f"{ENCODER_MODELS[side]} ragged", len(ragged), diff, time.perf_counter() - start
            )
        )
    _write(Path(repository), graphs, facts)
    # The catalogue's vectors come from enc1: a new enc1 needs them again.
    start = time.perf_counter()
    catalogue = neighbours.rebuild(Path(repository), progress=False)
    if catalogue is not None:
        size = sum(f.stat().st_size for f in Catalogue.folder(repository).rglob("*") if f.is_file())
        reports.append(GraphReport(NEIGHBOURS_MODEL, size, 0.0, time.perf_counter() - start))
    return reports


def _flat_feed(padded: np.ndarray, separator: int) -> dict[str, np.ndarray]:
    """contract.flat's feed for the rows of a padded array (id 0 is padding)."""
    lengths = (padded != 0).sum(axis=1)
    return flat_layout(padded[padded != 0], lengths, separator)


def _ragged_feed(padded: np.ndarray, alone: bool) -> dict[str, np.ndarray]:
    """What Triton's ragged batching feeds the ragged form (contract.flat) for these rows: sent
    `alone`, one request each of its real ids; else one padded [B, L] request."""
    if alone:
        tokens, lengths = padded[padded != 0], (padded != 0).sum(axis=1)
    else:
        tokens, lengths = padded.reshape(-1), np.full(len(padded), padded.shape[1])
    return {ENCODER_INPUT: tokens, RAGGED_LENGTHS: lengths.astype(np.int32).reshape(-1, 1)}


def _write(repository: Path, graphs: dict[str, bytes], facts: Facts) -> None:
    # Write beside the target then rename, so a server never sees half a model.
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repository) as staging:
        for name, graph in graphs.items():
            staged = Path(staging) / name.replace("/", "_")
            staged.write_bytes(graph)
            target = repository / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, target)
        for side, file in itertools.product((0, 1), (FLAT_FILE, RAGGED_FILE)):
            # a flat form left by an earlier model would not match this one
            stale = repository / ENCODER_MODELS[side] / "1" / file
            if f"{ENCODER_MODELS[side]}/1/{file}" not in graphs and stale.exists():
                stale.unlink()
    facts.save(repository)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by export.train")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument(
        "--catalogue",
        help="then index this catalogue for nearest neighbours: a JSON Lines file of "
        f'{{"id": ..., "in1": [...]}}, or {neighbours.VOCABULARY!r} (python -m export.neighbours '
        "has the index's other options)",
    )
    args = parser.parse_args(argv)
    reports = export(checkpoint.load(args.checkpoint), args.repository, tolerance=args.tolerance)
    for r in reports:
        if r.name == NEIGHBOURS_MODEL:
            print(
                f"{r.name}: {r.bytes / 1e6:8.2f} MB  rebuilt with the new enc1 ({r.seconds:.1f} s)"
            )
            continue
        print(
            f"{r.name:>5}: {r.bytes / 1e6:8.2f} MB  max |onnxruntime - torch| / output size = "
            f"{r.max_difference:.2e}  ({r.seconds:.1f} s)"
        )
    if args.catalogue:
        try:
            catalogue = neighbours.build(args.repository, args.catalogue)
        except (neighbours.CatalogueError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}") from None
        print(f"{NEIGHBOURS_MODEL}: {catalogue.items} items, {catalogue.similarity} similarity")
    # The configs are the server's side: it writes them from facts.json when it starts
    # (or now: python -m server.launcher.configs --repository ...).
    print(f"model repository ready: {args.repository}")


if __name__ == "__main__":
    main()
