"""Reading the prediction log back: an endpoint, so a client of a remote server reads the
predictions that services wrote to the server's central store (``plinth.read_predictions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from plinth.api import endpoint
from plinth.auth.access import guarded
from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument
from plinth.store.schema import predictions

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
