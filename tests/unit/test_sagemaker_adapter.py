"""The SageMaker adapter alone, with no Triton behind it: routes, 503s, idle connections."""

import asyncio
import json
import socket

import pytest

from server.process import free_port
from server.sagemaker import ExecutionParameters, start_adapter

PARAMETERS = ExecutionParameters(max_concurrent_transforms=3, max_payload_mb=2)


def _request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(raw)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    return b"".join(chunks)
    return b"".join(chunks)


async def _serve(check, idle_timeout: float = 60.0) -> None:
    port, nothing = free_port(), free_port()  # no Triton listens on `nothing`
    stop = await start_adapter(
        "127.0.0.1", port, f"http://127.0.0.1:{nothing}", 1000, PARAMETERS, idle_timeout
    )
    try:
        await asyncio.to_thread(check, port)
    finally:
        await stop()


def test_routes_without_triton_behind():
    def check(port: int) -> None:
        ping = _request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ping.startswith(b"HTTP/1.1 503")
        params = _request(port, b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(params.split(b"\r\n\r\n", 1)[1]) == {
            "MaxConcurrentTransforms": 3,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": 2,
        }
        body = b'{"instances": [{"in0": [1]}]}'
        invoke = _request(
            port,
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body,
        )
        assert invoke.startswith(b"HTTP/1.1 503") and b"not reachable" in invoke
        big = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b" " * 5000
        assert _request(port, big).startswith(b"HTTP/1.1 413")
        assert _request(port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 404"
        )
        assert _request(port, b"GET /invocations HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 405"
        )

    asyncio.run(_serve(check))


@pytest.mark.parametrize("idle_timeout", [0.3])
def test_an_idle_connection_is_closed(idle_timeout):
    def check(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            connection.settimeout(5)
            assert connection.recv(65536) == b""  # closed by the adapter, not by us

    asyncio.run(_serve(check, idle_timeout))
