"""The SageMaker endpoint's HTTP/1.1 timing on virtual time, as uvicorn's tests/protocols drive
theirs: the real protocol (server.sagemaker.http1) and the real adapter's routes, a transport
that records what is written, and a clock the test moves. A deadline is then checked at its
exact edge (a moment before: nothing; a moment after: the answer), with no socket and no
sleep. What needs a real socket (framing, backpressure, hostile bytes) is in test_http1.py.
"""

from __future__ import annotations

import asyncio

import pytest

from server.sagemaker import http1
from server.sagemaker.adapter import Adapter, AdapterSettings, ExecutionParameters

SETTINGS = AdapterSettings(read_timeout_s=30.0, keep_alive_s=75.0, write_timeout_s=30.0)
LIMITS = http1.Limits(
    read_timeout_s=SETTINGS.read_timeout_s,
    keep_alive_s=SETTINGS.keep_alive_s,
    max_header_bytes=SETTINGS.max_header_bytes,
    max_body_bytes=100_000,
    max_connections=10,
    write_timeout_s=SETTINGS.write_timeout_s,
)
EPSILON = 1e-3


class Transport:
    """What asyncio hands a protocol, recording what the protocol does with it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = self.aborted = self.eof_written = self.reading_paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts) -> None:
        for part in parts:
            self.written += part

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(scenario) -> None:
    """`scenario(server, connect, clock)` on a fresh loop; `connect()` opens a connection."""

    async def main() -> None:
        clock = Clock()
        adapter = Adapter("http://127.0.0.1:9", LIMITS.max_body_bytes, ExecutionParameters(1, 1))
        server = http1.Server(adapter, LIMITS, clock=clock)

        def connect() -> tuple[http1._Connection, Transport]:
            connection, transport = http1._Connection(server), Transport()
            connection.connection_made(transport)
            return connection, transport

        await scenario(server, connect, clock)
        adapter.upstream.close()

    asyncio.run(main())


async def _settle() -> None:
    for _ in range(5):  # the answering task writes within a few turns of the loop
        await asyncio.sleep(0)


def _status(transport: Transport) -> int:
    return int(bytes(transport.written[9:12]))


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # a connection that never sends
        b"GET /ping HTTP/1.1\r\nHo",  # a half-sent head
        b"POST /invocations HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b"x" * 10,  # a body that stops
    ],
    ids=["nothing", "half a head", "half a body"],
)
def test_a_request_must_arrive_within_the_read_timeout_from_its_first_byte(sent):
    async def scenario(server, connect, clock):
        connection, transport = connect()
        if sent:
            connection.data_received(sent)
        clock.now += SETTINGS.read_timeout_s - EPSILON
        server.check_deadlines()
        await _settle()
        assert not transport.written and not transport.closed
        clock.now += 2 * EPSILON
        server.check_deadlines()
        await _settle()
        if sent:  # a request began: it is told why, then the connection closes
            assert _status(transport) == 408 and b'"request_timeout"' in transport.written
            assert transport.eof_written
        else:
            assert transport.closed and not transport.written

    run(scenario)


def test_each_byte_does_not_extend_the_read_timeout():
    """A head trickled a byte at a time is cut at the read timeout from its first byte."""

    async def scenario(server, connect, clock):
        connection, transport = connect()
        step = SETTINGS.read_timeout_s / 200
        for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400:
            connection.data_received(bytes([byte]))
            clock.now += step
            server.check_deadlines()
            await _settle()
            if transport.written:
                break
        assert _status(transport) == 408
        assert (
            SETTINGS.read_timeout_s
            <= clock.now - 1000.0
            <= SETTINGS.read_timeout_s + step + EPSILON
        )

    run(scenario)


def test_an_idle_keep_alive_connection_closes_after_keep_alive_s_not_the_read_timeout():
    async def scenario(server, connect, clock):
        connection, transport = connect()
        connection.data_received(b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n")
        await _settle()
        assert _status(transport) == 200
        clock.now += SETTINGS.read_timeout_s + 1  # past the read timeout: idle is not reading
        server.check_deadlines()
        assert not transport.closed
        clock.now += SETTINGS.keep_alive_s - SETTINGS.read_timeout_s - 1 + EPSILON
        server.check_deadlines()
        assert transport.closed

    run(scenario)


def test_a_closing_answer_lingers_reading_then_closes():
    """After an answer that ends the connection our side is shut at once (EOF written) and
    theirs is read and dropped for LINGER_S, so a peer still sending reads its answer
    instead of a reset; then the connection closes."""

    async def scenario(server, connect, clock):
        connection, transport = connect()
        connection.data_received(b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        await _settle()
        assert _status(transport) == 405 and transport.eof_written and not transport.closed
        connection.data_received(b"more bytes the peer was sending")  # dropped, no error
        clock.now += http1.LINGER_S - EPSILON
        server.check_deadlines()
        assert not transport.closed
        clock.now += 2 * EPSILON
        server.check_deadlines()
        assert transport.closed

    run(scenario)


def test_a_peer_that_reads_nothing_for_the_write_timeout_is_aborted():
    async def scenario(server, connect, clock):
        connection, transport = connect()
        connection.pause_writing()  # asyncio: the peer's window is full
        clock.now += SETTINGS.write_timeout_s - EPSILON
        server.check_deadlines()
        assert not transport.aborted
        connection.resume_writing()  # it read a little: the deadline is off
        clock.now += SETTINGS.write_timeout_s
        server.check_deadlines()
        assert not transport.aborted
        connection.pause_writing()
        clock.now += SETTINGS.write_timeout_s + EPSILON
        server.check_deadlines()
        assert transport.aborted

    run(scenario)
