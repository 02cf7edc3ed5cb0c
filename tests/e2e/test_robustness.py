"""The service boundary, attacked: every request is judged alone, on a real tritonserver.

Property-based fuzzing (Hypothesis, as fil_backend's qa/ does) over HTTP and gRPC: arbitrary
bodies, media types and parameters get a 4xx with a message or the right answer, never a 5xx;
the same verdict as the front door's own parser gives in-process, and answers equal to ONNX
Runtime run on each instance alone. Then poison: good traffic beside bad traffic of every kind,
every good answer equal to the same request sent alone.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from contract.facts import Facts
from contract.names import JSON, JSONLINES
from contract.padding import pad
from server.payload import Limits, PayloadError, parse_bodies, parse_request, request_options
from tests.helpers import DOC_EXAMPLE, answer_vectors, client_for, json_body, onnx_run, same

OUTCOMES: Counter = Counter()
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
    tensor = module.InferInput("body", [len(bodies), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b] for b in bodies], dtype=np.object_))
    try:
        result = client.infer("object2vec", [tensor], parameters=parameters or None)
    except InferenceServerException as error:
        return None, error
    return list(result.as_numpy("response").reshape(-1)), None


def expected_vectors(repository, facts: Facts, body: bytes, content_type, accept) -> list:
    """Each instance run alone through ONNX Runtime in-process: the right answer."""
    request = parse_request(body, content_type, accept, Limits.of(facts, 16 * 1024 * 1024))
    vectors = []
    for instance in request.instances:
        if instance.in0 is not None and instance.in1 is not None:
            feed = {"in0": pad([instance.in0], 10**9), "in1": pad([instance.in1], 10**9)}
            vectors.append(("scores", onnx_run(repository, "pair", feed)[0]))
        else:
            side = 0 if instance.in0 is not None else 1
            feed = {"tokens": pad([instance.in0 if side == 0 else instance.in1], 10**9)}
            vectors.append(("embeddings", onnx_run(repository, f"enc{side}", feed)[0]))
    return vectors


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
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "json", "jsonlines", "json-any", "bytes", "truncated"]))
    if kind == "valid":
        chosen = draw(st.lists(valid_instances, min_size=1, max_size=5))
        if draw(st.booleans()):
            return _dumps({"instances": chosen})
        return b"\n".join(_dumps(i) for i in chosen)
    if kind == "json":
        document = {"instances": draw(st.lists(instances, max_size=5))}
        return _dumps(document)
    if kind == "jsonlines":
        lines = [_dumps(i) for i in draw(st.lists(instances, max_size=5))]
        blanks = draw(st.lists(st.sampled_from([b"", b"  ", b"\r"]), max_size=2))
        return b"\n".join(lines + blanks)
    if kind == "json-any":
        return _dumps(draw(json_values))
    if kind == "truncated":
        whole = _dumps({"instances": draw(st.lists(instances, min_size=1, max_size=3))})
        return whole[: draw(st.integers(0, len(whole)))]
    return draw(st.binary(max_size=200))


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
            [JSON, JSONLINES, "application/json; infer_max_seqlens=3,2"]
        ),
        "accept": st.sampled_from([JSON, JSONLINES, "*/*"]),
    },
)
parameters = st.one_of(
    st.just({}),
    well_formed_parameters,
    st.fixed_dictionaries({}, optional={"content_type": media_types, "accept": media_types}),
    st.dictionaries(
        st.sampled_from(["content_type", "accept", "content-type", "x", "Accept"]),
        parameter_values,
        max_size=3,
    ),
)


def _clean(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


def check(server, repository, facts, protocol: str, bodies_: list[bytes], params: dict) -> None:
    module, client = client_for(server, protocol)
    params = _clean(params)
    answers, error = send(client, module, bodies_, params)
    # The verdict the front door's own parser gives in-process.
    try:
        content_type, accept = request_options(params)
        parse_bodies(bodies_, content_type, accept, Limits.of(facts, 16 * 1024 * 1024))
        verdict = None
    except PayloadError as rejected:
        verdict = rejected
    if error is not None:
        status = _status(error)
        OUTCOMES[f"{protocol} {status}"] += 1
        event(f"error {status}")
        assert status in ("400", "StatusCode.INVALID_ARGUMENT"), error
        assert error.message(), "a client error says what is wrong"
        assert verdict is not None, f"refused what the parser accepts: {error}"
        return
    OUTCOMES[f"{protocol} answered"] += 1
    event("answered")
    assert verdict is None, f"answered what the parser refuses: {verdict}"
    assert len(answers) == len(bodies_)
    for body, answer in zip(bodies_, answers, strict=True):
        expected = expected_vectors(repository, facts, body, content_type, accept)
        got = answer_vectors(answer)
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


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@settings(FUZZ, max_examples=100)
@given(rows=st.lists(bodies(), min_size=1, max_size=4), params=parameters)
def test_fuzzed_requests_with_several_bodies_are_answered_whole_or_refused(
    server, demo_repository, facts, protocol, rows, params
):
    check(server, demo_repository, facts, protocol, rows, params)


def test_fuzz_outcomes_are_reported():
    """Not a check: prints what the fuzzing above saw (run with -s to read it)."""
    print("fuzz outcomes:", dict(sorted(OUTCOMES.items())))


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


@pytest.mark.parametrize("tensor", ["int-body", "wrong-name", "two-inputs", "empty"])
def test_wrong_tensors_are_refused_by_triton(server, tensor):
    module, client = client_for(server, "http")
    if tensor == "int-body":
        inputs = [module.InferInput("body", [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(np.array([[1]], dtype=np.int64))
    elif tensor == "wrong-name":
        inputs = [module.InferInput("bodies", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[b"{}"]], dtype=np.object_))
    elif tensor == "two-inputs":
        inputs = [module.InferInput(n, [1, 1], "BYTES") for n in ("body", "extra")]
        for i in inputs:
            i.set_data_from_numpy(np.array([[b"{}"]], dtype=np.object_))
    else:
        inputs = [module.InferInput("body", [0, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.zeros((0, 1), dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer("object2vec", inputs)
    assert _status(error.value) == "400" and error.value.message()


# ---- the networks, called directly ------------------------------------------------------


def _network(client, module, model: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs).as_numpy("embedding" if model != "pair" else "scores")


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


# ---- poison: good traffic beside bad traffic of every kind ------------------------------

GOOD = [
    (json_body([{"in0": s} for s in DOC_EXAMPLE]).encode(), JSON),
    (b'{"in0": [1, 2, 3], "in1": [4, 5]}\n{"in1": [9]}\n', JSONLINES),
    (json_body([{"in0": [7] * 40, "in1": [3, 4]}, {"in1": [11, 12]}]).encode(), None),
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
    stop = threading.Event()
    sent = Counter()

    def poisoner(seed: int) -> None:
        m, c = client_for(server, protocol)
        kind = seed
        while not stop.is_set():
            _poison(c, m, kind % 8)
            sent["bad"] += 1
            kind += 1

    local = threading.local()  # tritonclient's HTTP client is not shared across threads

    def good(i: int):
        if not hasattr(local, "client"):
            local.module, local.client = client_for(server, protocol)
        body, ct = GOOD[i % len(GOOD)]
        params = {"content_type": ct} if ct else None
        answers, error = send(local.client, local.module, [body], params)
        return i % len(GOOD), answers, error

    with ThreadPoolExecutor(4) as bad_pool:
        for seed in range(4):
            bad_pool.submit(poisoner, seed)
        try:
            with ThreadPoolExecutor(12) as pool:
                outcomes = list(pool.map(good, range(600)))
        finally:
            stop.set()
    failed = [(i, e) for i, answers, e in outcomes if e is not None]
    wrong = [i for i, answers, e in outcomes if e is None and not same(answers[0], expected[i])]
    print(
        f"poison ({protocol}): {len(outcomes)} good, {sent['bad']} bad, "
        f"{len(failed)} good failed, {len(wrong)} good changed"
    )
    assert not failed, failed[:3]
    assert not wrong
    assert sent["bad"] > 50, "too little poison to prove anything"
