"""The request format, checked without a server: parsing, errors and formatting."""

import json

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.errors import ServiceError
from contract.names import JSON, JSONLINES
from server.frontdoor import payload
from server.frontdoor.payload import Limits, ParsedRequest, format_response, parse_request

LIMITS = Limits(vocab_sizes=(100, 50), max_seq_lens=(8, 4), max_body_bytes=1000)


def parse(body, content_type=JSON, accept=None, limits=LIMITS):
    return parse_request(
        body if isinstance(body, bytes) else body.encode(), content_type, accept, limits
    )


def test_json_and_jsonlines_give_the_same_instances():
    as_json = parse('{"instances": [{"in0": [1, 2]}, {"in0": [3], "in1": [4]}]}')
    as_lines = parse('{"in0": [1, 2]}\n\n{"in0": [3], "in1": [4]}\n', JSONLINES)
    for a, b in zip(as_json.instances, as_lines.instances, strict=True):
        assert a.in0.tolist() == b.in0.tolist()
        assert (a.in1 is None) == (b.in1 is None)
    assert as_json.accept == JSON and as_lines.accept == JSONLINES


def test_format_is_sniffed_when_no_content_type_is_given():
    assert parse('{"instances": [{"in0": [1]}]}', None).accept == JSON
    assert parse('{"in0": [1]}\n{"in1": [2]}', None).accept == JSONLINES
    assert parse('{"in0": [1]}', "").accept == JSONLINES


def test_truncation_to_max_seq_len_and_infer_max_seqlens():
    request = parse('{"instances": [{"in0": [1,2,3,4,5,6,7,8,9,10], "in1": [1,2,3,4,5,6]}]}')
    assert len(request.instances[0].in0) == 8 and len(request.instances[0].in1) == 4
    request = parse(
        '{"instances": [{"in0": [1,2,3,4,5,6], "in1": [1,2,3]}]}',
        "application/json; infer_max_seqlens=3,2",
    )
    assert request.instances[0].in0.tolist() == [1, 2, 3]
    assert request.instances[0].in1.tolist() == [1, 2]


def test_extra_keys_are_tolerated_and_accept_may_differ():
    request = parse('{"instances": [{"in0": [1], "label": 1, "id": "x"}]}', JSON, JSONLINES)
    assert request.accept == JSONLINES and request.instances[0].in0.tolist() == [1]
    assert parse('{"in0": [1]}', JSONLINES, "*/*").accept == JSONLINES


@pytest.mark.parametrize(
    "body, content_type, accept, message",
    [
        ('{"instances": [{"in0": [1]}', JSON, None, "malformed JSON"),
        (
            '{"in0": [1]}\n{"in0": [2]}',
            JSON,
            None,
            "are JSON Lines: send them with content type application/jsonlines",
        ),
        ('{"in0": [1]}\n{"in0": [2}', JSONLINES, None, "line 2: malformed JSON Lines"),
        ('{"records": []}', JSON, None, '"instances"'),
        ('{"instances": []}', JSON, None, "no instances"),
        (
            '{"instances": [{"in0": [1]}, {"label": 3}]}',
            JSON,
            None,
            "instances[1]: has neither in0 nor in1 (keys: label)",
        ),
        ('{"in0": [1]}\n{"in0": [1.5]}', JSONLINES, None, "line 2: in0 holds 1.5"),
        ('{"in0": [1]}\n{"in0": ["a"]}', JSONLINES, None, "line 2: in0 holds 'a'"),
        ('{"instances": [{"in0": [1, -3]}]}', JSON, None, "instances[0]: in0 holds -3"),
        (
            '{"instances": [{"in1": [1, 50]}]}',
            JSON,
            None,
            "instances[0]: in1 holds token id 50, outside the vocabulary of enc1 (ids 0..49)",
        ),
        ('{"instances": [{"in0": []}]}', JSON, None, "instances[0]: in0 is empty"),
        ('{"instances": [{"in0": 5}]}', JSON, None, "in0 must be a list"),
        ('{"instances": [{"in0": [true]}]}', JSON, None, "in0 holds True"),
        ('{"instances": [{"in0": [1]}]}', "text/csv", None, "unsupported content type 'text/csv'"),
        ('{"instances": [{"in0": [1]}]}', JSON, "text/html", "unsupported accept type 'text/html'"),
        (
            '{"instances": [{"in0": [1]}]}',
            "application/json; infer_max_seqlens=0,3",
            None,
            "infer_max_seqlens='0,3'",
        ),
        (
            '{"instances": [{"in0": [1]}]}',
            "application/json; infer_max_seqlens=7",
            None,
            "infer_max_seqlens='7'",
        ),
        ("   ", JSON, None, "empty body"),
        (
            '{"instances": [{"in0": [' + "1," * 600 + "1]}]}",
            JSON,
            None,
            "exceeds the limit of 1000 bytes",
        ),
    ],
)
def test_every_bad_request_gets_a_message_saying_what_and_where(
    body, content_type, accept, message
):
    with pytest.raises(ServiceError) as error:
        parse(body, content_type, accept)
    assert message in str(error.value)


def test_responses_in_both_formats_keep_order():
    rows = [
        ("embeddings", np.array([0.5, 0.0], dtype=np.float32)),
        ("scores", np.array([0.25, 0.75], dtype=np.float32)),
    ]
    assert orjson.loads(format_response(rows, JSON)) == {
        "predictions": [{"embeddings": [0.5, 0.0]}, {"scores": [0.25, 0.75]}]
    }
    lines = format_response(rows, JSONLINES).decode().splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"embeddings": [0.5, 0.0]},
        {"scores": [0.25, 0.75]},
    ]


# ---- the vectorised check agrees with the record-by-record one --------------------------

_ids = st.one_of(
    st.integers(0, 11),
    st.integers(-2, 14),
    st.integers(2**63 - 1, 2**64),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=2),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)
_records = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "in0": st.lists(st.integers(0, 11), max_size=6),
                "in1": st.lists(st.integers(0, 7), max_size=6),
            },
        ),
        st.fixed_dictionaries(
            {},
            optional={
                "in0": st.one_of(st.lists(_ids, max_size=4), st.none(), st.integers()),
                "in1": st.lists(_ids, max_size=4),
                "x": st.integers(),
            },
        ),
        st.lists(st.integers(), max_size=2),
        st.none(),
    ),
    min_size=1,
    max_size=6,
)


@given(records=_records, caps=st.tuples(st.integers(1, 8), st.integers(1, 8)))
def test_the_vectorised_check_agrees_with_the_record_by_record_one(records, caps):
    limits = Limits((12, 8), (8, 8), 1 << 20)
    # as parse_request calls it: booleans looked for only where the body may hold them
    columns = payload._columns(
        records, limits, caps, payload.may_hold_booleans(json.dumps(records).encode())
    )
    try:
        slow = [payload._instance(r, f"line {i + 1}", limits, caps) for i, r in enumerate(records)]
    except ServiceError:
        assert columns is None, "the vectorised check passed what the record-by-record one refuses"
        return
    assert columns is not None, "the vectorised check refused a valid request"
    fast = ParsedRequest(*columns, JSON).instances
    # ...and the columns built from the record-by-record instances hold the same instances
    rebuilt = ParsedRequest.of(slow, JSON).instances
    for f, s, r in zip(fast, slow, rebuilt, strict=True):
        for a, b, c in ((f.in0, s.in0, r.in0), (f.in1, s.in1, r.in1)):
            assert (b is None) == (c is None) and (b is None or b.tolist() == c.tolist())
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == np.int64 and a.tolist() == b.tolist()
