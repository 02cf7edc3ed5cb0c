"""The catalogue index: exact search graphs against brute force, the `model` similarity against
the pair network itself, catalogue checks, rebuilds, the request parameters and the configs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from contract.errors import ServiceError
from contract.facts import Facts
from contract.names import JSON, JSONLINES
from contract.neighbours import (
    MAX_SCORES_PER_CALL,
    NEIGHBOURS_MODEL,
    Catalogue,
    queries_per_call,
)
from contract.padding import pad
from export import neighbours
from export.onnx_export import export
from server.common.onnx_sessions import network_runner
from server.common.settings import ServingSettings
from server.frontdoor.neighbours import Index, best_remaining, search
from server.frontdoor.payload import Limits, Searchable, parse_bodies, parse_request
from server.launcher.configs import read, write_configs
from server.onnxruntime_backend.graph_checks import check_config
from tests.helpers import small_model

floats = st.floats(-10, 10, width=32, allow_subnormal=False)


def _session(graph):
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _brute_force(similarity: str, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    if similarity == "dot":
        return queries @ items.T
    if similarity == "cosine":
        unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
        return (
            queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        ) @ unit.T
    return -np.linalg.norm(queries[:, None, :] - items[None], axis=2)


@settings(max_examples=60, deadline=None)
@given(
    similarity=st.sampled_from(["dot", "cosine", "euclidean"]),
    shape=st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(1, 5)),
    k=st.integers(1, 50),
    data=st.data(),
)
def test_vector_similarities_are_exact_top_k(similarity, shape, k, data):
    count, dim, batch = shape
    items = data.draw(arrays(np.float32, (count, dim), elements=floats))
    queries = data.draw(arrays(np.float32, (batch, dim), elements=floats))
    scores, found = _session(neighbours.search_graph(items, similarity, k)).run(
        None, {"query": queries}
    )
    reference = _brute_force(similarity, queries.astype(np.float64), items.astype(np.float64))
    assert found.shape == (batch, min(k, count))
    for row in range(batch):
        assert len(set(found[row].tolist())) == found.shape[1]  # distinct items
        atol = 1e-3
        if similarity == "euclidean":
            # float32 |q|^2 + |e|^2 - 2 q.e cancels where q and e nearly agree: the squared
            # distance is off by up to a few float32 epsilons of the squared lengths, and its
            # square root by the root of that (seen: 0.0013 for two vectors of length 6)
            lengths = float(queries[row] @ queries[row]) + float((items * items).sum(1).max())
            atol += float(np.sqrt(8 * np.finfo(np.float32).eps * lengths))
        np.testing.assert_allclose(scores[row], reference[row, found[row]], rtol=1e-4, atol=atol)
        kth = np.sort(reference[row])[::-1][found.shape[1] - 1]
        assert reference[row, found[row]].min() >= kth - atol  # none below the true k-th


@settings(max_examples=60, deadline=None)
@given(
    similarity=st.sampled_from(["dot", "cosine", "euclidean"]),
    shape=st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(1, 4)),
    k=st.integers(1, 30),
    max_exclude=st.integers(1, 45),
    data=st.data(),
)
def test_exclusions_leave_the_k_best_of_what_remains(similarity, shape, k, max_exclude, data):
    """The deep outputs, less any max_exclude items, hold the k best of the rest: what a
    brute-force ranking of the catalogue without them gives. `scores` is their first k."""
    count, dim, batch = shape
    items = data.draw(arrays(np.float32, (count, dim), elements=floats))
    queries = data.draw(arrays(np.float32, (batch, dim), elements=floats))
    graph = neighbours.search_graph(items, similarity, k, max_exclude=max_exclude)
    scores, found, deep_scores, deep_items = _session(graph).run(None, {"query": queries})
    assert deep_items.shape == (batch, min(k + max_exclude, count))
    np.testing.assert_array_equal(deep_scores[:, : found.shape[1]], scores)
    reference = _brute_force(similarity, queries.astype(np.float64), items.astype(np.float64))
    for row in range(batch):
        left_out = data.draw(
            st.lists(st.integers(0, count - 1), max_size=max_exclude, unique=True), label="out"
        )
        kept_scores, kept = best_remaining(
            deep_scores[row], deep_items[row], k, np.array(left_out, dtype=np.int64)
        )
        remaining = np.delete(reference[row], left_out)
        assert len(kept) == min(k, len(remaining)) == len(set(kept.tolist()))
        assert not set(kept.tolist()) & set(left_out)
        if len(kept):  # float32 round-off as above, with a margin for euclidean's cancellation
            atol = 1e-3 if similarity != "euclidean" else 0.05
            np.testing.assert_allclose(kept_scores, reference[row, kept], rtol=1e-4, atol=atol)
            kth = np.sort(remaining)[::-1][len(kept) - 1]
            assert reference[row, kept].min() >= kth - atol


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(1, 4)),
    classes=st.sampled_from([1, 2]),
    k=st.integers(1, 30),
    max_exclude=st.integers(0, 45),
    data=st.data(),
)
def test_a_linear_head_ranks_by_one_product_as_brute_force_does(
    shape, classes, k, max_exclude, data
):
    """The folded search of a linear head (export.neighbours.linear_head's a, b, d, c) against
    brute force of L = (a * q + b) . e + d . q + c over every item: the same k best, each
    answered sigmoid(L) (two classes) or L, and with exclusions the k best of the rest."""
    count, dim, batch = shape
    small = st.floats(-3, 3, width=32, allow_subnormal=False)
    items = data.draw(arrays(np.float32, (count, dim), elements=small))
    queries = data.draw(arrays(np.float32, (batch, dim), elements=small))
    a, b, d = (data.draw(arrays(np.float64, dim, elements=small)) for _ in range(3))
    c = data.draw(small)
    linear = {"a": a, "b": b, "d": d, "c": c, "classes": classes}
    graph = neighbours.search_graph(items, "model", k, max_exclude=max_exclude, linear=linear)
    outputs = _session(graph).run(None, {"query": queries})
    q, e = queries.astype(np.float64), items.astype(np.float64)
    logits = (q * a + b) @ e.T + (q @ d)[:, None] + c
    answers = 1 / (1 + np.exp(-logits)) if classes == 2 else logits
    scores, found = outputs[:2]
    deep_scores, deep_items = outputs[2:] if max_exclude else outputs[:2]
    atol = 1e-3 * (1 + np.abs(logits).max())  # float32 products of values up to 3
    for row in range(batch):
        left_out = data.draw(
            st.lists(st.integers(0, count - 1), max_size=max_exclude, unique=True), label="out"
        )
        for out, (got_scores, got) in (
            ([], (scores[row], found[row])),
            (
                left_out,
                best_remaining(
                    deep_scores[row], deep_items[row], k, np.array(left_out, dtype=np.int64)
                ),
            ),
        ):
            remaining = np.delete(logits[row], out)
            assert len(got) == min(k, len(remaining)) == len(set(got.tolist()))
            assert not set(got.tolist()) & set(out)
            if len(got):
                np.testing.assert_allclose(got_scores, answers[row, got], rtol=1e-4, atol=atol)
                kth = np.sort(remaining)[::-1][len(got) - 1]
                assert logits[row, got].min() >= kth - atol  # none below the true k-th


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small model exported with a catalogue of 300 random items."""
    root = tmp_path_factory.mktemp("neighbours")
    repository = root / "repository"
    model = small_model(enc0_network="hcnn", enc1_network="pooled_embedding")
    export(model, repository)
    rng = np.random.default_rng(1)
    items = [
        {
            "id": f"item-{i}" if i % 2 else i,
            "in1": rng.integers(1, 300, size=rng.integers(1, 12)).tolist(),
        }
        for i in range(300)
    ]
    source = root / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    neighbours.build(repository, source, max_k=20, progress=False)
    return repository, items, model


def test_the_model_similarity_ranks_as_the_pair_network_scores(exported):
    """The index's `model` scores are the pair network's own answers for (in0, item) on tokens:
    what a user would get by scoring every pair with the served pair model."""
    repository, items, _ = exported
    catalogue = Catalogue.load(repository)
    assert catalogue.similarity == "model" and catalogue.max_k == 20 and catalogue.items == 300
    pair = ort.InferenceSession(str(repository / "pair" / "1" / "model.onnx"))
    enc0 = ort.InferenceSession(str(repository / "enc0" / "1" / "model.onnx"))
    index = ort.InferenceSession(str(repository / NEIGHBOURS_MODEL / "1" / "model.onnx"))
    ids = json.loads((repository / NEIGHBOURS_MODEL / "1" / "ids.json").read_text())
    rng = np.random.default_rng(2)
    queries = [rng.integers(1, 300, size=n).tolist() for n in (1, 5, 17, 40)]
    vectors = enc0.run(None, {"tokens": pad(queries, 40)})[0]
    scores, found = index.run(["scores", "items"], {"query": vectors})
    in1 = pad([item["in1"] for item in items], 40)
    for row, query in enumerate(queries):
        probabilities = pair.run(None, {"in0": pad([query] * len(items), 40), "in1": in1})[0]
        expected = probabilities @ np.arange(probabilities.shape[1])  # expected class: p_1
        order = np.argsort(-expected, kind="stable")[:20]
        np.testing.assert_allclose(scores[row], expected[order], atol=1e-5)
        np.testing.assert_allclose(expected[found[row]], scores[row], atol=1e-5)
        assert [ids[i] for i in found[row]][0] == items[order[0]]["id"]


def _check_refused(tmp_path, lines: list[str], message: str, **options) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(lines) + "\n")
    facts = Facts((300, 300), (40, 40), 12, "softmax", 2)
    with pytest.raises(neighbours.CatalogueError) as error:
        neighbours.read_catalogue(source, facts, **options)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": 1, "in1": [1]}', "{"], "bad.jsonl:2: malformed JSON"),
        (['{"id": 1, "in1": [1]}', '{"id": 1, "in1": [2]}'], "id 1 appears twice"),
        (['{"id": true, "in1": [1]}'], "id must be a string or an integer"),
        (['{"id": 1.5, "in1": [1]}'], "id must be a string or an integer"),
        (['{"id": "a", "in1": []}'], "non-empty list of token ids in 0..299"),
        (['{"id": "a", "in1": [300]}'], "non-empty list of token ids in 0..299"),
        (['{"id": "a", "in1": [true]}'], "non-empty list"),
        (['{"in1": [1]}'], '{"id": ..., "in1": [token ids]}'),
        (["", "  "], "no items"),
    ],
)
def test_a_bad_catalogue_is_refused_with_its_line(tmp_path, lines, message):
    _check_refused(tmp_path, lines, message)


def test_a_catalogue_over_max_items_is_refused(tmp_path):
    lines = [json.dumps({"id": i, "in1": [1]}) for i in range(5)]
    _check_refused(tmp_path, lines, "more than --max-items 4 items", max_items=4)


def test_a_re_export_rebuilds_the_index_and_a_stale_one_is_refused(exported, tmp_path):
    repository, _, model = exported
    copy = tmp_path / "repository"
    import shutil

    shutil.copytree(repository, copy)
    before = Catalogue.load(copy)
    Index(copy, before)  # built from this enc1: loads
    other = small_model(enc0_network="hcnn", enc1_network="pooled_embedding", enc_dim=12)
    with __import__("torch").no_grad():
        other.enc1.embedding.weight.mul_(2.0)  # another enc1
    export(other, copy)
    after = Catalogue.load(copy)
    assert after.enc1_digest != before.enc1_digest and after.items == before.items
    Index(copy, after)
    # An enc1 exported without the rebuild (a copied file): the server refuses the index.
    shutil.copy(repository / "enc1" / "1" / "model.onnx", copy / "enc1" / "1" / "model.onnx")
    with pytest.raises(ServiceError, match="--rebuild"):
        Index.load(copy)


def test_the_neighbours_config_fits_the_graph_and_the_mode(exported, tmp_path):
    repository, _, _ = exported
    write_configs(repository, ServingSettings(gpu_copies=3))
    embedding = read(repository / NEIGHBOURS_MODEL / "configs" / "embedding.pbtxt")
    classification = read(repository / NEIGHBOURS_MODEL / "configs" / "classification.pbtxt")
    assert embedding.instance_group[0].count == 3 and classification.instance_group[0].count == 1
    assert list(embedding.output[0].dims) == [20] and list(embedding.input[0].dims) == [12]
    assert [o.name for o in embedding.output] == ["scores", "items", "deep_scores", "deep_items"]
    assert list(embedding.output[3].dims) == [300]  # 20 + 1,000 deep, but 300 items
    catalogue = Catalogue.load(repository)
    assert embedding.max_batch_size == catalogue.queries_per_call(4096)
    session = ort.InferenceSession(str(repository / NEIGHBOURS_MODEL / "1" / "model.onnx"))
    config = json_format.MessageToDict(embedding, preserving_proto_field_name=True)
    check_config(config, session.get_inputs(), session.get_outputs())  # the C++ backend's checks


def test_queries_per_call_bounds_the_scores_of_a_call():
    assert queries_per_call(1_000_000, 4096) == MAX_SCORES_PER_CALL // 1_000_000 == 16
    assert queries_per_call(10**9, 4096) == 1  # one query a call at least
    assert queries_per_call(100, 4096) == 4096


ITEM_IDS = {"a": 0, 7: 1, "b": 2}
LIMITS = Limits(
    (300, 300), (40, 40), 1 << 20, catalogue=Searchable("items", 20, 2, lambda: ITEM_IDS)
)


@pytest.mark.parametrize(
    "content_type, k",
    [
        (f"{JSONLINES}; neighbours=3", 3),
        (f"{JSON}; neighbours=20; catalogue=items", 20),
        (f"{JSON};charset=UTF-8; Neighbours=1", 1),
        (JSON, 0),
    ],
)
def test_neighbours_is_read_from_the_content_type(content_type, k):
    body = (
        b'{"in0": [1, 2]}'
        if content_type.startswith(JSONLINES)
        else b'{"instances": [{"in0": [1]}]}'
    )
    assert parse_request(body, content_type, None, LIMITS).k == k


@pytest.mark.parametrize(
    "content_type, body, limits, message",
    [
        (f"{JSON}; neighbours=21", None, LIMITS, "[1, 20]"),
        (f"{JSON}; neighbours=2.5", None, LIMITS, "give an integer"),
        (
            f"{JSON}; neighbours=2; catalogue=x",
            None,
            LIMITS,
            "unknown catalogue; this server has 'items'",
        ),
        (
            f"{JSON}; neighbours=2",
            None,
            Limits((300, 300), (40, 40), 1 << 20),
            "no catalogue index",
        ),
        (f"{JSON}; neighbour=2", None, LIMITS, "unknown content type parameter 'neighbour'"),
        (f"{JSON}; charset=latin-1", None, LIMITS, "bodies are JSON, which is UTF-8"),
        (
            f"{JSONLINES}; neighbours=2",
            b'{"in0": [1]}\n\n{"in1": [1]}\n',
            LIMITS,
            "line 3: neighbours=<k>",
        ),
        (
            f"{JSONLINES}; neighbours=20",
            b'{"in0": [1]}\n' * 6,
            replace(LIMITS, max_neighbours=100),
            "neighbours=20 for 6 instances asks for 120 neighbours; a request may ask for at "
            "most 100 (max_neighbours): send at most 5 instances a request at this k",
        ),
        (
            f"{JSONLINES}; neighbours=1",
            b'{"in0": [1]}\n' * 6,
            replace(LIMITS, scores_per_query=2000, max_neighbour_scores=10_000),
            "would compute 12000 scores (2000 a query over the catalogue); a request may "
            "compute at most 10000 (max_neighbour_scores): send at most 5 instances",
        ),
    ],
)
def test_bad_neighbour_parameters_are_refused(content_type, body, limits, message):
    with pytest.raises(ServiceError) as error:
        parse_request(body or b'{"instances": [{"in0": [1]}]}', content_type, None, limits)
    assert message in str(error.value)


def test_exclusions_are_read_as_catalogue_rows_per_instance():
    body = b'{"in0": [1], "exclude": ["b", 7]}\n{"in0": [2]}\n{"in0": [3], "exclude": []}\n'
    parsed = parse_request(body, f"{JSONLINES}; neighbours=3", None, LIMITS)
    assert [None if e is None else e.tolist() for e in parsed.exclude] == [[2, 1], None, []]
    assert (
        parse_request(b'{"in0": [1]}', f"{JSONLINES}; neighbours=3", None, LIMITS).exclude is None
    )
    # without neighbours=k, an answer is an embedding: `exclude` does not apply and is not read
    assert parse_request(b'{"in0": [1], "exclude": 5}', JSONLINES, None, LIMITS).exclude is None


@pytest.mark.parametrize(
    "body, limits, message",
    [
        (b'{"in0": [1]}\n{"in0": [1], "exclude": "a"}', LIMITS, "line 2: exclude must be a list"),
        (
            b'{"in0": [1], "exclude": ["a", "zz"]}',
            LIMITS,
            "line 1: exclude[1] = 'zz' is not an id of the catalogue 'items'",
        ),
        (
            b'{"in0": [1], "exclude": ["7"]}',  # the id 7 is an integer, not a string
            LIMITS,
            "exclude[0] = '7' is not an id of the catalogue",
        ),
        (
            b'{"in0": [1], "exclude": [true]}',
            LIMITS,
            "exclude[0] = True is not a catalogue id (a string or an integer) of 'items'",
        ),
        (b'{"in0": [1], "exclude": [7.0]}', LIMITS, "exclude[0] = 7.0 is not a catalogue id"),
        (
            b'{"in0": [1], "exclude": ["a", 7, "b"]}',
            LIMITS,
            "line 1: exclude holds 3 ids; the catalogue 'items' excludes at most 2 an instance",
        ),
        (
            b'{"in0": [1], "exclude": ["a"]}',
            Limits((300, 300), (40, 40), 1 << 20, catalogue=Searchable("items", 20)),
            "excludes at most 0 an instance (this index was built without exclusions: rebuild "
            "it with python -m export.neighbours --rebuild --max-exclude N)",
        ),
    ],
)
def test_bad_exclusions_are_refused_with_where(body, limits, message):
    with pytest.raises(ServiceError) as error:
        parse_request(body, f"{JSONLINES}; neighbours=2", None, limits)
    assert message in str(error.value)


def test_the_neighbour_budget_holds_for_all_the_bodies_of_a_request():
    limits = replace(LIMITS, max_neighbours=10)
    body = b'{"in0": [1]}\n' * 3
    content_type = f"{JSONLINES}; neighbours=2"
    assert len(parse_bodies([body, body[:26]], content_type, None, limits)) == 2  # 10 asked
    with pytest.raises(ServiceError, match="body 2 of 2: neighbours=2 for 3 instances"):
        parse_bodies([body, body], content_type, None, limits)  # 12 asked


def test_search_answers_only_the_requests_that_asked_in_calls_of_any_size(exported):
    """Through the repository's own in-process sessions (server.common.onnx_sessions), queries cut
    into calls of 2: every asking request gets its k items, the others their embeddings."""
    repository, _, _ = exported
    networks = network_runner(repository)
    index = Index.load(repository)
    bodies = [
        (b'{"in0": [1, 2, 3]}\n{"in0": [4]}\n{"in0": [5, 6]}\n', f"{JSONLINES}; neighbours=3"),
        (b'{"in0": [1, 2, 3]}\n', JSONLINES),
        (b'{"in0": [7]}\n', f"{JSONLINES}; neighbours=20"),
    ]
    limits = Limits((300, 300), (40, 40), 1 << 20, catalogue=index.limits())
    requests = [parse_request(body, ct, None, limits) for body, ct in bodies]
    assert all(r.exclude is None for r in requests)
    from server.frontdoor.dispatch import dispatch

    answers = dispatch(requests, networks, 64, flat=networks.flat)
    vectors = [[v for _, v in a] for a in answers]
    found = search(requests, list(answers), index, networks.search, max_batch_size=2)
    assert [key for key, _ in found[1]] == ["embeddings"]
    # each query's neighbours come already written as JSON (orjson.Fragment)
    written = [[orjson.loads(orjson.dumps(value)) for _, value in found[r]] for r in (0, 2)]
    assert [len(value) for value in written[0]] == [3, 3, 3]
    assert len(written[1][0]) == 20
    scores, items = networks.search(np.stack(vectors[0] + vectors[2]))
    for row, got in enumerate(written[0] + written[1]):
        k = len(got)
        assert [n["id"] for n in got] == [index.ids[i] for i in items[row, :k]]
        np.testing.assert_allclose([n["score"] for n in got], scores[row, :k])


def test_search_leaves_out_what_each_instance_excludes(exported):
    """Requests with and without exclusions in one search: the ones that exclude get the k best
    of the rest (the in0's whole ranking less their ids), the others what they get alone."""
    from server.frontdoor.dispatch import dispatch

    repository, items, _ = exported
    networks = network_runner(repository)
    index = Index.load(repository)
    assert index.catalogue.max_exclude == 1000 and index.catalogue.depth == 300  # every item
    limits = Limits((300, 300), (40, 40), 1 << 20, catalogue=index.limits())
    embedding = parse_request(b'{"in0": [1, 2]}', JSONLINES, None, limits)
    (((_, vector),),) = dispatch([embedding], networks, 64, flat=networks.flat)
    _, whole = networks.search(vector[None], True)
    ranking = [index.ids[i] for i in whole[0]]
    asking = f"{JSONLINES}; neighbours=4"
    bodies = [
        orjson.dumps({"in0": [1, 2], "exclude": ranking[:3]}) + b'\n{"in0": [4]}',
        b'{"in0": [1, 2]}',
        orjson.dumps({"in0": [1, 2], "exclude": [item["id"] for item in items]}),
    ]
    requests = [parse_request(body, asking, None, limits) for body in bodies]
    answers = dispatch(requests, networks, 64, flat=networks.flat)
    found = search(requests, list(answers), index, networks.search, max_batch_size=2)
    written = [[orjson.loads(orjson.dumps(value)) for _, value in found[r]] for r in range(3)]
    assert [n["id"] for n in written[0][0]] == ranking[3:7]
    assert [n["id"] for n in written[1][0]] == ranking[:4]
    assert len(written[0][1]) == 4
    assert written[2] == [[]]  # the whole catalogue excluded: nothing remains


@pytest.mark.parametrize(
    "overrides",
    [
        {"comparator_list": "hadamard", "mlp_layers": 0},
        {"comparator_list": "hadamard,concat", "mlp_layers": 0},
        {"comparator_list": "hadamard", "mlp_layers": 0, "output_layer": "mean_squared_error"},
    ],
)
def test_a_linear_head_is_searched_by_one_product_with_the_pair_networks_answers(
    overrides, tmp_path
):
    """A head with no hidden layer over hadamard (and concat) features scores (a*q + b).e +
    d.q + c: the index ranks by one matrix product (width 1), and answers what the pair
    network answers for each pair."""
    repository = tmp_path / "repository"
    model = small_model(enc0_network="hcnn", enc1_network="pooled_embedding", **overrides)
    with __import__("torch").no_grad():  # a head far from its initial, nearly flat one
        for parameter in model.mlp.parameters():
            parameter.mul_(20.0)
    export(model, repository)
    rng = np.random.default_rng(5)
    items = [
        {"id": i, "in1": rng.integers(1, 300, size=rng.integers(1, 9)).tolist()} for i in range(200)
    ]
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    catalogue = neighbours.build(repository, source, max_k=15, progress=False, max_exclude=5)
    assert catalogue.linear and catalogue.width == 1
    pair = ort.InferenceSession(str(repository / "pair" / "1" / "model.onnx"))
    enc0 = ort.InferenceSession(str(repository / "enc0" / "1" / "model.onnx"))
    index = ort.InferenceSession(str(repository / NEIGHBOURS_MODEL / "1" / "model.onnx"))
    queries = [rng.integers(1, 300, size=n).tolist() for n in (1, 6, 30)]
    vectors = enc0.run(None, {"tokens": pad(queries, 40)})[0]
    scores, found = index.run(["scores", "items"], {"query": vectors})
    in1 = pad([item["in1"] for item in items], 40)
    for row, query in enumerate(queries):
        answer = pair.run(None, {"in0": pad([query] * len(items), 40), "in1": in1})[0]
        expected = answer @ np.arange(answer.shape[1]) if answer.shape[1] > 1 else answer[:, 0]
        np.testing.assert_allclose(scores[row], expected[found[row]], atol=1e-4, rtol=1e-4)
        kth = np.sort(expected)[::-1][14]
        assert expected[found[row]].min() >= kth - 1e-4  # the exact top 15


def test_a_head_with_a_hidden_layer_is_not_folded(exported):
    repository, _, _ = exported
    catalogue = Catalogue.load(repository)
    assert not catalogue.linear and catalogue.width > 1
