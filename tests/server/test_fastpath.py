"""Hot routes answered ahead of the middleware stack: the layer itself, and the feature
server's online lookup through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plinth.config import load_settings
from plinth.errors import InvalidArgument, PlinthError
from plinth.server.app import create_app
from plinth.server.fastpath import FastPosts
from tests.backends import local_client
from tests.features.conftest import define, transactions

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


class Counting:
    """A middleware that counts the requests it sees."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope.get("path", ""))
        await self.app(scope, receive, send)


def framework_app() -> tuple[FastAPI, Counting]:
    app = FastAPI()

    @app.api_route("/fast", methods=["GET", "POST"])
    async def slow(request: Request) -> Response:
        return JSONResponse({"by": "app", "bytes": len(await request.body())})

    @app.exception_handler(PlinthError)
    async def plinth_error(_: Request, exc: PlinthError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error_code": "INTERNAL_ERROR", "message": "hidden"}, 500)

    counting = Counting(app)
    return app, counting


async def handler(body: bytes) -> bytes:
    payload = json.loads(body)
    if payload.get("fail") == "invalid":
        raise InvalidArgument("bad value")
    if payload.get("fail") == "crash":
        raise RuntimeError("the disk is on fire")
    return json.dumps({"by": "fast", "bytes": len(body)}).encode()


def call(
    layer: ASGIApp, method: str, path: str, chunks: list[bytes], root_path: str = ""
) -> tuple[int, dict[str, Any]]:
    """One request straight through ASGI, its body in ``chunks``."""
    sent: list[Message] = []
    chunks = chunks or [b""]
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(layer(scope, receive, send))  # type: ignore[arg-type]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


@pytest.fixture
def layer() -> Iterator[tuple[FastPosts, Counting]]:
    app, counting = framework_app()
    yield FastPosts(counting, {"/fast": handler}, 100, app.exception_handlers), counting


def test_a_post_to_a_fast_route_skips_the_stack_behind(layer: tuple[FastPosts, Counting]) -> None:
    fast, counting = layer

    assert call(fast, "POST", "/fast", [b'{"a": 1}']) == (200, {"by": "fast", "bytes": 8})
    assert call(fast, "POST", "/fast", [b'{"a":', b" 1}"]) == (200, {"by": "fast", "bytes": 8})
    assert counting.seen == []
    assert call(fast, "GET", "/fast", []) == (200, {"by": "app", "bytes": 0})
    assert counting.seen == ["/fast"]


def test_a_fast_route_under_a_root_path(layer: tuple[FastPosts, Counting]) -> None:
    fast, counting = layer

    status, body = call(fast, "POST", "/fast", [b"{}"], root_path="/plinth")

    assert (status, body["by"]) == (200, "fast") and counting.seen == []


def test_errors_are_answered_by_the_apps_handlers(layer: tuple[FastPosts, Counting]) -> None:
    fast, _ = layer

    assert call(fast, "POST", "/fast", [b'{"fail": "invalid"}']) == (
        422,
        {"error_code": "INVALID_ARGUMENT", "message": "bad value"},
    )
    assert call(fast, "POST", "/fast", [b'{"fail": "crash"}']) == (
        500,
        {"error_code": "INTERNAL_ERROR", "message": "hidden"},
    )


def test_a_body_over_the_limit_goes_whole_to_the_app(layer: tuple[FastPosts, Counting]) -> None:
    fast, counting = layer
    chunks = [b'{"a": "', b"x" * 60, b"y" * 60, b'"}']

    assert call(fast, "POST", "/fast", chunks) == (200, {"by": "app", "bytes": 129})
    assert counting.seen == ["/fast"]


# -- the feature server through it -----------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    settings = load_settings(home=tmp_path / "server", max_request_bytes=2_000)
    client = local_client(settings.resolved_store_uri, settings.resolved_artifact_uri)
    client.settings.online_uri = settings.resolved_online_uri
    fs = client.feature_store()
    define(fs, ttl="3650d").insert(transactions())  # type: ignore[attr-defined]
    fs.materialize("customer_stats")
    with TestClient(create_app(settings)) as api:
        yield api


def test_the_online_lookup_answers_rows_and_statuses(served: Any) -> None:
    body = {
        "features": ["customer_stats:orders_30d", "customer_stats:avg_spend"],
        "entity_rows": [{"customer_id": 1, "note": "é"}, {"customer_id": 3, "note": None}],
    }

    response = served.post("/api/v1/features/online", json=body)

    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {
        "rows": [
            {"customer_id": 1, "note": "é", "orders_30d": 5, "avg_spend": 25.0},
            {"customer_id": 3, "note": None, "orders_30d": None, "avg_spend": None},
        ],
        "statuses": [
            {"orders_30d": "PRESENT", "avg_spend": "PRESENT"},
            {"orders_30d": "NOT_FOUND", "avg_spend": "NOT_FOUND"},
        ],
    }


def test_online_lookup_errors_have_the_error_shape(served: Any) -> None:
    api = "/api/v1/features/online"
    unknown = served.post(api, json={"features": ["customer_stats:nope"], "entity_rows": [{}]})
    assert unknown.status_code == 422 and unknown.json()["error_code"] == "INVALID_ARGUMENT"
    assert "nope" in unknown.json()["message"]
    broken = served.post(api, content=b'{"features": [', headers={"content-type": "x"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["message"]
    no_key = served.post(api, json={"features": ["customer_stats:avg_spend"], "entity_rows": [{}]})
    assert no_key.status_code == 422 and "customer_id" in no_key.json()["message"]
    big = {"features": ["customer_stats:avg_spend"], "entity_rows": [{"customer_id": 1}] * 200}
    too_large = served.post(api, json=big)
    assert too_large.status_code == 413 and too_large.json()["error_code"] == "PAYLOAD_TOO_LARGE"


def test_the_online_lookup_of_many_rows_runs_off_the_event_loop(served: Any) -> None:
    rows = [{"customer_id": i % 4} for i in range(101)]  # over 100 rows: a worker thread
    response = served.post(
        "/api/v1/features/online",
        json={"features": ["customer_stats:avg_spend"], "entity_rows": rows},
    )
    assert response.status_code == 200
    values = [row["avg_spend"] for row in response.json()["rows"]]
    assert values == [{1: 25.0, 2: 99.0}.get(i % 4) for i in range(101)]


def test_the_apps_online_lookup_skips_its_middleware_stack(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = create_app(load_settings(home=tmp_path / "server"))
    seen: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        seen.append(request.url.path)
        response: Response = await call_next(request)
        return response

    with TestClient(app) as api:
        body = {"features": ["customer_stats:x"], "entity_rows": [{"customer_id": 1}]}
        missing = api.post("/api/v1/features/online", json=body)
        assert missing.status_code == 404 and missing.json()["error_code"] == "NOT_FOUND"
        assert api.get("/health").status_code == 200

    assert seen == ["/health"]
