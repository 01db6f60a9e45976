"""What every MLflow module shares: the services behind the routes, request bodies, the
JSON reply, MLflow's paging and limits, and the experiment an MLflow id names."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from plinth.auth.context import current_principal
from plinth.errors import AlreadyExists, InvalidArgument, NotFound
from plinth.registry.service import RegistryService
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store
from plinth.tracking.service import TrackingService
from plinth.tracking.types import Experiment

DEFAULT_ID = "0"
DEFAULT_NAME = "Default"
MAX_RESULTS = 50_000  # what MLflow's servers guarantee for a search
PLINTH_ID = re.compile(r"[0-9a-f]{32}")
VIEWS = {
    "ACTIVE_ONLY": "active",
    "DELETED_ONLY": "deleted",
    "ALL": "all",
    "1": "active",
    "2": "deleted",
    "3": "all",
}


@dataclass(frozen=True)
class Services:
    tracking: TrackingService
    registry: RegistryService
    artifacts: ArtifactStore  # the server's artifact root (the same one tracking uses)

    @property
    def store(self) -> Store:
        return self.tracking.store


class Body(BaseModel):
    """A request body: fields MLflow added later (or Plinth does not use) are ignored."""

    model_config = ConfigDict(extra="ignore")


class KeyValue(Body):
    key: str
    value: str


class Tag(KeyValue):
    """A tag or param whose value may be left out (protobuf-JSON omits an empty string)."""

    value: str = ""


def pairs(values: dict[str, str]) -> list[dict[str, str]]:
    """Tags or params as MLflow's list of ``{key, value}``, by key."""
    return [{"key": k, "value": v} for k, v in sorted(values.items())]


def reply(content: dict[str, Any]) -> Response:
    # not FastAPI's JSONResponse: it refuses the NaN and infinities metrics may hold (the
    # runs module writes them as protobuf-JSON's strings)
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


def signed_in() -> None:
    current_principal()  # the caller's credential is checked here, whatever the route


def ms(moment: datetime) -> int:
    # rounded: the store keeps milliseconds, and a datetime's float timestamp may sit a
    # hair below the one it was made from
    return round(moment.timestamp() * 1000)


def view_of(view_type: str | int | None) -> str:
    """MLflow's view type as the ``view`` of Plinth's listings."""
    if view_type is None:
        return "active"
    found = VIEWS.get(str(view_type).upper())
    if found is None:
        raise InvalidArgument(
            f"view type {view_type!r} is not ACTIVE_ONLY, DELETED_ONLY or ALL (1, 2 or 3)"
        )
    return found


def check_max_results(max_results: int | None, default: int, limit: int = MAX_RESULTS) -> int:
    if max_results is None:
        return default
    if not 1 <= max_results <= limit:
        raise InvalidArgument(f"max_results must be between 1 and {limit:,}, got {max_results}")
    return max_results


def encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def decode_token(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeError):
        state = None
    if not isinstance(state, dict):
        raise InvalidArgument(f"page_token {token[:40]!r} is not a token this server gave")
    return state


def offset_of(token: str | None) -> int:
    offset = decode_token(token).get("offset", 0)
    if type(offset) is not int or offset < 0:
        raise InvalidArgument(f"page_token {token!r:.40} is not a token this server gave")
    return offset


def experiment_by_id(
    tracking: TrackingService, experiment_id: str, create: bool = True
) -> Experiment:
    """The experiment an MLflow id names: a Plinth id, or "0" (the client's when none is
    set) for Plinth's experiment "Default", created on first use when ``create``. Never by
    name: an id that is no experiment's is not found."""
    if experiment_id == DEFAULT_ID:
        try:
            return tracking.get_experiment(DEFAULT_NAME)
        except NotFound:
            if not create:
                raise
        try:
            return tracking.create_experiment(DEFAULT_NAME)
        except AlreadyExists:  # created meanwhile
            return tracking.get_experiment(DEFAULT_NAME)
    if not PLINTH_ID.fullmatch(experiment_id):
        raise NotFound(f"experiment id {experiment_id!r} does not exist")
    return tracking.get_experiment(experiment_id)
