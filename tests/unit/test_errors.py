"""contract/errors.py and contract/media.py: the tables every layer answers by."""

import pytest

from contract import errors
from contract.media import negotiate
from contract.names import JSON, JSONLINES


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        ("400", False),
        ("404", False),
        ("413", False),
        ("500", False),  # a fault the same request would hit again
        ("501", False),
        ("408", True),
        ("429", True),
        ("502", True),
        ("503", True),
        ("504", True),
        ("StatusCode.INVALID_ARGUMENT", False),
        ("StatusCode.INTERNAL", False),
        ("StatusCode.RESOURCE_EXHAUSTED", False),
        ("StatusCode.UNAVAILABLE", True),
        ("StatusCode.DEADLINE_EXCEEDED", True),
    ],
)
def test_what_a_client_retries(status, retry):
    assert errors.of_status(status).retry is retry


def test_no_status_is_left_to_the_caller():
    assert errors.of_status(None) is None


def test_every_kind_has_one_http_status():
    statuses = [kind.http for kind in errors.KINDS]
    assert len(statuses) == len(set(statuses))
    for kind in errors.KINDS:
        assert errors.of_http(kind.http) is kind


def test_the_error_body_is_read_back_by_every_reader():
    body = errors.error_body("bad thing", errors.BAD_REQUEST)
    assert errors.message_of(body, 400) == "bad thing"
    assert errors.message_of(b'{"error": "from Triton"}', 400) == "from Triton"
    assert errors.message_of(b"plain words", 502) == "plain words"
    assert errors.message_of(b"", 502) == "HTTP 502"


@pytest.mark.parametrize(
    ("accept", "preferred", "answer"),
    [
        (None, JSON, JSON),
        ("", JSONLINES, JSONLINES),
        ("*/*", JSONLINES, JSONLINES),
        ("application/jsonlines;q=0, application/json", JSONLINES, JSON),
        ("application/json;q=0.2, application/jsonl;q=0.9", JSON, JSONLINES),
        ("application/x-ndjson", JSON, JSONLINES),
        ("text/json", JSONLINES, JSON),
        ("*/*;q=0.1, application/jsonlines", JSON, JSONLINES),
        ("application/*;q=0, application/json", JSONLINES, JSON),
        ("text/html", JSON, None),
        ("*/*;q=0", JSON, None),
        ("application/json;q=bad", JSON, None),
    ],
)
def test_accept_negotiation(accept, preferred, answer):
    assert negotiate(accept, preferred) == answer
