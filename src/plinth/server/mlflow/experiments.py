"""MLflow's experiments routes, answered by ``TrackingService`` (its permissions apply).

Experiment ids are Plinth's; MLflow's default experiment "0" is the Plinth experiment
named "Default", shared with every user and created by the first write to it, never by a
read (``common.default_experiment``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field

from plinth.errors import NotFound
from plinth.server.mlflow.codes import ARTIFACTS_SCHEME, PREFIX
from plinth.server.mlflow.common import (
    DEFAULT_ID,
    DEFAULT_NAME,
    PLINTH_ID,
    Body,
    KeyValue,
    Services,
    check_max_results,
    encode_token,
    experiment_by_id,
    ms,
    offset_of,
    pairs,
    reply,
    signed_in,
    unwritten_default,
    view_of,
)
from plinth.server.mlflow.filters import experiment_filter, experiment_order
from plinth.store.sql import MAX_PAGE
from plinth.tracking.types import Experiment

NOTE_TAG = "mlflow.note.content"  # MLflow's description


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    deleted_at = experiment.deleted_at
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
        "tags": pairs(tags),
    }


# -- requests --------------------------------------------------------------------------


class CreateExperiment(Body):
    name: str
    artifact_location: str | None = None  # ignored: artifacts go under the server's root
    tags: list[KeyValue] = Field(default_factory=list)


class SearchExperiments(Body):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = Field(default_factory=list)
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

    def by_id(experiment_id: str, create: bool = False) -> Experiment:
        return experiment_by_id(tracking, experiment_id, create)

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
        try:
            found = by_id(experiment_id)
        except NotFound:
            if experiment_id != DEFAULT_ID:
                raise
            found = unwritten_default()  # a read creates nothing
        return reply({"experiment": experiment_json(found)})

    @router.get("/experiments/get-by-name")
    def get_experiment_by_name(experiment_name: Annotated[str, Query()]) -> Response:
        signed_in()
        # Plinth finds an experiment by name or id: only a name will do here
        try:
            found = (
                None
                if PLINTH_ID.fullmatch(experiment_name)
                else tracking.get_experiment(experiment_name)
            )
        except NotFound:
            if experiment_name != DEFAULT_NAME:
                raise
            found = unwritten_default()
        if found is None or found.name != experiment_name:
            raise NotFound(f"experiment {experiment_name!r} does not exist")
        return reply({"experiment": experiment_json(found)})

    def search(request: SearchExperiments) -> Response:
        signed_in()
        limit = check_max_results(request.max_results, 1000)
        keeps = experiment_filter(request.filter)
        order = experiment_order(request.order_by)
        offset = offset_of(request.page_token)
        view = view_of(request.view_type)
        # Plinth lists experiments by name only: the filter and the order apply here
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = tracking.list_experiments(max_results=MAX_PAGE, page_token=token, view=view)
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
            tracking.rename_experiment(experiment.id, body.new_name)
        return reply({})

    @router.post("/experiments/delete")
    def delete_experiment(body: ExperimentId) -> Response:
        signed_in()
        tracking.delete_experiment(by_id(body.experiment_id).id)
        return reply({})

    @router.post("/experiments/restore")
    def restore_experiment(body: ExperimentId) -> Response:
        signed_in()
        tracking.restore_experiment(by_id(body.experiment_id).id)
        return reply({})

    @router.post("/experiments/set-experiment-tag")
    def set_experiment_tag(body: SetExperimentTag) -> Response:
        signed_in()
        experiment = by_id(body.experiment_id, create=True).id  # a write makes "0"
        tracking.set_experiment_tags(experiment, {body.key: body.value})
        return reply({})

    @router.post("/experiments/delete-experiment-tag")
    def delete_experiment_tag(body: DeleteExperimentTag) -> Response:
        signed_in()
        experiment = by_id(body.experiment_id).id
        tracking.delete_experiment_tag(experiment, body.key)
        return reply({})

    return router
