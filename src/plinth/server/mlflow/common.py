"""What every MLflow module shares: the services behind the routes, request bodies, the
JSON reply, MLflow's paging and limits, and the experiment an MLflow id names."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from plinth.auth.access import access_for
from plinth.auth.context import SYSTEM, acting_as, current_principal
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Level, Role
from plinth.errors import AlreadyExists, InvalidArgument, NotFound, WriteConflict
from plinth.registry.service import RegistryService
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store
from plinth.store.schema import grants
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
    set) for the shared "Default" (``default_experiment``). Never by name: an id that is no
    experiment's is not found."""
    if experiment_id == DEFAULT_ID:
        return default_experiment(tracking, create)
    if not PLINTH_ID.fullmatch(experiment_id):
        raise NotFound(f"experiment id {experiment_id!r} does not exist")
    return tracking.get_experiment(experiment_id)


def default_experiment(tracking: TrackingService, create: bool) -> Experiment:
    """MLflow's experiment "0": Plinth's experiment "Default", shared as MLflow shares it.

    Only a write (``create``) makes it: the platform creates it (it owns it, so only admins
    delete it or change its grants) and grants everyone the editor level through the grants
    service, so every signed-in editor logs runs to it and every viewer reads it, whether
    new resources are private or not. Creation and grant are two steps: each write checks
    the grant and repairs it if the first writer stopped between them. A read never
    creates: before the first write, "0" is not found (404 RESOURCE_DOES_NOT_EXIST) here,
    and the experiments routes that read one experiment answer ``unwritten_default()`` (MLflow's
    clients expect "0" to exist).

    A "Default" a user created themselves (through Plinth) keeps its own grants: only the
    platform's is shared.
    """
    if create:
        _share_default(tracking)
    try:
        return tracking.get_experiment(DEFAULT_NAME)  # as the caller: its grants apply
    except NotFound:
        raise NotFound(
            f"experiment id {DEFAULT_ID!r} ({DEFAULT_NAME!r}) does not exist: the first run "
            "logged to it creates it"
        ) from None


def unwritten_default() -> Experiment:
    """What reading "0" (or "Default" by name) answers while no write has made it: an
    empty "Default" with MLflow's id, created nowhere."""
    return Experiment(DEFAULT_ID, DEFAULT_NAME, "", SYSTEM.name, datetime.fromtimestamp(0, UTC))


def _share_default(tracking: TrackingService) -> None:
    access = access_for(tracking.store)
    access.require_role(Role.EDITOR, f"write to the default experiment {DEFAULT_NAME!r}")
    with acting_as(SYSTEM):
        try:
            found = tracking.get_experiment(DEFAULT_NAME)
        except NotFound:
            try:
                found = tracking.create_experiment(DEFAULT_NAME)
            except AlreadyExists:  # created meanwhile
                found = tracking.get_experiment(DEFAULT_NAME)
        if found.owner != SYSTEM.name or _everyone_edits(tracking.store, found.id):
            return
        with contextlib.suppress(WriteConflict):  # another writer granted it meanwhile
            AuthService(tracking.store).grant(
                Kind.EXPERIMENT, found.id, "everyone", "*", Level.EDITOR.name
            )


def _everyone_edits(store: Store, experiment_id: str) -> bool:
    with store.read() as conn:
        level = conn.execute(
            select(grants.c.level).where(
                grants.c.kind == Kind.EXPERIMENT.value,
                grants.c.resource == experiment_id,
                grants.c.grantee_type == "everyone",
            )
        ).scalar()
    return level is not None and level >= Level.EDITOR
