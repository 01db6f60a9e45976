"""A dependency that stops answering: the server keeps answering, and a call waiting on the
dependency ends as a 503 naming it once its timeout passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from plinth.client import connect
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store
from plinth.tracking.service import TrackingService
from tests.faults import Blackhole
from tests.server.test_app import API, assert_error

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

LOOKUP = {"features": ["customer_stats:orders_30d"], "entity_rows": [{"customer_id": 1}]}
# Far longer than a request to /health takes: until then nothing can answer a stuck call.
LONG = 30.0


@pytest.fixture
def hole() -> Iterator[Blackhole]:
    with Blackhole() as fake:
        yield fake


def _app_on_hung_postgres(home: Path, port: int, connect_timeout: float) -> FastAPI:
    uri = f"postgresql+psycopg://plinth@127.0.0.1:{port}/plinth"
    settings = load_settings(home=home, store_uri=uri, store_connect_timeout=connect_timeout)
    # migrate=False: the server started while the store still answered
    store = Store(uri, migrate=False, **settings.store_timeouts)
    return create_app(settings, TrackingService(store, ArtifactStore(str(home / "artifacts"))))


def _app_on_hung_redis(home: Path, port: int, timeout: float) -> FastAPI:
    settings = load_settings(
        home=home, online_uri=f"redis://127.0.0.1:{port}/0", online_timeout=timeout
    )
    with connect(store_uri=settings.resolved_store_uri, artifact_uri=str(home / "a")) as client:
        fs = client.feature_store()
        fs.create_entity("customer", join_keys=["customer_id"])
        fs.create_feature_group(
            "customer_stats",
            entity="customer",
            event_time="event_time",
            schema={
                "customer_id": "int64",
                "event_time": "datetime64[us, UTC]",
                "orders_30d": "int64",
            },
            online=True,
        )
    return create_app(settings)


Calls = list[Callable[[Any], httpx.Response]]
TO_THE_STORE: Calls = [
    lambda api: api.post(f"{API}/features/online", json=LOOKUP),
    lambda api: api.get(f"{API}/experiments/churn"),
    lambda api: api.get("/ready"),
]


def _stuck(api: Any, calls: Calls, pool: ThreadPoolExecutor) -> list[Future[httpx.Response]]:
    return [pool.submit(call, api) for call in calls]


def _worker_threads(count: int) -> None:
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = count


def test_health_answers_while_calls_wait_on_a_hung_metadata_store(
    tmp_path: Path, hole: Blackhole
) -> None:
    from fastapi.testclient import TestClient

    app = _app_on_hung_postgres(tmp_path, hole.port, connect_timeout=LONG)
    with TestClient(app) as api, ThreadPoolExecutor(4) as pool:
        api.portal.call(_worker_threads, len(TO_THE_STORE))  # the stuck calls take them all
        stuck = _stuck(api, TO_THE_STORE, pool)
        hole.wait_for_connections(len(stuck))
        health = pool.submit(api.get, "/health").result(timeout=LONG / 2)
        assert health.json()["status"] == "ok"
        assert not any(call.done() for call in stuck)  # they are still waiting
        hole.close()  # the store goes away: each waiting call fails
        for call in stuck:
            assert_error(call.result(timeout=LONG), 503, "UNAVAILABLE", "the metadata store")


def test_a_call_to_a_hung_metadata_store_is_a_503_after_the_connect_timeout(
    tmp_path: Path, hole: Blackhole
) -> None:
    from fastapi.testclient import TestClient

    app = _app_on_hung_postgres(tmp_path, hole.port, connect_timeout=2)
    with TestClient(app) as api, ThreadPoolExecutor(4) as pool:
        for call in _stuck(api, TO_THE_STORE, pool):
            response = call.result(timeout=LONG)  # nothing but the timeout ends the wait
            message = assert_error(response, 503, "UNAVAILABLE", "the metadata store is")
            assert str(hole.port) not in message  # the address stays in the server log


@pytest.mark.parametrize("rows", [1, 101])
def test_health_answers_while_a_lookup_waits_on_a_hung_redis(
    tmp_path: Path, hole: Blackhole, rows: int
) -> None:
    from fastapi.testclient import TestClient

    lookup = {**LOOKUP, "entity_rows": [{"customer_id": i} for i in range(rows)]}
    app = _app_on_hung_redis(tmp_path, hole.port, LONG)
    with TestClient(app) as api, ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(api.post, f"{API}/features/online", json=lookup)
        hole.wait_for_connections(1)
        assert pool.submit(api.get, "/health").result(timeout=LONG / 2).status_code == 200
        assert not stuck.done()
        hole.close()
        assert_error(stuck.result(timeout=LONG), 503, "UNAVAILABLE", "online feature store")


def test_lookups_waiting_on_a_hung_redis_leave_the_worker_threads_to_other_routes(
    tmp_path: Path, hole: Blackhole
) -> None:
    from fastapi.testclient import TestClient

    app = _app_on_hung_redis(tmp_path, hole.port, LONG)
    lookups = [lambda api: api.post(f"{API}/features/online", json=LOOKUP)] * 3 + [
        lambda api: api.get(
            f"{API}/features/online?features=customer_stats:orders_30d&customer_id=1"
        )
    ]
    with TestClient(app) as api, ThreadPoolExecutor(6) as pool:
        api.portal.call(_worker_threads, 2)  # fewer than the lookups that wait
        stuck = _stuck(api, lookups, pool)
        hole.wait_for_connections(len(stuck))
        answer = pool.submit(api.get, f"{API}/experiments").result(timeout=LONG / 2)
        assert answer.status_code == 200
        assert not any(call.done() for call in stuck)  # they are still waiting
        hole.close()
        for call in stuck:
            assert_error(call.result(timeout=LONG), 503, "UNAVAILABLE", "online feature store")


def test_a_lookup_on_a_hung_redis_is_a_503_after_the_online_timeout(
    tmp_path: Path, hole: Blackhole
) -> None:
    from fastapi.testclient import TestClient

    app = _app_on_hung_redis(tmp_path, hole.port, 1.0)
    with TestClient(app) as api, ThreadPoolExecutor(1) as pool:
        response = pool.submit(api.post, f"{API}/features/online", json=LOOKUP)
        message = assert_error(
            response.result(timeout=LONG), 503, "UNAVAILABLE", "online feature store (Redis)"
        )
    assert str(hole.port) not in message


def test_the_server_passes_its_timeouts_to_the_stores(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, online_uri="redis://127.0.0.1:1/0", online_timeout=0.5)
    online = _server_online_store(settings)
    kwargs = online._client.get_connection_kwargs()  # type: ignore[attr-defined]
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 0.5)


def _server_online_store(settings: Any) -> Any:
    from plinth.features.service import FeatureService
    from plinth.server.app import _server_feature_store

    return _server_feature_store(settings, FeatureService(None, "")).online  # type: ignore[arg-type]
