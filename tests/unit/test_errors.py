"""contract/errors.py and contract/media.py: the tables every layer answers by."""

import pytest

from contract import errors
from contract.media import decide, negotiate
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


@pytest.mark.parametrize(
    ("content_type", "accept", "body", "request_type", "answer"),
    [
        ("application/json", None, b"", JSON, JSON),
        ("application/x-ndjson; charset=UTF-8", None, b"", JSONLINES, JSONLINES),
        ("application/json", "application/jsonlines", b"", JSON, JSONLINES),
        (None, None, b'{"instances": [{"in0": [1]}]}', JSON, JSON),
        (None, None, b'{"in0": [1]}\n{"in0": [2]}\n', JSONLINES, JSONLINES),
        ("", "application/json", b'{"in0": [1]}', JSONLINES, JSON),
    ],
)
def test_both_media_types_are_decided_in_one_place(
    content_type, accept, body, request_type, answer
):
    decided = decide(content_type, accept, body)
    assert (decided.request, decided.answer) == (request_type, answer)


@pytest.mark.parametrize(
    ("content_type", "accept", "kind", "words"),
    [
        ("text/csv", None, errors.UNSUPPORTED_MEDIA_TYPE, "unsupported content type 'text/csv'"),
        ("application/json", "text/html", errors.NOT_ACCEPTABLE, "unsupported accept type"),
        ("application/json; neighbors=5", None, errors.BAD_REQUEST, "unknown content type"),
        ("application/json; charset=latin-1", None, errors.BAD_REQUEST, "charset=latin-1"),
    ],
)
def test_media_types_the_service_does_not_speak_are_service_errors(
    content_type, accept, kind, words
):
    with pytest.raises(errors.ServiceError) as raised:
        decide(content_type, accept, b"{}")
    assert raised.value.kind is kind and words in raised.value.message


def test_the_content_type_parameters_are_read_once():
    decided = decide("application/jsonlines; infer_max_seqlens=5,3; neighbours=10", None, b"")
    assert decided.parameters == {"infer_max_seqlens": "5,3", "neighbours": "10"}


def test_an_error_keeps_its_kind_and_headers_where_it_happened():
    error = errors.ServiceError(errors.OVERLOADED, "busy", close=True, retry_after="1")
    placed = error.within("body 2 of 3")
    assert placed.kind is errors.OVERLOADED and placed.close
    assert placed.message == "body 2 of 3: busy" and placed.headers == {"retry_after": "1"}


def test_the_sagemaker_mapping_writes_status_error_type_and_headers():
    from server.sagemaker.adapter import error_answer

    answer = error_answer(
        errors.ServiceError(errors.METHOD_NOT_ALLOWED, "GET /invocations", allow="POST")
    )
    headers = dict(answer.headers)
    assert answer.status == 405 and headers[b"allow"] == b"POST"
    assert headers[b"x-amzn-errortype"] == b"ValidationError"
    assert errors.message_of(answer.body, 405) == "GET /invocations"
