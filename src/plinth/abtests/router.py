"""``plinth router``: the A/B router, a stateless service in front of the arms' model
services. HTTP contract:

``POST /{experiment}/predict``
    The body is the caller's, forwarded as it is to the assigned arm's ``{url}/predict``.
    The unit comes from the ``X-Plinth-Unit`` header, else from a ``unit_id`` field of a
    JSON object body (removed before forwarding); an experiment by request uses the
    request id (``X-Request-Id`` if at most 200 printable ASCII characters, else a new one,
    forwarded to the arm either way). A unit id is non-empty UTF-8 text of at most 500
    characters (``buckets.check_unit_id``; a JSON integer is its decimal text).
    The answer is the arm's, with ``experiment``, ``arm`` and ``model_version`` added to a
    JSON object body and as ``X-Plinth-Experiment``, ``X-Plinth-Arm`` and
    ``X-Plinth-Model-Version`` headers (``X-Request-Id`` too). ``arm`` is the arm that
    answered; a model version is passed on only if at most 100 printable ASCII characters.
    404: no such experiment; 413: a body over the router's limit (16 MB by default,
    ``--max-body-mb``, which bounds an arm's answer too); 422: no unit id or a bad one;
    503: an arm of the experiment has no URL (a model URI arm needs ``--arm-url NAME=URL``)
    or one the router cannot call, or control itself failed. The
    arm's 400 or 422 (the caller's bad input) is returned as it is, and nothing is logged;
    its other 4xx (401, 404, 429...) are the arm's failure (``client_error``, below).
    The caller's other headers are not forwarded: arm URLs are set by experiment editors,
    so ``Authorization`` and ``Cookie`` never go to them unless the deployment names them
    (``forward_headers``, ``plinth router --forward-header NAME``), to arms and mirrors alike.
``GET /metrics`` (Prometheus), ``GET /health``, ``GET /routes`` (the router's view of the
experiments: status, mode, version, each arm's URL without credentials, why one cannot be
routed).

Assignment (``assignment.assign_arm``): a unit outside the experiment goes to control and is not
logged as an exposure: when the experiment is not running (paused, draft, stopped), when
its layer's bucket of the unit is not one the experiment owns, or when its own bucket is
no arm's (traffic below 100 %). Otherwise the unit gets the arm its bucket belongs to.

Failures: an arm that times out (per arm, default 1 s), cannot be reached, answers 5xx
(``server_error``) or a 4xx other than 400 and 422 (``client_error``) costs the caller nothing: the request goes to control, counted in
``plinth_router_fallbacks_total{experiment,arm,reason}``. The exposure keeps the assigned
arm (intent to treat: the unit is in that arm) with the model version that answered, the
outcome ``fallback:{reason}`` and the failed call's latency (an answered one: ``ok`` and its
latency). Each arm service has its own keep-alive pool (``plinth.abtests.forward``), so one
slow arm holds only its own connections.

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
from urllib.parse import urlsplit, urlunsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from plinth.abtests.assignment import assign_arm
from plinth.abtests.buckets import BUCKETS, check_unit_id
from plinth.abtests.design import arm_url_problem
from plinth.abtests.forward import MAX_CONNECTIONS_PER_ARM, Answer, Forwarder
from plinth.abtests.router_metrics import RouterMetrics
from plinth.abtests.traffic import Exposure, ExposureLog
from plinth.abtests.types import Experiment, Mode, Unit
from plinth.errors import InvalidArgument, NotFound, PayloadTooLarge, PlinthError, Unavailable

log = logging.getLogger("plinth.abtests")

ExperimentsSource = Callable[[], Iterable[Experiment]]
UNIT_HEADER = "x-plinth-unit"
_MAX_SHADOW_CALLS = 1_000  # in flight at once; past it a mirror is skipped (counted)
_EXPOSURES_REPORT_SECONDS = 1.0  # how often each worker sets its exposure gauges
_OWN_HEADERS = frozenset(  # set by the router itself: never the caller's
    {"content-type", "content-length", "transfer-encoding", "host", "connection", "x-request-id"}
)


def forwarded_header_names(names: Iterable[str]) -> frozenset[bytes]:
    """The caller's headers to forward to the arms (lower case), checked."""
    checked: set[bytes] = set()
    for name in names:
        lower = name.strip().lower()
        if not lower or not all(c.isascii() and (c.isalnum() or c in "-_") for c in lower):
            raise InvalidArgument(f"forward_headers: {name!r} is not a header name")
        if lower in _OWN_HEADERS or lower == UNIT_HEADER:
            raise InvalidArgument(f"forward_headers: {name!r} is set by the router itself")
        checked.add(lower.encode("ascii"))
    return frozenset(checked)


@dataclass(frozen=True)
class ShadowCall:
    experiment: str
    arm: str
    unit: str
    request_id: str
    outcome: str  # ok, or why it failed: timeout, unreachable, server_error, client_error
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
            try:
                problem = arm_url_problem(url)
                if problem is None:
                    parts = urlsplit(url)
                    path = parts.path.rstrip("/") + "/predict"
                    routed.urls[arm.name] = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
            except Exception as e:  # never a raw 500 on every request: the route's error
                problem = f"cannot be called ({e!r})"
            if problem is not None:
                routed.error = (
                    f"arm {arm.name!r} of A/B experiment {exp.name!r} has the service URL "
                    f"{_without_credentials(url)!r:.200}, which {problem}: the router calls "
                    "http://HOST:PORT[/PATH] or https://HOST:PORT[/PATH]"
                )
                log.error("router: %s", routed.error)
                routed.urls.clear()
                return routed
        return routed


MAX_BODY_BYTES = 16 * 1024 * 1024  # a request's and an answer's: parsed on the event loop
_JSON = (b"content-type", b"application/json")


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
    max_connections_per_arm: int = MAX_CONNECTIONS_PER_ARM,
    forward_headers: Iterable[str] = (),
) -> Router:
    """The router app. It owns ``exposure_log``: flushed and closed at shutdown.
    ``max_body_bytes`` bounds a request's body and an arm's answer (a larger answer is the
    arm's failure); ``arm_urls`` gives an arm's service URL by arm name or model URI (over
    ``Arm.url``);
    ``arm_timeouts`` an arm's timeout in seconds by arm name; ``forward_headers`` the
    caller's headers the arms get (none by default: not even ``Authorization``)."""
    return Router(
        RoutingTable(experiments_source, arm_urls or {}),
        Forwarder(timeout, arm_timeouts, max_connections_per_arm, max_answer_bytes=max_body_bytes),
        exposure_log,
        refresh_seconds=refresh_seconds,
        on_shadow=on_shadow,
        max_body_bytes=max_body_bytes,
        forward_headers=forwarded_header_names(forward_headers),
    )


class Router:
    """An ASGI app: ``POST /{experiment}/predict`` is served here directly (no framework
    on the hot path); the rest (``/metrics``, ``/health``, ``/routes``, the lifespan, a
    wrong method) by a small Starlette app."""

    def __init__(
        self,
        table: RoutingTable,
        forwarder: Forwarder,
        exposure_log: ExposureLog | None,
        *,
        refresh_seconds: float,
        on_shadow: Callable[[ShadowCall], None] | None,
        max_body_bytes: int,
        forward_headers: frozenset[bytes] = frozenset(),
    ) -> None:
        self.table = table
        self.forwarder = forwarder
        self.exposure_log = exposure_log
        self.refresh_seconds = refresh_seconds
        self.on_shadow = on_shadow
        self.max_body_bytes = max_body_bytes
        self.forward_headers = forward_headers
        self.metrics = RouterMetrics()
        self._answered: dict[tuple[str, str, str], Any] = {}  # labelled counters, made once
        self._shadows: set[asyncio.Task[None]] = set()
        self._app = Starlette(
            routes=[
                Route("/{experiment}/predict", self._predict_route, methods=["POST"]),
                Route("/metrics", self._scrape),
                Route("/health", self._health),
                Route("/routes", self._routes),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            name = path[1:-8] if path.endswith("/predict") else ""
            if name and "/" not in name:
                await self._predict(name, scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _predict_route(self, request: Request) -> Response:  # only a method not allowed
        raise AssertionError("POST /{experiment}/predict is served before routing")

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(self.table.refresh)
        refresher = asyncio.create_task(_refresh_every(self.table, self.refresh_seconds))
        reporter = asyncio.create_task(self._report_exposures_every(_EXPOSURES_REPORT_SECONDS))
        try:
            yield
        finally:
            refresher.cancel()
            reporter.cancel()
            for task in list(self._shadows):
                task.cancel()
            await self.forwarder.close()
            if self.exposure_log is not None:
                await asyncio.to_thread(self.exposure_log.close)
            self.metrics.close()

    async def _predict(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers = await self._route(name, scope, receive)
        except PlinthError as error:
            if isinstance(error, Unavailable):
                log.error("router: %s", error.message)
            status, body, headers = error.http_status, _error_body(error), []
        except _Disconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body)), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _route(
        self, name: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        arrived_ms = int(time.time() * 1000)
        routed = self.table.routes.get(name)
        if routed is None:
            raise NotFound(f"A/B experiment {name!r} is not routed here (unknown to the router)")
        if routed.error is not None:
            raise Unavailable(routed.error, "an arm's service")
        exp = routed.experiment
        request_id, unit_header = None, None
        passed: list[tuple[str, str]] = []
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
            elif key == b"x-plinth-unit":
                unit_header = value
            elif key in self.forward_headers:
                passed.append((key.decode("ascii"), value.decode("latin-1")))
        request_id = _request_id(request_id)
        body = await _bounded_body(receive, self.max_body_bytes)
        unit, body = _unit_of(exp, unit_header, body, request_id)
        arm, exposed = assign_arm(exp, unit)
        control = exp.control.name
        headers = {"content-type": "application/json", "x-request-id": request_id}
        headers.update(passed)
        served = control if exp.mode is Mode.SHADOW else arm
        first = answer = await self.forwarder.post(routed.urls[served], served, body, headers)
        if answer.failure is not None and served != control:
            self.metrics.fallbacks.labels(name, served, answer.failure).inc()
            served = control
            answer = await self.forwarder.post(routed.urls[control], control, body, headers)
        if answer.failure is not None:
            self._count(name, served, "failed")
            raise Unavailable(
                f"the control arm {control!r} of A/B experiment {name!r} failed ({answer.failure})",
                "the control arm's service",
            )
        self._count(name, served, str(answer.status))
        if exp.mode is Mode.SHADOW and arm != control:
            self._start_mirror(routed, arm, unit, body, headers)
        if answer.status >= 400:  # the caller's bad input: the arm's own answer, no exposure
            return answer.status, answer.body, []
        reply, version = _decorate(answer, name, served)
        if exposed and self.exposure_log is not None:
            self.exposure_log.record(
                Exposure(
                    name,
                    control if exp.mode is Mode.SHADOW else arm,
                    unit,
                    request_id,
                    version,
                    arrived_ms,
                    first.latency_ms,
                    "ok" if first.failure is None else f"fallback:{first.failure}",
                )
            )
        out = [
            (b"x-plinth-experiment", name.encode()),
            (b"x-plinth-arm", served.encode()),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
        if version is not None:
            out.append((b"x-plinth-model-version", version.encode()))
        return answer.status, reply, out

    def _count(self, experiment: str, arm: str, status: str) -> None:
        key = (experiment, arm, status)
        counter = self._answered.get(key)
        if counter is None:
            counter = self._answered[key] = self.metrics.requests.labels(*key)
        counter.inc()

    def _start_mirror(
        self, routed: _Routed, arm: str, unit: str, body: bytes, headers: dict[str, str]
    ) -> None:
        if len(self._shadows) >= _MAX_SHADOW_CALLS:
            self.metrics.shadow(routed.experiment.name, arm, "skipped", None)
            return
        task = asyncio.create_task(self._mirror(routed, arm, unit, body, headers))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _mirror(
        self, routed: _Routed, arm: str, unit: str, body: bytes, headers: dict[str, str]
    ) -> None:
        answer = await self.forwarder.post(routed.urls[arm], arm, body, headers)
        name = routed.experiment.name
        outcome = answer.failure or "ok"
        self.metrics.shadow(name, arm, outcome, answer.latency_ms / 1000)
        status = None if answer.failure in ("timeout", "unreachable") else answer.status
        shadow = ShadowCall(
            name,
            arm,
            unit,
            headers["x-request-id"],
            outcome,
            status,
            answer.latency_ms,
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
        if self.on_shadow is not None:
            try:
                self.on_shadow(shadow)
            except Exception as e:  # someone else's hook: never the router's failure
                log.warning("router: the shadow hook failed: %r", e)

    def _report_exposures(self) -> None:
        if self.exposure_log is not None:
            log_ = self.exposure_log
            self.metrics.exposures(log_.written, log_.dropped, log_.failed)

    async def _report_exposures_every(self, seconds: float) -> None:
        """Each worker sets its own exposure gauges (a scrape of any worker adds up all of
        them, ``livesum``), not only the one that answers the scrape."""
        while True:
            await asyncio.sleep(seconds)
            self._report_exposures()

    async def _scrape(self, request: Request) -> Response:
        self._report_exposures()
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    async def _health(self, request: Request) -> Response:
        return _json({"live": True, "status": "ok", "experiments": len(self.table.routes)})

    async def _routes(self, request: Request) -> Response:
        return _json(
            {
                "refreshed_at": self.table.refreshed_at,
                "experiments": [_describe(routed) for routed in self.table.routes.values()],
            }
        )


class _Disconnected(Exception):
    """The caller went away before its body was in."""


async def _bounded_body(receive: Receive, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a router holds each in memory, and
    shadow mode a copy more)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the router's limit of {limit} bytes")
        if not message.get("more_body", False):
            return chunk if not chunks else b"".join([*chunks, chunk])
        chunks.append(chunk)


async def _refresh_every(table: RoutingTable, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(table.refresh)


def _unit_of(
    exp: Experiment, header: bytes | None, body: bytes, request_id: str
) -> tuple[str, bytes]:
    """The unit's id, and the body to forward (without a ``unit_id`` field)."""
    if exp.unit is Unit.REQUEST:
        return request_id, body
    if header is not None:
        try:  # the unit was sent as UTF-8 (the hash is of UTF-8)
            return check_unit_id(header.decode("utf-8"), UNIT_HEADER), body
        except UnicodeError:
            raise InvalidArgument(f"{UNIT_HEADER}: the unit's id is not UTF-8 text") from None
    try:
        parsed = orjson.loads(body) if body.lstrip().startswith(b"{") else None
    except orjson.JSONDecodeError:
        parsed = None
    found = parsed.get("unit_id") if isinstance(parsed, dict) else None
    if isinstance(parsed, dict) and isinstance(found, str | int) and not isinstance(found, bool):
        unit = check_unit_id(str(parsed.pop("unit_id")), "unit_id")
        return unit, orjson.dumps(parsed)
    if found is not None:  # orjson reads an integer over 64 bits as a float
        raise InvalidArgument(
            f"unit_id: text or an integer (at most 64 bits: send a longer one as text), "
            f"got {found!r:.80}"
        )
    raise InvalidArgument(
        f"A/B experiment {exp.name!r} assigns by {exp.unit.value}: send the unit's id in the "
        "X-Plinth-Unit header or as a unit_id field of the JSON body"
    )


MAX_REQUEST_ID_CHARS = 200


def _request_id(given: str | None) -> str:
    """The caller's X-Request-Id if short printable ASCII, else a new one."""
    if given and len(given) <= MAX_REQUEST_ID_CHARS and all(" " < c <= "~" for c in given):
        return given
    return uuid.uuid4().hex


def _decorate(answer: Answer, experiment: str, arm: str) -> tuple[bytes, str | None]:
    """The arm's body with ``experiment`` and ``arm`` added (a JSON object), and the model
    version that answered (the arm's header, else its body's ``model_version``)."""
    version = _version_or_none(answer.model_version)
    try:
        parsed = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return answer.body, version
    if not isinstance(parsed, dict):
        return answer.body, version
    if version is None and (found := parsed.get("model_version")) is not None:
        version = _version_or_none(str(found))
    parsed["experiment"], parsed["arm"] = experiment, arm
    parsed.setdefault("model_version", version)
    return orjson.dumps(parsed), version


MAX_VERSION_CHARS = 100


def _version_or_none(version: str | None) -> str | None:
    """An arm's model version if it can go in a header and an exposure: short printable
    ASCII (a CR/LF would break the caller's answer); else none, as if not given."""
    if version is None or not 0 < len(version) <= MAX_VERSION_CHARS:
        return None
    return version if all(" " <= c <= "~" for c in version) else None


def _describe(routed: _Routed) -> dict[str, Any]:
    exp = routed.experiment
    return {
        "name": exp.name,
        "status": exp.status.value,
        "mode": exp.mode.value,
        "unit": exp.unit.value,
        "version": exp.version,
        "arms": {arm.name: _without_credentials(routed.urls.get(arm.name)) for arm in exp.arms},
        "buckets": exp.allocation.counts(),
        "of_buckets": BUCKETS,
        "error": routed.error,
    }


def _without_credentials(url: str | None) -> str | None:
    """``url`` without a ``user:password@`` (shown in /routes and errors)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def _error_body(error: PlinthError) -> bytes:
    message = str(error)
    return orjson.dumps({"error_code": error.error_code, "message": message, "error": message})
