"""The A/B router against real model services on loopback (tiny ASGI apps served by
uvicorn in threads): sticky assignment across router instances, answers carrying the
experiment, arm and model version, fallback to control when an arm dies, times out or
fails, shadow mode, pause and share changes picked up by the refresh, exposures in the
pinned Delta format."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import uvicorn
from deltalake import DeltaTable
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plinth.abtests.assignment import assign_arm
from plinth.abtests.buckets import allocate
from plinth.abtests.router import ShadowCall, create_router
from plinth.abtests.traffic import ExposureLog, exposures_uri
from plinth.abtests.types import Arm, Experiment, Kpi, KpiKind, Mode, Status, Unit
from plinth.errors import InvalidArgument
from tests.backends import free_port

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ArmService:
    """A model service: answers its name and version, remembers what it was sent."""

    def __init__(self, name: str, version: int) -> None:
        self.name, self.version = name, version
        self.calls: list[tuple[Any, dict[str, str]]] = []
        self.delay = 0.0
        self.status = 200

    def app(self) -> Starlette:
        async def predict(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.calls.append((body, dict(request.headers)))
            if self.delay:
                await anyio.sleep(self.delay)
            answer = {"predictions": [self.name], "model_version": self.version}
            headers = {"x-model-version": str(self.version)}
            return Response(orjson.dumps(answer), self.status, headers=headers)

        return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


@contextlib.contextmanager
def serving(app: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def experiment(urls: dict[str, str], **changes: Any) -> Experiment:
    arms = [
        Arm("champion", 0.5, url=urls["champion"], control=True),
        Arm("challenger", 0.5, url=urls["challenger"]),
    ]
    exp = Experiment(
        name="churn",
        hypothesis="v2 keeps more customers",
        owner="ann",
        status=Status.RUNNING,
        mode=Mode.AB,
        unit=Unit.USER,
        primary=Kpi("conversion", KpiKind.PROPORTION, "purchase"),
        arms=arms,
        mde=0.02,
        alpha=0.05,
        power=0.8,
        salt="5a1t",
        allocation=allocate({"champion": 0.5, "challenger": 0.5}),
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(exp, **changes)


def units_of(exp: Experiment, arm: str, n: int = 5) -> list[str]:
    found = (f"user-{i}" for i in range(10_000) if assign_arm(exp, f"user-{i}")[0] == arm)
    return [next(found) for _ in range(n)]


class Lab:
    """Two arm services, the experiments the router reads, a router, its exposure log."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.champion, self.challenger = ArmService("champion", 1), ArmService("challenger", 2)
        self.stack = contextlib.ExitStack()
        self.arm_servers = {
            arm.name: self.stack.enter_context(serving(arm.app()))
            for arm in (self.champion, self.challenger)
        }
        self.urls = {name: url for name, (url, _) in self.arm_servers.items()}
        self.experiments = [experiment(self.urls)]
        self.shadows: list[ShadowCall] = []

    def router(self, root: str = "", **options: Any) -> tuple[str, ExposureLog]:
        exposures = ExposureLog(str(self.tmp / root), flush_seconds=0.05)
        source: Callable[[], list[Experiment]] = lambda: list(self.experiments)  # noqa: E731
        options.setdefault("refresh_seconds", 0.05)
        app = create_router(source, exposures, on_shadow=self.shadows.append, **options)
        url, _ = self.stack.enter_context(serving(app))
        return url, exposures

    def change(self, **changes: Any) -> None:
        self.experiments = [replace(self.experiments[0], **changes)]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    with made.stack:
        yield made


def ask(router: str, unit: str, name: str = "churn", **kw: Any) -> httpx.Response:
    headers = {"x-plinth-unit": unit, **kw.pop("headers", {})}
    body = kw.pop("json", [{"x": 1}])
    return httpx.post(f"{router}/{name}/predict", json=body, headers=headers, **kw)


def metric(router: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{router}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1 : line.index("}")].split(",")))
            if got == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def poll(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_assignment_leaves_out_units_outside_the_experiment(tmp_path: Path) -> None:
    exp = experiment({"champion": "http://a", "challenger": "http://b"})
    challenger = units_of(exp, "challenger", 20)
    assert all(assign_arm(exp, u) == ("challenger", True) for u in challenger)
    paused = replace(exp, status=Status.PAUSED)
    assert {assign_arm(paused, u) for u in challenger} == {("champion", False)}
    half = replace(exp, allocation=allocate({"champion": 0.25, "challenger": 0.25}))
    assert ("champion", False) in {assign_arm(half, f"u{i}") for i in range(100)}
    layered = replace(exp, layer="home", layer_salt="l4yer", layer_ranges=[(0, 5_000)])
    outside = {assign_arm(layered, f"u{i}") for i in range(200)} - {
        assign_arm(exp, f"u{i}") for i in range(200)
    }
    assert outside == {("champion", False)}
    assert replace(layered, layer_salt=None, layer_ranges=[]).layer
    assert assign_arm(replace(layered, layer_salt=None), challenger[0]) == ("champion", False)


def test_sticky_answers_carry_the_arm_and_exposures_land(lab: Lab) -> None:
    first, exposures = lab.router()
    second, _ = lab.router("second")
    units = [f"user-{i}" for i in range(20)]
    answers = [ask(first, u) for u in units]
    again = [ask(second, u) for u in units]
    arms = [a.json()["arm"] for a in answers]
    assert arms == [a.json()["arm"] for a in again]
    assert arms == [assign_arm(lab.experiments[0], u)[0] for u in units]
    assert set(arms) == {"champion", "challenger"}
    one = answers[arms.index("challenger")]
    assert one.status_code == 200
    assert one.json() == {
        "predictions": ["challenger"],
        "model_version": 2,
        "experiment": "churn",
        "arm": "challenger",
    }
    assert one.headers["x-plinth-experiment"] == "churn"
    assert one.headers["x-plinth-arm"] == "challenger"
    assert one.headers["x-plinth-model-version"] == "2"
    request_id = one.headers["x-request-id"]
    # the unit as a body field: removed before the arm sees the body
    by_body = httpx.post(f"{first}/churn/predict", json={"unit_id": units[0], "x": [1]})
    assert by_body.json()["arm"] == arms[0]
    assert lab.champion.calls[-1][0] == {"x": [1]} or lab.challenger.calls[-1][0] == {"x": [1]}
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert len(rows) == 21
    row = next(r for r in rows if r["request_id"] == request_id)
    assert (row["unit"], row["arm"], row["model_version"]) == (
        units[arms.index("challenger")],
        "challenger",
        "2",
    )
    assert abs(row["at_ms"] - time.time() * 1000) < 60_000
    assert {r["outcome"] for r in rows} == {"ok"}
    assert all(r["latency_ms"] > 0 for r in rows)


def test_bad_requests(lab: Lab) -> None:
    router, _ = lab.router()
    missing = httpx.post(f"{router}/churn/predict", json=[{"x": 1}])
    assert missing.status_code == 422
    assert "X-Plinth-Unit header or as a unit_id field" in missing.json()["message"]
    assert ask(router, "u1", name="nope").status_code == 404
    lab.change(unit=Unit.REQUEST)
    poll(lambda: httpx.post(f"{router}/churn/predict", json=[{"x": 1}]).status_code == 200)
    answer = httpx.post(f"{router}/churn/predict", json=[1], headers={"x-request-id": "r-7"})
    assert answer.json()["arm"] == assign_arm(lab.experiments[0], "r-7")[0]
    lab.challenger.status = 422  # the caller's bad input: returned as it is
    refused = ask(
        router, "x", headers={"x-request-id": units_of(lab.experiments[0], "challenger")[0]}
    )
    assert refused.status_code == 422 and "arm" not in refused.json()


def test_model_uri_arms_need_a_url(lab: Lab) -> None:
    arms = [
        replace(a, url=None, model_uri=f"models:/churn/{a.name}") for a in lab.experiments[0].arms
    ]
    lab.change(arms=arms)
    router, _ = lab.router()
    refused = ask(router, "u1")
    assert refused.status_code == 503
    assert "--arm-url champion=http://HOST:PORT" in refused.json()["message"]
    mapped, _ = lab.router(
        arm_urls={
            "champion": lab.urls["champion"],
            "models:/churn/challenger": lab.urls["challenger"],
        }
    )
    assert ask(mapped, units_of(lab.experiments[0], "challenger")[0]).json()["arm"] == "challenger"
    odd, _ = lab.router(arm_urls={"champion": lab.urls["champion"], "challenger": "ftp://x:1"})
    refused = ask(odd, "u1")
    assert refused.status_code == 503
    assert "'ftp://x:1', which is not an http:// or https:// URL" in refused.json()["message"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:1/mod\u00e8le", "non-ASCII"),
        ("http://127.0.0.1:1/x?a=b", "has a query or fragment"),
        ("http://127.0.0.1:1/x#f", "has a query or fragment"),
    ],
)
def test_an_arm_url_the_router_cannot_call_is_the_routes_error(
    lab: Lab, url: str, why: str
) -> None:
    router, _ = lab.router(arm_urls={"challenger": url})
    refused = ask(router, "u1")
    assert refused.status_code == 503
    message = refused.json()["message"]
    assert message.startswith("arm 'challenger' of A/B experiment 'churn' has the service URL")
    assert why in message


def test_routes_show_arm_urls_without_credentials(lab: Lab) -> None:
    secret = lab.urls["challenger"].replace("http://", "http://ann:s3cret@") + "/v1/"
    router, _ = lab.router(arm_urls={"challenger": secret})
    [routed] = httpx.get(f"{router}/routes").json()["experiments"]
    port = lab.urls["challenger"].rsplit(":", 1)[1]
    # /predict goes after the path (never after a query); the password is not shown
    assert routed["arms"]["challenger"] == f"http://***@127.0.0.1:{port}/v1/predict"
    assert "s3cret" not in httpx.get(f"{router}/routes").text


def test_a_failing_arm_falls_back_to_control(lab: Lab) -> None:
    router, exposures = lab.router(arm_timeouts={"challenger": 0.1})
    units = units_of(lab.experiments[0], "challenger", 3)
    fallbacks = {"experiment": "churn", "arm": "challenger"}
    lab.challenger.status = 503
    assert ask(router, units[0]).json()["arm"] == "champion"
    assert metric(router, "plinth_router_fallbacks_total", reason="server_error", **fallbacks) == 1
    lab.challenger.status, lab.challenger.delay = 200, 0.5
    assert ask(router, units[1]).json()["arm"] == "champion"
    assert metric(router, "plinth_router_fallbacks_total", reason="timeout", **fallbacks) == 1
    lab.challenger.delay = 0
    assert ask(router, units[2]).json()["arm"] == "challenger"
    _, server = lab.arm_servers["challenger"]
    server.should_exit = True  # killed mid-test
    poll(lambda: ask(router, units[2]).json()["arm"] == "champion")
    answer = ask(router, units[0])
    assert answer.status_code == 200 and answer.json()["predictions"] == ["champion"]
    assert metric(router, "plinth_router_fallbacks_total", reason="unreachable", **fallbacks) >= 2
    assert (
        metric(
            router, "plinth_router_requests_total", experiment="churn", arm="champion", status="200"
        )
        >= 4
    )
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    # intent to treat: the unit stays in its arm, the version says who answered, the
    # outcome why, the latency is the failed call's
    assert {
        (r["arm"], r["model_version"], r["outcome"]) for r in rows if r["unit"] == units[0]
    } == {
        ("challenger", "1", "fallback:server_error"),
        ("challenger", "1", "fallback:unreachable"),
    }
    timed_out = [r for r in rows if r["unit"] == units[1]]
    assert [(r["arm"], r["outcome"]) for r in timed_out] == [("challenger", "fallback:timeout")]
    assert (
        timed_out[0]["latency_ms"] >= 90
    )  # its timeout (timers fire to the ms), not control's answer
    answered = [r for r in rows if r["unit"] == units[2] and r["outcome"] == "ok"]
    assert answered and answered[0]["model_version"] == "2" and answered[0]["latency_ms"] > 0


def test_shadow_mode_calls_the_challenger_but_answers_with_control(lab: Lab) -> None:
    lab.change(mode=Mode.SHADOW)
    router, exposures = lab.router()
    units = units_of(lab.experiments[0], "challenger", 3)
    answers = [ask(router, u) for u in units]
    assert {a.json()["arm"] for a in answers} == {"champion"}
    assert {tuple(a.json()["predictions"]) for a in answers} == {("champion",)}
    poll(lambda: len(lab.shadows) == 3)
    assert len(lab.challenger.calls) == 3
    assert {(s.arm, s.outcome, orjson.loads(s.answer)["predictions"][0]) for s in lab.shadows} == {
        ("challenger", "ok", "challenger")
    }
    assert sorted(s.unit for s in lab.shadows) == sorted(units)
    assert (
        metric(
            router,
            "plinth_router_shadow_calls_total",
            experiment="churn",
            arm="challenger",
            outcome="ok",
        )
        == 3
    )
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert {(r["arm"], r["outcome"]) for r in rows} == {("champion", "ok")}


def test_pause_and_share_changes_are_picked_up(lab: Lab) -> None:
    router, _ = lab.router()
    challenger = units_of(lab.experiments[0], "challenger", 10)
    assert ask(router, challenger[0]).json()["arm"] == "challenger"
    lab.change(status=Status.PAUSED, version=2)
    poll(lambda: ask(router, challenger[0]).json()["arm"] == "champion")
    lab.change(status=Status.RUNNING, version=3)
    poll(lambda: ask(router, challenger[0]).json()["arm"] == "challenger")
    before = lab.experiments[0].allocation
    shrunk = allocate({"champion": 0.9, "challenger": 0.1}, before)
    lab.change(allocation=shrunk, version=4)
    moved = [u for u in challenger if assign_arm(lab.experiments[0], u)[0] == "champion"]
    assert moved
    poll(lambda: ask(router, moved[0]).json()["arm"] == "champion")
    assert [ask(router, u).json()["arm"] for u in challenger] == [
        assign_arm(lab.experiments[0], u)[0] for u in challenger
    ]


def test_a_failing_source_keeps_the_last_view(lab: Lab) -> None:
    calls = 0

    def source() -> list[Experiment]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("the store is down")
        return list(lab.experiments)

    app = create_router(source, None, refresh_seconds=0.02)
    with serving(app) as (router, _):
        poll(lambda: calls > 3)
        assert ask(router, "u1").status_code == 200
        assert httpx.get(f"{router}/routes").json()["experiments"][0]["name"] == "churn"


def test_the_cli_router_follows_the_store(lab: Lab, tmp_path: Path) -> None:
    """``plinth router``'s app over a local store: experiments started, paused and
    reshared through the service are picked up; exposures go under the artifact root."""
    from plinth.abtests.router_cli import RouterConfig, create_router_service
    from tests.backends import local_client

    artifacts = tmp_path / "artifacts"
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(artifacts))
    ab = client.abtests
    made = experiment(lab.urls)
    ab.create_abtest(made.name, made.hypothesis, made.primary, made.arms, made.mde)
    app = create_router_service(RouterConfig(refresh_seconds=0.05), client)
    with serving(app) as (router, _):
        unit = "user-1"
        assert ask(router, unit).json()["arm"] == "champion"  # a draft: control, no exposure
        started = ab.start_abtest("churn")
        arm = assign_arm(started, unit)[0]
        other = next(a.name for a in started.arms if a.name != arm)
        # the router has seen the start (an answer from control alone would not say so)
        poll(lambda: httpx.get(f"{router}/routes").json()["experiments"][0]["status"] == "running")
        assert ask(router, unit).json()["arm"] == arm
        ab.update_abtest("churn", shares={arm: 0.0, other: 1.0}, reason="all on the other")
        poll(lambda: ask(router, unit).json()["arm"] == other)
        ab.pause_abtest("churn")
        poll(lambda: httpx.get(f"{router}/routes").json()["experiments"][0]["status"] == "paused")
    rows = DeltaTable(exposures_uri(str(artifacts), "churn")).to_pyarrow_table().to_pylist()
    assert rows and {r["unit"] for r in rows} == {unit}
    assert {r["arm"] for r in rows} == {arm, other}


class SilentService:
    """A TCP server that accepts connections and never answers on them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.accepted.append(self.listener.accept()[0])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for conn in [*self.accepted, self.listener]:
            conn.close()


def test_an_arm_that_never_answers_holds_only_its_own_connections(lab: Lab) -> None:
    silent = SilentService()
    lab.stack.callback(silent.close)
    arms = [replace(a, url=silent.url) if not a.control else a for a in lab.experiments[0].arms]
    lab.change(arms=arms)
    router, exposures = lab.router(arm_timeouts={"challenger": 60}, max_connections_per_arm=2)
    stuck = units_of(lab.experiments[0], "challenger", 4)
    with ThreadPoolExecutor(len(stuck)) as pool:
        waiting = [pool.submit(ask, router, u, timeout=120) for u in stuck]
        poll(lambda: len(silent.accepted) == 2)  # the silent arm's pool is full
        champion = units_of(lab.experiments[0], "champion", 3)
        answers = [ask(router, u, timeout=10) for u in champion]
        assert [(a.status_code, a.json()["arm"]) for a in answers] == [(200, "champion")] * 3
        assert not any(w.done() for w in waiting)
        assert len(silent.accepted) == 2  # the other two wait for one of its connections
        silent.close()  # the arm goes away: its callers get control
        assert {w.result().json()["arm"] for w in waiting} == {"champion"}
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert {r["outcome"] for r in rows if r["unit"] in stuck} == {"fallback:unreachable"}
    assert {r["outcome"] for r in rows if r["unit"] in champion} == {"ok"}


def test_the_callers_credentials_stay_with_the_router(lab: Lab) -> None:
    # arm URLs are set by experiment editors: a caller's token must not reach them
    secret = {"authorization": "Bearer s3cret", "cookie": "session=s3cret", "x-trace": "t1"}
    unit = units_of(lab.experiments[0], "challenger")[0]
    router, _ = lab.router()
    assert ask(router, unit, headers=secret).json()["arm"] == "challenger"
    sent = lab.challenger.calls[-1][1]
    assert "authorization" not in sent and "cookie" not in sent and "x-trace" not in sent
    opted, _ = lab.router("opted", forward_headers=["Authorization", "x-trace"])
    assert ask(opted, unit, headers=secret).json()["arm"] == "challenger"
    sent = lab.challenger.calls[-1][1]
    assert (sent["authorization"], sent["x-trace"]) == ("Bearer s3cret", "t1")
    assert "cookie" not in sent
    with pytest.raises(InvalidArgument, match="set by the router itself"):
        lab.router("bad", forward_headers=["Content-Length"])


@pytest.mark.parametrize(
    ("header", "body"),
    [(None, "v1\r\nx-evil: 1"), ("é" * 3, "x" * 101), ("", "v\tx"), (None, "\u2028")],
)
def test_a_model_version_unfit_for_a_header_is_left_out(
    lab: Lab, header: str | None, body: str
) -> None:
    # uvicorn refuses to send a CR/LF header: a raw answer, as a careless service could
    with raw_arm(header, body) as url:
        lab.change(arms=[replace(a, url=url) for a in lab.experiments[0].arms])
        router, exposures = lab.router()
        answer = ask(router, "u1")
    assert answer.status_code == 200
    assert "model_version" in answer.json()
    assert "x-plinth-model-version" not in answer.headers
    assert "x-evil" not in answer.headers
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert [r["model_version"] for r in rows] == [None]


@contextlib.contextmanager
def raw_arm(header: str | None, version: str) -> Iterator[str]:
    """An arm answering every request with raw bytes: ``header`` as X-Model-Version
    (latin-1, CR/LF and all) and ``version`` as the body's model_version."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    body = orjson.dumps({"predictions": [1], "model_version": version})
    extra = b"" if header is None else b"x-model-version: " + header.encode("latin-1") + b"\r\n"
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
                head, sep, rest = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    data = rest[length:]
                    conn.sendall(answer)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def test_unit_and_request_ids_are_checked(lab: Lab) -> None:
    router, exposures = lab.router()
    for unit, why in [("", "non-empty"), ("u" * 1_000_000, "at most 500")]:
        refused = ask(router, unit)
        assert refused.status_code == 422
        assert refused.json()["message"].startswith("x-plinth-unit: ") and why in str(
            refused.json()
        )
    refused = httpx.post(f"{router}/churn/predict", json={"unit_id": "u" * 5_000_000})
    assert refused.status_code == 422 and "unit_id: at most 500" in refused.json()["message"]
    refused = httpx.post(f"{router}/churn/predict", json={"unit_id": ""})
    assert refused.status_code == 422 and "unit_id: a unit id is non-empty" in refused.text
    huge = b'{"unit_id": 123456789012345678901234567890, "x": 1}'
    refused = httpx.post(f"{router}/churn/predict", content=huge)
    assert (
        refused.status_code == 422
        and "unit_id: text or an integer (at most 64 bits" in refused.json()["message"]
    )
    assert not lab.champion.calls and not lab.challenger.calls
    # a request id unfit for a header or an exposure: a new one
    for given in [b"r" * 201, b"r 1", b"r\tx", b"r\xe9"]:
        answer = ask(router, "u1", headers={"x-request-id": given})
        assert answer.status_code == 200
        assert answer.headers["x-request-id"].encode("latin-1") not in (given, b"")
    assert ask(router, "u1", headers={"x-request-id": "r-1"}).headers["x-request-id"] == "r-1"
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert len(rows) == 5 and {r["unit"] for r in rows} == {"u1"}


def test_each_worker_reports_its_exposures_without_a_scrape(lab: Lab) -> None:
    # with --workers N a scrape adds up every worker's gauges: each must set its own,
    # not only the worker that happens to answer the scrape
    exposures = ExposureLog(str(lab.tmp), flush_seconds=0.05)
    app = create_router(lambda: list(lab.experiments), exposures, refresh_seconds=0.05)
    url, _ = lab.stack.enter_context(serving(app))
    assert all(ask(url, f"u{i}").status_code == 200 for i in range(3))
    exposures.flush()

    def written() -> float:
        for line in generate_latest(app.metrics.registry).decode().splitlines():
            if line.startswith('plinth_router_exposures{state="written"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    poll(lambda: written() == 3)  # no GET /metrics asked of this router


def test_an_arms_own_4xx_falls_back_to_control(lab: Lab) -> None:
    router, exposures = lab.router()
    units = units_of(lab.experiments[0], "challenger", 7)
    for unit, status in zip(units, [401, 403, 404, 405, 408, 429], strict=False):
        lab.challenger.status = status
        answer = ask(router, unit)
        assert (answer.status_code, answer.json()["arm"]) == (200, "champion"), status
    labels = {"experiment": "churn", "arm": "challenger", "reason": "client_error"}
    assert metric(router, "plinth_router_fallbacks_total", **labels) == 6
    lab.challenger.status = 400  # the caller's bad input: the arm's answer as it is
    refused = ask(router, units[6])
    assert refused.status_code == 400 and "arm" not in refused.json()
    exposures.flush()
    rows = DeltaTable(exposures_uri(str(lab.tmp), "churn")).to_pyarrow_table().to_pylist()
    assert sorted((r["unit"], r["arm"], r["model_version"], r["outcome"]) for r in rows) == sorted(
        (unit, "challenger", "1", "fallback:client_error") for unit in units[:6]
    )


def test_bodies_are_bounded_for_predictions(lab: Lab) -> None:
    # a body is parsed on the event loop: 16 MB by default (plinth router --max-body-mb)
    router, _ = lab.router()
    big = b'{"x": "' + b"x" * (16 * 1024 * 1024) + b'"}'
    refused = httpx.post(f"{router}/churn/predict", content=big, headers={"x-plinth-unit": "u"})
    assert refused.status_code == 413 and "16777216 bytes" in refused.json()["message"]
    small, _ = lab.router("small", max_body_bytes=100)
    unit = units_of(lab.experiments[0], "challenger")[0]
    assert ask(small, unit, json={"x": "y" * 200}).status_code == 413
    # an arm's answer over the limit is its failure: control answers
    lab.challenger.status = 200
    sizes = [
        len(orjson.dumps({"predictions": [n], "model_version": 1}))
        for n in ("champion", "challenger")
    ]
    assert sizes[0] < sizes[1]
    tiny, _ = lab.router("tiny", max_body_bytes=sizes[0])
    answer = ask(tiny, unit, json=[1])
    assert (answer.status_code, answer.json()["arm"]) == (200, "champion")
    labels = {"experiment": "churn", "arm": "challenger", "reason": "unreachable"}
    assert metric(tiny, "plinth_router_fallbacks_total", **labels) == 1


def test_the_cli_options_for_headers_and_bodies(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from plinth.abtests.router_cli import RouterConfig, create_router_service
    from plinth.cli import app
    from tests.backends import local_client

    for args, said in [
        (["--forward-header", "Content-Length"], "set by the router itself"),
        (["--forward-header", "a b"], "is not a header name"),
        (["--max-body-mb", "0"], "--max-body-mb"),
    ]:
        refused = CliRunner().invoke(app, ["router", *args])
        shown = " ".join(refused.output.replace("│", " ").split())
        assert refused.exit_code != 0 and said in shown, shown
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    config = RouterConfig(forward_headers=["Authorization"], max_body_mb=2)
    router = create_router_service(config, client)
    assert router.forward_headers == {b"authorization"}
    assert router.max_body_bytes == 2 * 1024 * 1024
    assert router.exposure_log is not None
    router.exposure_log.close()
