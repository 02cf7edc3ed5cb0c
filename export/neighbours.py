"""Build the nearest-neighbour index of a catalogue into the model repository.

    python -m export.neighbours CATALOGUE [--repository model_repository] [--similarity model]
                                [--max-k 100] [--max-exclude 1000] [--max-items 10000000]
                                [--name NAME]
    python -m export.neighbours --rebuild     # the repository's catalogue, with its enc1 now

CATALOGUE is a JSON Lines file of `{"id": ..., "in1": [...]}` (an id is a string or an
integer, unique), or `vocabulary`: every id 1..vocab-1 of enc1 as a one-token item whose id is
that token (MovieLens-style catalogues of ids). Each item's vector is computed by the
repository's own enc1 graph (its flat form where it has one), the one the server answers
`in1` with, so an index never disagrees with the served embeddings. contract/neighbours.py
says what is written; a model exported over this one rebuilds the index from the items kept
in `neighbours/items.npz` (export.onnx_export).

Which similarity (`--similarity`, default `model`): the items are ranked by the pair network's
own answer for (this in0, that item), the score the model was trained to give; the index holds
the items' encodings and the network's head (comparator and MLP) runs on every pair. The
encodings alone do not carry it: the two encoders are trained only through the comparator and
the MLP, so enc0's and enc1's spaces need not line up coordinate by coordinate. On the demo
model, the 10 nearest documents by `dot`, `cosine` or `euclidean` were of the query's topic
12-15% of the time (chance: 12.5%), by `model` 80%. `dot` / `cosine` / `euclidean` (one matrix
product, far cheaper per item) are for models whose spaces do line up, such as tied encoders:
docs/neighbours.md measures them all on MovieLens. A head with no hidden layer over hadamard
(and concat) features is a linear form of the two encodings: `linear_head` finds it, and the
`model` similarity is then one matrix product, exact (docs/neighbours.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from contract.facts import Facts
from contract.flat import FLAT_FILE, SEPARATOR_KEY, flat_layout
from contract.names import ENCODER_INPUT, ENCODER_MODELS, ENCODER_OUTPUT, PAIR_MODEL
from contract.neighbours import (
    DEEP_ITEMS_OUTPUT,
    DEEP_SCORES_OUTPUT,
    DEFAULT_MAX_EXCLUDE,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_K,
    HEAD_FILE,
    IDS_FILE,
    ITEMS_FILE,
    ITEMS_OUTPUT,
    NEIGHBOURS_MODEL,
    QUERY_INPUT,
    SCORES_OUTPUT,
    SIMILARITIES,
    Catalogue,
    enc1_digest,
)

VOCABULARY = "vocabulary"
OPSET = 17
ENCODE_BATCH_TOKENS = 1 << 16  # positions per enc1 call while encoding the catalogue


class CatalogueError(ValueError):
    """The catalogue can't be indexed; the message says which line and why."""


def _id(value: object, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CatalogueError(f"{where}: id must be a string or an integer, got {value!r}")
    return value


def read_catalogue(
    path: Path, facts: Facts, max_items: int = DEFAULT_MAX_ITEMS
) -> tuple[list, np.ndarray, np.ndarray]:
    """(ids, flat token ids, lengths) of a JSON Lines catalogue, every line checked; in1
    sequences are truncated to enc1's max_seq_len, as the front door truncates them."""
    vocab, cap = facts.vocab_sizes[1], facts.max_seq_lens[1]
    ids, tokens, lengths, seen = [], [], [], set()
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise CatalogueError(f"{where}: malformed JSON: {error}") from None
            if not isinstance(record, dict) or "id" not in record or "in1" not in record:
                raise CatalogueError(f'{where}: an item is {{"id": ..., "in1": [token ids]}}')
            item = _id(record["id"], where)
            if item in seen:
                raise CatalogueError(f"{where}: id {item!r} appears twice")
            sequence = record["in1"]
            if (
                not isinstance(sequence, list)
                or not sequence
                or not all(type(t) is int and 0 <= t < vocab for t in sequence)
            ):
                raise CatalogueError(
                    f"{where}: in1 must be a non-empty list of token ids in 0..{vocab - 1}"
                )
            if len(ids) == max_items:
                raise CatalogueError(f"{path}: more than --max-items {max_items} items")
            seen.add(item)
            ids.append(item)
            tokens.extend(sequence[:cap])
            lengths.append(min(len(sequence), cap))
    if not ids:
        raise CatalogueError(f"{path}: no items")
    return ids, np.array(tokens, dtype=np.int64), np.array(lengths, dtype=np.int64)


def vocabulary_catalogue(facts: Facts) -> tuple[list, np.ndarray, np.ndarray]:
    """Every enc1 id but padding as a one-token item named by that id."""
    tokens = np.arange(1, facts.vocab_sizes[1], dtype=np.int64)
    return tokens.tolist(), tokens, np.ones(len(tokens), dtype=np.int64)


def _calls(lengths: np.ndarray, order: np.ndarray) -> Iterator[np.ndarray]:
    """Rows (in `order`, sorted by length) cut into calls of about ENCODE_BATCH_TOKENS."""
    first = 0
    while first < len(order):
        longest = max(int(lengths[order[first]]), 1)
        last = min(len(order), first + max(1, ENCODE_BATCH_TOKENS // longest))
        yield order[first:last]
        first = last


def encode(
    repository: Path, tokens: np.ndarray, lengths: np.ndarray, progress: bool = True
) -> np.ndarray:
    """[items, enc_dim] float32: each sequence through the repository's enc1 graph."""
    folder = Path(repository) / ENCODER_MODELS[1] / "1"
    flat_path = folder / FLAT_FILE
    session = ort.InferenceSession(
        str(flat_path if flat_path.exists() else folder / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    separator = 0
    if flat_path.exists():
        separator = int(session.get_modelmeta().custom_metadata_map[SEPARATOR_KEY])
    starts = np.cumsum(lengths) - lengths
    order = np.argsort(lengths, kind="stable")[::-1]  # longest first: the bar's pace is honest
    vectors = None
    bar = tqdm(total=len(lengths), desc="encoding the catalogue", unit="item", disable=not progress)
    for rows in _calls(lengths, order):
        mine = lengths[rows]
        flat = np.concatenate([tokens[s : s + n] for s, n in zip(starts[rows], mine, strict=True)])
        if separator:
            feed = flat_layout(flat, mine, separator)
        else:
            padded = np.zeros((len(rows), int(mine.max())), dtype=np.int64)
            padded[np.arange(int(mine.max()))[None, :] < mine[:, None]] = flat
            feed = {ENCODER_INPUT: padded}
        (out,) = session.run([ENCODER_OUTPUT], feed)
        if vectors is None:
            vectors = np.empty((len(lengths), out.shape[1]), dtype=np.float32)
        vectors[rows] = out
        bar.update(len(rows))
    bar.close()
    return vectors


def _head_nodes(head: onnx.ModelProto, count: int, dim: int, classes: int) -> tuple[list, list]:
    """(nodes, constants) that score every (query, item) pair with the pair network's head:
    `products` [batch, items] from QUERY_INPUT and the `catalogue` [items, dim] constant."""
    head = onnx.compose.add_prefix(head, "head/")
    first, second = (i.name for i in head.graph.input)
    (answer,) = (o.name for o in head.graph.output)
    const = numpy_helper.from_array
    constants = [
        const(np.array([0], dtype=np.int64), "zero_axis"),
        const(np.array([1], dtype=np.int64), "one_axis"),
        const(np.array([count, dim], dtype=np.int64), "items_dim"),
        const(np.array([-1, dim], dtype=np.int64), "rows_dim"),
        const(np.array([-1, count], dtype=np.int64), "batch_items"),
        *head.graph.initializer,
    ]
    nodes = [
        # every query beside every item: [batch * items, dim] twice
        helper.make_node("Shape", [QUERY_INPUT], ["query_shape"]),
        helper.make_node("Gather", ["query_shape", "zero_axis"], ["batch_size"], axis=0),
        helper.make_node("Concat", ["batch_size", "items_dim"], ["pairs_shape"], axis=0),
        helper.make_node("Unsqueeze", [QUERY_INPUT, "one_axis"], ["query_3d"]),
        helper.make_node("Expand", ["query_3d", "pairs_shape"], ["query_pairs"]),
        helper.make_node("Reshape", ["query_pairs", "rows_dim"], [first]),
        helper.make_node("Unsqueeze", ["catalogue", "zero_axis"], ["items_3d"]),
        helper.make_node("Expand", ["items_3d", "pairs_shape"], ["item_pairs"]),
        helper.make_node("Reshape", ["item_pairs", "rows_dim"], [second]),
        *head.graph.node,
    ]
    if classes > 1:  # the expected class: sum of c * p_c
        labels = np.arange(classes, dtype=np.float32).reshape(classes, 1)
        constants.append(const(labels, "class_values"))
        nodes.append(helper.make_node("MatMul", [answer, "class_values"], ["answer_value"]))
        answer = "answer_value"
    nodes.append(helper.make_node("Reshape", [answer, "batch_items"], ["products"]))
    return nodes, constants


def linear_head(head: onnx.ModelProto, vectors: np.ndarray) -> dict | None:
    """The pair head's score as a linear form of the two encodings, where it is one: the
    logit of class 1 (two classes) or the regression value L(q, e) = (a * q + b) . e + d . q + c,
    as the hadamard and concat comparators with no hidden MLP layer make it. Then the `model`
    similarity ranks a query's items by one matrix product, exactly. Found by probing the head
    with unit vectors, then checked on pairs of the catalogue's own vectors; None where the
    head is not linear (abs_diff, a hidden layer) or has more than two classes."""
    session = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
    first, second = (i.name for i in session.get_inputs())
    classes = session.get_outputs()[0].shape[1]
    if classes not in (1, 2):
        return None

    def run(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        (out,) = session.run(None, {first: queries, second: items})
        return out.astype(np.float64)

    def score(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = run(queries, items)
        if classes == 1:
            return out[:, 0]
        with np.errstate(divide="ignore"):
            return np.log(out[:, 1]) - np.log(out[:, 0])

    dim = vectors.shape[1]
    zeros, ones, units = np.zeros((1, dim)), np.ones((1, dim)), np.eye(dim)
    probe = np.concatenate([zeros, units]).astype(np.float32)
    at_zero = score(np.repeat(zeros, dim + 1, 0).astype(np.float32), probe)
    at_one = score(np.repeat(ones, dim + 1, 0).astype(np.float32), probe)
    query_part = score(probe, np.repeat(zeros, dim + 1, 0).astype(np.float32))
    b = at_zero[1:] - at_zero[0]
    a = at_one[1:] - at_one[0] - b
    d = query_part[1:] - query_part[0]
    c = query_part[0]
    if not np.all(np.isfinite([*a, *b, *d, c])):
        return None
    rng = np.random.default_rng(0)
    # the catalogue's vectors, turned and stretched too: a hidden layer is linear over no range
    scale = np.repeat(np.array([1.0, -1.0, 3.0, 0.3], dtype=np.float32), 64)[:, None]
    q = vectors[rng.integers(len(vectors), size=256)].astype(np.float32) * scale
    e = vectors[rng.integers(len(vectors), size=256)].astype(np.float32) * scale[::-1]
    predicted = ((a * q + b) * e).sum(1) + q @ d + c
    out = run(q, e)
    if classes == 1:
        actual = out[:, 0]
        return (
            {"a": a, "b": b, "d": d, "c": c, "classes": classes}
            if np.abs(actual - predicted).max() <= 1e-3 * (1.0 + np.abs(actual).max())
            else None
        )
    # two classes: every pair's p_1 as predicted, and, where p_1 is not saturated (its logit
    # is then read exactly), the logit itself; too few unsaturated pairs prove nothing
    p1 = out[:, 1]
    with np.errstate(over="ignore"):
        if np.abs(p1 - 1.0 / (1.0 + np.exp(-predicted))).max() > 1e-4:
            return None
    open_ = (p1 > 1e-3) & (p1 < 1 - 1e-3)
    if open_.sum() < 16:
        return None
    logit = np.log(p1[open_]) - np.log(out[open_, 0])
    if np.abs(logit - predicted[open_]).max() > 1e-3 * (1.0 + np.abs(logit).max()):
        return None
    return {"a": a, "b": b, "d": d, "c": c, "classes": classes}


def _head_width(head: onnx.ModelProto, dim: int) -> int:
    """Floats the head holds per (query, item) pair: its inputs and every intermediate."""
    inferred = onnx.shape_inference.infer_shapes(head)
    width = 2 * dim
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value"):
            width += dims[1].dim_value
    return width


def search_graph(
    vectors: np.ndarray,
    similarity: str,
    max_k: int,
    head: onnx.ModelProto | None = None,
    max_exclude: int = 0,
    linear: dict | None = None,
) -> onnx.ModelProto:
    """query [batch, enc_dim] -> scores, items [batch, k]: exact search over `vectors`, best
    first, k = min(max_k, items). Every score is computed (a matrix product, or the pair head
    on every pair for `model`), then TopK. With max_exclude, also deep_scores, deep_items
    [batch, min(max_k + max_exclude, items)]: one TopK that deep, `scores` its first k."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity {similarity!r}: use one of {', '.join(SIMILARITIES)}")
    count, dim = vectors.shape
    k = min(max_k, count)
    depth = min(max_k + max_exclude, count) if max_exclude else k
    vectors = vectors.astype(np.float32)
    constants = [numpy_helper.from_array(np.array([depth], dtype=np.int64), "depth")]
    if similarity == "model" and linear is not None:
        return _folded_graph(vectors, linear, k, depth, max_exclude > 0)
    if similarity == "model":
        if head is None:
            raise ValueError("the model similarity needs the pair network's head")
        classes = head.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        nodes, head_constants = _head_nodes(head, count, dim, classes)
        constants += [*head_constants, numpy_helper.from_array(vectors, "catalogue")]
        nodes.append(helper.make_node("TopK", ["products", "depth"], ["top", "top_items"], axis=1))
        return _model(nodes, constants, dim, k, depth, max_exclude > 0)
    if similarity == "cosine":  # items normalised once here, the query in the graph
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    constants.append(numpy_helper.from_array(np.ascontiguousarray(vectors.T), "catalogue"))
    nodes, query = [], QUERY_INPUT
    if similarity == "cosine":
        constants.append(numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"))
        nodes += [
            helper.make_node("ReduceL2", [QUERY_INPUT], ["length"], axes=[1], keepdims=1),
            helper.make_node("Max", ["length", "eps"], ["safe_length"]),
            helper.make_node("Div", [QUERY_INPUT, "safe_length"], ["unit_query"]),
        ]
        query = "unit_query"
    nodes.append(helper.make_node("MatMul", [query, "catalogue"], ["products"]))
    if similarity == "euclidean":
        # |q - e|^2 = |q|^2 - (2 q.e - |e|^2): rank by the bracket, then the distance of the k
        constants += [
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array((vectors**2).sum(axis=1).astype(np.float32), "item_sq"),
        ]
        nodes += [
            helper.make_node("Mul", ["products", "two"], ["twice"]),
            helper.make_node("Sub", ["twice", "item_sq"], ["ranking"]),
            helper.make_node("TopK", ["ranking", "depth"], ["best", "top_items"], axis=1),
            helper.make_node("ReduceSumSquare", [QUERY_INPUT], ["query_sq"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["query_sq", "best"], ["squared"]),
            helper.make_node("Max", ["squared", "zero"], ["clipped"]),
            helper.make_node("Sqrt", ["clipped"], ["distance"]),
            helper.make_node("Neg", ["distance"], ["top"]),
        ]
    else:
        nodes.append(helper.make_node("TopK", ["products", "depth"], ["top", "top_items"], axis=1))
    return _model(nodes, constants, dim, k, depth, max_exclude > 0)


def _folded_graph(vectors: np.ndarray, linear: dict, k: int, depth: int, deep: bool):
    """The `model` similarity of a linear head (linear_head): each query's items ranked by
    (a * q + b) . e, one matrix product, and the k best given the head's answer for them:
    sigmoid(L) for two classes (p_1, the expected class), L for a regression."""
    const = numpy_helper.from_array
    constants = [
        const(np.array([depth], dtype=np.int64), "depth"),
        const(np.ascontiguousarray(vectors.T.astype(np.float32)), "catalogue"),
        const(linear["a"].astype(np.float32), "a"),
        const(linear["b"].astype(np.float32), "b"),
        const(linear["d"].astype(np.float32).reshape(-1, 1), "d"),
        const(np.array(linear["c"], dtype=np.float32), "c"),
    ]
    nodes = [
        helper.make_node("Mul", [QUERY_INPUT, "a"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["weights"]),
        helper.make_node("MatMul", ["weights", "catalogue"], ["products"]),
        helper.make_node("TopK", ["products", "depth"], ["best", "top_items"], axis=1),
        helper.make_node("MatMul", [QUERY_INPUT, "d"], ["query_term"]),
        helper.make_node("Add", ["query_term", "c"], ["offset"]),
        helper.make_node("Add", ["best", "offset"], ["logit" if linear["classes"] == 2 else "top"]),
    ]
    if linear["classes"] == 2:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["top"]))
    return _model(nodes, constants, vectors.shape[1], k, depth, deep)


def _model(
    nodes: list, constants: list, dim: int, k: int, depth: int, deep: bool
) -> onnx.ModelProto:
    """The graph, its outputs from the ranking `top`, `top_items` [batch, depth]: scores and
    items its first k, and (deep) the whole of it."""
    outputs = [
        helper.make_tensor_value_info(SCORES_OUTPUT, TensorProto.FLOAT, ["batch", k]),
        helper.make_tensor_value_info(ITEMS_OUTPUT, TensorProto.INT64, ["batch", k]),
    ]
    if deep:
        outputs += [
            helper.make_tensor_value_info(DEEP_SCORES_OUTPUT, TensorProto.FLOAT, ["batch", depth]),
            helper.make_tensor_value_info(DEEP_ITEMS_OUTPUT, TensorProto.INT64, ["batch", depth]),
        ]
        nodes += [
            helper.make_node("Identity", ["top"], [DEEP_SCORES_OUTPUT]),
            helper.make_node("Identity", ["top_items"], [DEEP_ITEMS_OUTPUT]),
        ]
    if depth > k:
        constants += [
            numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
            numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "columns"),
        ]
        nodes += [
            helper.make_node("Slice", ["top", "first", "k", "columns"], [SCORES_OUTPUT]),
            helper.make_node("Slice", ["top_items", "first", "k", "columns"], [ITEMS_OUTPUT]),
        ]
    else:
        nodes += [
            helper.make_node("Identity", ["top"], [SCORES_OUTPUT]),
            helper.make_node("Identity", ["top_items"], [ITEMS_OUTPUT]),
        ]
    graph = helper.make_graph(
        nodes,
        NEIGHBOURS_MODEL,
        [helper.make_tensor_value_info(QUERY_INPUT, TensorProto.FLOAT, ["batch", dim])],
        outputs,
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what ONNX Runtime 1.19+ and Triton 2.51's backend read
    return model


def build(
    repository: Path,
    catalogue: str | Path,
    similarity: str = "model",
    max_k: int = DEFAULT_MAX_K,
    max_items: int = DEFAULT_MAX_ITEMS,
    name: str | None = None,
    progress: bool = True,
    max_exclude: int = DEFAULT_MAX_EXCLUDE,
) -> Catalogue:
    """Indexes a catalogue (a JSON Lines path, or VOCABULARY) with the repository's enc1."""
    facts = Facts.load(repository)
    if str(catalogue) == VOCABULARY:
        ids, tokens, lengths = vocabulary_catalogue(facts)
        if len(ids) > max_items:
            raise CatalogueError(
                f"the vocabulary's {len(ids)} items exceed --max-items {max_items}"
            )
        name = name or VOCABULARY
    else:
        ids, tokens, lengths = read_catalogue(Path(catalogue), facts, max_items)
        name = name or Path(catalogue).stem
    return _index(repository, name, ids, tokens, lengths, similarity, max_k, max_exclude, progress)


def rebuild(
    repository: Path, progress: bool = True, max_exclude: int | None = None
) -> Catalogue | None:
    """The repository's index again, from its kept items, with the enc1 there now (and its
    max_exclude unless given); None where there is no index."""
    old = Catalogue.load(repository)
    if old is None:
        return None
    folder = Catalogue.folder(repository)
    kept = np.load(folder / ITEMS_FILE)
    ids = orjson.loads((folder / "1" / IDS_FILE).read_bytes())
    return _index(
        repository,
        old.name,
        ids,
        kept["tokens"],
        kept["lengths"],
        old.similarity,
        old.max_k,
        old.max_exclude if max_exclude is None else max_exclude,
        progress,
    )


def _index(
    repository, name, ids, tokens, lengths, similarity, max_k, max_exclude, progress
) -> Catalogue:
    repository = Path(repository)
    vectors = encode(repository, tokens, lengths, progress)
    head, width, linear = None, 1, None
    if similarity == "model":
        head = onnx.load(repository / PAIR_MODEL / "1" / HEAD_FILE)
        linear = linear_head(head, vectors)
        width = 1 if linear else _head_width(head, int(vectors.shape[1]))
    graph = search_graph(vectors, similarity, max_k, head, max_exclude, linear)
    catalogue = Catalogue(
        name=name,
        items=len(ids),
        similarity=similarity,
        max_k=min(max_k, len(ids)),
        enc_dim=int(vectors.shape[1]),
        enc1_digest=enc1_digest(repository),
        width=width,
        max_exclude=max_exclude,
        linear=linear is not None,
    )
    # Written beside the target and swapped in whole, so a server never reads half an index.
    with tempfile.TemporaryDirectory(dir=repository) as staging:
        staged = Path(staging) / NEIGHBOURS_MODEL
        (staged / "1").mkdir(parents=True)
        onnx.save_model(
            graph,
            staged / "1" / "model.onnx",
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=1024,
        )
        (staged / "1" / "model.onnx.data").chmod(
            0o644
        )  # onnx writes it 0600: servers run as others
        (staged / "1" / IDS_FILE).write_bytes(orjson.dumps(ids))
        np.savez(staged / ITEMS_FILE, tokens=tokens, lengths=lengths)
        catalogue.save(staged.parent)
        onnx.checker.check_model(str(staged / "1" / "model.onnx"), full_check=True)
        target = Catalogue.folder(repository)
        old = Path(staging) / "old"
        if target.exists():
            # keep the generated configs: the server writes them, and they are up to date
            for config in ("config.pbtxt", "configs"):
                if (target / config).exists():
                    shutil.move(target / config, staged / config)
            target.rename(old)
        staged.rename(target)
    return catalogue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("catalogue", nargs="?", help=f"a JSON Lines file, or {VOCABULARY!r}")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--rebuild", action="store_true", help="the repository's catalogue again")
    parser.add_argument("--similarity", choices=SIMILARITIES, default="model")
    parser.add_argument(
        "--max-k", type=int, default=DEFAULT_MAX_K, help="most neighbours a request may ask"
    )
    parser.add_argument(
        "--max-exclude",
        type=int,
        default=None,
        help=f"most catalogue ids an instance may exclude (default {DEFAULT_MAX_EXCLUDE}; with "
        "--rebuild, the index's own)",
    )
    parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS)
    parser.add_argument("--name", help="the catalogue's name (default: the file's stem)")
    args = parser.parse_args(argv)
    if args.rebuild == bool(args.catalogue):
        parser.error(f"give a catalogue (a JSON Lines file or {VOCABULARY!r}), or --rebuild")
    if args.max_k < 1 or args.max_items < 1:
        parser.error("--max-k and --max-items are at least 1")
    if args.max_exclude is not None and args.max_exclude < 0:
        parser.error("--max-exclude is at least 0")
    try:
        if args.rebuild:
            catalogue = rebuild(args.repository, max_exclude=args.max_exclude)
            if catalogue is None:
                sys.exit(f"error: {args.repository} holds no catalogue index to rebuild")
        else:
            catalogue = build(
                args.repository,
                args.catalogue,
                args.similarity,
                args.max_k,
                args.max_items,
                args.name,
                max_exclude=DEFAULT_MAX_EXCLUDE if args.max_exclude is None else args.max_exclude,
            )
    except (CatalogueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(
        f"{catalogue.name}: {catalogue.items} items, {catalogue.similarity} similarity, "
        f"up to {catalogue.max_k} neighbours a query, excluding up to {catalogue.max_exclude} "
        f"ids -> {Catalogue.folder(args.repository)}"
    )


if __name__ == "__main__":
    main()
