"""The service boundary, attacked: every request is judged alone, on a real tritonserver.

Property-based fuzzing (Hypothesis, as fil_backend's qa/ does) over HTTP and gRPC: arbitrary
bodies, media types and parameters get a 4xx with a message or the right answer, never a 5xx;
the same verdict as the front door's own parser gives in-process, and answers equal to ONNX
Runtime run on each instance alone. Then poison: good traffic beside bad traffic of every kind,
every good answer equal to the same request sent alone.
"""

from __future__ import annotations

import http.client
import json
import re
import struct
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from client.api import body_tensor
from contract.facts import Facts
from contract.names import JSON, JSONLINES
from contract.padding import pad
from tests.helpers import (
    DOC_EXAMPLE,
    DOC_EXAMPLE_BODY,
    answer_vectors,
    catalogue_scores,
    check_neighbours,
    client_for,
    infer_with,
    json_body,
    onnx_run,
    same,
)

VOCAB = (12000, 12000)  # the demo model's vocabularies (checked in the fixture)


@pytest.fixture(scope="module")
def facts(demo_repository) -> Facts:
    facts = Facts.load(demo_repository)
    assert facts.vocab_sizes == VOCAB
    return facts


def _status(error: InferenceServerException) -> str:
    return str(error.status())


def send(client, module, bodies: list[bytes], parameters: dict | None):
    """(answers, None) or (None, error) for one request with these bodies as rows."""
    tensor = body_tensor(module, bodies)
    try:
        result = client.infer("object2vec", [tensor], parameters=parameters or None)
    except InferenceServerException as error:
        return None, error
    return list(result.as_numpy("response").reshape(-1)), None


def reference_records(body: bytes) -> list | None:
    """The body's records as the hosted formats define them, read with the standard library's
    json, not with the parser under test; None if it has none."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    try:
        if isinstance(document, dict) and "instances" in document:
            records = document["instances"]
        else:
            records = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError:
        return None
    return records if isinstance(records, list) and records else None


# The demo catalogue's ids and how many an instance may exclude (export.neighbours' default)
CATALOGUE_IDS = frozenset(f"doc-{i:05d}" for i in range(2000))
MAX_EXCLUDE = 1000


def reference_exclusions(body: bytes) -> list[set] | None:
    """Each instance's excluded ids (a set, empty where it names none) as contract.neighbours
    defines them; None if any instance's `exclude` is not a list of at most MAX_EXCLUDE ids of
    the catalogue."""
    excluded = []
    for record in reference_records(body) or []:
        value = record.get("exclude") if isinstance(record, dict) else None
        if value is None:
            excluded.append(set())
        elif (
            isinstance(value, list)
            and len(value) <= MAX_EXCLUDE
            and all(isinstance(i, str) and i in CATALOGUE_IDS for i in value)
        ):
            excluded.append(set(value))
        else:
            return None
    return excluded


def reference_instances(body: bytes, vocab: tuple[int, int]) -> list[tuple] | None:
    """The (in0, in1) of each instance as the hosted formats define them (reference_records);
    None if the body is not valid."""
    records = reference_records(body)
    if records is None:
        return None
    pairs = []
    for record in records:
        if not isinstance(record, dict) or not ({"in0", "in1"} & record.keys()):
            return None
        pair = (record.get("in0"), record.get("in1"))
        for side, tokens in enumerate(pair):
            if tokens is None:
                continue
            if not isinstance(tokens, list) or not tokens:
                return None
            if not all(type(t) is int and 0 <= t < vocab[side] for t in tokens):
                return None
        pairs.append(pair)
    return pairs


def expected_vectors(repository, caps: tuple[int, int], pairs: list[tuple]) -> list:
    """Each instance, truncated to `caps`, run alone through ONNX Runtime: the right answer."""
    vectors = []
    for in0, in1 in pairs:
        in0 = None if in0 is None else in0[: caps[0]]
        in1 = None if in1 is None else in1[: caps[1]]
        if in0 is not None and in1 is not None:
            feed = {"in0": pad([in0], 10**9), "in1": pad([in1], 10**9)}
            vectors.append(("scores", onnx_run(repository, "pair", feed)[0]))
        else:
            side, tokens = (0, in0) if in0 is not None else (1, in1)
            feed = {"tokens": pad([tokens], 10**9)}
            vectors.append(("embeddings", onnx_run(repository, f"enc{side}", feed)[0]))
    return vectors


def asked_k(params: dict) -> int:
    """The k of `neighbours=k` on the request's content type (0: not asked)."""
    found = re.search(r"neighbours=(\d+)", str(params.get("content_type", "")))
    return int(found[1]) if found else 0


def truncation(facts: Facts, params: dict) -> tuple[int, int]:
    """The lengths a request's instances are cut to: the encoders' max_seq_len, or
    `infer_max_seqlens` on its content type where the request asks for less."""
    found = re.search(r"infer_max_seqlens=(\d+),(\d+)", str(params.get("content_type", "")))
    asked = (int(found[1]), int(found[2])) if found else facts.max_seq_lens
    return tuple(min(a, m) for a, m in zip(asked, facts.max_seq_lens, strict=True))


# ---- strategies -------------------------------------------------------------------------

ids = st.one_of(
    st.integers(0, VOCAB[0] - 1),
    st.integers(-3, -1),
    st.integers(VOCAB[0], VOCAB[0] + 3),
    st.integers(2**63, 2**70),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.none(),
)
sequences = st.one_of(
    st.lists(st.integers(0, VOCAB[0] - 1), min_size=1, max_size=30),  # valid, most often
    st.lists(ids, max_size=8),
    st.integers(),
    st.text(max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
valid_sequences = st.lists(st.integers(0, VOCAB[0] - 1), min_size=1, max_size=30)
valid_instances = st.one_of(
    st.fixed_dictionaries({"in0": valid_sequences}),
    st.fixed_dictionaries({"in1": valid_sequences}),
    st.fixed_dictionaries({"in0": valid_sequences, "in1": valid_sequences}),
)
instances = st.one_of(
    st.fixed_dictionaries({"in0": sequences}),
    st.fixed_dictionaries({"in1": sequences}),
    st.fixed_dictionaries({"in0": sequences, "in1": sequences}),
    st.fixed_dictionaries({"in0": sequences}, optional={"label": st.integers(), "x": st.text()}),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=3),
    st.none(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def _dumps(value) -> bytes:
    # The standard library: big integers and NaN (not JSON) go through, as a client may send.
    return json.dumps(value).encode()


@st.composite
def bodies(draw) -> tuple[bytes, str | None]:
    """(body, its format where it is valid by construction, else None)."""
    kind = draw(st.sampled_from(["valid", "json", "jsonlines", "json-any", "bytes", "truncated"]))
    if kind == "valid":
        chosen = draw(st.lists(valid_instances, min_size=1, max_size=5))
        if draw(st.booleans()):
            return _dumps({"instances": chosen}), JSON
        return b"\n".join(_dumps(i) for i in chosen), JSONLINES
    if kind == "json":
        return _dumps({"instances": draw(st.lists(instances, max_size=5))}), None
    if kind == "jsonlines":
        lines = [_dumps(i) for i in draw(st.lists(instances, max_size=5))]
        blanks = draw(st.lists(st.sampled_from([b"", b"  ", b"\r"]), max_size=2))
        return b"\n".join(lines + blanks), None
    if kind == "json-any":
        return _dumps(draw(json_values)), None
    if kind == "truncated":
        whole = _dumps({"instances": draw(st.lists(instances, min_size=1, max_size=3))})
        return whole[: draw(st.integers(0, len(whole)))], None
    return draw(st.binary(max_size=200)), None


media_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            JSON,
            JSONLINES,
            "application/x-ndjson",
            "text/plain",
            "*/*",
            "application/json; infer_max_seqlens=3,2",
            "application/jsonlines;infer_max_seqlens=0,1",
            "application/json; infer_max_seqlens=a,b",
            "application/json; infer_max_seqlens=7",
            "application/jsonlines; neighbours=3",
            "application/json; neighbours=100; catalogue=documents",
            "application/json; neighbours=1; infer_max_seqlens=3,2",
            "application/json; neighbours=0",
            "application/json; neighbours=3; catalogue=other",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "",
            ";;",
        ]
    ),
    st.text(max_size=30),
)
parameter_values = st.one_of(
    st.text(max_size=20), st.integers(-(2**40), 2**40), st.booleans(), media_types
)
well_formed_parameters = st.fixed_dictionaries(
    {},
    optional={
        "content_type": st.sampled_from(
            [
                JSON,
                JSONLINES,
                "application/json; infer_max_seqlens=3,2",
                "application/json; neighbours=4",
                "application/jsonlines; neighbours=10; catalogue=documents",
            ]
        ),
        "accept": st.sampled_from([JSON, JSONLINES, "*/*"]),
    },
)
# (parameters, whether they are well formed by construction)
parameters = st.one_of(
    st.tuples(well_formed_parameters, st.just(True)),
    st.tuples(
        st.fixed_dictionaries({}, optional={"content_type": media_types, "accept": media_types}),
        st.just(False),
    ),
    st.tuples(
        st.dictionaries(
            st.sampled_from(["content_type", "accept", "content-type", "x", "Accept"]),
            parameter_values,
            max_size=3,
        ),
        st.just(False),
    ),
)


def _clean(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


def check(server, repository, facts, protocol: str, rows: list[tuple], parameters: tuple) -> None:
    """The oracle knows what it generated: a valid body in its own format with well-formed
    parameters must be answered; anything answered must be what the standard library's json
    reads from the body, run through ONNX Runtime alone; anything refused is a 4xx with a
    message. The parser under test is never asked."""
    module, client = client_for(server, protocol)
    params, well_formed = _clean(parameters[0]), parameters[1]
    bodies_ = [body for body, _ in rows]
    answers, error = send(client, module, bodies_, params)
    declared = str(params.get("content_type", "")).split(";")[0].strip() or None
    must_answer = well_formed and all(f is not None and declared in (None, f) for _, f in rows)
    if asked_k(params):  # neighbours are for in0 instances only, excluding catalogue ids
        sides = [reference_instances(body, facts.vocab_sizes) or [] for body in bodies_]
        must_answer &= all(in1 is None for pairs in sides for _, in1 in pairs)
        must_answer &= all(reference_exclusions(body) is not None for body in bodies_)
    if error is not None:
        status = _status(error)
        event(f"error {status}")
        assert status in ("400", "StatusCode.INVALID_ARGUMENT"), error
        assert error.message(), "a client error says what is wrong"
        assert not must_answer, f"refused a valid request: {error}"
        return
    event("answered")
    assert len(answers) == len(bodies_)
    caps, k = truncation(facts, params), asked_k(params)
    for body, answer in zip(bodies_, answers, strict=True):
        pairs = reference_instances(body, facts.vocab_sizes)
        assert pairs is not None, f"answered a body that is not valid: {body[:200]!r}"
        expected = expected_vectors(repository, caps, pairs)
        got = answer_vectors(answer)
        if k:  # each instance is an in0, answered its k nearest catalogue items
            event("answered neighbours")
            assert all(key == "neighbours" for key, _ in got)
            assert all(in1 is None for _, in1 in pairs), "neighbours answered for an in1"
            excluded = reference_exclusions(body)
            assert excluded is not None, f"answered exclusions that are not valid: {body[:200]!r}"
            ids, scores = catalogue_scores(repository, [v for _, v in expected])
            if any(excluded):
                event("answered neighbours, some excluding")
            for row, (_, found) in enumerate(got):
                check_neighbours(found, ids, scores[row], k, excluded[row])
            continue
        assert [k for k, _ in got] == [k for k, _ in expected]
        for (_, g), (_, e) in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)


FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@FUZZ
@given(body=bodies(), params=parameters)
def test_fuzzed_requests_get_a_client_error_or_the_right_answer(
    server, demo_repository, facts, protocol, body, params
):
    check(server, demo_repository, facts, protocol, [body], params)


catalogue_ids = st.integers(0, 1999).map(lambda i: f"doc-{i:05d}")
valid_exclusions = st.lists(catalogue_ids, max_size=20)
exclusions = st.one_of(
    valid_exclusions,
    st.lists(catalogue_ids, min_size=MAX_EXCLUDE + 1, max_size=MAX_EXCLUDE + 1),
    st.lists(
        st.one_of(catalogue_ids, st.text(max_size=8), st.integers(-3, 3000), st.booleans()),
        max_size=3,
    ),
    st.none(),
    st.integers(),
    st.text(max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def in0_bodies(draw) -> tuple[bytes, str | None]:
    """Bodies of in0 instances, valid or not: what a request asking for neighbours carries."""
    valid = draw(st.booleans())
    chosen = draw(
        st.lists(
            st.fixed_dictionaries(
                {"in0": valid_sequences if valid else sequences},
                optional={"exclude": valid_exclusions if valid else exclusions},
            ),
            min_size=1,
            max_size=5,
        )
    )
    if draw(st.booleans()):
        return _dumps({"instances": chosen}), JSON if valid else None
    return b"\n".join(_dumps(i) for i in chosen), JSONLINES if valid else None


neighbour_parameters = st.one_of(
    st.tuples(
        st.fixed_dictionaries(
            {
                "content_type": st.sampled_from(
                    [f"{t}; neighbours={k}" for t in (JSON, JSONLINES) for k in (1, 9, 100)]
                )
            },
            optional={"accept": st.sampled_from([JSON, JSONLINES])},
        ),
        st.just(True),
    ),
    st.tuples(
        st.fixed_dictionaries(
            {
                "content_type": st.builds(
                    lambda t, k, extra: f"{t}; neighbours={k}{extra}",
                    st.sampled_from([JSON, JSONLINES, "text/plain"]),
                    st.one_of(st.integers(-5, 200), st.text(max_size=4)),
                    st.sampled_from(["", "; catalogue=documents", "; catalogue=x", "; k=1", ";"]),
                )
            }
        ),
        st.just(False),
    ),
)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@settings(FUZZ, max_examples=200)
@given(body=st.one_of(in0_bodies(), bodies()), params=neighbour_parameters)
def test_fuzzed_neighbour_requests_get_a_client_error_or_their_neighbours(
    server, demo_repository, facts, protocol, body, params
):
    check(server, demo_repository, facts, protocol, [body], params)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@settings(FUZZ, max_examples=100)
@given(rows=st.lists(bodies(), min_size=1, max_size=4), params=parameters)
def test_fuzzed_requests_with_several_bodies_are_answered_whole_or_refused(
    server, demo_repository, facts, protocol, rows, params
):
    check(server, demo_repository, facts, protocol, rows, params)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_several_bodies_in_one_request_are_all_answered(server, protocol):
    module, client = client_for(server, protocol)
    rows = [json_body([{"in0": s}]).encode() for s in DOC_EXAMPLE]
    answers, error = send(client, module, rows, {"content_type": JSON})
    assert error is None
    for row, answer in zip(rows, answers, strict=True):
        alone, _ = send(client, module, [row], {"content_type": JSON})
        assert answer == alone[0]
    answers, error = send(client, module, rows + [b"{"], {"content_type": JSON})
    assert answers is None and "body 4 of 4: malformed JSON" in error.message()


def test_instances_per_request_are_capped(server):
    module, client = client_for(server, "grpc")
    many = json_body([{"in0": [1]}] * 10_001).encode()
    answers, error = send(client, module, [many], {"content_type": JSON})
    assert "10001 instances exceed the limit of 10000 per request" in error.message()
    lines = b"\n".join([b'{"in1": [2]}'] * 10_001)
    answers, error = send(client, module, [lines], None)
    assert "exceed the limit" in error.message()
    answers, error = send(client, module, [json_body([{"in0": [1]}] * 10_000).encode()], None)
    assert error is None and answers[0].count(b"embeddings") == 10_000


# ---- malformed tensors: what a client can send below the hosted formats ------------------

LIE = struct.pack("<I", 10_000_000) + DOC_EXAMPLE_BODY[:223]  # a BYTES prefix claiming 10 MB


def _kserve_header(inputs: list[dict], binary: bool = True) -> bytes:
    outputs = [{"name": "response", "parameters": {"binary_data": True}}] if binary else []
    return orjson.dumps({"inputs": inputs, "outputs": outputs})


def _http_tensor_requests() -> dict[str, tuple[bytes, dict]]:
    """(data, headers) of each malformed KServe request over HTTP, by name."""
    body = DOC_EXAMPLE_BODY

    def binary(inputs, payload):
        header = _kserve_header(inputs)
        return header + payload, {"Inference-Header-Content-Length": str(len(header))}

    def plain(document):
        return orjson.dumps(document), {}

    lying = {"name": "body", "shape": [1, 1], "datatype": "BYTES"}
    raw = {"name": "body", "datatype": "UINT8"}
    return {
        # The attack of issue 18: an honest binary_data_size, a lying element prefix.
        "bytes lying prefix": binary([lying | {"parameters": {"binary_data_size": len(LIE)}}], LIE),
        "bytes prefix 0xFFFFFFFF": binary(
            [lying | {"parameters": {"binary_data_size": 227}}], b"\xff" * 4 + body[:223]
        ),
        "uint8 size below shape": binary(
            [raw | {"shape": [1, len(body)], "parameters": {"binary_data_size": 50}}], body[:50]
        ),
        "uint8 size above shape": binary(
            [raw | {"shape": [1, 10], "parameters": {"binary_data_size": len(body)}}], body
        ),
        "uint8 shape product overflows": binary(
            [raw | {"shape": [2**40, 2**40], "parameters": {"binary_data_size": 16}}], body[:16]
        ),
        "uint8 json data over 255": plain(
            {"inputs": [raw | {"shape": [1, 3], "data": [300, 1, 2]}]}
        ),
        "uint8 json data as text": plain({"inputs": [raw | {"shape": [1, 1], "data": ["{}"]}]}),
        "uint8 json data short": plain({"inputs": [raw | {"shape": [1, 9], "data": [123, 125]}]}),
        "wrong input name": plain(
            {
                "inputs": [
                    {"name": "bodies", "datatype": "UINT8", "shape": [1, 2], "data": [123, 125]}
                ]
            }
        ),
        "two inputs": plain(
            {
                "inputs": [
                    raw | {"shape": [1, 2], "data": [123, 125]},
                    {"name": "extra", "datatype": "UINT8", "shape": [1, 2], "data": [1, 2]},
                ]
            }
        ),
        "no inputs": plain({"inputs": []}),
        "int64 body": plain(
            {"inputs": [{"name": "body", "datatype": "INT64", "shape": [1, 1], "data": [1]}]}
        ),
        "empty body tensor": plain({"inputs": [raw | {"shape": [1, 0], "data": []}]}),
        "batch over max_batch_size": binary(
            [raw | {"shape": [65, 1], "parameters": {"binary_data_size": 65}}], b"{" * 65
        ),
        "unknown output": plain(
            {
                "inputs": [raw | {"shape": [1, 2], "data": [123, 125]}],
                "outputs": [{"name": "nothing"}],
            }
        ),
    }


def _grpc_tensor_requests() -> dict[str, service_pb2.ModelInferRequest]:
    """Each malformed ModelInferRequest over gRPC, by name."""
    body = DOC_EXAMPLE_BODY

    def request(name="body", datatype="UINT8", shape=None, raw=(body,), extra=None):
        shape = shape or (1, len(body))
        message = service_pb2.ModelInferRequest(model_name="object2vec")
        tensor = message.inputs.add(name=name, datatype=datatype, shape=list(shape))
        if extra:
            extra(tensor)
        message.raw_input_contents.extend(raw)
        return message

    def two_inputs():
        message = request()
        message.inputs.add(name="extra", datatype="UINT8", shape=[1, 1])
        message.raw_input_contents.append(b"x")
        return message

    return {
        "bytes lying prefix (raw_input_contents)": request(
            datatype="BYTES", shape=(1, 1), raw=(LIE,)
        ),
        "uint8 raw shorter than shape": request(raw=(body[:50],)),
        "uint8 raw longer than shape": request(shape=(1, 10)),
        "uint8 two raw contents for one input": request(raw=(body, body)),
        "uint8 contents and raw both": request(
            extra=lambda t: t.contents.uint_contents.extend([1, 2])
        ),
        "uint8 contents over 255": request(
            shape=(1, 2), raw=(), extra=lambda t: t.contents.uint_contents.extend([300, 1])
        ),
        "negative dim": request(shape=(1, -5)),
        "wrong input name": request(name="bodies"),
        "two inputs": two_inputs(),
        "empty body tensor": request(shape=(1, 0), raw=(b"",)),
    }


def _send_http_tensor(server, data: bytes, headers: dict) -> int:
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", "/v2/models/object2vec/infer", data, headers)
        return connection.getresponse().status
    finally:
        connection.close()


def _send_grpc_tensor(stub, message) -> grpc.StatusCode:
    try:
        stub.ModelInfer(message, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _grpc_stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


# Triton 2.51's own HTTP parser answers these with 500 before any model runs; the project
# cannot change that parser (docs/robustness.md lists them). Nothing else may be a 5xx: the
# test below pins this list, and every other malformed request here and in the fuzzing above
# must get a 4xx.
TRITON_HTTP_500 = {"uint8 json data as text", "uint8 json data short"}
# Triton takes the first of several raw contents for one input: a well-formed body, answered.
GRPC_ANSWERED = {"uint8 two raw contents for one input"}


def _triton_parser_cases() -> dict[str, tuple[bytes, dict]]:
    def header(inputs: list[dict]) -> bytes:
        return orjson.dumps({"inputs": inputs})

    raw = {"name": "body", "shape": [1, 2], "datatype": "UINT8"}
    lying_size = header([raw | {"parameters": {"binary_data_size": -1}}])
    short = header([raw | {"parameters": {"binary_data_size": 2}}])
    return {
        "body {": (b"{", {}),
        "body []": (b"[]", {}),
        'body {"inputs": 5}': (b'{"inputs": 5}', {}),
        "shape [-1, 1]": (header([raw | {"shape": [-1, 1], "data": [1]}]), {}),
        "UINT8 data as text": (header([raw | {"shape": [1, 1], "data": ["{}"]}]), {}),
        "UINT8 data shorter than its shape": (header([raw | {"data": [123]}]), {}),
        "BYTES data as integers": (
            header([{"name": "body", "shape": [1, 1], "datatype": "BYTES", "data": [5]}]),
            {},
        ),
        "binary_data_size -1": (
            lying_size + b"{}",
            {"Inference-Header-Content-Length": str(len(lying_size))},
        ),
        "Inference-Header-Content-Length shorter than the header": (
            short + b"{}",
            {"Inference-Header-Content-Length": str(len(short) - 10)},
        ),
        "a raw body without Inference-Header-Content-Length": (DOC_EXAMPLE_BODY, {}),
    }


def test_the_500s_of_tritons_own_parser_are_exactly_the_documented_ones(server):
    """Triton's HTTP parser, not ours: each answered 500 with its parse message, before any
    model runs. If a Triton release fixes one, this fails: update docs/robustness.md."""
    for name, (data, headers) in _triton_parser_cases().items():
        host, port = server.http_url.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v2/models/object2vec/infer", data, headers)
        response = connection.getresponse()
        message = orjson.loads(response.read())["error"]
        connection.close()
        assert response.status == 500, f"{name}: {response.status}"
        assert message.startswith(("Unable to parse", "failed to parse")), f"{name}: {message}"


def test_malformed_tensors_get_a_client_error(server):
    for name, (data, headers) in _http_tensor_requests().items():
        status = _send_http_tensor(server, data, headers)
        expected = 500 if name in TRITON_HTTP_500 else 400
        assert status == expected, f"HTTP {name}: {status}"
    stub = _grpc_stub(server)
    for name, message in _grpc_tensor_requests().items():
        code = _send_grpc_tensor(stub, message)
        expected = grpc.StatusCode.OK if name in GRPC_ANSWERED else grpc.StatusCode.INVALID_ARGUMENT
        assert code == expected, f"gRPC {name}: {code}"


def beside_poison(poisoner, poisoners: int, good, count: int, workers: int) -> tuple[list, int]:
    """`good(i)` for i < count on `workers` threads while `poisoners` threads keep calling the
    step `poisoner(seed)` returns; (good's results, bad requests sent)."""
    stop, sent = threading.Event(), Counter()

    def loop(seed: int) -> None:
        step = poisoner(seed)
        while not stop.is_set():
            step()
            sent["bad"] += 1

    with ThreadPoolExecutor(poisoners) as bad_pool:
        for seed in range(poisoners):
            bad_pool.submit(loop, seed)
        try:
            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(good, range(count)))
        finally:
            stop.set()
    return outcomes, sent["bad"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_tensors_never_fail_the_requests_batched_with_them(server, protocol):
    """Good requests from 4 threads beside 2 threads sending every malformed tensor, the lying
    BYTES prefix first: not one good request may fail or change (before the UINT8 input, 4,385
    of 13,934 good requests failed over HTTP beside the lying prefix alone)."""
    module, client = client_for(server, protocol)
    expected = infer_with(module, client, DOC_EXAMPLE_BODY, JSON)
    bad = list(_http_tensor_requests().values()) if protocol == "http" else None
    messages = list(_grpc_tensor_requests().values())

    def poisoner(seed: int):
        stub, turn = _grpc_stub(server), iter(range(seed, 10**9))

        def step() -> None:
            index = next(turn)
            if protocol == "http":
                _send_http_tensor(server, *bad[index % len(bad)])
            else:
                _send_grpc_tensor(stub, messages[index % len(messages)])

        return step

    local = threading.local()

    def good(_):
        if not hasattr(local, "client"):
            local.module, local.client = client_for(server, protocol)
        try:
            return infer_with(local.module, local.client, DOC_EXAMPLE_BODY, JSON)
        except InferenceServerException as error:
            return error

    outcomes, sent = beside_poison(poisoner, 2, good, 1500, 4)
    failed = [o for o in outcomes if isinstance(o, InferenceServerException)]
    changed = [o for o in outcomes if not isinstance(o, InferenceServerException) and o != expected]
    print(
        f"malformed tensors ({protocol}): {len(outcomes)} good, {sent} bad, "
        f"{len(failed)} good failed, {len(changed)} changed"
    )
    assert not failed, failed[:3]
    assert not changed
    assert sent > 100, "too little poison to prove anything"


# ---- the networks, called directly ------------------------------------------------------


def _network(client, module, model: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs).as_numpy(
        "embedding" if model.startswith("enc") else "scores"
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_networks_answer_bad_ids_with_nan_rows_and_batch_mates_correctly(server, protocol):
    module, client = client_for(server, protocol)
    good = np.array([[6, 17, 606, 0]], dtype=np.int64)
    alone = _network(client, module, "enc0", {"tokens": good})
    mixed = np.array(
        [[6, 17, 606, 0], [-5, 1, 2, 3], [12000, 1, 0, 0], [2**40, 0, 0, 0]], dtype=np.int64
    )
    answer = _network(client, module, "enc0", {"tokens": mixed})
    np.testing.assert_allclose(answer[0], alone[0], atol=1e-6)
    assert np.isnan(answer[1:]).all(), "a bad id must not be answered (no wrap-around)"
    empty = _network(client, module, "enc1", {"tokens": np.zeros((2, 0), dtype=np.int64)})
    assert empty.shape[0] == 2 and np.isnan(empty).all()
    pair = _network(
        client,
        module,
        "pair",
        {"in0": np.array([[1, 2], [3, -1]]), "in1": np.array([[4, 5], [6, 7]])},
    )
    assert np.isfinite(pair[0]).all() and np.isnan(pair[1]).all()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_direct_calls_of_any_lengths_share_batches_and_answer_as_alone(
    server, demo_repository, protocol
):
    """Issue 22: an encoder with a ragged form is batched by Triton across requests of
    different lengths ([1, L] or padded [B, L]); each answer is the padded graph's alone."""
    module, client = client_for(server, protocol)
    admin = client_for(server, "http")[1]  # its config and statistics come as dicts
    config = admin.get_model_config("enc0")
    if not config["input"][0].get("allow_ragged_batch"):
        pytest.skip("this server's enc0 is not ragged (a bilstm encoder, or a config by hand)")
    rng = np.random.default_rng(22)
    vocabulary = Facts.load(demo_repository).vocab_sizes[0]
    requests = [
        rng.integers(1, vocabulary, size=(int(rng.integers(1, 3)), int(rng.integers(1, 70))))
        for _ in range(300)
    ]
    requests[7][0, 0] = vocabulary  # a bad id: NaN for its row alone
    before = admin.get_inference_statistics("enc0")
    local = threading.local()

    def call(tokens: np.ndarray) -> np.ndarray:
        if not hasattr(local, "client"):
            local.module, local.client = client_for(server, protocol)
        return _network(local.client, local.module, "enc0", {"tokens": tokens})

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, requests))
    after = admin.get_inference_statistics("enc0")
    executions, inferences = (
        _stat(after, key) - _stat(before, key) for key in ("execution_count", "inference_count")
    )
    print(f"enc0 direct ({protocol}): {len(requests)} requests in {executions} executions")
    assert inferences == sum(len(r) for r in requests)
    assert executions < len(requests), "requests of different lengths were not batched"
    for tokens, answer in zip(requests, answers, strict=True):
        alone = onnx_run(demo_repository, "enc0", {"tokens": tokens})
        np.testing.assert_array_equal(np.isnan(answer), np.isnan(alone))
        np.testing.assert_allclose(np.nan_to_num(answer), np.nan_to_num(alone), atol=1e-5)
    assert np.isnan(answers[7][0]).all() and not np.isnan(answers[8]).any()
    with pytest.raises(InferenceServerException, match="expected 1 inputs"):
        lengths = np.array([[3]], dtype=np.int32)  # Triton's to compute, not the client's
        _network(client, module, "enc0", {"tokens": np.ones((1, 3), np.int64), "lengths": lengths})


def _stat(stats: dict, key: str) -> int:
    return int(stats["model_stats"][0][key])


# ---- poison: good traffic beside bad traffic of every kind ------------------------------

GOOD = [
    (json_body([{"in0": s} for s in DOC_EXAMPLE]).encode(), JSON),
    (b'{"in0": [1, 2, 3], "in1": [4, 5]}\n{"in1": [9]}\n', JSONLINES),
    (json_body([{"in0": [7] * 40, "in1": [3, 4]}, {"in1": [11, 12]}]).encode(), None),
    (b'{"in0": [8, 16, 24]}\n{"in0": [9]}\n', "application/jsonlines; neighbours=7"),
    (
        b'{"in0": [8, 16, 24], "exclude": ["doc-00001", "doc-01999"]}\n{"in0": [9]}\n',
        "application/jsonlines; neighbours=7",
    ),
]


def _poison(client, module, kind: int) -> None:
    """One bad request of the given kind; whatever it gets back is ignored."""
    bad_bodies = [b"{", b'{"instances": [{"in0": [-1]}]}', b'{"in0": [true]}', b"", b"\xff"]
    try:
        if kind == 0:
            send(client, module, [GOOD[0][0]], {"content_type": 5})
        elif kind == 1:
            send(client, module, [bad_bodies[np.random.randint(len(bad_bodies))]], None)
        elif kind == 2:
            send(client, module, [GOOD[0][0], b"{"], None)
        elif kind == 3:
            _network(client, module, "enc0", {"tokens": np.array([[-5, 99999]], dtype=np.int64)})
        elif kind == 4:
            _network(client, module, "enc1", {"tokens": np.zeros((1, 0), dtype=np.int64)})
        elif kind == 5:
            send(client, module, [json_body([{"in0": [1]}] * 10_001).encode()], None)
        elif kind == 6:
            send(client, module, [GOOD[0][0]], {"accept": "text/html", "x": True})
        elif kind == 7:
            bad_k = ["neighbours=1000", "neighbours=5; catalogue=x", "neighbors=3", "neighbours=5"][
                np.random.randint(4)
            ]
            bad_exclusions = b'{"in0": [8], "exclude": ["doc-1", 5, null]}\n' * 3
            send(
                client,
                module,
                [GOOD[3][0], bad_exclusions],
                {"content_type": f"{JSONLINES}; {bad_k}"},
            )
        elif kind == 8:  # the search itself, called with NaN and infinite queries
            query = np.full((3, 16), np.nan, dtype=np.float32)
            query[1] = np.inf
            _network(client, module, "neighbours", {"query": query})
        else:
            _network(
                client,
                module,
                "pair",
                {"in0": np.array([[1, 12000]]), "in1": np.array([[-1, 2]])},
            )
    except InferenceServerException:
        pass


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_never_change_or_fail_good_ones(server, protocol):
    module, client = client_for(server, protocol)
    expected = [
        send(client, module, [body], {"content_type": ct} if ct else None)[0][0]
        for body, ct in GOOD
    ]

    def poisoner(seed: int):
        (m, c), kinds = client_for(server, protocol), iter(range(seed, 10**9))
        return lambda: _poison(c, m, next(kinds) % 10)

    local = threading.local()  # tritonclient's HTTP client is not shared across threads

    def good(i: int):
        if not hasattr(local, "client"):
            local.module, local.client = client_for(server, protocol)
        body, ct = GOOD[i % len(GOOD)]
        params = {"content_type": ct} if ct else None
        answers, error = send(local.client, local.module, [body], params)
        return i % len(GOOD), answers, error

    outcomes, sent = beside_poison(poisoner, 4, good, 600, 12)
    failed = [(i, e) for i, answers, e in outcomes if e is not None]
    wrong = [i for i, answers, e in outcomes if e is None and not same(answers[0], expected[i])]
    print(
        f"poison ({protocol}): {len(outcomes)} good, {sent} bad, "
        f"{len(failed)} good failed, {len(wrong)} good changed"
    )
    assert not failed, failed[:3]
    assert not wrong
    assert sent > 50, "too little poison to prove anything"
