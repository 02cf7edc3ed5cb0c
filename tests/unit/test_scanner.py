"""The scanner (server.frontdoor.scanner) against orjson and the general checks: a body it
reads decodes, through the general path, to exactly its columns; it reads the bodies that
clients send; it declines, and never misreads, everything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from unittest.mock import patch

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.errors import ServiceError
from contract.names import JSON, JSONLINES
from server.frontdoor import payload
from server.frontdoor.payload import Limits
from server.frontdoor.scanner import scan

VOCABS = (12, 8)
LIMITS = Limits(VOCABS, (3, 4), 1 << 20, max_instances=20)  # short caps: truncation happens
CAPS = LIMITS.max_seq_lens


def _general(body: bytes, kind: str, caps=CAPS):
    """The general path's columns (orjson, then the checks), or the error it says."""
    try:
        parsed, _ = payload._decoded(body, kind, JSON, caps, 0, LIMITS)
    except ServiceError as error:
        return error
    return parsed


def _scanned(body: bytes, kind: str, caps=CAPS):
    found = scan(body, kind == JSONLINES, VOCABS, LIMITS.max_instances)
    if found is None:
        return None
    routes, sides = found
    return routes, tuple(side.truncated(cap) for side, cap in zip(sides, caps, strict=True))


def _agree(body: bytes, kind: str) -> bool:
    """Whether the scanner read the body; when it did, it must match the general path."""
    scanned = _scanned(body, kind)
    if scanned is None:
        return False
    general = _general(body, kind)
    assert not isinstance(general, ServiceError), f"scanner read what orjson refuses: {body!r}"
    routes, sides = scanned
    assert routes.dtype == general.routes.dtype and routes.tolist() == general.routes.tolist()
    for mine, theirs in zip(sides, general.sides, strict=True):
        assert mine.ids.dtype == np.int64 and mine.ids.tolist() == theirs.ids.tolist()
        assert mine.lengths.tolist() == theirs.lengths.tolist()
    return True


def _verdict(parse) -> tuple:
    """What parse_request answers, comparable: the columns it read, or the error it says."""
    try:
        parsed = parse()
    except ServiceError as error:
        return "refused", error.kind.name, error.message
    sides = [(side.ids.tolist(), side.lengths.tolist()) for side in parsed.sides]
    return "read", parsed.routes.tolist(), sides


def _verdicts(body: bytes, kind: str) -> tuple[tuple, tuple]:
    """parse_request's verdict on the body as served, and with the scanner declining all."""
    served = _verdict(lambda: payload.parse_request(body, kind, None, LIMITS))
    with patch.object(payload, "scan", lambda *_: None):
        general = _verdict(lambda: payload.parse_request(body, kind, None, LIMITS))
    return served, general


_valid = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "in0": st.lists(st.integers(0, VOCABS[0] - 1), min_size=1, max_size=9),
            "in1": st.lists(st.integers(0, VOCABS[1] - 1), min_size=1, max_size=9),
        },
    ).filter(bool),
    min_size=1,
    max_size=8,
)


@given(records=_valid, spaced=st.booleans(), ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_it_reads_what_clients_send(records, spaced, ending):
    """orjson's and json's writing, one record a line or as instances, any line ending: read
    by the scanner, as the general path reads them."""
    separators = (", ", ": ") if spaced else (",", ":")
    lines = [json.dumps(r, separators=separators) for r in records]
    assert _agree(ending.join(lines).encode(), JSONLINES)
    assert _agree((ending.join(lines) + ending).encode(), JSONLINES)
    assert _agree(b"\n".join(map(orjson.dumps, records)) + b"\n", JSONLINES)
    assert _agree(json.dumps({"instances": records}, separators=separators).encode(), JSON)
    assert _agree(json.dumps({"instances": records}, indent=2).encode(), JSON)


# Pieces of near-valid bodies: mostly what the scanner reads, sometimes any other way a token
# can be written, right or wrong
def _mostly(valid: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    return st.integers(0, 39).flatmap(lambda roll: other if roll == 0 else valid)


_space = _mostly(
    st.sampled_from(["", " ", "\t"]), st.sampled_from(["\n", "\r", "\r\n", "\x0c", "\xa0"])
)
_wrong_number = st.sampled_from(
    [
        "12",
        "00",
        "07",
        "-1",
        "-0",
        "1.0",
        "1e1",
        "+1",
        "9" * 19,
        "0x1",
        "true",
        "null",
        '"1"',
        "[1]",
    ]
)


def _number(vocab: int) -> st.SearchStrategy:
    # the first id past the vocabulary half the time it goes wrong: the edge a check misses
    return _mostly(
        st.integers(0, vocab - 1).map(str), st.one_of(st.just(str(vocab)), _wrong_number)
    )


_wrong_key = st.sampled_from(['"in\\u0030"', '"x"', "in0", '"in0 "', '"exclude"', '"in0"'])


@st.composite
def _record(draw) -> str:
    w = lambda: draw(_space)  # noqa: E731 - whitespace, drawn afresh at each place
    members = []
    keys = draw(st.permutations(['"in0"', '"in1"']))
    for key in keys[: draw(_mostly(st.integers(1, 2), st.sampled_from([0, 3])))]:
        key = draw(_mostly(st.just(key), _wrong_key))  # noqa: PLW2901
        vocab = VOCABS[key == '"in1"']
        ids = [
            w() + draw(_number(vocab)) + w()
            for _ in range(draw(_mostly(st.integers(1, 4), st.just(0))))
        ]
        value = "[" + ",".join(ids) + "]" if draw(st.integers(0, 14)) else draw(_wrong_number)
        colon = draw(_mostly(st.just(":"), st.just(";")))
        members.append(w() + key + w() + colon + w() + value)
    return draw(_mostly(st.just("{" + ",".join(members) + w() + "}"), st.sampled_from(["1", "{"])))


@st.composite
def _body(draw) -> tuple[bytes, str]:
    records = draw(st.lists(_record(), min_size=1, max_size=5))
    if draw(st.booleans()):
        endings = _mostly(
            st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from(["\n\n", "\n \n", " ", ""])
        )
        text = "".join(r + draw(endings) for r in records)
        kind = JSONLINES
    else:
        separator = draw(_mostly(st.sampled_from([",", ", ", ",\n"]), st.sampled_from(["", ",,"])))
        wrapper = draw(
            _mostly(st.sampled_from(['{"instances":', '{ "instances" :']), st.just('{"instance":'))
        )
        text = wrapper + "[" + separator.join(records) + "]" + draw(_space) + "}"
        kind = JSON
    body = text.encode()
    if draw(st.integers(0, 9)) == 0 and body:  # a byte changed, dropped or added anywhere
        at = draw(st.integers(0, len(body) - 1))
        byte = bytes([draw(st.integers(0, 255))])
        body = draw(
            st.sampled_from(
                [
                    body[:at] + byte + body[at + 1 :],
                    body[:at] + body[at + 1 :],
                    body[:at] + byte + body[at:],
                ]
            )
        )
    return body, kind


@settings(max_examples=3000, deadline=None)
@given(case=_body())
def test_what_it_reads_the_general_path_reads_alike(case):
    """Never a body that orjson refuses or reads otherwise: on the bodies it reads, the same
    routes and ids; the rest it declines. Either way parse_request answers every body as the
    general path alone does, error messages included."""
    body, kind = case
    _agree(body, kind)
    served, general = _verdicts(body, kind)
    assert served == general, f"{body!r}: served {served}, general path {general}"


@given(body=st.binary(max_size=64), jsonlines=st.booleans())
def test_any_bytes_are_read_alike_or_declined(body, jsonlines):
    kind = JSONLINES if jsonlines else JSON
    _agree(body, kind)
    served, general = _verdicts(body, kind)
    assert served == general, f"{body!r}: served {served}, general path {general}"


@pytest.mark.parametrize(
    "body",
    [
        b'{"in0":[1]}\n\n{"in0":[2]}',  # a blank line: the general path drops it
        b'{"in0":[1],"in0":[2]}',  # a key twice: orjson keeps the last
        b'{"in0":[01]}',  # a leading zero
        b'{"in0":[12]}',  # outside enc0's vocabulary
        b'{"in1":[8]}',  # outside enc1's
        b'{"in0":[' + b"9" * 19 + b"]}",  # beyond int64
        b'{"in0":[1],"exclude":["a"]}',  # a key it does not read
        b'{"in0":[]}',
        b'{"in0":[1]} {"in0":[2]}',  # two records on a line
        b"\xef\xbb\xbf" + b'{"in0":[1]}',  # a byte order mark
    ],
)
def test_it_declines_what_it_does_not_read(body):
    assert _scanned(body, JSONLINES) is None


def test_it_declines_more_records_than_a_request_may_hold():
    body = b'{"in0":[1]}\n' * (LIMITS.max_instances + 1)
    assert _scanned(body, JSONLINES) is None
    with pytest.raises(ServiceError, match="exceed the limit"):
        payload.parse_request(body, JSONLINES, None, LIMITS)


def test_a_read_body_is_truncated_as_the_general_path_truncates():
    body = b'{"in0":[1,2,3,4,5,6,7,8,9],"in1":[1,2,3]}\n{"in1":[7,6,5,4,3,2,1]}'
    assert _agree(body, JSONLINES)
    parsed = payload.parse_request(
        body, "application/jsonlines;infer_max_seqlens=2,4", None, LIMITS
    )
    assert [i.in0 is not None and i.in0.tolist() for i in parsed.instances] == [[1, 2], False]
    assert [i.in1.tolist() for i in parsed.instances] == [[1, 2, 3], [7, 6, 5, 4]]


@pytest.mark.skipif(
    os.environ.get("NUMBA_BOUNDSCHECK") == "1", reason="this is the bounds-checked run itself"
)
def test_the_fuzzing_reads_and_writes_within_bounds(tmp_path):
    """The scanner is compiled without bounds checks: the fuzzing above runs again with every
    index checked (an out-of-bounds read or write is then an IndexError, and a failure)."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
