"""The SageMaker endpoint's HTTP/1.1 server: asyncio protocols on uvloop, httptools' parser.

Written here, not taken from uvicorn or granian, because both cost more CPU per request and
each failed cases below that only patches to their protocol internals would fix
(docs/decisions.md). What HTTP/1.1 asks of a server facing clients, proxies and hostile peers
is each tested in tests/unit/test_http1.py (deadlines on virtual time: test_http1_timing.py):

* timeouts: a request's head and body must arrive within `read_timeout_s` from its first byte
  (and a new connection's first byte within the same), an idle keep-alive connection closes
  after `keep_alive_s`, and a peer that stops reading its answer for `write_timeout_s` is cut
  off (the connection aborted, its unsent answer freed);
* limits: the head (`max_header_bytes`: 431), the body (413, answered from Content-Length before
  the body is read and without 100 Continue), connections (`max_connections`: 503 at once),
  pipelined requests read ahead (reading pauses; also while the peer does not read answers);
* framing: answers leave in request order whatever happens (a malformed request after good
  pipelined ones gets its 400 after theirs), HEAD gets headers without a body, 100 Continue is
  sent when a body is expected and the request was admitted, Upgrade (h2c, websocket) is
  ignored and the request served as HTTP/1.1, CONNECT gets 405, absolute-form targets route
  by their path.

The application (server/sagemaker/adapter.py's Adapter) sees a `Head`, may refuse it at once
(`admit`), and answers it with its body (`respond`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import httptools

from contract import errors
from server.common.memory import release_memory

PIPELINE_DEPTH = 8  # requests read ahead of the one being answered, before reading pauses
SWEEP_S = 0.25  # how often deadlines are checked: timeouts are this late at most
LINGER_S = 2.0  # after an answer that closes, how long the peer's bytes are still read


class Head:
    """A request as far as its headers: what the application decides on before any body."""

    __slots__ = ("method", "path", "headers")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes]):
        self.method, self.path = method, path
        self.headers = headers  # names in lower case; a repeated header: its last value


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # not Content-Length
    close: bool = False  # the connection closes after it (what is left unread is dropped)


class Application(Protocol):
    def admit(self, head: Head) -> Answer | None: ...
    def respond(self, head: Head, body: bytes) -> Awaitable[Answer]: ...
    def abandon(self, head: Head) -> None: ...
    def too_large(self) -> Answer: ...
    def error_answer(self, error: errors.ServiceError) -> Answer: ...


class Observer:
    """What the server tells whoever counts (server.sagemaker.metrics): this one counts nothing."""

    def sent(self, path: str | None, status: int) -> None:
        """An answer written, to a request for `path` (None: its head never arrived)."""

    def refused(self, limit: str) -> None:
        """A request or connection refused over a limit (contract.metrics.LIMITS)."""

    def slow_peer(self) -> None:
        """A connection aborted: its peer did not read the answer in time."""


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float
    keep_alive_s: float
    max_header_bytes: int
    max_body_bytes: int
    max_connections: int
    write_timeout_s: float = 30.0


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def _encode(answer: Answer, head_only: bool, close: bool) -> list[bytes]:
    lines = [_STATUS_LINES[answer.status], b"content-length: %d\r\n" % len(answer.body)]
    for name, value in answer.headers:
        lines += [name, b": ", value, b"\r\n"]
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    return [head] if head_only or not answer.body else [head, answer.body]


class _Message:
    """The request being read."""

    __slots__ = ("url", "headers", "head", "chunks", "size", "refused", "keep_alive", "upgrade")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.head: Head | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.refused = False
        self.keep_alive = True
        self.upgrade = False


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.app, self.limits = server.app, server.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        # In request order: (head, an Answer ready or a body to respond to, close, head_only)
        self.queue: collections.deque = collections.deque()
        self.worker: asyncio.Task | None = None
        self.message: _Message | None = None  # a request begun and not yet complete
        self.head_bytes = 0
        self.done_reading = False  # an answer that closes is queued: the rest is dropped
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused = False
        self.queued_bytes = 0  # bodies read ahead, waiting their turn
        # One deadline at a time (server.sweep checks them): reading a request, or idle.
        self.deadline: float | None = None
        self.reading = False  # the deadline is the read timeout (else: keep-alive idle)
        self.continue_sent = False
        self.lingering = False  # our side is closed; theirs is read and dropped for a while
        # Set while the peer does not read what we wrote (asyncio paused our writing): past
        # it the connection is aborted, so an unread answer does not hold memory forever.
        self.write_deadline: float | None = None
        self.peer_done = False  # the peer half-closed: close once its answers are out

    # -- asyncio
    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= self.limits.max_connections:
            self.server.observer.refused("connections")
            answer = self._error(
                errors.OVERLOADED,
                f"{self.limits.max_connections} connections open already "
                "(O2V_HTTP_MAX_CONNECTIONS): retry shortly",
            )
            transport.writelines(_encode(answer, False, True))
            self.server.observer.sent(None, answer.status)
            transport.close()
            self.done_reading = True
            return
        self.server.connections.add(self)
        self._arm_read()  # a new connection owes us its first request

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.done_reading = True
        self._disarm()
        self.writable.set()
        if self.message is not None and self.message.head is not None:
            if not self.message.refused:
                self.app.abandon(self.message.head)
            self.message = None
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()  # the request being answered is the app's to count off
        for head, item, _, _ in self.queue:
            if not isinstance(item, Answer):
                self.app.abandon(head)  # admitted, never to be answered
        self.queue.clear()

    def eof_received(self) -> bool:
        """The peer sent all it will (a half-close): answer what came, then close."""
        if self.lingering or not self.busy:
            return False  # asyncio closes the transport
        self.done_reading = self.peer_done = True
        return True

    def pause_writing(self) -> None:
        self.writable.clear()  # the peer does not read: stop reading its requests too
        self.write_deadline = self.server.clock() + self.limits.write_timeout_s
        self._pause()

    def resume_writing(self) -> None:
        self.writable.set()
        self.write_deadline = None
        self._maybe_resume()

    def stalled(self) -> None:
        """The peer read nothing of our answer for write_timeout_s: closing would wait for it
        forever with the answer in memory, so the connection is aborted."""
        self.write_deadline = None
        self.server.observer.slow_peer()
        self.transport.abort()
        # after connection_lost (scheduled by abort) has dropped the answers: their pages go
        # back to the system, not only to the heap (docs/security.md)
        self.loop.call_soon(release_memory)

    def data_received(self, data: bytes) -> None:
        if self.done_reading:
            return
        if not self.reading:
            self._arm_read()  # these bytes begin a request: it has read_timeout_s to arrive
        head_before = self.message is not None and self.message.head is None
        counted = self.head_bytes
        self._feed(data)
        if head_before and self.message is not None and self.message.head is None:
            # The whole chunk fell inside one head: count all of it, partial lines included
            # (httptools holds those itself and reports a header only once it is complete).
            self.head_bytes = counted + len(data)
            self._check_head_size()

    # -- httptools
    def on_message_begin(self) -> None:
        if self.done_reading:
            return
        self.message = _Message()
        self.head_bytes = 0
        if not self.reading:
            self._arm_read()

    def on_url(self, url: bytes) -> None:
        if self.done_reading or self.message is None:
            return
        self.message.url += url
        self.head_bytes += len(url)
        self._check_head_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done_reading or self.message is None:
            return
        self.message.headers[name.lower()] = value
        self.head_bytes += len(name) + len(value) + 4
        self._check_head_size()

    def on_headers_complete(self) -> None:
        message = self.message
        if message is None or self.done_reading:
            return
        method = self.parser.get_method().decode("ascii", "replace")
        try:
            path = httptools.parse_url(message.url).path.decode("latin-1")
        except httptools.HttpParserInvalidURLError:
            path = message.url.decode("latin-1")  # CONNECT's authority-form, or garbage: 404
        message.head = Head(method, path, message.headers)
        message.keep_alive = self.parser.should_keep_alive()
        message.upgrade = self.parser.should_upgrade() and method != "CONNECT"
        if message.upgrade:
            return  # served once the parser is past the upgrade (_without_upgrade)
        refusal = self.app.admit(message.head)
        if refusal is not None:
            message.refused = True
            self._refuse(refusal)
            return
        self.continue_sent = False
        if not self.busy:  # else once the answers ahead of it are out (_answer_all)
            self._continue()

    def on_body(self, body: bytes) -> None:
        message = self.message
        if message is None or message.refused or self.done_reading:
            return
        message.size += len(body)
        if message.size > self.limits.max_body_bytes:
            self.server.observer.refused("body_bytes")
            message.refused = True
            self.app.abandon(message.head)
            self._refuse(self.app.too_large())
            return
        message.chunks.append(body)

    def on_message_complete(self) -> None:
        message = self.message
        if message is None or message.upgrade:
            return  # an upgrade's request is served by _without_upgrade
        self.message = None
        if message.refused or self.done_reading:
            return
        self._disarm()
        body = message.chunks[0] if len(message.chunks) == 1 else b"".join(message.chunks)
        head = message.head
        self._enqueue(head, body, not message.keep_alive, head.method == "HEAD")

    # -- the rest
    def _feed(self, data: bytes) -> None:
        while data:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as upgrade:
                data = self._without_upgrade(data[upgrade.args[0] :])
            except httptools.HttpParserError as error:
                if not self.done_reading:
                    self.server.observer.refused("malformed")
                    message = f"malformed HTTP request: {error}"
                    self._refuse(self._error(errors.BAD_REQUEST, message))
                return

    def _without_upgrade(self, rest: bytes) -> bytes:
        """httptools stops at a request that asks to Upgrade, and would skip its body. Upgrades
        are not offered here (RFC 9110 section 7.8: a server may ignore one), so the request is
        parsed again without them by a fresh parser, with whatever followed it: the bytes to
        feed it."""
        message, self.message = self.message, None
        if self.done_reading or message is None or message.head is None:
            return b""  # CONNECT: refused at its head already
        lines = [f"{message.head.method} ".encode(), message.url, b" HTTP/1.1\r\n"]
        for name, value in message.headers.items():
            if name == b"upgrade":
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                value = b", ".join(t for t in tokens if t.lower() != b"upgrade")
                if not value:
                    continue
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        self.parser = httptools.HttpRequestParser(self)
        return b"".join(lines) + rest

    def _check_head_size(self) -> None:
        if self.head_bytes > self.limits.max_header_bytes and not self.done_reading:
            self.server.observer.refused("head_bytes")
            message = (
                f"request head over {self.limits.max_header_bytes} bytes "
                "(O2V_HTTP_MAX_HEADER_BYTES)"
            )
            self._refuse(self._error(errors.HEAD_TOO_LARGE, message))

    def _error(self, kind: errors.Kind, message: str) -> Answer:
        """The answer to what HTTP itself refuses; the connection closes after it."""
        return self.app.error_answer(errors.ServiceError(kind, message, close=True))

    def _refuse(self, answer: Answer) -> None:
        """Answers after those queued before it; if it closes, nothing more is read."""
        head = self.message.head if self.message is not None else None
        head_only = head is not None and head.method == "HEAD"
        if answer.close:
            self.done_reading = True
            self._disarm()
            if self.message is not None and self.message.head is not None:
                if not self.message.refused:
                    self.app.abandon(self.message.head)
                self.message.refused = True
        self._enqueue(head, answer, answer.close, head_only)

    def _enqueue(self, head: Head | None, item: Answer | bytes, close: bool, head_only: bool):
        """`item`: an answer ready, or the body of a request to respond to."""
        self.queue.append((head, item, close, head_only))
        if not isinstance(item, Answer):
            self.queued_bytes += len(item)
        if close:
            self.done_reading = True
        if self._too_far_ahead:
            self._pause()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._answer_all())

    async def _answer_all(self) -> None:
        while self.queue:
            head, item, close, head_only = self.queue.popleft()
            if isinstance(item, Answer):
                answer = item
            else:
                body = item
                self.queued_bytes -= len(body)
                try:
                    answer = await self.app.respond(head, body)
                except Exception as error:  # noqa: BLE001 - a fault of ours, said in one line
                    answer = self._error(errors.SERVER_FAULT, f"{type(error).__name__}: {error}")
            close = close or answer.close or self.server.stopping
            if not self.writable.is_set():
                await self.writable.wait()
            if self.transport.is_closing():
                return
            self.transport.writelines(_encode(answer, head_only, close))
            self.server.observer.sent(head.path if head is not None else None, answer.status)
            if close:
                self._linger()
                return
            self._maybe_resume()
        if self.peer_done:
            self.transport.close()
            return
        self._continue()
        if self.message is None and self.deadline is None:
            self._arm(self.limits.keep_alive_s, reading=False)

    def _continue(self) -> None:
        """100 Continue for the admitted request being read, if it asked and has none yet."""
        message = self.message
        if message is None or message.head is None or message.refused or self.continue_sent:
            return
        if message.headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.continue_sent = True

    def _linger(self) -> None:
        """Closes after an answer that ends the connection: our side at once, theirs after
        LINGER_S of reading and dropping what they still send. A peer still sending a body we
        refused would otherwise get a reset in place of the answer it has not read yet."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.done_reading, self.lingering = True, True
            self._arm(LINGER_S, reading=False)
        else:
            self.transport.close()

    @property
    def busy(self) -> bool:
        return bool(self.queue) or (self.worker is not None and not self.worker.done())

    def _pause(self) -> None:
        if not self.paused and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    @property
    def _too_far_ahead(self) -> bool:
        """PIPELINE_DEPTH requests, or one largest body, read ahead of the answer being made."""
        return len(self.queue) > PIPELINE_DEPTH or self.queued_bytes > self.limits.max_body_bytes

    def _maybe_resume(self) -> None:
        if self.paused and self.writable.is_set() and not self._too_far_ahead:
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _arm_read(self) -> None:
        self._arm(self.limits.read_timeout_s, reading=True)

    def _arm(self, seconds: float, reading: bool) -> None:
        self.reading = reading
        self.deadline = self.server.clock() + seconds

    def _disarm(self) -> None:
        self.reading, self.deadline = False, None

    def expired(self) -> None:
        self.deadline, self.reading = None, False
        if self.lingering:
            self.transport.close()
            return
        if self.done_reading:  # an answer that closes is on its way
            return
        if self.message is not None:  # a request began and did not finish arriving
            self.server.observer.refused("read_timeout")
            self._refuse(
                self._error(
                    errors.REQUEST_TIMEOUT,
                    f"the request did not arrive within {self.limits.read_timeout_s:g} s "
                    "(O2V_HTTP_READ_TIMEOUT_S)",
                )
            )
        elif not self.busy:
            self.transport.close()  # idle, or a new connection that never sent a byte


class Server:
    """The listening socket and its connections."""

    def __init__(
        self,
        app: Application,
        limits: Limits,
        clock: Callable[[], float] | None = None,
        observer: Observer | None = None,
    ):
        self.app, self.limits = app, limits
        self.observer = observer or Observer()
        # Deadlines are read from this clock (the loop's; a test's virtual one)
        self.clock = clock or asyncio.get_running_loop().time
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.listener: asyncio.AbstractServer | None = None
        self.sweeper: asyncio.Task | None = None

    async def sweep(self) -> None:
        """Closes what is past its deadline, SWEEP_S at a time: one float per connection to
        set on each request instead of a timer to schedule and cancel, which cost a share of
        the adapter's CPU (docs/robustness.md)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            self.check_deadlines()

    def check_deadlines(self) -> None:
        """One sweep: every connection past its read, idle, linger or write deadline."""
        now = self.clock()
        for connection in [c for c in self.connections if c.deadline and c.deadline < now]:
            connection.expired()
        for connection in [
            c for c in self.connections if c.write_deadline and c.write_deadline < now
        ]:
            connection.stalled()

    def close(self) -> None:
        """Stops listening and closes every connection (answers in flight are the app's to
        finish first: Adapter.drain)."""
        self.stopping = True
        if self.listener is not None:
            self.listener.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
        for connection in list(self.connections):
            connection.transport.close()


async def serve(
    app: Application, host: str, port: int, limits: Limits, observer: Observer | None = None
) -> Server:
    server = Server(app, limits, observer=observer)
    loop = asyncio.get_running_loop()
    server.listener = await loop.create_server(
        lambda: _Connection(server), host, port, reuse_address=True, backlog=1024
    )
    server.sweeper = loop.create_task(server.sweep())
    return server
