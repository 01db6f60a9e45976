"""Forwarding a request to an arm's model service: a small HTTP/1.1 client on asyncio
protocols with httptools' parser (the one uvicorn uses), one keep-alive pool per arm service.

Why not httpx or aiohttp: the router's whole job is this call, and their general machinery
cost more CPU a request than the rest of the router (httpx's pool scans every connection
per request; aiohttp ~100-150 µs of CPU a call here against ~25 µs for this client).

- One pool per service URL, at most ``max_connections`` open: an arm that stops answering
  fills only its own pool (its callers then queue for a connection inside their own
  timeout and fall back to control) and never holds the connections of the others.
- The timeout covers the whole call: waiting for a connection, connecting, sending,
  the answer. A connection whose call timed out is closed (its answer may still come).
- A reused keep-alive connection closed before any byte of the answer came (most often
  the service closed it while idle) is retried once on a new connection. The service may
  have got that request all the same (it closed the connection after reading it): a
  prediction is assumed safe to ask twice. Nothing else is retried.
- The answer needs a Content-Length, chunked encoding, or the connection's end.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_CONNECTIONS_PER_ARM = 256  # a slow arm holds at most this many; its callers then queue
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # an arm's answer beyond this is a failure of the arm
CALLERS_ERRORS = frozenset({400, 422})  # an arm's 4xx about the caller's input; others: its own


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 504 when the arm timed out, 502 when it could not be reached
    body: bytes
    model_version: str | None  # from the arm's X-Model-Version header
    failure: str | None  # None, or why it failed: timeout, unreachable, server/client_error
    latency_ms: float  # from sending to the answer or the failure


class _Unreachable(Exception):
    def __init__(self, reason: str, *, answered: bool = False) -> None:
        super().__init__(reason)
        self.answered = answered  # some of the answer had come


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.max_answer_bytes = max_answer_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = False  # has answered a request before
        self.on_idle_lost: Callable[[_Connection], None] | None = None
        self.gone = asyncio.Event()  # set when the connection is lost (closing takes a turn)
        self._waiter: asyncio.Future[tuple[int, bytes, str | None]] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._version: str | None = None
        self._received = False
        self._until_close = False
        self._length_known = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # nothing asked: not usable
            self.close()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(_Unreachable(f"a malformed answer: {e}", answered=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gone.set()
        if self._waiter is None and self.on_idle_lost is not None:
            self.on_idle_lost(self)
        elif self._waiter is not None and not self._waiter.done():
            if self._until_close:  # the answer's end is the connection's end
                self._done(self.parser.get_status_code())
            else:
                reason = "the connection closed" if exc is None else repr(exc)
                self._fail(_Unreachable(reason, answered=self._received))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"x-model-version":
            self._version = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self._length_known = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._until_close = not self._length_known and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._size += len(body)
        if self._size > self.max_answer_bytes:
            too_large = f"an answer over {self.max_answer_bytes:,} bytes"
            self._fail(_Unreachable(too_large, answered=True))
            self.close()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:  # switching protocols, never asked for: not HTTP any more
                self._fail(_Unreachable("an unasked 101 Switching Protocols", answered=True))
                self.close()
                return
            # an interim answer (100 Continue, 103 Early Hints): the final one follows
            self._chunks, self._version, self._size = [], None, 0
            self._until_close = self._length_known = False
            return
        self._until_close = False
        self._done(status)
        if not self.parser.should_keep_alive():
            self.close()

    # the client's side
    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes, str | None]]:
        assert self.transport is not None
        if self.closed:  # lost on its way from the pool
            raise _Unreachable("the connection closed")
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._chunks, self._version, self._received, self._size = [], None, False, 0
        self._until_close = self._length_known = False
        self.transport.write(data)
        return waiter

    def finished(self) -> None:
        """The request's answer was taken (or given up on)."""
        self._waiter = None
        self.used = True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _done(self, status: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, b"".join(self._chunks), self._version))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class _Pool:
    """Keep-alive connections to one service, at most ``limit`` open at once."""

    def __init__(
        self, url: str, limit: int, tls: ssl.SSLContext | None, max_answer_bytes: int
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an arm's URL must be http(s)://HOST[:PORT]/..., got {url!r}")
        secure = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if secure else 80)
        self.tls = (tls or ssl.create_default_context()) if secure else None
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.head = f"POST {path} HTTP/1.1\r\nhost: {netloc}\r\n".encode("latin-1")
        self.limit = limit
        self.max_answer_bytes = max_answer_bytes
        self.open = 0
        self.idle: list[_Connection] = []
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self) -> _Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()  # the most recent: the least likely closed by the server
                conn.on_idle_lost = None
                if not conn.closed:
                    return conn
                self.open -= 1
            if self.open < self.limit:
                break
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # given something as we left
                    if (given := waiter.result()) is not None:
                        self.release(given, reusable=True)
                    else:
                        self._offer_slot()
                raise
            if handed is not None:
                return handed
            # a slot is free: look again (another caller may have taken it meanwhile)
        self.open += 1  # our slot, whether the connection is made or not
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_answer_bytes), self.host, self.port, ssl=self.tls
            )
        except BaseException:
            self._free_slot()
            raise
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        conn.finished()
        if not reusable or conn.closed:
            conn.close()
            self._free_slot()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.on_idle_lost = self._lost_while_idle
        self.idle.append(conn)

    def _lost_while_idle(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
            self._free_slot()

    def drop_idle(self) -> list[_Connection]:
        """Close the idle connections (one was found closed: the service restarted?)."""
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.on_idle_lost = None
            conn.close()
            self._free_slot()
        return idle

    def _free_slot(self) -> None:
        self.open -= 1
        self._offer_slot()

    def _offer_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it may open a connection of its own
                return


class Forwarder:
    """POSTs to arm services (http, or https checked against ``tls``). ``timeout`` in
    seconds per call, ``arm_timeouts`` by arm name over it. Pools are made on first use;
    ``close`` them at exit."""

    def __init__(
        self,
        timeout: float,
        arm_timeouts: Mapping[str, float] | None = None,
        max_connections_per_arm: int = MAX_CONNECTIONS_PER_ARM,
        tls: ssl.SSLContext | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._max_answer_bytes = max_answer_bytes
        self._default = timeout
        self._tls = tls  # for https arms; default: the system's trusted authorities
        self._timeouts = dict(arm_timeouts or {})
        self._limit = max_connections_per_arm
        self._pools: dict[str, _Pool] = {}

    async def post(self, url: str, arm: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = _Pool(url, self._limit, self._tls, self._max_answer_bytes)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = b"".join(
            (
                pool.head,
                b"content-length: %d\r\n" % len(body),
                lines.encode("latin-1"),
                b"\r\n",
                body,
            )
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeouts.get(arm, self._default)):
                status, content, version = await _exchange(pool, data)
        except TimeoutError:
            return Answer(504, b"", None, "timeout", _ms_since(started))
        except (_Unreachable, OSError):  # refused, reset, a malformed answer
            return Answer(502, b"", None, "unreachable", _ms_since(started))
        if status >= 500:
            failure: str | None = "server_error"
        elif status >= 400 and status not in CALLERS_ERRORS:
            failure = "client_error"  # 401, 404, 429...: the arm's failure, not the caller's
        else:
            failure = None
        return Answer(status, content, version, failure, _ms_since(started))

    async def close(self) -> None:
        """Close the idle connections and wait (a second at most) until they are gone: a
        TLS connection's close takes a few turns of the loop."""
        pools, self._pools = self._pools, {}
        closing = [conn.gone.wait() for pool in pools.values() for conn in pool.drop_idle()]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)


async def _exchange(pool: _Pool, data: bytes) -> tuple[int, bytes, str | None]:
    for attempt in (1, 2):
        conn = await pool.acquire()
        reused = conn.used
        try:
            answer = await conn.request(data)
        except _Unreachable as e:
            pool.release(conn, reusable=False)
            if reused and not e.answered and attempt == 1:
                pool.drop_idle()  # most likely closed while idle (it may have read the request)
                continue
            raise
        except BaseException:  # timed out or cancelled: the answer may still come
            pool.release(conn, reusable=False)
            raise
        pool.release(conn, reusable=True)
        return answer
    raise AssertionError("unreachable")


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
