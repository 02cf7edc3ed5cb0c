"""The SageMaker adapter's HTTP/1.1 server, one behaviour a test, over raw sockets (the style of
uvicorn's tests/protocols): the real adapter (server.sagemaker.start_adapter) on a loop of its
own, with small limits so that timeouts take a second. No Triton listens behind it (/ping says
503, an invocation 503 "not reachable") except where a test puts a silent listener there, which
is what a stopped (SIGSTOP) tritonserver looks like from the adapter: connections accepted,
nothing answered. tests/e2e/test_sagemaker.py has the same adapter in front of real Triton.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.launcher.process import free_port
from server.sagemaker.adapter import AdapterSettings, ExecutionParameters, start_adapter

MAX_BODY = 100_000
SETTINGS = AdapterSettings(
    read_timeout_s=1.0,
    keep_alive_s=1.0,
    max_header_bytes=4096,
    max_connections=300,
    upstream_timeout_s=1.0,
)
GET_PARAMETERS = b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Adapter:
    port: int
    triton_port: int
    loop: asyncio.AbstractEventLoop = field(repr=False)


def _run_adapter(settings: AdapterSettings, triton_port: int):
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    async def main() -> None:
        holder["stop"] = await start_adapter(
            "127.0.0.1",
            port,
            f"http://127.0.0.1:{triton_port}",
            MAX_BODY,
            ExecutionParameters(3, 1),
            settings,
        )
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    started.wait(10)
    return port, loop, holder, thread


@pytest.fixture
def adapter():
    triton_port = free_port()  # nothing listens there
    port, loop, holder, thread = _run_adapter(SETTINGS, triton_port)
    yield Adapter(port, triton_port, loop)
    asyncio.run_coroutine_threadsafe(holder["stop"](), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_responses(sock: socket.socket, count: int, head_only: tuple[int, ...] = ()):
    """`count` responses off the socket, parsed by Content-Length; for the indexes in
    `head_only` (answers to HEAD) no body is read, whatever Content-Length says."""
    buffer = b""
    responses = []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return responses
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if status == 100:
            continue
        length = 0 if len(responses) in head_only else int(headers.get("content-length", 0))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        responses.append(Response(status, headers, buffer[:length]))
        buffer = buffer[length:]
    return responses


def _exchange(port: int, raw: bytes, count: int = 1, head_only=()) -> list[Response]:
    with _connect(port) as sock:
        sock.sendall(raw)
        return _read_responses(sock, count, head_only)


def _closed(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed `sock` (answers read and dropped), None if it did not
    within `within` seconds."""
    sock.settimeout(within)
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def _invocation(body: bytes, *headers: str) -> bytes:
    head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "".join(f"{h}\r\n" for h in headers)
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


# -- routes and methods


def test_routes_answer_and_unknown_ones_get_404(adapter):
    [parameters] = _exchange(adapter.port, GET_PARAMETERS)
    assert parameters.status == 200
    assert parameters.json() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 1,
    }
    [ping] = _exchange(adapter.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ping.status == 503  # no Triton behind
    [missing] = _exchange(adapter.port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.status == 404 and "/nowhere" in missing.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/ping", "GET, HEAD"),
        ("DELETE", "/execution-parameters", "GET, HEAD"),
        ("GET", "/invocations", "POST"),
        ("PUT", "/endpoints/e/invocations", "POST"),
    ],
)
def test_a_wrong_method_gets_405_with_allow(adapter, method, path, allow):
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    [answer] = _exchange(adapter.port, raw)
    assert answer.status == 405
    assert answer.headers["allow"] == allow
    assert answer.json()["kind"] == "method_not_allowed"


def test_errors_carry_the_taxonomy_for_boto3(adapter):
    [answer] = _exchange(adapter.port, _invocation(b"{}", "Content-Type: text/html"))
    assert answer.status == 415
    assert answer.headers["x-amzn-errortype"] == "ValidationError"
    document = answer.json()
    assert document["message"] == document["error"] and "text/html" in document["message"]
    assert document["kind"] == "unsupported_media_type"


def test_absolute_form_targets_route_by_their_path(adapter):
    raw = b"GET http://example.com:8080/execution-parameters?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    [answer] = _exchange(adapter.port, raw)
    assert answer.status == 200 and answer.json()["MaxPayloadInMB"] == 1


# -- framing


def test_head_gets_headers_without_a_body_and_the_next_answer_is_intact(adapter):
    raw = (
        b"HEAD /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + GET_PARAMETERS
    )
    head, missing, get = _exchange(adapter.port, raw, 3, head_only=(0, 1))
    assert head.status == 200 and int(head.headers["content-length"]) == len(get.body)
    assert missing.status == 404
    assert get.status == 200 and get.json()["MaxConcurrentTransforms"] == 3


def test_a_peer_that_half_closes_after_its_requests_gets_every_answer(adapter):
    with _connect(adapter.port) as sock:
        sock.sendall(GET_PARAMETERS + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + GET_PARAMETERS)
        sock.shutdown(socket.SHUT_WR)
        assert [a.status for a in _read_responses(sock, 3)] == [200, 503, 200]
        assert _closed(sock, 2) is not None


def test_pipelined_answers_keep_their_order_before_a_malformed_request(adapter):
    raw = GET_PARAMETERS + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + GET_PARAMETERS
    raw += b"\x00\x01garbage\r\n\r\n"
    with _connect(adapter.port) as sock:
        sock.sendall(raw)
        answers = _read_responses(sock, 4)
        assert [a.status for a in answers] == [200, 503, 200, 400]
        assert answers[3].headers["connection"] == "close"
        assert _closed(sock, 2) is not None


def test_upgrade_is_ignored_and_the_request_served_as_http_1_1(adapter):
    h2c = (
        b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    websocket = (
        b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answers = _exchange(adapter.port, h2c + websocket + GET_PARAMETERS, 3)
    assert [a.status for a in answers] == [200, 200, 200]


def test_an_upgrade_on_a_post_keeps_its_body(adapter):
    """curl --http2 on http:// sends POSTs with Upgrade: h2c; httptools would skip the body."""
    body = b"\x00" * 10  # not JSON: if the body were lost, the next request would be garbage
    raw = _invocation(body, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c")
    invoke, parameters = _exchange(adapter.port, raw + GET_PARAMETERS, 2)
    assert invoke.status == 503 and "not reachable" in invoke.json()["message"]
    assert parameters.status == 200


def test_connect_gets_405_and_an_answer_before_the_close(adapter):
    with _connect(adapter.port) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        [answer] = _read_responses(sock, 1)
        assert answer.status == 405 and "proxy" in answer.json()["message"]
        assert _closed(sock, 2) is not None


def test_100_continue_comes_before_the_body_is_sent(adapter):
    body = b'{"instances": [{"in0": [1]}]}'
    with _connect(adapter.port) as sock:
        head = _invocation(body, "Expect: 100-continue")[: -len(body)]
        sock.sendall(head)
        sock.settimeout(2)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        [answer] = _read_responses(sock, 1)
        assert answer.status == 503  # read whole and sent on: no Triton behind


def test_a_body_over_the_limit_gets_413_before_it_is_sent(adapter):
    for expect in ("Expect: 100-continue", "X-Nothing: 0"):
        with _connect(adapter.port) as sock:
            start = time.monotonic()
            sock.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n"
                + f"{expect}\r\n\r\n".encode()
            )
            [answer] = _read_responses(sock, 1)  # no 100 Continue came before it
            assert answer.status == 413 and answer.headers["connection"] == "close"
            assert time.monotonic() - start < 1.0
            assert _closed(sock, 2) is not None


def test_a_chunked_body_over_the_limit_gets_413(adapter):
    chunk = b"x" * 50_000
    raw = b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    [answer] = _exchange(adapter.port, raw)
    assert answer.status == 413 and answer.json()["kind"] == "too_large"


@pytest.mark.parametrize(
    ("header", "status"),
    [("Transfer-Encoding: gzip, chunked", 501), ("Content-Encoding: gzip", 415)],
)
def test_codings_the_front_door_cannot_read_are_refused(adapter, header, status):
    raw = f"POST /invocations HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode()
    raw += (
        b"Content-Length: 3\r\n\r\nabc"
        if "Content-Encoding" in header
        else b"\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    [answer] = _exchange(adapter.port, raw)
    assert answer.status == status


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/jsonlines;q=0, application/json", 503),  # admitted: on to Triton
        ("application/jsonlines;q=0, text/html", 406),
        ("text/html", 406),
        ("*/*;q=0", 406),
        ("application/*;q=0.5", 503),
    ],
)
def test_accept_q_values_are_honoured(adapter, accept, status):
    [answer] = _exchange(adapter.port, _invocation(b"{}", f"Accept: {accept}"))
    assert answer.status == status, answer.body


# -- limits and timeouts


def test_a_head_over_the_limit_gets_431_without_being_held(adapter):
    with _connect(adapter.port) as sock:
        start = time.monotonic()
        try:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending: fine
        [answer] = _read_responses(sock, 1)
        assert answer.status == 431 and time.monotonic() - start < 2
    [still] = _exchange(adapter.port, GET_PARAMETERS)
    assert still.status == 200


def test_a_half_sent_head_is_closed_within_the_read_timeout(adapter):
    """The sweep runs on a real server (each deadline's edges: test_http1_timing.py)."""
    with _connect(adapter.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHo")
        [answer] = _read_responses(sock, 1)
        assert answer.status == 408


def test_connections_beyond_the_limit_get_503_at_once(adapter):
    held = [_connect(adapter.port) for _ in range(SETTINGS.max_connections)]
    try:
        time.sleep(0.2)
        [answer] = _exchange(adapter.port, GET_PARAMETERS)
        assert answer.status == 503 and "O2V_HTTP_MAX_CONNECTIONS" in answer.json()["message"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    [answer] = _exchange(adapter.port, GET_PARAMETERS)
    assert answer.status == 200


def test_good_clients_are_answered_beside_a_flood_of_half_sent_heads(adapter):
    slow = []
    for _ in range(200):
        sock = _connect(adapter.port)
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Len")
        slow.append(sock)
    try:
        latencies = []
        for _ in range(50):
            start = time.monotonic()
            [answer] = _exchange(adapter.port, GET_PARAMETERS)
            assert answer.status == 200
            latencies.append(time.monotonic() - start)
        assert max(latencies) < 0.5
        deadline = SETTINGS.read_timeout_s + 1.5
        assert all(_closed(sock, deadline) is not None for sock in slow)
    finally:
        for sock in slow:
            sock.close()


def test_a_peer_that_pipelines_without_reading_is_not_read_without_bound(adapter):
    body = b"x" * (MAX_BODY - 1)
    with _connect(adapter.port, timeout=2) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        with pytest.raises(TimeoutError):
            for _ in range(2000):  # 200 MB if it were all read
                sock.sendall(_invocation(body))
                sent += 1
        assert sent < 2000  # the adapter stopped reading: our sends stalled
    [answer] = _exchange(adapter.port, GET_PARAMETERS)
    assert answer.status == 200


@pytest.fixture
def adapter_before_a_stopped_triton():
    """A listener that accepts and never answers: a SIGSTOPped tritonserver, as the adapter
    sees it."""
    listener = socket.create_server(("127.0.0.1", 0))
    settings = replace(SETTINGS, max_concurrency=3)
    port, loop, holder, thread = _run_adapter(settings, listener.getsockname()[1])
    yield port
    asyncio.run_coroutine_threadsafe(holder["stop"](), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    listener.close()


def test_a_stopped_triton_gets_504_and_ping_503_within_2_s(adapter_before_a_stopped_triton):
    port = adapter_before_a_stopped_triton
    start = time.monotonic()
    [ping] = _exchange(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ping.status == 503 and time.monotonic() - start < 2.0
    start = time.monotonic()
    [invoke] = _exchange(port, _invocation(b'{"instances": [{"in0": [1]}]}'))
    elapsed = time.monotonic() - start
    assert invoke.status == 504 and invoke.json()["kind"] == "upstream_timeout"
    assert SETTINGS.upstream_timeout_s <= elapsed < SETTINGS.upstream_timeout_s + 1.0


# -- anything at all, beside good traffic

_TOKENS = st.sampled_from(
    [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"CONNECT ",
        b"PUT ",
        b"/ping",
        b"/invocations",
        b"/execution-parameters",
        b"http://h/invocations",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: x\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999999999\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: Upgrade\r\nUpgrade: h2c\r\n",
        b"Connection: close\r\n",
        b"Content-Type: application/json\r\n",
        b"Accept: text/html;q=0\r\n",
        b"\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"{}",
        b"\x00",
        b"\xff\xfe",
        b"\r\n\r\n",
    ]
)
_REQUESTS = st.lists(st.one_of(_TOKENS, st.binary(max_size=40)), max_size=25).map(b"".join)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=_REQUESTS)
def test_any_bytes_get_answers_or_a_close_and_good_clients_are_served(adapter, raw):
    good: list[int] = []

    def good_client() -> None:
        with _connect(adapter.port) as sock:
            for _ in range(3):
                sock.sendall(GET_PARAMETERS)
                good.extend(a.status for a in _read_responses(sock, 1))

    thread = threading.Thread(target=good_client)
    thread.start()
    with _connect(adapter.port, timeout=SETTINGS.read_timeout_s + 3) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    thread.join(10)
    assert good == [200, 200, 200]
    # Whatever came back is a sequence of well-formed answers with known statuses.
    for status_line in received.split(b"HTTP/1.1 ")[1:]:
        assert int(status_line[:3]) in {100, 200, 400, 404, 405, 406, 408, 413, 415, 431, 501, 503}


def test_execution_parameters_follow_the_cores_and_gpus_this_process_may_use():
    from server.launcher.host import Host
    from server.sagemaker.adapter import default_execution_parameters

    cpu = default_execution_parameters(16 << 20, 2, gpus=0, cores=3)
    assert cpu.max_concurrent_transforms == 3 and cpu.max_payload_mb == 6
    gpu = default_execution_parameters(2 << 20, 2, gpus=4, cores=64)
    assert gpu.max_concurrent_transforms == 2 * 4 * 2 and gpu.max_payload_mb == 2
    env_cpu = Host.detect(env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert env_cpu.gpus == 0
    assert default_execution_parameters(16 << 20, 2, 0, 2, 7, 3).max_concurrent_transforms == 7


def test_invocations_beyond_the_concurrency_limit_get_503_and_the_count_recovers(
    adapter_before_a_stopped_triton,
):
    port = adapter_before_a_stopped_triton
    body = b'{"instances": [{"in0": [1]}]}'
    waiting = [_connect(port) for _ in range(3)]
    abandoned = _connect(port)
    try:
        for sock in waiting:
            sock.sendall(_invocation(body))  # held: Triton never answers
        time.sleep(0.2)
        [over] = _exchange(port, _invocation(body))
        assert over.status == 503 and over.headers["retry-after"] == "1"
        assert "O2V_HTTP_MAX_CONCURRENCY" in over.json()["message"]
        assert [_read_responses(s, 1)[0].status for s in waiting] == [504, 504, 504]
        abandoned.sendall(_invocation(body)[:-5])  # admitted, then the peer goes away
        abandoned.close()
        time.sleep(0.3)
        statuses = []
        for sock in [_connect(port) for _ in range(3)]:  # all three slots are free again
            sock.sendall(_invocation(body))
            statuses.append(sock)
        assert [_read_responses(s, 1)[0].status for s in statuses] == [504, 504, 504]
    finally:
        for sock in waiting:
            sock.close()


def test_neighbours_requests_beyond_their_limit_get_503_and_others_are_admitted():
    """A maximal neighbours request is the costliest a client may send: at most
    max_neighbour_requests are in flight at once, so what queues behind them is bounded."""
    listener = socket.create_server(("127.0.0.1", 0))  # a Triton that never answers
    settings = replace(SETTINGS, max_neighbour_requests=2)
    port, loop, holder, thread = _run_adapter(settings, listener.getsockname()[1])
    body = b'{"in0": [1]}\n'
    asking = "Content-Type: application/jsonlines; Neighbours = 3"
    waiting = [_connect(port) for _ in range(2)]
    try:
        for sock in waiting:
            sock.sendall(_invocation(body, asking))  # held: Triton never answers
        time.sleep(0.2)
        [over] = _exchange(port, _invocation(body, asking))
        assert over.status == 503 and over.headers["retry-after"] == "1"
        assert "O2V_HTTP_MAX_NEIGHBOUR_REQUESTS" in over.json()["message"]
        [other] = _exchange(port, _invocation(body))  # not a neighbours request: admitted
        assert other.status == 504
        assert [_read_responses(s, 1)[0].status for s in waiting] == [504, 504]
        [again] = _exchange(port, _invocation(body, asking))  # their slots are free again
        assert again.status == 504
    finally:
        for sock in waiting:
            sock.close()
        asyncio.run_coroutine_threadsafe(holder["stop"](), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        listener.close()
