"""SageMaker's container contract, in front of Triton: what the hosted Object2Vec answers.

    GET  /ping                         200 when every model is ready, 503 otherwise, within 2 s
    POST /invocations                  the hosted formats: Content-Type and Accept
                                       application/json or application/jsonlines (with
                                       `infer_max_seqlens=L0,L1`); a plain body back
    POST /endpoints/<name>/invocations the runtime API's path: boto3's `sagemaker-runtime`
                                       client with `endpoint_url=` works unchanged
    GET  /execution-parameters         what a Batch Transform job uses when it sets nothing
    GET  /metrics                      the endpoint's metrics, then Triton's (docs/metrics.md)

`Adapter` is the contract's logic; HTTP/1.1 itself (framing, keep-alive, pipelining, 100-continue,
HEAD, Upgrade, limits and timeouts) is server/sagemaker/http1.py's. The adapter knows no format:
each body goes to the front door through Triton's HTTP API on loopback
(server/sagemaker/upstream.py: the body as the front door's UINT8 input, the media types as request
parameters, the answer as a raw binary output), and the front door's answer or error comes back as
it is. Every error is one of contract/errors.py's kinds: its status, its `x-amzn-ErrorType` (so
boto3's ClientError names it and carries the message), its JSON body.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from contract import errors, media
from contract.body import BODY_DATATYPE
from contract.names import (
    ACCEPT_PARAMETER,
    BODY_INPUT,
    CONTENT_TYPE_PARAMETER,
    FRONT_DOOR,
    JSON,
    RESPONSE_OUTPUT,
)
from contract.neighbours import K_PARAMETER
from server.common.settings import setting
from server.sagemaker import http1
from server.sagemaker.http1 import Answer, Head
from server.sagemaker.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.sagemaker.metrics import EndpointMetrics
from server.sagemaker.upstream import Upstream

MB = 1024 * 1024
DEFAULT_MAX_PAYLOAD_MB = 6  # the hosted service's real-time limit and Batch Transform default
PING_TIMEOUT_S = 1.5  # SageMaker hosting wants /ping answered within 2 s


@dataclass(frozen=True)
class AdapterSettings:
    """The SageMaker endpoint's limits and timeouts (docs/configuration.md)."""

    # Headers and body of one request must arrive within this (slow or stalled peers: 408).
    read_timeout_s: float = setting(
        30.0,
        "O2V_HTTP_READ_TIMEOUT_S",
        minimum=0.1,
        help="a request's head and body must arrive within this many seconds (else 408)",
    )
    # An idle keep-alive connection is closed after this; above the 60 s that load balancers
    # commonly keep theirs, so the balancer, not we, closes first.
    keep_alive_s: float = setting(
        75.0,
        "O2V_HTTP_KEEP_ALIVE_S",
        minimum=0.1,
        help="an idle keep-alive connection is closed after this many seconds",
    )
    max_header_bytes: int = setting(
        64 * 1024,
        "O2V_HTTP_MAX_HEADER_BYTES",
        minimum=1024,
        help="largest request head in bytes (else 431)",
    )
    # Requests in flight at once; beyond it a request gets 503 (overloaded) at once.
    max_concurrency: int = setting(
        256,
        "O2V_HTTP_MAX_CONCURRENCY",
        minimum=1,
        help="invocations in flight at once; beyond it 503 with Retry-After",
    )
    # Triton must answer an invocation within this (504 past it). SageMaker's own limit on a
    # real-time invocation is 60 s.
    upstream_timeout_s: float = setting(
        60.0,
        "O2V_UPSTREAM_TIMEOUT_S",
        minimum=0.1,
        help="Triton must answer an invocation within this many seconds (else 504)",
    )
    upstream_connections: int = setting(
        64, "O2V_UPSTREAM_CONNECTIONS", minimum=1, help="connections from the endpoint to Triton"
    )
    max_connections: int = setting(
        4096,
        "O2V_HTTP_MAX_CONNECTIONS",
        minimum=1,
        help="open client connections; beyond it 503 at once",
    )
    # A peer that reads nothing of its answer for this long is cut off and its answer freed.
    write_timeout_s: float = setting(
        30.0,
        "O2V_HTTP_WRITE_TIMEOUT_S",
        minimum=0.1,
        help="a peer that reads nothing of its answer for this many seconds is cut off",
    )
    # Neighbours requests in flight at once; beyond it 503 at once: a request queued behind
    # them waits at most about this many maximal searches (docs/security.md).
    max_neighbour_requests: int = setting(
        4,
        "O2V_HTTP_MAX_NEIGHBOUR_REQUESTS",
        minimum=1,
        help="neighbours requests in flight at once; beyond it 503 with Retry-After",
    )


@dataclass(frozen=True)
class ExecutionParameters:
    """The answer of /execution-parameters (SageMaker's names)."""

    max_concurrent_transforms: int
    max_payload_mb: int
    batch_strategy: str = "MULTI_RECORD"

    def as_json(self) -> bytes:
        return orjson.dumps(
            {
                "MaxConcurrentTransforms": self.max_concurrent_transforms,
                "BatchStrategy": self.batch_strategy,
                "MaxPayloadInMB": self.max_payload_mb,
            }
        )


def default_execution_parameters(
    max_body_bytes: int,
    gpu_copies: int,
    gpus: int,
    cores: int,
    concurrency: int = 0,
    payload_mb: int = 0,
) -> ExecutionParameters:
    """Concurrency: two requests per network copy on GPUs (one computing, one parsing), one
    per core on a CPU host (`gpus` and `cores`: what the launcher found this process may use).
    Payload: 6 MB, or less where the body limit is lower. A value above 0
    (O2V_MAX_CONCURRENT_TRANSFORMS, O2V_MAX_PAYLOAD_IN_MB) is taken as it is."""
    derived = 2 * gpus * gpu_copies if gpus else cores
    payload = min(DEFAULT_MAX_PAYLOAD_MB, max(1, max_body_bytes // MB))
    return ExecutionParameters(concurrency or derived, payload_mb or payload)


def infer_request_header(body: bytes, content_type: str | None, accept: str | None) -> bytes:
    """Triton's binary HTTP request without the body: its JSON header. The body follows it as
    is (the front door's UINT8 input, contract/body.py), so it is never copied."""
    parameters = {}
    if content_type:
        parameters[CONTENT_TYPE_PARAMETER] = content_type
    if accept:
        parameters[ACCEPT_PARAMETER] = accept
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": BODY_INPUT,
                    "shape": [1, len(body)],
                    "datatype": BODY_DATATYPE,
                    "parameters": {"binary_data_size": len(body)},
                }
            ],
            "outputs": [{"name": RESPONSE_OUTPUT, "parameters": {"binary_data": True}}],
            "parameters": parameters,
        }
    )


def infer_request(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, int]:
    """The whole request as one bytes (for load generators), and its header's length."""
    header = infer_request_header(body, content_type, accept)
    return header + body, len(header)


def binary_answer(raw: bytes, header_length: int) -> bytes:
    """The one output element of Triton's binary response."""
    (size,) = struct.unpack_from("<I", raw, header_length)
    start = header_length + 4
    return raw[start : start + size]


def _answer(status: int, body: bytes, content_type: str | None = None) -> Answer:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    return Answer(status, body, headers)


def error_answer(error: errors.ServiceError) -> Answer:
    """The one place an error becomes SageMaker's answer: the kind's status, its
    `x-amzn-ErrorType` (boto3 names its ClientError after it), the JSON body, and the error's
    own headers (retry-after, allow)."""
    kind = error.kind
    headers = [(b"content-type", b"application/json"), (b"x-amzn-errortype", kind.aws.encode())]
    headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in error.headers.items()]
    return Answer(kind.http, errors.error_body(error.message, kind), headers, error.close)


def _route(path: str) -> str | None:
    path = path.rstrip("/") or "/"
    if path == "/invocations" or (
        path.startswith("/endpoints/") and path.endswith("/invocations") and path.count("/") == 3
    ):
        return "invocations"
    if path in ("/ping", "/execution-parameters", "/metrics"):
        return path[1:]
    return None


_METHODS = {
    "invocations": ("POST",),
    "ping": ("GET", "HEAD"),
    "execution-parameters": ("GET", "HEAD"),
    "metrics": ("GET", "HEAD"),
}


class Adapter:
    """The contract's logic, apart from HTTP framing (server/sagemaker/http1.py): `admit` judges a
    request from its head alone, so a refusal (404, 405, 406, 413, 415, 501, 503) goes out
    before a byte of its body is read; `respond` answers an admitted request with its body.

    `healthy`, when given, is the supervisor's view (server.launcher.process): False while
    tritonserver or a model's stub is dead, so /ping says 503 at once rather than after a
    timeout."""

    def __init__(
        self,
        triton_url: str,
        max_body_bytes: int,
        parameters: ExecutionParameters,
        settings: AdapterSettings | None = None,
        healthy: Callable[[], bool] | None = None,
        triton_metrics_url: str | None = None,
    ):
        self.settings = settings or AdapterSettings()
        self.metrics = EndpointMetrics(lambda: self.in_flight, _route, triton_metrics_url)
        host, _, port = triton_url.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = Upstream(host, int(port), self.settings.upstream_connections)
        self.max_body_bytes = max_body_bytes
        self.parameters = parameters
        self.healthy = healthy
        self.in_flight = 0  # admitted invocations not yet answered
        self.neighbours_in_flight = 0  # of which ask for neighbours
        self.stopping = False
        self._infer_head = (
            f"POST /v2/models/{FRONT_DOOR}/infer HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/octet-stream\r\n"
        ).encode()
        self._ready = f"GET /v2/health/ready HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def admit(self, head: Head) -> Answer | None:
        """A refusal decided from the head alone, or None: read the body, then `respond`.
        An admitted invocation counts as in flight until `respond` returns."""
        try:
            route = self._check(head)
            asks = route == "invocations" and _asks_neighbours(head)
            limit = self.settings.max_neighbour_requests
            if asks and self.neighbours_in_flight >= limit:
                self.metrics.refused("concurrency")
                raise errors.ServiceError(
                    errors.OVERLOADED,
                    f"{limit} neighbours requests in flight already "
                    "(O2V_HTTP_MAX_NEIGHBOUR_REQUESTS): retry shortly",
                    retry_after="1",
                )
        except errors.ServiceError as refusal:
            return error_answer(refusal)
        if route == "invocations":
            self.in_flight += 1
            self.neighbours_in_flight += asks
        return None

    def _check(self, head: Head) -> str:
        route = _route(head.path)
        if head.method == "CONNECT":
            raise errors.ServiceError(
                errors.METHOD_NOT_ALLOWED, "CONNECT: this is not a proxy", close=True
            )
        if route is None:
            raise errors.ServiceError(
                errors.NOT_FOUND,
                f"no such route {errors.excerpt(head.path)}: /ping, /invocations, "
                "/execution-parameters",
            )
        methods = _METHODS[route]
        if head.method not in methods:
            raise errors.ServiceError(
                errors.METHOD_NOT_ALLOWED,
                f"{head.method} /{route}: use {' or '.join(methods)}",
                allow=", ".join(methods),
            )
        if self.stopping:
            raise errors.ServiceError(
                errors.OVERLOADED, "the server is shutting down: retry elsewhere", close=True
            )
        if route != "invocations":
            return route
        if self.in_flight >= self.settings.max_concurrency:
            self.metrics.refused("concurrency")
            raise errors.ServiceError(
                errors.OVERLOADED,
                f"{self.settings.max_concurrency} requests in flight already "
                "(O2V_HTTP_MAX_CONCURRENCY): retry shortly",
                retry_after="1",
            )
        headers = head.headers
        _check_encoding(headers)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            self.metrics.refused("body_bytes")
            raise self._too_large()
        # The media types are refused here, before the body is read; decided with it (respond)
        content_type = _text(headers.get(b"content-type"))
        request = media.read_content_type(content_type)[0] if content_type else JSON
        media.answer_type(_text(headers.get(b"accept")), request)
        return route

    def too_large(self) -> Answer:
        return error_answer(self._too_large())

    def _too_large(self) -> errors.ServiceError:
        return errors.ServiceError(
            errors.TOO_LARGE,
            f"body exceeds the limit of {self.max_body_bytes} bytes: "
            "split it into smaller requests",
            close=True,  # what is left of the body is never read
        )

    async def respond(self, head: Head, body: bytes) -> Answer:
        """The answer to an admitted request."""
        route = _route(head.path)
        if route == "ping":
            return await self.ping()
        if route == "execution-parameters":
            return _answer(200, self.parameters.as_json(), JSON)
        if route == "metrics":
            return _answer(200, await self.metrics.exposition(), METRICS_CONTENT_TYPE)
        try:
            return await self.invocations(head, body)
        except errors.ServiceError as refusal:
            return error_answer(refusal)
        finally:
            self.in_flight -= 1
            self.neighbours_in_flight -= _asks_neighbours(head)

    error_answer = staticmethod(error_answer)

    def abandon(self, head: Head) -> None:
        """An admitted request whose body never came (timeout, disconnect, over the limit)."""
        if _route(head.path) == "invocations":
            self.in_flight -= 1
            self.neighbours_in_flight -= _asks_neighbours(head)

    async def ping(self) -> Answer:
        if self.healthy is not None and not self.healthy():
            return _answer(503, b"")
        try:
            status, _, _ = await self.upstream.request([self._ready], PING_TIMEOUT_S)
        except (OSError, errors.ServiceError):
            status = 503
        return _answer(200 if status == 200 else 503, b"")

    async def invocations(self, head: Head, body: bytes) -> Answer:
        content_type = _text(head.headers.get(b"content-type"))
        decided = media.decide(content_type, _text(head.headers.get(b"accept")), body)
        # what was decided goes with the request: the front door need not decide again
        header = infer_request_header(body, content_type or decided.request, decided.answer)
        request_head = (
            self._infer_head
            + (
                f"Inference-Header-Content-Length: {len(header)}\r\n"
                f"Content-Length: {len(header) + len(body)}\r\n\r\n"
            ).encode()
        )
        timeout = self.settings.upstream_timeout_s
        started = time.perf_counter()
        try:
            status, length, raw = await self.upstream.request([request_head, header, body], timeout)
        except OSError as error:
            raise errors.ServiceError(
                errors.OVERLOADED, f"the model server is not reachable: {error}"
            ) from None
        except errors.ServiceError as error:
            if error.kind is errors.UPSTREAM_TIMEOUT:
                self.metrics.upstream_timeouts.inc()
            raise
        self.metrics.upstream.observe(time.perf_counter() - started)
        if status != 200:
            # The front door's own words: 400 the caller's, 503 draining (server/common/drain.py).
            raise errors.ServiceError(errors.of_http(status), errors.message_of(raw, status))
        return _answer(200, binary_answer(raw, length), decided.answer)

    async def drain(self, timeout: float = 30.0) -> None:
        """Refuses new requests (503), waits for those in flight, closes the upstream pool."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.upstream.close()


def _asks_neighbours(head: Head) -> bool:
    """The content type carries `neighbours=<k>` (the front door judges its value)."""
    content_type = head.headers.get(b"content-type", b"").lower()
    return any(
        part.split(b"=", 1)[0].strip() == K_PARAMETER.encode()
        for part in content_type.split(b";")[1:]
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _check_encoding(headers: dict[bytes, bytes]) -> None:
    """Only `chunked` framing and identity content: anything else would reach the front door as
    bytes it cannot read (RFC 9112 section 6.1: an unknown transfer coding gets 501)."""
    transfer = headers.get(b"transfer-encoding", b"chunked").lower().replace(b" ", b"")
    if transfer != b"chunked":
        raise errors.ServiceError(
            errors.NOT_IMPLEMENTED,
            f"transfer coding {errors.excerpt(transfer.decode('latin-1'))} is not supported: "
            "send the body with Content-Length or plain chunked",
            close=True,
        )
    encoding = headers.get(b"content-encoding", b"identity").lower().strip()
    if encoding != b"identity":
        raise errors.ServiceError(
            errors.UNSUPPORTED_MEDIA_TYPE,
            f"content encoding {errors.excerpt(encoding.decode('latin-1'))} is not supported: "
            "send the body uncompressed",
            close=True,
        )


async def start_adapter(
    host: str,
    port: int,
    triton_url: str,
    max_body_bytes: int,
    parameters: ExecutionParameters,
    settings: AdapterSettings | None = None,
    healthy: Callable[[], bool] | None = None,
    triton_metrics_url: str | None = None,
) -> Callable[[], Awaitable[None]]:
    """Serves the adapter on host:port; returns what stops it: new requests get 503 while
    those in flight finish, then every connection is closed."""
    settings = settings or AdapterSettings()
    adapter = Adapter(triton_url, max_body_bytes, parameters, settings, healthy, triton_metrics_url)
    limits = http1.Limits(
        read_timeout_s=settings.read_timeout_s,
        keep_alive_s=settings.keep_alive_s,
        max_header_bytes=settings.max_header_bytes,
        max_body_bytes=max_body_bytes,
        max_connections=settings.max_connections,
        write_timeout_s=settings.write_timeout_s,
    )
    server = await http1.serve(adapter, host, port, limits, adapter.metrics)

    async def stop() -> None:
        await adapter.drain()
        server.close()

    return stop
