"""Keep-alive HTTP/1.1 connections from the SageMaker adapter to Triton's HTTP API on loopback.

Bounded (at most `size` connections; a request waits for one within its deadline), timed (a request
that Triton does not answer within `timeout` seconds fails with an UPSTREAM_TIMEOUT ServiceError and
its connection is closed, so a late answer never reaches the next request), and clean (a connection
Triton closed is never handed out again; one idle for `idle_timeout` seconds is closed).

The client side is written on httptools, the parser the adapter's server side already ships with:
Triton's answers are simple (Content-Length, no chunking), and a general client (aiohttp) cost a
measured share of the adapter's throughput (docs/robustness.md).
"""

from __future__ import annotations

import asyncio
import collections
import time

import httptools

from contract.errors import UPSTREAM_TIMEOUT, ServiceError

SWEEP_S = 0.1  # how often deadlines are checked: a timeout is this late at most


class _Connection(asyncio.Protocol):
    """One connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.header_length = 0
        self.body: list[bytes] = []
        self.idle_since = 0.0
        self.deadline: float | None = None  # of the request in flight (Upstream.sweep)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(ConnectionError("the model server closed the connection"))

    def eof_received(self) -> None:
        self.closed = True  # Triton closes idle connections with a FIN: never reuse this one

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"bad answer from Triton: {error}"))
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"inference-header-content-length":
            self.header_length = int(value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            keep_alive = self.parser.should_keep_alive()
            status = self.parser.get_status_code()
            self.waiter.set_result((status, self.header_length, b"".join(self.body), keep_alive))

    def send(self, parts: list[bytes]) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.header_length, self.body = 0, []
        self.transport.writelines(parts)
        return self.waiter

    @property
    def usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        self.transport.close()


class Upstream:
    """A bounded pool of connections to host:port."""

    def __init__(self, host: str, port: int, size: int = 64, idle_timeout: float = 30.0):
        self.host, self.port = host, port
        self.size, self.idle_timeout = size, idle_timeout
        self.slots = asyncio.Semaphore(size)
        self.idle: collections.deque[_Connection] = collections.deque()  # oldest on the left
        self.busy: set[_Connection] = set()
        self.sweeper: asyncio.Task | None = None

    async def sweep(self) -> None:
        """Fails requests past their deadline, SWEEP_S at a time (a float per request instead
        of a timer to schedule and cancel: measured cheaper on the hot path)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for connection in [c for c in self.busy if c.deadline is not None and c.deadline < now]:
                connection._fail(asyncio.TimeoutError())

    async def request(self, parts: list[bytes], timeout: float) -> tuple[int, int, bytes]:
        """Sends one request; (status, Inference-Header-Content-Length, body). Raises
        ServiceError past `timeout` seconds, OSError where Triton cannot be reached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.slots.locked():
            try:
                await asyncio.wait_for(self.slots.acquire(), timeout)
            except asyncio.TimeoutError:
                raise ServiceError(
                    UPSTREAM_TIMEOUT,
                    f"no connection to the model server came free within {timeout:g} s",
                ) from None
        else:
            await self.slots.acquire()
        try:
            # A connection that fails on first use is replaced once by a fresh one: Triton may
            # have closed it between our check and our write (inference is idempotent).
            connection = self._take()
            if connection is not None:
                try:
                    return await self._send(connection, parts, deadline)
                except ConnectionError:
                    pass
            connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port),
                max(0.0, deadline - loop.time()),
            )
            return await self._send(connection[1], parts, deadline)
        except asyncio.TimeoutError:
            raise ServiceError(
                UPSTREAM_TIMEOUT, f"the model server did not answer within {timeout:g} s"
            ) from None
        finally:
            self.slots.release()

    def _take(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if connection.usable:
                return connection
        return None

    async def _send(self, connection: _Connection, parts: list[bytes], deadline: float):
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = asyncio.get_running_loop().create_task(self.sweep())
        waiter = connection.send(parts)
        connection.deadline = deadline
        self.busy.add(connection)
        try:
            status, header_length, body, keep_alive = await waiter
        except BaseException:
            connection.close()  # a late answer must never reach the next request
            raise
        finally:
            connection.deadline = None
            self.busy.discard(connection)
            # An idle connection must not keep its last answer alive (its chunks and the
            # waiter's joined copy): big answers would stay in memory (docs/security.md).
            connection.waiter, connection.body = None, []
        if keep_alive and connection.usable:
            self._put(connection)
        else:
            connection.close()
        return status, header_length, body

    def _put(self, connection: _Connection) -> None:
        now = time.monotonic()
        connection.idle_since = now
        self.idle.append(connection)
        while self.idle and now - self.idle[0].idle_since > self.idle_timeout:
            self.idle.popleft().close()  # never more than `size`: the slots bound them all

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        while self.idle:
            self.idle.popleft().close()
