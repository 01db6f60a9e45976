"""The test proxy itself: round robin, a refusing backend skipped, a dropped connection
never replayed, and lose_answers cutting exactly the first attempt of each write."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.backends import free_port
from tests.deploy.proxy import round_robin


class Backend(ThreadingHTTPServer):
    """Answers every request with its own name; counts the requests it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        self.server.received.append(f"{self.command} {self.path} {body.decode()}")
        data = self.server.name.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend("a"), Backend("b")]
    threads = [threading.Thread(target=b.serve_forever, daemon=True) for b in started]
    for thread in threads:
        thread.start()
    yield started
    for backend in started:
        backend.shutdown()
        backend.server_close()


def address(backend: Backend) -> tuple[str, int]:
    return "127.0.0.1", int(backend.server_address[1])


def fresh(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, limits=httpx.Limits(max_keepalive_connections=0))


def test_connections_take_turns_and_a_refusing_backend_is_skipped(
    backends: list[Backend],
) -> None:
    closed = ("127.0.0.1", free_port())  # nothing listens there
    turns = [address(backends[0]), closed, address(backends[1])]
    with round_robin(turns) as proxy, fresh(proxy.url) as http:
        answers = [http.get("/").text for _ in range(6)]
    # a, then (closed ->) b, then b, a, (closed ->) b, b
    assert answers == ["a", "b", "b", "a", "b", "b"]
    assert proxy.refused[1] == 2 and proxy.unserved == 0


def test_lose_answers_cuts_the_first_attempt_of_each_write_only(backends: list[Backend]) -> None:
    with round_robin([address(backends[0])], lose_answers=True) as proxy, fresh(proxy.url) as http:
        for body in ("one", "two"):
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/runs", content=body)
            assert http.post("/runs", content=body).text == "a"  # the same write again
        assert http.get("/runs").text == "a"  # reads are never cut
    # the backend did the work of every attempt: the cut attempts too
    assert backends[0].received == [
        "POST /runs one",
        "POST /runs one",
        "POST /runs two",
        "POST /runs two",
        "GET /runs ",
    ]
    assert proxy.lost == {"POST /runs": 2}
