"""SageMaker's container contract, in front of Triton: what the hosted Object2Vec answers.

    GET  /ping                         200 when every model is ready, 503 before
    POST /invocations                  the hosted formats: Content-Type and Accept
                                       application/json or application/jsonlines (with
                                       `infer_max_seqlens=L0,L1`); a plain body back
    POST /endpoints/<name>/invocations the runtime API's path: boto3's `sagemaker-runtime`
                                       client with `endpoint_url=` works unchanged
    GET  /execution-parameters         what a Batch Transform job uses when it sets nothing

The adapter knows no format: each body goes to the front door through Triton's HTTP API on
loopback (one BYTES input, the media types as request parameters, the answer as a raw binary
output), and the front door's answer or error comes back as it is: 400 with the front door's
message, 413 for a body over the limit (refused before it is read), 503 while Triton is not
there, 500 for anything else. aiohttp serves and forwards on one event loop with pooled
keep-alive connections: one dependency, no thread hop per request (README: "SageMaker").
"""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from export.facts import FRONT_DOOR
from server.configs import BODY_INPUT, RESPONSE_OUTPUT
from server.payload import ACCEPT_PARAMETER, CONTENT_TYPE_PARAMETER, answer_media_type

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
    max_body_bytes: int, gpu_copies: int, env: dict[str, str] | None = None
) -> ExecutionParameters:
    """Concurrency: two requests per network copy on GPUs (one computing, one parsing), one
    per core on a CPU host. Payload: 6 MB, or less where the body limit is lower. Both can be
    set: O2V_MAX_CONCURRENT_TRANSFORMS, O2V_MAX_PAYLOAD_IN_MB."""
    env = dict(os.environ if env is None else env)
    gpus = gpu_count()
    concurrency = 2 * gpus * gpu_copies if gpus else (os.cpu_count() or 1)
    payload = min(DEFAULT_MAX_PAYLOAD_MB, max(1, max_body_bytes // MB))
    if env.get("O2V_MAX_CONCURRENT_TRANSFORMS", "").strip():
        concurrency = int(env["O2V_MAX_CONCURRENT_TRANSFORMS"])
    if env.get("O2V_MAX_PAYLOAD_IN_MB", "").strip():
        payload = int(env["O2V_MAX_PAYLOAD_IN_MB"])
    return ExecutionParameters(concurrency, payload)


def _infer_request(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, int]:
    """Triton's binary HTTP request: a JSON header, then the body as one BYTES element."""
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
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(body) + 4},
                }
            ],
            "outputs": [{"name": RESPONSE_OUTPUT, "parameters": {"binary_data": True}}],
            "parameters": parameters,
        }
    )
    return header + struct.pack("<I", len(body)) + body, len(header)


def _answer(raw: bytes, header_length: int) -> bytes:
    """The one output element of Triton's binary response."""
    (size,) = struct.unpack_from("<I", raw, header_length)
    start = header_length + 4
    return raw[start : start + size]


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": message}), content_type="application/json"
    )


class Adapter:
    def __init__(self, triton_url: str, max_body_bytes: int, parameters: ExecutionParameters):
        self.triton_url = triton_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self.parameters = parameters
        self.session: aiohttp.ClientSession | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/execution-parameters", self.execution_parameters)
        app.router.add_post("/invocations", self.invocations)
        app.router.add_post("/endpoints/{name}/invocations", self.invocations)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector)

    async def _close(self, _app) -> None:
        await self.session.close()

    async def ping(self, _request: web.Request) -> web.Response:
        try:
            async with self.session.get(f"{self.triton_url}/v2/health/ready") as response:
                ready = response.status == 200
        except aiohttp.ClientError:
            ready = False
        return web.Response(status=200 if ready else 503)

    async def execution_parameters(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.parameters.as_json(), content_type="application/json")

    async def invocations(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return _error(
                413,
                f"body of {request.content_length} bytes exceeds the limit of "
                f"{self.max_body_bytes} bytes: split it into smaller requests",
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body exceeds the limit of {self.max_body_bytes} bytes")
        data, header_length = _infer_request(
            body, request.headers.get("Content-Type"), request.headers.get("Accept")
        )
        try:
            async with self.session.post(
                f"{self.triton_url}/v2/models/{FRONT_DOOR}/infer",
                data=data,
                headers={
                    "Inference-Header-Content-Length": str(header_length),
                    "Content-Type": "application/octet-stream",
                },
            ) as response:
                raw = await response.read()
                status = response.status
                length = response.headers.get("Inference-Header-Content-Length")
        except aiohttp.ClientError as error:
            return _error(503, f"the model server is not reachable: {error}")
        if status != 200:
            try:
                message = orjson.loads(raw)["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:500]
            return _error(400 if status == 400 else 500, message)
        answer = _answer(raw, int(length))
        return web.Response(body=answer, headers={"Content-Type": answer_media_type(answer)})


async def start_adapter(
    host: str, port: int, triton_url: str, max_body_bytes: int, parameters: ExecutionParameters
) -> Callable[[], Awaitable[None]]:
    """Serves the adapter on host:port; returns what stops it, draining requests in flight."""
    runner = web.AppRunner(
        Adapter(triton_url, max_body_bytes, parameters).application(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner.cleanup
