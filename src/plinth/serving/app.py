"""The model service: one model (a URI that may follow an alias or a stage) behind
``/predict``, the Open Inference Protocol (KServe v2), health, readiness and Prometheus
metrics. Bad input is a 4xx naming what is wrong, never a 500.

Status codes: 422 for input the model cannot take (malformed JSON, an empty body, a
missing or mistyped feature), 413 past ``max_rows`` rows or ``max_body_bytes``, 404 for
another model's name, 503 when the online feature store is unreachable. The protocol's
routes (``oip.py``) answer its own error body, with 400 for input the model cannot take.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from plinth.errors import (
    InvalidArgument,
    PayloadTooLarge,
    PlinthError,
    Unavailable,
    error_for_status,
)
from plinth.serving import oip, payload
from plinth.serving.metrics import ServiceMetrics
from plinth.serving.model import ServedModel, enrich_online, model_frame

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import Client

log = logging.getLogger("plinth.serving")


@dataclass
class ServeConfig:
    uri: str
    poll_seconds: float = 2.0  # how often the URI is re-resolved (hot swap); 0: never
    max_rows: int = 10_000  # rows per request
    max_body_bytes: int = 32 * 1024 * 1024
    batching: bool = True  # adaptive micro-batching of concurrent requests
    batch_max_rows: int = 1_000
    batch_max_delay_ms: float = 0.0  # extra wait for a batch to fill; 0: only what is queued
    log_predictions: bool = True
    log_capacity: int = 100_000  # rows held for the prediction log before sampling
    auth: bool = False  # callers need a token with read (predict) access to the model
    trust_pickle: bool = False  # load a pickled package (runs the registrant's code)


def create_service(config: ServeConfig, client: Client | None = None) -> FastAPI:
    from plinth.client import default_client
    from plinth.serving.batching import MicroBatcher
    from plinth.serving.predlog import PredictionLog
    from plinth.serving.swap import ModelHolder

    client = client or default_client()
    metrics = ServiceMetrics()
    holder = ModelHolder(
        client,
        config.uri,
        poll_seconds=config.poll_seconds,
        on_swap=metrics.serving,
        trust_pickle=config.trust_pickle,
    )
    metrics.serving(holder.current)
    batcher = (
        MicroBatcher(
            _predict,
            max_rows=config.batch_max_rows,
            max_delay_ms=config.batch_max_delay_ms,
            on_batch=metrics.batch_rows.observe,
        )
        if config.batching
        else None
    )
    predictions = (
        PredictionLog(client.tracking.store, capacity=config.log_capacity)
        if config.log_predictions and not client.remote
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        holder.close()
        if batcher is not None:
            await batcher.close()
        if predictions is not None:
            predictions.close()
        metrics.close()

    app = FastAPI(title=f"Plinth model service: {config.uri}", lifespan=lifespan)
    app.state.holder, app.state.predictions, app.state.metrics = holder, predictions, metrics

    async def read_body(request: Request) -> bytes:
        body = await request.body()
        if len(body) > config.max_body_bytes:
            raise PayloadTooLarge(
                f"the request body has {len(body)} bytes; the limit is {config.max_body_bytes}"
            )
        return body

    async def predict_columns(
        request: Request,
        served: ServedModel,
        columns: payload.Columns,
        request_id: str | None,
        started: float,
    ) -> tuple[Any, str]:
        if (rows := payload.size(columns)) > config.max_rows:
            raise PayloadTooLarge(
                f"the request has {rows} rows; the limit is {config.max_rows} "
                "(plinth serve --max-rows); use plinth score for bulk scoring"
            )
        if served.view is not None and served.needs_enrichment(columns.keys()):
            enriched = await run_in_threadpool(
                enrich_online,
                client.feature_store(),
                served.view,
                payload.to_rows(columns),
                served.input_names,
            )
            columns = payload.to_columns(enriched)
        frame = model_frame(served, columns)
        if batcher is not None:
            result = await batcher.submit(served, frame)
        else:
            result = await run_in_threadpool(_predict, served, frame)
        request_id = request_id or request.headers.get("x-request-id") or uuid.uuid4().hex
        latency = (time.perf_counter() - started) * 1000
        if predictions is not None:
            _log(predictions, served, request_id, frame, result, latency)
        return result, request_id

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request)
        served = holder.current  # this request's version, whatever swaps meanwhile
        columns = payload.records(payload.parse_json(body))
        result, request_id = await predict_columns(request, served, columns, None, started)
        answer = {
            "predictions": payload.plain(result),
            "model": served.name,
            "model_version": served.version.version,
            "request_id": request_id,
        }
        return _json(answer, served)

    oip.mount(app, holder, read_body, predict_columns, config.max_body_bytes)

    @app.get("/v2/health/live")
    @app.get("/health")
    async def live() -> Response:
        return _json({"live": True, "status": "ok"}, None)

    @app.get("/v2/health/ready")
    @app.get("/ready")
    async def ready() -> Response:
        served = holder.current
        return _json(
            {"ready": True, "model": served.name, "model_version": served.version.version},
            served,
        )

    @app.get("/metrics")
    async def scrape() -> Response:
        if predictions is not None:
            metrics.log_dropped.set(predictions.dropped)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.exception_handler(PlinthError)
    async def refused(request: Request, error: PlinthError) -> Response:
        if isinstance(error, Unavailable):  # its message may hold a store's URI: log it
            log.error("model service: %s on %s", error.message, request.url.path)
            return _error(Unavailable(f"{error.dependency} is unavailable; see the service log"))
        return _error(error)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException) -> Response:
        return _error(error_for_status(error.status_code, str(error.detail)), error.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> Response:
        log.error("model service failed on %s: %r", request.url.path, error)
        return _error(PlinthError("the model service failed; see its log"))

    if config.auth:
        from plinth.serving.auth import PredictAccess, RequireToken

        access = PredictAccess(client, lambda: holder.current.name)
        app.add_middleware(RequireToken, access=access, refuse=_error)
    app.add_middleware(_Measure, metrics=metrics)
    return app


class _Measure:
    """Counts and times every request (a plain ASGI middleware: no per-request copies)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)


def _predict(served: ServedModel, frame: pd.DataFrame) -> Any:
    try:
        return served.predictor.flavor.predict(served.predictor.native, frame)
    except (ValueError, TypeError) as e:  # the model refused these values
        raise InvalidArgument(
            f"model {served.name} v{served.version.version} refused the input: {e}"
        ) from e


def _log(
    predictions: Any, served: ServedModel, request_id: str, frame: Any, result: Any, latency: float
) -> None:
    from plinth.serving.predlog import Entry

    entry = Entry(
        served.name,
        served.version.version,
        request_id,
        int(time.time() * 1000),
        frame,
        result,
        latency,
        served.numeric_block,
    )
    predictions.record(entry)


def _json(value: Any, served: ServedModel | None) -> Response:
    headers = {} if served is None else {"x-model-version": str(served.version.version)}
    return Response(payload.dumps(value), media_type="application/json", headers=headers)


def _error(error: PlinthError, headers: Mapping[str, str] | None = None) -> Response:
    # "error" too: what Open Inference Protocol clients read
    message = str(error)
    body = json.dumps({"error_code": error.error_code, "message": message, "error": message})
    return Response(
        body, status_code=error.http_status, media_type="application/json", headers=headers
    )
