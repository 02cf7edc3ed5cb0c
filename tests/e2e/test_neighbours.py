"""Nearest neighbours on a real server: the demo repository's catalogue of 2,000 documents,
asked through the front door (HTTP, gRPC, client.api, transform) and called directly; every
answer checked against a reference computed here, one query at a time."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from client.api import Client, neighbours_type
from client.batching import TransformOptions
from client.cli import main as cli
from client.transform import transform
from contract.names import JSON, JSONLINES
from contract.neighbours import Catalogue
from contract.padding import pad
from tests.helpers import (
    PROTOCOLS,
    catalogue_scores,
    check_neighbours,
    client_for,
    infer,
    onnx_run,
)

VOCAB = 12_000


@pytest.fixture(scope="module")
def catalogue(demo_repository) -> Catalogue:
    found = Catalogue.load(demo_repository)
    assert found is not None and found.items == 2000 and found.similarity == "model"
    return found


def queries_of(repository, sequences: list[list[int]]) -> np.ndarray:
    """enc0 of each in0 alone, padded, through ONNX Runtime."""
    return np.concatenate(
        [onnx_run(repository, "enc0", {"tokens": pad([s], 10**9)}) for s in sequences]
    )


def check(repository, sequences, answers, k: int, exclude=None) -> None:
    ids, scores = catalogue_scores(repository, queries_of(repository, sequences))
    assert len(answers) == len(sequences)
    for row, got in enumerate(answers):
        check_neighbours(got, ids, scores[row], k, exclude[row] if exclude else ())


def catalogue_ids(count: int, rng) -> list[str]:
    """Ids of the demo catalogue (doc-00000 .. doc-01999), distinct."""
    return [f"doc-{i:05d}" for i in rng.choice(2000, size=count, replace=False)]


def _lines(answer: bytes, accept: str) -> list[list[dict]]:
    if accept == JSON:
        return [p["neighbours"] for p in orjson.loads(answer)["predictions"]]
    return [orjson.loads(line)["neighbours"] for line in answer.splitlines() if line.strip()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_neighbours_are_the_exact_top_k(each_server, demo_repository, catalogue, protocol):
    """In process and over BLS (the image's path: the search is a call to `neighbours`)."""
    server = each_server
    rng = np.random.default_rng(3)
    sequences = [rng.integers(1, VOCAB, size=rng.integers(1, 40)).tolist() for _ in range(12)]
    url = server.http_url if protocol == "http" else server.grpc_url
    with Client(url, protocol) as client:
        found = client.neighbours(sequences, k=10)
        named = client.neighbours(sequences[:2], k=3, catalogue=catalogue.name)
    check(demo_repository, sequences, [[n._asdict() for n in row] for row in found], 10)
    assert [[n.id for n in row] for row in named] == [[n.id for n in row[:3]] for row in found[:2]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_neighbours_leave_out_what_each_query_excludes(
    each_server, demo_repository, protocol
):
    """Each query's own exclusions (its best items among them, as a user's history would be),
    in process and over BLS, where the search's deep outputs are a Triton call."""
    rng = np.random.default_rng(4)
    sequences = [rng.integers(1, VOCAB, size=rng.integers(1, 40)).tolist() for _ in range(6)]
    url = each_server.http_url if protocol == "http" else each_server.grpc_url
    with Client(url, protocol) as client:
        alone = client.neighbours(sequences, k=20)
        exclude = [[n.id for n in row[::2]] + catalogue_ids(30, rng) for row in alone]
        exclude[1] = []  # one that leaves nothing out, beside the others
        exclude[2] = catalogue_ids(1000, rng)  # the most an instance may
        found = client.neighbours(sequences, k=20, exclude=exclude)
    check(demo_repository, sequences, [[n._asdict() for n in row] for row in found], 20, exclude)
    assert [n.id for n in found[1]] == [n.id for n in alone[1]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequences=st.lists(
        st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=30), min_size=1, max_size=6
    ),
    k=st.integers(1, 100),
    content_type=st.sampled_from([JSON, JSONLINES]),
    accept=st.sampled_from([None, JSON, JSONLINES]),
    data=st.data(),
)
def test_any_in0_request_asking_neighbours_gets_them(
    server, demo_repository, catalogue, protocol, sequences, k, content_type, accept, data
):
    """With or without exclusions (up to the index's max_exclude ids an instance)."""
    ids = st.integers(0, 1999).map(lambda i: f"doc-{i:05d}")
    exclude = [
        data.draw(st.none() | st.lists(ids, max_size=catalogue.max_exclude)) for _ in sequences
    ]
    instances = [
        {"in0": s} | ({} if e is None else {"exclude": e})
        for s, e in zip(sequences, exclude, strict=True)
    ]
    if content_type == JSON:
        body = orjson.dumps({"instances": instances})
    else:
        body = b"\n".join(map(orjson.dumps, instances))
    answer = infer(server, protocol, body, neighbours_type(k, None, content_type), accept)
    left_out = [set(e or ()) for e in exclude]
    check(demo_repository, sequences, _lines(answer, accept or content_type), k, left_out)


@pytest.mark.parametrize(
    "content_type, instances, message",
    [
        ("application/json; neighbours=0", [{"in0": [1]}], "give an integer in [1, 100]"),
        ("application/json; neighbours=101", [{"in0": [1]}], "at most 100 a query"),
        ("application/json; neighbours=-3", [{"in0": [1]}], "give an integer"),
        ("application/json; neighbours=ten", [{"in0": [1]}], "give an integer"),
        ("application/json; neighbours=5; catalogue=movies", [{"in0": [1]}], "unknown catalogue"),
        ("application/json; catalogue=documents", [{"in0": [1]}], "needs neighbours=<k>"),
        ("application/json; neighbors=5", [{"in0": [1]}], "unknown content type parameter"),
        (
            "application/json; neighbours=5",
            [{"in0": [1]}, {"in0": [2], "in1": [3]}],
            "instances[1]: neighbours=<k> asks for the catalogue items nearest an in0",
        ),
        ("application/json; neighbours=5", [{"in1": [1]}], "each instance carries in0 only"),
        ("application/json; neighbours=5", [{"in0": [VOCAB]}], "outside the vocabulary"),
        (
            "application/json; neighbours=5",
            [{"in0": [1]}, {"in0": [2], "exclude": ["doc-00001", "doc-2"]}],
            "instances[1]: exclude[1] = 'doc-2' is not an id of the catalogue 'documents'",
        ),
        (
            "application/json; neighbours=5",
            [{"in0": [1], "exclude": {"doc-00001": 1}}],
            "instances[0]: exclude must be a list of catalogue ids, got dict",
        ),
        (
            "application/json; neighbours=5",
            [{"in0": [1], "exclude": [f"doc-{i:05d}" for i in range(1001)]}],
            "exclude holds 1001 ids; the catalogue 'documents' excludes at most 1000 an instance",
        ),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_neighbour_requests_get_a_client_error(
    server, protocol, content_type, instances, message
):
    body = orjson.dumps({"instances": instances})
    with pytest.raises(InferenceServerException) as error:
        infer(server, protocol, body, content_type)
    assert str(error.value.status()) in ("400", "StatusCode.INVALID_ARGUMENT")
    assert message in error.value.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_neighbours_model_answers_direct_calls(server, demo_repository, catalogue, protocol):
    module, client = client_for(server, protocol)
    queries = queries_of(demo_repository, [[8, 16, 24], [9, 17, 25, 33]])
    tensor = module.InferInput("query", list(queries.shape), "FP32")
    tensor.set_data_from_numpy(queries)
    result = client.infer("neighbours", [tensor])
    scores, items = result.as_numpy("scores"), result.as_numpy("items")
    assert scores.shape == items.shape == (2, catalogue.max_k)
    deep = result.as_numpy("deep_items")  # the same ranking, max_exclude deeper
    assert deep.shape == (2, catalogue.depth) == (2, 1100)
    assert deep[:, : catalogue.max_k].tolist() == items.tolist()
    ids, reference = catalogue_scores(demo_repository, queries)
    for row in range(2):
        got = [{"id": ids[i], "score": s} for i, s in zip(items[row], scores[row], strict=True)]
        check_neighbours(got, ids, reference[row], catalogue.max_k)
    # A query of the wrong width is refused; the model keeps serving.
    bad = module.InferInput("query", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("neighbours", [bad])
    assert client.infer("neighbours", [tensor]).as_numpy("items").tolist() == items.tolist()


def test_transform_writes_top_k_per_line(server, demo_repository, tmp_path):
    rng = np.random.default_rng(8)
    sequences = [rng.integers(1, VOCAB, size=rng.integers(1, 30)).tolist() for _ in range(120)]
    exclude = [catalogue_ids(int(rng.integers(0, 50)), rng) for _ in sequences]
    lines = [
        orjson.dumps({"in0": s, "exclude": e}) for s, e in zip(sequences, exclude, strict=True)
    ]
    lines[7] = orjson.dumps({"in0": [1], "in1": [2]})  # refused: an error record in its place
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    options = TransformOptions(
        urls=(server.http_url,),
        output_path=str(tmp_path / "out"),
        progress=False,
        neighbours=5,
        max_payload_mb=0.002,
    )
    summary = transform(str(tmp_path / "in.jsonl"), options)
    assert summary.records == 120 and len(summary.failures) == 1
    assert summary.failures[0].line == 8 and "in0 only" in summary.failures[0].message
    out = (tmp_path / "out" / "in.jsonl.out").read_bytes().splitlines()
    assert len(out) == 120 and b"error" in out[7]
    kept = [i for i in range(120) if i != 7]
    answers = [orjson.loads(out[i])["neighbours"] for i in kept]
    check(demo_repository, [sequences[i] for i in kept], answers, 5, [exclude[i] for i in kept])


def test_a_neighbours_k_below_one_is_refused_by_the_client(capsys):
    with pytest.raises(ValueError):
        neighbours_type(0)
    assert cli(["transform", "x", "--output-path", "y", "--neighbours", "-1"]) == 2
    assert "--neighbours K asks for K >= 1" in capsys.readouterr().err
