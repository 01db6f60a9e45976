"""MLflow's experiments routes, answered by ``TrackingService`` (its permissions apply).

Experiment ids are Plinth's; MLflow's default experiment "0" is the Plinth experiment
named "Default", created on first use. Also the helpers the runs routes share: the JSON
reply, MLflow's page tokens, the experiment an id names.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from plinth.auth.context import current_principal
from plinth.errors import AlreadyExists, InvalidArgument, NotFound
from plinth.server.mlflow.codes import ARTIFACTS_SCHEME, PREFIX
from plinth.server.mlflow.common import Services
from plinth.server.mlflow.filters import experiment_filter, experiment_order
from plinth.store.sql import MAX_PAGE
from plinth.tracking.service import TrackingService
from plinth.tracking.types import Experiment

DEFAULT_ID = "0"
DEFAULT_NAME = "Default"
MAX_RESULTS = 50_000  # what MLflow's servers guarantee for a search
_PLINTH_ID = re.compile(r"[0-9a-f]{32}")
VIEWS = {
    "ACTIVE_ONLY": "active",
    "DELETED_ONLY": "deleted",
    "ALL": "all",
    "1": "active",
    "2": "deleted",
    "3": "all",
}
NOTE_TAG = "mlflow.note.content"  # MLflow's description


class Body(BaseModel):
    """A request body: fields MLflow added later (or Plinth does not use) are ignored."""

    model_config = ConfigDict(extra="ignore")


class KeyValue(Body):
    key: str
    value: str


# -- shared helpers --------------------------------------------------------------------


def reply(content: dict[str, Any]) -> Response:
    # not FastAPI's JSONResponse: it refuses the NaN and infinities metrics may hold (see
    # ``double``, which writes them as protobuf-JSON's strings)
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


def signed_in() -> None:
    current_principal()  # the caller's credential is checked here, whatever the route


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def view_of(view_type: str | int | None) -> str:
    if view_type is None:
        return "active"
    found = VIEWS.get(str(view_type).upper())
    if found is None:
        raise InvalidArgument(
            f"view type {view_type!r} is not ACTIVE_ONLY, DELETED_ONLY or ALL (1, 2 or 3)"
        )
    return found


def views(view: str) -> dict[str, Any]:
    # section A: ``view=`` on list_experiments and search_runs; "active" is their default,
    # so it is only passed when another view is asked for
    return {} if view == "active" else {"view": view}


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
    """The experiment an MLflow id names: a Plinth id, or "0" for "Default" (created on
    first use when ``create``). Never by name: an id that is no experiment's is not found."""
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
    if not _PLINTH_ID.fullmatch(experiment_id):
        raise NotFound(f"experiment id {experiment_id!r} does not exist")
    return tracking.get_experiment(experiment_id)


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    deleted_at = getattr(experiment, "deleted_at", None)  # section A
    created = ms(experiment.created_at)
    tags = dict(experiment.tags)
    if experiment.description and NOTE_TAG not in tags:
        tags[NOTE_TAG] = experiment.description
    return {
        "experiment_id": experiment.id,
        "name": experiment.name,
        "artifact_location": f"{ARTIFACTS_SCHEME}/{experiment.id}",
        "lifecycle_stage": "deleted" if deleted_at is not None else "active",
        "creation_time": created,
        # Plinth keeps no update time: a deletion's, else the creation's
        "last_update_time": ms(deleted_at) if deleted_at is not None else created,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


# -- requests --------------------------------------------------------------------------


class CreateExperiment(Body):
    name: str
    artifact_location: str | None = None  # ignored: artifacts go under the server's root
    tags: list[KeyValue] = []


class SearchExperiments(Body):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = []
    view_type: str | int | None = None


class ExperimentId(Body):
    experiment_id: str


class UpdateExperiment(ExperimentId):
    new_name: str | None = None


class SetExperimentTag(ExperimentId):
    key: str
    value: str


class DeleteExperimentTag(ExperimentId):
    key: str


def routes(services: Services) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    tracking = services.tracking

    def by_id(experiment_id: str) -> Experiment:
        return experiment_by_id(tracking, experiment_id)

    @router.post("/experiments/create")
    def create_experiment(body: CreateExperiment) -> Response:
        signed_in()
        tags = {t.key: t.value for t in body.tags}
        description = tags.pop(NOTE_TAG, "")
        created = tracking.create_experiment(body.name, description, tags)
        return reply({"experiment_id": created.id})

    @router.get("/experiments/get")
    def get_experiment(experiment_id: Annotated[str, Query()]) -> Response:
        signed_in()
        return reply({"experiment": experiment_json(by_id(experiment_id))})

    @router.get("/experiments/get-by-name")
    def get_experiment_by_name(experiment_name: Annotated[str, Query()]) -> Response:
        signed_in()
        # Plinth finds an experiment by name or id: only a name will do here
        found = (
            None
            if _PLINTH_ID.fullmatch(experiment_name)
            else tracking.get_experiment(experiment_name)
        )
        if found is None or found.name != experiment_name:
            raise NotFound(f"experiment {experiment_name!r} does not exist")
        return reply({"experiment": experiment_json(found)})

    def search(request: SearchExperiments) -> Response:
        signed_in()
        limit = check_max_results(request.max_results, 1000)
        keeps = experiment_filter(request.filter)
        order = experiment_order(request.order_by)
        offset = offset_of(request.page_token)
        view = views(view_of(request.view_type))
        # Plinth lists experiments by name only: the filter and the order apply here
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = tracking.list_experiments(max_results=MAX_PAGE, page_token=token, **view)
            found += [e for e in map(experiment_json, page.items) if keeps(e)]
            token = page.next_page_token
            if token is None:
                break
        for field, descending in reversed(order):
            found.sort(key=lambda e: e[field], reverse=descending)
        chosen = found[offset : offset + limit]
        answer: dict[str, Any] = {"experiments": chosen}
        if offset + limit < len(found):
            answer["next_page_token"] = encode_token({"offset": offset + limit})
        return reply(answer)

    @router.post("/experiments/search")
    def search_experiments(body: SearchExperiments) -> Response:
        return search(body)

    @router.get("/experiments/search")
    def search_experiments_get(
        max_results: Annotated[int | None, Query()] = None,
        page_token: Annotated[str | None, Query()] = None,
        filter: Annotated[str | None, Query()] = None,
        order_by: Annotated[list[str] | None, Query()] = None,
        view_type: Annotated[str | None, Query()] = None,
    ) -> Response:
        return search(
            SearchExperiments(
                max_results=max_results,
                page_token=page_token,
                filter=filter,
                order_by=order_by or [],
                view_type=view_type,
            )
        )

    @router.post("/experiments/update")
    def update_experiment(body: UpdateExperiment) -> Response:
        signed_in()
        experiment = by_id(body.experiment_id)
        if body.new_name is not None and body.new_name != experiment.name:
            tracking.rename_experiment(experiment.id, body.new_name)  # type: ignore[attr-defined]  # section A
        return reply({})

    @router.post("/experiments/delete")
    def delete_experiment(body: ExperimentId) -> Response:
        signed_in()
        tracking.delete_experiment(by_id(body.experiment_id).id)  # type: ignore[attr-defined]  # section A
        return reply({})

    @router.post("/experiments/restore")
    def restore_experiment(body: ExperimentId) -> Response:
        signed_in()
        tracking.restore_experiment(by_id(body.experiment_id).id)  # type: ignore[attr-defined]  # section A
        return reply({})

    @router.post("/experiments/set-experiment-tag")
    def set_experiment_tag(body: SetExperimentTag) -> Response:
        signed_in()
        tracking.set_experiment_tags(by_id(body.experiment_id).id, {body.key: body.value})
        return reply({})

    @router.post("/experiments/delete-experiment-tag")
    def delete_experiment_tag(body: DeleteExperimentTag) -> Response:
        signed_in()
        experiment = by_id(body.experiment_id).id
        tracking.delete_experiment_tag(experiment, body.key)  # type: ignore[attr-defined]  # section A
        return reply({})

    return router
