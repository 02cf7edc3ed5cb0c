"""SageMaker's container contract, in front of Triton: what the hosted Object2Vec answers.

    GET  /ping                         200 when every model is ready, 503 before
    POST /invocations                  the hosted formats: Content-Type and Accept
                                       application/json or application/jsonlines (with
                                       `infer_max_seqlens=L0,L1`); a plain body back
    POST /endpoints/<name>/invocations the runtime API's path: boto3's `sagemaker-runtime`
                                       client with `endpoint_url=` works unchanged
    GET  /execution-parameters         what a Batch Transform job uses when it sets nothing

The adapter knows no format: each body goes to the front door through Triton's HTTP API on
loopback (the body as the front door's UINT8 input, the media types as request parameters, the
answer as a raw binary output), and the front door's answer or error comes back as it is: 400
with the front door's message, 413 for a body over the limit (discarded as it arrives, never
held), 503 while Triton is not there, 500 for anything else.

It sits on the hot path of every request, on the same cores as Triton, so it is written for
that: asyncio protocols on uvloop with httptools (the HTTP parser uvicorn uses) for both the
server side and a pool of keep-alive connections to Triton, no framework and no copy of a body
beyond the one the socket gives. aiohttp (server and client) cost 36% of the throughput at
concurrency 16 on 2 cores; this costs what docs/robustness.md says.
"""

from __future__ import annotations

import asyncio
import collections
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import httptools
import orjson

from contract.body import BODY_DATATYPE
from contract.names import (
    ACCEPT_PARAMETER,
    BODY_INPUT,
    CONTENT_TYPE_PARAMETER,
    FRONT_DOOR,
    JSON,
    RESPONSE_OUTPUT,
)
from server.payload import answer_media_type

MB = 1024 * 1024
DEFAULT_MAX_PAYLOAD_MB = 6  # the hosted service's real-time limit and Batch Transform default


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


def gpu_count() -> int:
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def default_execution_parameters(
    max_body_bytes: int, gpu_copies: int, concurrency: int = 0, payload_mb: int = 0
) -> ExecutionParameters:
    """Concurrency: two requests per network copy on GPUs (one computing, one parsing), one
    per core on a CPU host. Payload: 6 MB, or less where the body limit is lower. A value
    above 0 (O2V_MAX_CONCURRENT_TRANSFORMS, O2V_MAX_PAYLOAD_IN_MB) is taken as it is."""
    gpus = gpu_count()
    derived = 2 * gpus * gpu_copies if gpus else (os.cpu_count() or 1)
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
    header = orjson.dumps(
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
    return header


def infer_request(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, int]:
    """The whole request as one bytes (for load generators), and its header's length."""
    header = infer_request_header(body, content_type, accept)
    return header + body, len(header)


def binary_answer(raw: bytes, header_length: int) -> bytes:
    """The one output element of Triton's binary response."""
    (size,) = struct.unpack_from("<I", raw, header_length)
    start = header_length + 4
    return raw[start : start + size]


class _Upstream(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to Triton; one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.header_length = 0
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the model server closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(f"bad answer from Triton: {error}"))
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            self.header_length = int(value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        result = (
            self.parser.get_status_code(),
            self.header_length,
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(result)

    def send(self, parts: list[bytes]) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.header_length, self.body = 0, []
        self.transport.writelines(parts)
        return self.waiter


class _Pool:
    """Keep-alive connections to Triton's HTTP API, created as concurrency asks."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.idle: list[_Upstream] = []

    async def request(self, parts: list[bytes]) -> tuple[int, int, bytes]:
        """(status, Inference-Header-Content-Length, body)"""
        # Connections Triton closed while idle (a restart, its keep-alive timeout) are dropped;
        # one that fails on first use is replaced once by a fresh one (inference is idempotent).
        while self.idle:
            connection = self.idle.pop()
            if connection.transport.is_closing():
                continue
            try:
                return await self._send(connection, parts)
            except ConnectionError:
                break
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Upstream, self.host, self.port)
        return await self._send(connection, parts)

    async def _send(self, connection: _Upstream, parts: list[bytes]) -> tuple[int, int, bytes]:
        try:
            status, header_length, body, keep_alive = await connection.send(parts)
        except BaseException:
            connection.transport.close()
            raise
        if keep_alive and not connection.transport.is_closing():
            self.idle.append(connection)
        else:
            connection.transport.close()
        return status, header_length, body

    def close(self) -> None:
        for connection in self.idle:
            connection.transport.close()
        self.idle.clear()


@dataclass
class _Request:
    method: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: bytes
    too_big: bool
    keep_alive: bool


def _response(status: int, body: bytes, content_type: str | None, keep_alive: bool) -> list[bytes]:
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Length: {len(body)}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return [head.encode() + b"\r\n", body]


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, orjson.dumps({"error": message}), JSON


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed as they arrive, answered in order; closed after
    `idle_timeout` seconds without a request in flight."""

    def __init__(self, adapter: Adapter):
        self.adapter = adapter
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[_Request] = collections.deque()
        self.worker: asyncio.Task | None = None
        self.closing = False
        self.idle: asyncio.TimerHandle | None = None

    # -- asyncio
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.adapter.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc) -> None:
        self.adapter.connections.discard(self)
        self.closing = True
        if self.idle is not None:
            self.idle.cancel()

    def _arm_idle_timer(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.adapter.idle_timeout, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.busy and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.writelines(_response(400, b"", None, keep_alive=False))
            self.transport.close()

    # -- httptools
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size, self.too_big = b"", {}, [], 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.adapter.max_body_bytes:
            self.too_big = True  # its bytes are dropped as they come: never held

    def on_body(self, body: bytes) -> None:
        if self.too_big:
            return
        self.size += len(body)
        if self.size > self.adapter.max_body_bytes:
            self.too_big, self.body = True, []
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        request = _Request(
            self.parser.get_method(),
            self.url.split(b"?", 1)[0],
            self.headers,
            b"".join(self.body),
            self.too_big,
            self.parser.should_keep_alive() and not self.too_big,
        )
        self.queue.append(request)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._answer_all())

    async def _answer_all(self) -> None:
        while self.queue:
            request = self.queue.popleft()
            try:
                status, body, content_type = await self.adapter.route(request)
            except Exception as error:  # noqa: BLE001 - a fault of ours, said in one line
                status, body, content_type = _error(500, f"{type(error).__name__}: {error}")
            keep_alive = request.keep_alive and not self.adapter.stopping
            if self.transport.is_closing():
                return
            self.transport.writelines(_response(status, body, content_type, keep_alive))
            if not keep_alive:
                self.transport.close()
                return
        self._arm_idle_timer()

    @property
    def busy(self) -> bool:
        return bool(self.queue) or (self.worker is not None and not self.worker.done())


IDLE_TIMEOUT_S = 75.0  # above the 60 s that load balancers commonly keep idle connections


class Adapter:
    def __init__(
        self,
        triton_url: str,
        max_body_bytes: int,
        parameters: ExecutionParameters,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ):
        host, _, port = triton_url.removeprefix("http://").rstrip("/").partition(":")
        self.pool = _Pool(host, int(port))
        self.max_body_bytes = max_body_bytes
        self.parameters = parameters
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._infer_head = (
            f"POST /v2/models/{FRONT_DOOR}/infer HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/octet-stream\r\n"
        ).encode()
        self._ready = f"GET /v2/health/ready HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def route(self, request: _Request) -> tuple[int, bytes, str | None]:
        path = request.path.rstrip(b"/")
        if path == b"/invocations" or (
            path.startswith(b"/endpoints/") and path.endswith(b"/invocations")
        ):
            if request.method != b"POST":
                return _error(405, "use POST")
            return await self.invocations(request)
        if path == b"/ping":
            return await self.ping()
        if path == b"/execution-parameters":
            return 200, self.parameters.as_json(), JSON
        return _error(404, "no such route: /ping, /invocations, /execution-parameters")

    async def ping(self) -> tuple[int, bytes, str | None]:
        try:
            status, _, _ = await self.pool.request([self._ready])
        except OSError:
            status = 503
        return (200 if status == 200 else 503), b"", None

    async def invocations(self, request: _Request) -> tuple[int, bytes, str | None]:
        if request.too_big:
            return _error(
                413,
                f"body exceeds the limit of {self.max_body_bytes} bytes: "
                "split it into smaller requests",
            )
        content_type = request.headers.get(b"content-type")
        accept = request.headers.get(b"accept")
        header = infer_request_header(
            request.body,
            content_type.decode("latin-1") if content_type else None,
            accept.decode("latin-1") if accept else None,
        )
        size = len(header) + len(request.body)
        head = (
            self._infer_head
            + (
                f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {size}\r\n\r\n"
            ).encode()
        )
        try:
            status, length, raw = await self.pool.request([head, header, request.body])
        except OSError as error:
            return _error(503, f"the model server is not reachable: {error}")
        if status != 200:
            try:
                message = orjson.loads(raw)["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:500]
            # 503: the front door is draining (server/drain.py): retry elsewhere
            return _error(status if status in (400, 503) else 500, message)
        answer = binary_answer(raw, length)
        return 200, answer, answer_media_type(answer)

    async def drain(self, timeout: float = 30.0) -> None:
        """Finishes the requests in flight, closes idle connections, then the pool."""
        self.stopping = True
        deadline = asyncio.get_running_loop().time() + timeout
        while any(c.busy for c in self.connections):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.transport.close()
        self.pool.close()


async def start_adapter(
    host: str,
    port: int,
    triton_url: str,
    max_body_bytes: int,
    parameters: ExecutionParameters,
    idle_timeout: float = IDLE_TIMEOUT_S,
) -> Callable[[], Awaitable[None]]:
    """Serves the adapter on host:port; returns what stops it, draining requests in flight."""
    adapter = Adapter(triton_url, max_body_bytes, parameters, idle_timeout)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(adapter), host, port, reuse_address=True)

    async def stop() -> None:
        server.close()
        await adapter.drain()

    return stop
