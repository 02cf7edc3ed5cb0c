"""One error type, `ServiceError(kind, message)`, raised by every layer, and what each kind of
failure means on every path: its HTTP status, gRPC code, Triton error code,
the error type boto3 shows, and whether sending the same request again can help.

Each transport maps a ServiceError once: the front door and the stand-in backend to a Triton
error (`triton_error`), the SageMaker endpoint to a status, `x-amzn-ErrorType` and JSON body
(server/sagemaker/adapter.py), the client back to a kind (client/api.py, and through it the
Batch Transform's retries). So a failure keeps its meaning from the server to the user: a
caller's mistake is never retried, an overloaded or restarting server is.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Kind:
    name: str
    http: int
    grpc: str  # grpc.StatusCode's name
    triton: str  # pb_utils.TritonError's code name: what the front door raises for it
    aws: str  # x-amzn-ErrorType: botocore names the ClientError after it
    retry: bool  # may the same request succeed later?


_INVALID = "ValidationError"  # boto3: sagemaker-runtime's ValidationError

# The caller's mistakes: the same bytes fail the same way, wherever they are sent.
BAD_REQUEST = Kind("bad_request", 400, "INVALID_ARGUMENT", "INVALID_ARG", _INVALID, False)
NOT_FOUND = Kind("not_found", 404, "NOT_FOUND", "NOT_FOUND", _INVALID, False)
METHOD_NOT_ALLOWED = Kind(
    "method_not_allowed", 405, "UNIMPLEMENTED", "UNSUPPORTED", _INVALID, False
)
NOT_ACCEPTABLE = Kind("not_acceptable", 406, "INVALID_ARGUMENT", "INVALID_ARG", _INVALID, False)
HEAD_TOO_LARGE = Kind("head_too_large", 431, "INVALID_ARGUMENT", "INVALID_ARG", _INVALID, False)
TOO_LARGE = Kind("too_large", 413, "RESOURCE_EXHAUSTED", "INVALID_ARG", _INVALID, False)
UNSUPPORTED_MEDIA_TYPE = Kind(
    "unsupported_media_type", 415, "INVALID_ARGUMENT", "INVALID_ARG", _INVALID, False
)
NOT_IMPLEMENTED = Kind("not_implemented", 501, "UNIMPLEMENTED", "UNSUPPORTED", _INVALID, False)
# Slow or stalled on the caller's side: the bytes may arrive in time on another try.
REQUEST_TIMEOUT = Kind("request_timeout", 408, "DEADLINE_EXCEEDED", "INVALID_ARG", _INVALID, True)
# Ours, and lasting: the same request would hit the same fault.
SERVER_FAULT = Kind("server_fault", 500, "INTERNAL", "INTERNAL", "InternalFailure", False)
# Ours, and passing: over capacity, draining, restarting, or Triton slower than the deadline.
OVERLOADED = Kind("overloaded", 503, "UNAVAILABLE", "UNAVAILABLE", "ServiceUnavailable", True)
UPSTREAM_TIMEOUT = Kind(
    "upstream_timeout", 504, "DEADLINE_EXCEEDED", "UNAVAILABLE", "ServiceUnavailable", True
)
# The server is set up wrong (a setting, a port, a repository, a stale index): it does not
# start, or a model does not load; the message says what to change.
MISCONFIGURED = Kind("misconfigured", 500, "INTERNAL", "INTERNAL", "InternalFailure", False)

KINDS = (
    BAD_REQUEST,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    REQUEST_TIMEOUT,
    TOO_LARGE,
    HEAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    SERVER_FAULT,
    NOT_IMPLEMENTED,
    OVERLOADED,
    UPSTREAM_TIMEOUT,
)  # what an answer may be; MISCONFIGURED is not: no request meets a server that did not start
_BY_HTTP = {kind.http: kind for kind in KINDS}
_BY_GRPC = {}
for _kind in KINDS:  # the first kind listed for a code is its meaning
    _BY_GRPC.setdefault(_kind.grpc, _kind)


class ServiceError(Exception):
    """A failure of one kind, with a message for whoever must act on it (the caller for a 4xx
    kind, the operator for MISCONFIGURED). `close` and `headers` (retry_after="1",
    allow="POST") are what an HTTP answer adds; other transports ignore them."""

    def __init__(self, kind: Kind, message: str, *, close: bool = False, **headers: str):
        super().__init__(message)
        self.kind, self.message, self.close, self.headers = kind, message, close, headers

    def within(self, where: str) -> ServiceError:
        """The same error, its message prefixed with where it happened."""
        return ServiceError(self.kind, f"{where}: {self.message}", close=self.close, **self.headers)


def of_http(status: int) -> Kind:
    """The kind of an HTTP error status; an unlisted 4xx is the caller's, 5xx a fault of ours,
    except the gateway statuses (502, 503, 504), which pass."""
    if status in _BY_HTTP:
        return _BY_HTTP[status]
    if status in (429, 502):
        return OVERLOADED
    return BAD_REQUEST if 400 <= status < 500 else SERVER_FAULT


def of_grpc(code: str) -> Kind:
    """The kind of a gRPC status code's name ('UNAVAILABLE' or 'StatusCode.UNAVAILABLE')."""
    code = code.removeprefix("StatusCode.")
    if code in ("RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"):
        # RESOURCE_EXHAUSTED is also a message over gRPC's size limit: deterministic.
        return TOO_LARGE if code == "RESOURCE_EXHAUSTED" else OVERLOADED
    return _BY_GRPC.get(code, SERVER_FAULT)


def of_status(status: str | None) -> Kind | None:
    """The kind of a status as tritonclient reports it: '400' over HTTP, 'StatusCode.X' over gRPC;
    None where no status came (no connection: passing)."""
    if not status:
        return None
    if status.isdigit():
        return of_http(int(status))
    return of_grpc(status)


# An error message says what and where in a line or two: what a client sent is quoted at most
# EXCERPT characters, and a whole message is cut at MAX_MESSAGE, so that a huge header or
# parameter is never sent back (a 10,000-part accept got a 140 KB answer once).
EXCERPT = 80
MAX_MESSAGE = 1024


def clip(value: object, limit: int = EXCERPT) -> str:
    """`value` as text, its end cut where it is longer than `limit`."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """`value` as repr() writes it, its end cut where it is longer than `limit`."""
    if not isinstance(value, str):
        return clip(repr(value), limit)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[: MAX_MESSAGE - 40] + f"... ({len(message)} characters in all)"


def triton_error(pb_utils, error: ServiceError):
    """The Python backend's error for `error` (`pb_utils`: the utils module only a stub can
    import): Triton turns its code into the HTTP status and gRPC code above."""
    code = getattr(pb_utils.TritonError, error.kind.triton)
    return pb_utils.TritonError(bounded(error.message), code)


def error_body(message: str, kind: Kind) -> bytes:
    """The JSON an HTTP error carries. `error` is Triton's own key (clients of either server read
    one field); `message` is the one botocore puts in a ClientError."""
    message = bounded(message)
    return orjson.dumps({"error": message, "message": message, "kind": kind.name})


def message_of(raw: bytes, status: int) -> str:
    """The message of an HTTP error body: ours, Triton's ({"error": ...}) or plain text."""
    try:
        document = orjson.loads(raw)
        message = document.get("message") or document["error"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass
    return raw.decode(errors="replace")[:500] or f"HTTP {status}"
