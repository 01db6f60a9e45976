"""``plinth router``: the A/B router, a stateless service in front of the arms' model
services. HTTP contract:

``POST /{experiment}/predict``
    The body is the caller's, forwarded as it is to the assigned arm's ``{url}/predict``.
    The unit comes from the ``X-Plinth-Unit`` header, else from a ``unit_id`` field of a
    JSON object body (removed before forwarding); an experiment by request uses the
    request id (``X-Request-Id``, else a new one, forwarded to the arm either way).
    The answer is the arm's, with ``experiment``, ``arm`` and ``model_version`` added to a
    JSON object body and as ``X-Plinth-Experiment``, ``X-Plinth-Arm`` and
    ``X-Plinth-Model-Version`` headers (``X-Request-Id`` too). ``arm`` is the arm that
    answered. 404: no such experiment; 422: no unit id; 503: an arm of the experiment has
    no URL (a model URI arm needs ``--arm-url NAME=URL``), or control itself failed. The
    arm's own 4xx (the caller's bad input) is returned as it is, and nothing is logged.
``GET /metrics`` (Prometheus), ``GET /health``, ``GET /routes`` (the router's view of the
experiments: status, mode, version, each arm's URL, why one cannot be routed).

Assignment (``assign_arm``): a unit outside the experiment goes to control and is not
logged as an exposure: when the experiment is not running (paused, draft, stopped), when
its layer's bucket of the unit is not one the experiment owns, or when its own bucket is
no arm's (traffic below 100 %). Otherwise the unit gets the arm its bucket belongs to.

Failures: an arm that times out (per arm, default 1 s), cannot be reached or answers 5xx
costs the caller nothing: the request goes to control, counted in
``plinth_router_fallbacks_total{experiment,arm,reason}``. The exposure keeps the assigned
arm (intent to treat: the unit is in that arm) with the model version that answered. One
pooled keep-alive client with no cap on connections, so one slow arm holds only its own.

Shadow mode: control answers every request; a unit whose bucket is a challenger's has the
request mirrored to that challenger in a background task. Its outcome and latency go to
``plinth_router_shadow_calls_total{experiment,arm,outcome}`` and
``plinth_router_shadow_latency_seconds``, its answer to a debug log line and to the
``on_shadow`` hook; never to the caller nor to the exposures (which record control).

Experiments come from ``experiments_source`` (every experiment the router may route),
re-read every ``refresh_seconds`` in the background; a failing read keeps the last view.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plinth.abtests.assign import BUCKETS, bucket
from plinth.abtests.router_metrics import RouterMetrics
from plinth.abtests.traffic import Exposure, ExposureLog
from plinth.abtests.types import Experiment, Mode, Status, Unit
from plinth.errors import InvalidArgument, NotFound, PayloadTooLarge, PlinthError, Unavailable

log = logging.getLogger("plinth.abtests")

ExperimentsSource = Callable[[], Iterable[Experiment]]
UNIT_HEADER = "x-plinth-unit"
_MAX_SHADOW_CALLS = 1_000  # in flight at once; past it a mirror is skipped (counted)


def assign_arm(exp: Experiment, unit: str) -> tuple[str, bool]:
    """The arm that serves ``unit`` and whether the unit is in the experiment (exposed)."""
    control = exp.control.name
    if exp.status is not Status.RUNNING:
        return control, False
    if exp.layer is not None:
        if exp.layer_salt is None:
            return control, False
        at = bucket(exp.layer_salt, unit)
        if not any(start <= at < end for start, end in exp.layer_ranges):
            return control, False
    arm = exp.allocation.arm_for(bucket(exp.salt, unit))
    return (control, False) if arm is None else (arm, True)


@dataclass(frozen=True)
class ShadowCall:
    experiment: str
    arm: str
    unit: str
    request_id: str
    outcome: str  # ok, or why it failed: timeout, unreachable, server_error
    status: int | None
    latency_ms: float
    answer: bytes


@dataclass
class _Routed:
    experiment: Experiment
    urls: dict[str, str] = field(default_factory=dict)  # arm -> its /predict URL
    error: str | None = None  # why the experiment cannot be routed


class RoutingTable:
    """The experiments as the router last read them."""

    def __init__(self, source: ExperimentsSource, arm_urls: Mapping[str, str]) -> None:
        self.source = source
        self.arm_urls = dict(arm_urls)
        self.routes: dict[str, _Routed] = {}
        self.refreshed_at: float | None = None

    def refresh(self) -> None:
        """Re-read the experiments; on failure keep the last view (and log why)."""
        try:
            found = list(self.source())
        except Exception as e:
            log.warning("router: could not read the experiments (keeping the last view): %s", e)
            return
        old = self.routes
        routes: dict[str, _Routed] = {}
        for exp in found:
            kept = old.get(exp.name)
            routes[exp.name] = (
                kept if kept is not None and kept.experiment == exp else self._route(exp)
            )
        self.routes = routes  # one assignment: requests see the old view or the new one
        self.refreshed_at = time.time()

    def _route(self, exp: Experiment) -> _Routed:
        routed = _Routed(exp)
        for arm in exp.arms:
            url = self.arm_urls.get(arm.name) or self.arm_urls.get(arm.model_uri or "") or arm.url
            if url is None:
                routed.error = (
                    f"arm {arm.name!r} of A/B experiment {exp.name!r} is the model "
                    f"{arm.model_uri} with no service URL: start the router with "
                    f"--arm-url {arm.name}=http://HOST:PORT (where plinth serve runs it)"
                )
                log.error("router: %s", routed.error)
                return routed
            routed.urls[arm.name] = url.rstrip("/") + "/predict"
        return routed


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    model_version: str | None
    failure: str | None = None  # timeout, unreachable, server_error


MAX_BODY_BYTES = 64 * 1024 * 1024  # as plinth server's default


def create_router(
    experiments_source: ExperimentsSource,
    exposure_log: ExposureLog | None,
    *,
    refresh_seconds: float = 2.0,
    timeout: float = 1.0,
    arm_timeouts: Mapping[str, float] | None = None,
    arm_urls: Mapping[str, str] | None = None,
    on_shadow: Callable[[ShadowCall], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """The router app. It owns ``exposure_log``: flushed and closed at shutdown.
    ``arm_urls`` gives an arm's service URL by arm name or model URI (over ``Arm.url``);
    ``arm_timeouts`` an arm's timeout in seconds by arm name."""
    table = RoutingTable(experiments_source, arm_urls or {})
    metrics = RouterMetrics()
    timeouts = dict(arm_timeouts or {})
    shadows: set[asyncio.Task[None]] = set()
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["http"] = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
            trust_env=False,
        )
        await asyncio.to_thread(table.refresh)
        refresher = asyncio.create_task(_refresh_every(table, refresh_seconds))
        try:
            yield
        finally:
            refresher.cancel()
            for task in list(shadows):
                task.cancel()
            await state["http"].aclose()
            if exposure_log is not None:
                await asyncio.to_thread(exposure_log.close)
            metrics.close()

    async def call(url: str, arm: str, body: bytes, headers: dict[str, str]) -> _Answer:
        try:
            reply = await state["http"].post(
                url, content=body, headers=headers, timeout=timeouts.get(arm, timeout)
            )
        except httpx.TimeoutException:
            return _Answer(504, b"", None, "timeout")
        except httpx.HTTPError:  # refused, reset, a protocol error: the arm is not there
            return _Answer(502, b"", None, "unreachable")
        version = reply.headers.get("x-model-version")
        failure = "server_error" if reply.status_code >= 500 else None
        return _Answer(reply.status_code, reply.content, version, failure)

    async def mirror(
        routed: _Routed, arm: str, unit: str, body: bytes, headers: dict[str, str]
    ) -> None:
        started = time.perf_counter()
        answer = await call(routed.urls[arm], arm, body, headers)
        seconds = time.perf_counter() - started
        name = routed.experiment.name
        outcome = answer.failure or "ok"
        metrics.shadow(name, arm, outcome, seconds)
        shadow = ShadowCall(
            name,
            arm,
            unit,
            headers["x-request-id"],
            outcome,
            answer.status or None,
            seconds * 1000,
            answer.body,
        )
        log.debug(
            "router: shadow %s/%s %s in %.1f ms: %r",
            name,
            arm,
            outcome,
            shadow.latency_ms,
            answer.body[:500],
        )
        if on_shadow is not None:
            try:
                on_shadow(shadow)
            except Exception as e:  # someone else's hook: never the router's failure
                log.warning("router: the shadow hook failed: %r", e)

    def start_mirror(
        routed: _Routed, arm: str, unit: str, body: bytes, headers: dict[str, str]
    ) -> None:
        if len(shadows) >= _MAX_SHADOW_CALLS:
            metrics.shadow(routed.experiment.name, arm, "skipped", None)
            return
        task = asyncio.create_task(mirror(routed, arm, unit, body, headers))
        shadows.add(task)
        task.add_done_callback(shadows.discard)

    async def predict(request: Request) -> Response:
        arrived_ms = int(time.time() * 1000)
        name = request.path_params["experiment"]
        routed = table.routes.get(name)
        if routed is None:
            raise NotFound(f"A/B experiment {name!r} is not routed here (unknown to the router)")
        if routed.error is not None:
            raise Unavailable(routed.error, "an arm's service")
        exp = routed.experiment
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        body = await _bounded_body(request, max_body_bytes)
        unit, body = _unit_of(exp, request, body, request_id)
        arm, exposed = assign_arm(exp, unit)
        control = exp.control.name
        headers = {"content-type": "application/json", "x-request-id": request_id}
        if auth := request.headers.get("authorization"):
            headers["authorization"] = auth
        served = control if exp.mode is Mode.SHADOW else arm
        answer = await call(routed.urls[served], served, body, headers)
        if answer.failure is not None and served != control:
            metrics.fallbacks.labels(name, served, answer.failure).inc()
            served = control
            answer = await call(routed.urls[control], control, body, headers)
        if answer.failure is not None:
            metrics.requests.labels(name, served, "failed").inc()
            raise Unavailable(
                f"the control arm {control!r} of A/B experiment {name!r} failed ({answer.failure})",
                "the control arm's service",
            )
        metrics.requests.labels(name, served, str(answer.status)).inc()
        if exp.mode is Mode.SHADOW and arm != control:
            start_mirror(routed, arm, unit, body, headers)
        if answer.status >= 400:  # the caller's bad input: the arm's own answer, no exposure
            return Response(answer.body, answer.status, media_type="application/json")
        reply = _decorate(answer, name, served, request_id)
        if exposed and exposure_log is not None:
            shown = control if exp.mode is Mode.SHADOW else arm
            exposure_log.record(
                Exposure(name, shown, unit, request_id, _version_of(answer), arrived_ms)
            )
        return reply

    async def scrape(request: Request) -> Response:
        if exposure_log is not None:
            metrics.exposures(exposure_log.written, exposure_log.dropped, exposure_log.failed)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def health(request: Request) -> Response:
        return _json({"live": True, "status": "ok", "experiments": len(table.routes)})

    async def routes(request: Request) -> Response:
        return _json(
            {
                "refreshed_at": table.refreshed_at,
                "experiments": [_describe(routed) for routed in table.routes.values()],
            }
        )

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, PlinthError)
        if isinstance(error, Unavailable):
            log.error("router: %s", error.message)
        return _error(error)

    return Starlette(
        routes=[
            Route("/{experiment}/predict", predict, methods=["POST"]),
            Route("/metrics", scrape),
            Route("/health", health),
            Route("/routes", routes),
        ],
        exception_handlers={PlinthError: refused},
        lifespan=lifespan,
    )


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a router holds each in memory, and
    shadow mode a copy more)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the router's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _refresh_every(table: RoutingTable, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(table.refresh)


def _unit_of(exp: Experiment, request: Request, body: bytes, request_id: str) -> tuple[str, bytes]:
    """The unit's id, and the body to forward (without a ``unit_id`` field)."""
    if exp.unit is Unit.REQUEST:
        return request_id, body
    if unit := request.headers.get(UNIT_HEADER):
        # HTTP headers arrive as latin-1; the unit was sent as UTF-8 (the hash is of UTF-8)
        try:
            return unit.encode("latin-1").decode("utf-8"), body
        except UnicodeError:
            raise InvalidArgument(f"{UNIT_HEADER}: the unit's id is not UTF-8 text") from None
    try:
        parsed = orjson.loads(body) if body.lstrip().startswith(b"{") else None
    except orjson.JSONDecodeError:
        parsed = None
    found = parsed.get("unit_id") if isinstance(parsed, dict) else None
    if isinstance(parsed, dict) and isinstance(found, str | int) and not isinstance(found, bool):
        unit = str(parsed.pop("unit_id"))
        return unit, orjson.dumps(parsed)
    raise InvalidArgument(
        f"A/B experiment {exp.name!r} assigns by {exp.unit.value}: send the unit's id in the "
        "X-Plinth-Unit header or as a unit_id field of the JSON body"
    )


def _version_of(answer: _Answer) -> str | None:
    if answer.model_version is not None:
        return answer.model_version
    try:
        parsed = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None
    found = parsed.get("model_version") if isinstance(parsed, dict) else None
    return None if found is None else str(found)


def _decorate(answer: _Answer, experiment: str, arm: str, request_id: str) -> Response:
    version = _version_of(answer)
    headers = {"x-plinth-experiment": experiment, "x-plinth-arm": arm, "x-request-id": request_id}
    if version is not None:
        headers["x-plinth-model-version"] = version
    body = answer.body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        parsed["experiment"], parsed["arm"] = experiment, arm
        parsed.setdefault("model_version", version)
        body = orjson.dumps(parsed)
    return Response(body, answer.status, headers=headers, media_type="application/json")


def _describe(routed: _Routed) -> dict[str, Any]:
    exp = routed.experiment
    return {
        "name": exp.name,
        "status": exp.status.value,
        "mode": exp.mode.value,
        "unit": exp.unit.value,
        "version": exp.version,
        "arms": {arm.name: routed.urls.get(arm.name) for arm in exp.arms},
        "buckets": exp.allocation.counts(),
        "of_buckets": BUCKETS,
        "error": routed.error,
    }


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def _error(error: PlinthError) -> Response:
    message = str(error)
    body = {"error_code": error.error_code, "message": message, "error": message}
    return Response(orjson.dumps(body), error.http_status, media_type="application/json")
