"""Reading the prediction log back: an endpoint, so a client of a remote server reads the
predictions that services wrote to the server's central store (``plinth.read_predictions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from plinth.api import endpoint
from plinth.auth.access import guarded
from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument
from plinth.store.schema import predictions
from plinth.store.sql import check_max_results, decode_page_token, encode_page_token
from plinth.tracking.types import Page

if TYPE_CHECKING:
    from plinth.store.engine import Store

MAX_PAGE = 10_000


@dataclass(frozen=True)
class LoggedRequest:
    """One logged request as stored: its inputs as JSON columns (``{"age": [41, 35]}``)
    and its outputs as a JSON list, one per row."""

    id: int
    request_id: str
    at: int  # ms since the epoch
    model_version: int
    latency_ms: float
    inputs: str
    outputs: str


@dataclass(frozen=True)
class Activity:
    """The logged requests of one time bucket (``start``: ms since the epoch)."""

    start: int
    requests: int
    rows: int
    mean_latency_ms: float
    max_latency_ms: float


class PredictionLogReads:
    def __init__(self, store: Store) -> None:
        self.store = store

    @endpoint("GET", "/models/{model_name}/predictions")
    @guarded(Action.READ, Kind.MODEL, "model_name")
    def list_logged_requests(
        self,
        model_name: str,
        version: int | None = None,
        since_ms: int | None = None,
        after_id: int = 0,
        limit: int = 1_000,
    ) -> list[LoggedRequest]:
        """The logged requests of a model (one version, or all), oldest first: ``limit``
        of them after the one whose ``id`` is ``after_id``."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be from 1 to {MAX_PAGE}, not {limit}")
        query = (
            select(predictions)
            .where(predictions.c.model_name == model_name, predictions.c.id > after_id)
            .order_by(predictions.c.id)
            .limit(limit)
        )
        if version is not None:
            query = query.where(predictions.c.model_version == version)
        if since_ms is not None:
            query = query.where(predictions.c.at >= since_ms)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        return [
            LoggedRequest(
                r.id, r.request_id, r.at, r.model_version, r.latency_ms, r.inputs, r.outputs
            )
            for r in rows
        ]

    @guarded(Action.READ, Kind.MODEL, "model_name")
    def recent_logged_requests(
        self,
        model_name: str,
        version: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        max_results: int = 50,
        page_token: str | None = None,
    ) -> Page[LoggedRequest]:
        """The logged requests of a model in [since, until), newest first, by page (the
        dashboard's list; ``list_logged_requests`` reads the log in order)."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        query = (
            select(predictions)
            .where(*_window(model_name, version, since_ms, until_ms))
            .order_by(predictions.c.at.desc(), predictions.c.id.desc())
            .offset(offset)
            .limit(limit + 1)
        )
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        found = [
            LoggedRequest(
                r.id, r.request_id, r.at, r.model_version, r.latency_ms, r.inputs, r.outputs
            )
            for r in rows[:limit]
        ]
        return Page(found, encode_page_token(offset + limit) if len(rows) > limit else None)

    @guarded(Action.READ, Kind.MODEL, "model_name")
    def prediction_activity(
        self,
        model_name: str,
        since_ms: int,
        until_ms: int,
        bucket_ms: int = 60_000,
        version: int | None = None,
    ) -> list[Activity]:
        """Requests, rows and latency of a model per ``bucket_ms`` in [since, until), oldest
        first; buckets without requests are left out. Counted by the database: a chart over
        many requests reads a row per bucket."""
        if bucket_ms < 1_000:
            raise InvalidArgument(f"bucket_ms must be 1000 or more, not {bucket_ms}")
        if (until_ms - since_ms) // bucket_ms > MAX_PAGE:
            raise InvalidArgument(f"a window of more than {MAX_PAGE} buckets: use larger buckets")
        bucket = (predictions.c.at - since_ms) // bucket_ms
        query = (
            select(
                bucket.label("bucket"),
                func.count().label("requests"),
                func.sum(predictions.c.rows).label("rows"),
                func.avg(predictions.c.latency_ms).label("mean"),
                func.max(predictions.c.latency_ms).label("max"),
            )
            .where(*_window(model_name, version, since_ms, until_ms))
            .group_by(bucket)
            .order_by(bucket)
        )
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        return [
            Activity(
                since_ms + int(r.bucket) * bucket_ms,
                int(r.requests),
                int(r.rows or 0),
                float(r.mean),
                float(r.max),
            )
            for r in rows
        ]


def _window(
    model_name: str, version: int | None, since_ms: int | None, until_ms: int | None
) -> list[Any]:
    conditions: list[Any] = [predictions.c.model_name == model_name]
    if version is not None:
        conditions.append(predictions.c.model_version == version)
    if since_ms is not None:
        conditions.append(predictions.c.at >= since_ms)
    if until_ms is not None:
        conditions.append(predictions.c.at < until_ms)
    return conditions
