"""MLflow's logged models (``/logged-models``), runs' outputs and the run artifact listing
(``/artifacts/list``), answered by ``plinth.tracking.logged_models``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field

from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.server.mlflow.artifacts import files_json
from plinth.server.mlflow.codes import ARTIFACTS_SCHEME, PREFIX
from plinth.server.mlflow.common import (
    DEFAULT_ID,
    PLINTH_ID,
    Body,
    Services,
    Tag,
    experiment_by_id,
    pairs,
)
from plinth.tracking.logged_models import (
    LoggedModel,
    LoggedModelService,
    LoggedModelStatus,
    check_experiment_count,
)

# proto enums arrive by name or by number
_STATUS_NUMBERS = {
    1: "LOGGED_MODEL_PENDING",
    2: "LOGGED_MODEL_READY",
    3: "LOGGED_MODEL_UPLOAD_FAILED",
}


class _Body(Body):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)  # "experiment_id": 0


class CreateLoggedModel(_Body):
    experiment_id: str
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[Tag] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)


class FinalizeLoggedModel(_Body):
    status: str  # a proto enum: by name or by number


class SetTags(_Body):
    tags: list[Tag] = Field(default_factory=list)


class LogParams(_Body):
    params: list[Tag] = Field(default_factory=list)


class OrderBy(_Body):
    field_name: str
    ascending: bool = True
    dataset_name: str | None = None


class SearchLoggedModels(_Body):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    datasets: list[dict[str, Any]] = Field(default_factory=list)
    max_results: int | None = None
    order_by: list[OrderBy] = Field(default_factory=list)
    page_token: str | None = None


class ModelOutput(_Body):
    model_id: str
    step: int = 0


class LogOutputs(_Body):
    run_id: str
    models: list[ModelOutput] = Field(default_factory=list)


def model_json(model: LoggedModel) -> dict[str, Any]:
    """A logged model as MLflow's ``LoggedModel`` message."""
    info: dict[str, Any] = {
        "model_id": model.id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "creation_timestamp_ms": model.created_at,
        "last_updated_timestamp_ms": model.updated_at,
        "artifact_uri": f"{ARTIFACTS_SCHEME}/{model.artifact_path}",
        "status": model.status.value,
        "model_type": model.model_type,
        "status_message": model.status_message,
        "tags": pairs(model.tags),
    }
    if model.source_run_id:
        info["source_run_id"] = model.source_run_id
    return {"info": info, "data": {"params": pairs(model.params), "metrics": []}}


def _dict(items: list[Tag]) -> dict[str, str]:
    return {p.key: p.value for p in items}


def _status(value: str) -> LoggedModelStatus:
    name = _STATUS_NUMBERS.get(int(value), value) if value.isdigit() else value
    try:
        return LoggedModelStatus(name)
    except ValueError:
        raise InvalidArgument(
            f"status {value!r} is not a logged model status; give LOGGED_MODEL_READY or "
            "LOGGED_MODEL_UPLOAD_FAILED"
        ) from None


def routes(services: Services) -> APIRouter:
    router = APIRouter()
    models = LoggedModelService(services.store, services.artifacts)

    def experiment(ref: str) -> str:
        return experiment_by_id(services.tracking, ref).id

    def searched(refs: list[str]) -> list[str]:
        """The ids of a search: capped, "0" looked up once (a search creates nothing), the
        rest checked by the service in one statement."""
        check_experiment_count(refs)
        default = None
        if DEFAULT_ID in refs:
            default = experiment_by_id(services.tracking, DEFAULT_ID, create=False).id
        for ref in refs:
            if ref != DEFAULT_ID and not PLINTH_ID.fullmatch(ref):  # an id, never a name
                raise NotFound(f"experiment id {ref!r} does not exist")
        return [default if ref == DEFAULT_ID and default else ref for ref in refs]

    base = f"{PREFIX}/logged-models"

    @router.post(base)
    def create_logged_model(body: CreateLoggedModel) -> dict[str, Any]:
        created = models.create(
            experiment(body.experiment_id),
            name=body.name or None,
            model_type=body.model_type or "",
            source_run_id=body.source_run_id or None,
            params=_dict(body.params),
            tags=_dict(body.tags),
        )
        return {"model": model_json(created)}

    @router.post(f"{base}/search")
    def search_logged_models(body: SearchLoggedModels) -> dict[str, Any]:
        if body.datasets or any(o.dataset_name for o in body.order_by):
            raise InvalidArgument(
                "datasets are not supported in logged model searches: Plinth's logged models "
                "carry no metrics"
            )
        page = models.search(
            searched(body.experiment_ids),
            filter=body.filter,
            order_by=[(o.field_name, o.ascending) for o in body.order_by],
            max_results=body.max_results or 50,
            page_token=body.page_token,
        )
        answer: dict[str, Any] = {"models": [model_json(m) for m in page.items]}
        if page.next_page_token:
            answer["next_page_token"] = page.next_page_token
        return answer

    @router.get(f"{base}/{{model_id}}")
    def get_logged_model(model_id: str) -> dict[str, Any]:
        return {"model": model_json(models.get(model_id))}

    @router.patch(f"{base}/{{model_id}}")
    def finalize_logged_model(model_id: str, body: FinalizeLoggedModel) -> dict[str, Any]:
        return {"model": model_json(models.finalize(model_id, _status(body.status)))}

    @router.delete(f"{base}/{{model_id}}")
    def delete_logged_model(model_id: str) -> dict[str, Any]:
        models.delete(model_id)
        return {}

    @router.patch(f"{base}/{{model_id}}/tags")
    def set_logged_model_tags(model_id: str, body: SetTags) -> dict[str, Any]:
        return {"model": model_json(models.set_tags(model_id, _dict(body.tags)))}

    @router.delete(f"{base}/{{model_id}}/tags/{{key:path}}")
    def delete_logged_model_tag(model_id: str, key: str) -> dict[str, Any]:
        models.delete_tag(model_id, key)
        return {}

    @router.post(f"{base}/{{model_id}}/params")
    def log_logged_model_params(model_id: str, body: LogParams) -> dict[str, Any]:
        try:
            models.log_params(model_id, _dict(body.params))
        except Conflict as exc:  # MLflow calls a changed param an invalid value
            raise InvalidArgument(exc.message) from None
        return {}

    @router.post(f"{PREFIX}/runs/outputs")
    def log_outputs(body: LogOutputs) -> dict[str, Any]:
        models.log_outputs(body.run_id, [m.model_id for m in body.models])
        return {}

    @router.get(f"{PREFIX}/artifacts/list")
    def list_artifacts(
        run_id: Annotated[str | None, Query()] = None,
        run_uuid: Annotated[str | None, Query()] = None,
        path: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """A run's artifacts in one folder, their paths relative to the run's root."""
        run = run_id or run_uuid
        if not run:
            raise InvalidArgument("give run_id: the run whose artifacts to list")
        entries = services.tracking.list_artifacts(run, path or "")
        experiment_id = services.tracking.access.run_experiment(run)
        return {
            "root_uri": f"{ARTIFACTS_SCHEME}/{experiment_id}/{run}/artifacts",
            "files": files_json(entries),
        }

    return router
