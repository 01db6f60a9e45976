"""The router's upstream client against real sockets on loopback: keep-alive reuse, the
ways an answer can end (length, chunks, the connection's end), a connection the service
closed while idle retried once, timeouts and refusals reported as the router's fallback
reasons."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from plinth.abtests.forward import Answer, Forwarder

Handler = Callable[[socket.socket, int], None]  # a connection and its number (0, 1, ...)


class RawService:
    """A TCP server running ``handler`` on each connection in a thread of its own."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/predict"
        self.connections = 0
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            number, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._handle, args=(conn, number), daemon=True).start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            self.handler(conn, number)

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One request (head and Content-Length body), None at the connection's end."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return body

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def service() -> Iterator[Callable[[Handler], RawService]]:
    made: list[RawService] = []

    def make(handler: Handler) -> RawService:
        made.append(RawService(handler))
        return made[-1]

    yield make
    for one in made:
        one.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def calls(url: str, n: int, timeout: float = 5.0, **options: Any) -> list[Answer]:
    async def run() -> list[Answer]:
        forwarder = Forwarder(timeout, **options)
        try:
            headers = {"content-type": "application/json", "x-request-id": "r1"}
            return [await forwarder.post(url, "a", b'{"x": 1}', headers) for _ in range(n)]
        finally:
            await forwarder.close()

    return asyncio.run(run())


def test_keep_alive_answers_reuse_one_connection(
    service: Callable[[Handler], RawService],
) -> None:
    def answer(conn: socket.socket, number: int) -> None:
        while (body := arm.read_request(conn)) is not None:
            conn.sendall(ok(b'{"got": %s}' % body, b"x-model-version: 7\r\n"))

    arm = service(answer)
    answers = calls(arm.url, 3)
    assert [(a.status, a.body, a.model_version, a.failure) for a in answers] == [
        (200, b'{"got": {"x": 1}}', "7", None)
    ] * 3
    assert arm.connections == 1
    head = arm.requests[0].split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert head[0] == b"post /predict http/1.1"
    assert {b"content-type: application/json", b"x-request-id: r1", b"content-length: 8"} <= set(
        head
    )


def test_chunked_and_until_close_answers(service: Callable[[Handler], RawService]) -> None:
    def chunked(conn: socket.socket, number: int) -> None:
        while arm.read_request(conn) is not None:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b'3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
            )

    arm = service(chunked)
    assert [a.body for a in calls(arm.url, 2)] == [b'{"a": 1}'] * 2
    assert arm.connections == 1

    def until_close(conn: socket.socket, number: int) -> None:
        arm2.read_request(conn)
        conn.sendall(b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"b": 2}')

    arm2 = service(until_close)
    answers = calls(arm2.url, 2)
    assert [(a.status, a.body, a.failure) for a in answers] == [(200, b'{"b": 2}', None)] * 2
    assert arm2.connections == 2


def test_a_connection_closed_while_idle_is_retried_once(
    service: Callable[[Handler], RawService],
) -> None:
    def once_per_connection(conn: socket.socket, number: int) -> None:
        # answers a connection's first request; reads the next and closes without an
        # answer, as a service whose keep-alive timer fired just as it came
        if arm.read_request(conn) is not None:
            conn.sendall(ok(b"{}"))
        arm.read_request(conn)

    arm = service(once_per_connection)
    answers = calls(arm.url, 3)
    assert [(a.status, a.failure) for a in answers] == [(200, None)] * 3
    assert arm.connections == 3 and len(arm.requests) == 5


def test_a_new_connection_that_fails_is_not_retried(
    service: Callable[[Handler], RawService],
) -> None:
    arm = service(lambda conn, number: arm.read_request(conn) and None)
    [answer] = calls(arm.url, 1)
    assert (answer.status, answer.failure) == (502, "unreachable")
    assert len(arm.requests) == 1


def test_failures_are_named(service: Callable[[Handler], RawService]) -> None:
    def broken(conn: socket.socket, number: int) -> None:
        while arm.read_request(conn) is not None:
            conn.sendall(b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy")

    arm = service(broken)
    [failed] = calls(arm.url, 1)
    assert (failed.status, failed.body, failed.failure) == (503, b"busy", "server_error")

    silent = service(lambda conn, number: arm.stop.wait(30) and None)
    [slow] = calls(silent.url, 1, timeout=0.2)
    assert (slow.status, slow.failure) == (504, "timeout") and slow.latency_ms >= 190

    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody listens there now
    [refused] = calls(f"http://127.0.0.1:{port}/predict", 1)
    assert (refused.status, refused.failure) == (502, "unreachable")

    def garbage(conn: socket.socket, number: int) -> None:
        arm3.read_request(conn)
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    arm3 = service(garbage)
    [bad] = calls(arm3.url, 1)
    assert (bad.status, bad.failure) == (502, "unreachable")


def test_https_arms(service: Callable[[Handler], RawService], tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)

    def answer(conn: socket.socket, number: int) -> None:
        with server_side.wrap_socket(conn, server_side=True) as tls:
            while arm.read_request(tls) is not None:
                tls.sendall(ok(b'{"secure": true}'))

    arm = service(answer)
    url = arm.url.replace("http://", "https://")
    trusting = ssl.create_default_context(cafile=str(cert))

    async def run(tls: ssl.SSLContext | None) -> list[Answer]:
        forwarder = Forwarder(5.0, tls=tls)
        try:
            return [await forwarder.post(url, "a", b"{}", {}) for _ in range(2)]
        finally:
            await forwarder.close()

    answers = uvloop.run(run(trusting))  # the loop plinth router runs on
    assert [(a.status, a.body) for a in answers] == [(200, b'{"secure": true}')] * 2
    assert arm.connections == 1
    untrusted = uvloop.run(run(None))  # a certificate nobody vouches for
    assert {a.failure for a in untrusted} == {"unreachable"}


def test_an_arm_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http\\(s\\)://HOST"):
        calls("ftp://127.0.0.1:1/predict", 1)


def test_callers_queue_for_a_full_pool(service: Callable[[Handler], RawService]) -> None:
    gate = threading.Event()

    def gated(conn: socket.socket, number: int) -> None:
        while arm.read_request(conn) is not None:
            gate.wait(30)
            conn.sendall(ok(b"{}"))

    arm = service(gated)

    async def run() -> list[Answer]:
        forwarder = Forwarder(5.0, {"quick": 0.1}, max_connections_per_arm=1)
        try:
            first = asyncio.ensure_future(forwarder.post(arm.url, "a", b"{}", {}))
            while not arm.requests:  # the pool's one connection is taken
                await asyncio.sleep(0.01)
            queued = await forwarder.post(arm.url, "quick", b"{}", {})  # gives up waiting
            gate.set()
            return [queued, await first, await forwarder.post(arm.url, "a", b"{}", {})]
        finally:
            await forwarder.close()

    queued, first, after = uvloop.run(run())
    assert (queued.status, queued.failure) == (504, "timeout")
    assert [(a.status, a.failure) for a in (first, after)] == [(200, None)] * 2
    assert arm.connections == 1 and len(arm.requests) == 2  # the queued one never went out


def test_an_answer_too_large_is_a_failure_of_the_arm(
    service: Callable[[Handler], RawService],
) -> None:
    def flood(conn: socket.socket, number: int) -> None:
        arm.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"64\r\n" + b"x" * 100 + b"\r\n")  # 10 kB in all, no end

    arm = service(flood)
    [flooded] = calls(arm.url, 1, max_answer_bytes=1_000)
    assert (flooded.status, flooded.failure) == (502, "unreachable")

    def answer(conn: socket.socket, number: int) -> None:
        small.read_request(conn)
        conn.sendall(ok(b"y" * 900))

    small = service(answer)
    [fine] = calls(small.url, 1, max_answer_bytes=1_000)
    assert (fine.status, fine.body) == (200, b"y" * 900)


def test_interim_answers_are_skipped_for_the_final_one(
    service: Callable[[Handler], RawService],
) -> None:
    # 103 Early Hints and 100 Continue before each 200: the 200 is this call's answer,
    # never the next caller's
    def answer(conn: socket.socket, number: int) -> None:
        count = 0
        while arm.read_request(conn) is not None:
            count += 1
            conn.sendall(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n"
                b"x-model-version: early\r\n\r\n"
                b"HTTP/1.1 100 Continue\r\n\r\n"
                + ok(b'{"call": %d}' % count, b"x-model-version: 7\r\n")
            )

    arm = service(answer)
    answers = calls(arm.url, 3)
    assert [(a.status, a.body, a.model_version, a.failure) for a in answers] == [
        (200, b'{"call": 1}', "7", None),
        (200, b'{"call": 2}', "7", None),
        (200, b'{"call": 3}', "7", None),
    ]
    assert arm.connections == 1


def test_an_unasked_switching_protocols_is_a_failure(
    service: Callable[[Handler], RawService],
) -> None:
    def answer(conn: socket.socket, number: int) -> None:
        while arm.read_request(conn) is not None:
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n" + ok(b"{}"))

    arm = service(answer)
    [answer_] = calls(arm.url, 1)
    assert (answer_.status, answer_.failure) == (502, "unreachable")
