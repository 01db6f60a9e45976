"""MLflow's model registry routes (``registered-models/*``, ``model-versions/*``) on the
registry service.

Stages: MLflow's ``None``, ``Staging``, ``Production`` and ``Archived`` are Plinth's
DEVELOPMENT, STAGING, PRODUCTION and ARCHIVED; a SHADOW version shows as ``None`` (MLflow
has no such stage; Plinth's own interfaces show it). A version made here copies its source
into a Plinth package (``mlflow_package.py``) and keeps the source in the tags
``mlflow.source`` and ``mlflow.model_id``, shown as the fields ``source`` and ``model_id``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from plinth.errors import InvalidArgument
from plinth.registry.package import MODEL_FOLDER
from plinth.registry.types import ModelVersion, RegisteredModel, Stage
from plinth.server.mlflow import mlflow_package as packages
from plinth.server.mlflow.codes import ARTIFACTS_SCHEME, PREFIX
from plinth.server.mlflow.common import Body, Services, Tag, ms, pairs
from plinth.server.mlflow.registry_filters import MODELS, VERSIONS, page, parse_filter

_STAGES_OUT = {
    Stage.DEVELOPMENT: "None",
    Stage.SHADOW: "None",
    Stage.STAGING: "Staging",
    Stage.PRODUCTION: "Production",
    Stage.ARCHIVED: "Archived",
}
_STAGES_IN = {
    "none": Stage.DEVELOPMENT,
    "staging": Stage.STAGING,
    "production": Stage.PRODUCTION,
    "archived": Stage.ARCHIVED,
}
_HIDDEN_TAGS = (packages.SOURCE_TAG, packages.MODEL_ID_TAG)
_Json = dict[str, Any]


class _Named(Body):
    name: str


class _CreateModel(_Named):
    tags: list[Tag] = Field(default_factory=list)
    description: str = ""


class _UpdateModel(_Named):
    description: str | None = None


class _Rename(_Named):
    new_name: str = ""


class _ModelTag(_Named):
    key: str
    value: str = ""


class _LatestVersions(_Named):
    stages: list[str] = Field(default_factory=list)


class _Alias(_Named):
    alias: str
    version: str | int = ""


class _Version(_Named):
    version: str | int


class _CreateVersion(_Named):
    source: str
    run_id: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    description: str = ""


class _UpdateVersion(_Version):
    description: str | None = None


class _Transition(_Version):
    stage: str
    archive_existing_versions: bool = False


class _VersionTag(_Version):
    key: str
    value: str = ""


def _number(version: str | int) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"version must be a positive integer such as '3', not {version!r}")
    return int(text)


def _stage_in(stage: str) -> Stage:
    found = _STAGES_IN.get(str(stage).strip().lower())
    if found is None:
        raise InvalidArgument(f"stage {stage!r} is not one of None, Staging, Production, Archived")
    return found


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return pairs({k: v for k, v in tags.items() if k not in _HIDDEN_TAGS})


def download_uri(name: str, version: int) -> str:
    """Where an MLflow client downloads a version's model folder (the artifact proxy)."""
    return f"{ARTIFACTS_SCHEME}/registered-models/{name}/versions/{version}/{MODEL_FOLDER}"


def version_json(v: ModelVersion) -> _Json:
    found: _Json = {
        "name": v.model_name,
        "version": str(v.version),
        "creation_timestamp": ms(v.created_at),
        "last_updated_timestamp": ms(v.created_at),
        "user_id": v.owner,
        "current_stage": _STAGES_OUT[v.stage],
        "description": v.description,
        "source": v.tags.get(packages.SOURCE_TAG) or download_uri(v.model_name, v.version),
        "status": "READY",
        "tags": _tag_list(v.tags),
        "aliases": list(v.aliases),
    }
    if v.run_id:
        found["run_id"] = v.run_id
    if model_id := v.tags.get(packages.MODEL_ID_TAG):
        found["model_id"] = model_id
    return found


def _tags_in(tags: list[Tag]) -> dict[str, str]:
    found = {t.key: t.value for t in tags}
    for key in found:
        _check_tag_key(key)
    return found


def _check_tag_key(key: str) -> None:
    if not key or len(key) > 250:
        raise InvalidArgument(f"tag key {key[:40]!r} must have 1 to 250 characters")
    if key in _HIDDEN_TAGS:
        raise InvalidArgument(f"tag {key!r} is reserved: it records where the version came from")


def routes(services: Services) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    registry = services.registry

    def latest_in(name: str, stages: list[str]) -> list[_Json]:
        """The newest version in each MLflow stage (of ``stages``; all if empty)."""
        wanted = {_STAGES_OUT[_stage_in(s)] for s in stages}
        latest: dict[str, int] = {}
        for stage, number in registry.latest_versions(name).items():
            shown = _STAGES_OUT[Stage(stage)]
            if not wanted or shown in wanted:
                latest[shown] = max(number, latest.get(shown, 0))
        return [version_json(registry.get_model_version(name, n)) for n in sorted(latest.values())]

    def model_json(m: RegisteredModel) -> _Json:
        return {
            "name": m.name,
            "creation_timestamp": ms(m.created_at),
            "last_updated_timestamp": ms(m.updated_at),
            "user_id": m.owner,
            "description": m.description,
            "latest_versions": latest_in(m.name, []),
            "tags": _tag_list(m.tags),
            "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(m.aliases.items())],
        }

    def one_model(name: str) -> _Json:
        return {"registered_model": model_json(registry.get_registered_model(name))}

    def one_version(v: ModelVersion) -> _Json:
        return {"model_version": version_json(v)}

    # -- registered models -------------------------------------------------------------

    @router.post("/registered-models/create")
    def create_model(body: _CreateModel) -> _Json:
        registry.create_registered_model(body.name, body.description, _tags_in(body.tags))
        return one_model(body.name)

    @router.get("/registered-models/get")
    def get_model(name: str) -> _Json:
        return one_model(name)

    @router.patch("/registered-models/update")
    def update_model(body: _UpdateModel) -> _Json:
        registry.update_registered_model(body.name, description=body.description)
        return one_model(body.name)

    @router.post("/registered-models/rename")
    def rename_model(body: _Rename) -> _Json:
        registry.get_registered_model(body.name)  # not found, or not readable, first
        raise InvalidArgument(
            f"renaming registered model {body.name!r} is not supported: Plinth keys a model's "
            "permissions, history and deployments by its name; register its versions under "
            "the new name instead"
        )

    @router.delete("/registered-models/delete")
    def delete_model(request: Request, body: _Named | None = None) -> _Json:
        args = body or _Named(name=_query(request, "name"))
        registry.delete_registered_model(args.name)
        return {}

    @router.get("/registered-models/search")
    def search_models(
        filter: str = "",
        max_results: int = 100,
        order_by: Annotated[list[str] | None, Query()] = None,
        page_token: str | None = None,
    ) -> _Json:
        if not 1 <= max_results <= 1000:
            raise InvalidArgument(f"max_results must be between 1 and 1000, not {max_results}")
        matches = parse_filter(filter, MODELS)
        found = [m for m in _all_models() if matches(_model_fields(m), m.tags)]
        chosen, token = page(found, MODELS, order_by or [], _model_fields, max_results, page_token)
        answer: _Json = {"registered_models": [model_json(m) for m in chosen]}
        if token:
            answer["next_page_token"] = token
        return answer

    def _all_models() -> list[RegisteredModel]:
        found: list[RegisteredModel] = []
        token: str | None = None
        while True:
            listed = registry.list_registered_models(max_results=10_000, page_token=token)
            found.extend(listed.items)
            token = listed.next_page_token
            if not token:
                return found

    @router.post("/registered-models/get-latest-versions")
    def latest_versions_post(body: _LatestVersions) -> _Json:
        return {"model_versions": latest_in(body.name, body.stages)}

    @router.get("/registered-models/get-latest-versions")
    def latest_versions_get(
        name: str, stages: Annotated[list[str] | None, Query()] = None
    ) -> _Json:
        return {"model_versions": latest_in(name, stages or [])}

    @router.post("/registered-models/set-tag")
    def set_model_tag(body: _ModelTag) -> _Json:
        _check_tag_key(body.key)
        registry.update_registered_model(body.name, tags={body.key: body.value})
        return {}

    @router.delete("/registered-models/delete-tag")
    def delete_model_tag(request: Request, body: _ModelTag | None = None) -> _Json:
        args = body or _ModelTag(name=_query(request, "name"), key=_query(request, "key"))
        _check_tag_key(args.key)
        registry.delete_registered_model_tag(args.name, args.key)
        return {}

    @router.post("/registered-models/alias")
    def set_alias(body: _Alias) -> _Json:
        registry.set_alias(body.name, body.alias, _number(body.version), "set by an MLflow client")
        return {}

    @router.delete("/registered-models/alias")
    def delete_alias(request: Request, body: _Alias | None = None) -> _Json:
        args = body or _Alias(name=_query(request, "name"), alias=_query(request, "alias"))
        registry.delete_alias(args.name, args.alias)
        return {}

    @router.get("/registered-models/alias")
    def get_by_alias(name: str, alias: str) -> _Json:
        return one_version(registry.resolve(f"models:/{name}@{alias}"))

    # -- model versions ----------------------------------------------------------------

    @router.post("/model-versions/create")
    def create_version(body: _CreateVersion) -> _Json:
        tags = _tags_in(body.tags)
        source = packages.resolve_source(services, body.source)
        run_id = body.run_id or source.run_id
        if body.run_id and source.run_id and body.run_id != source.run_id:
            raise InvalidArgument(
                f"source {body.source!r} belongs to run {source.run_id}, not to run_id {body.run_id}"
            )
        package = packages.copy_to_package(services, source, body.name)
        try:
            created = registry.create_model_version(
                body.name,
                package,
                run_id=run_id,
                description=body.description,
                tags={**tags, **packages.source_tags(source)},
            )
        except BaseException:
            services.artifacts.delete(package)
            raise
        return one_version(created)

    @router.get("/model-versions/get")
    def get_version(name: str, version: str) -> _Json:
        return one_version(registry.get_model_version(name, _number(version)))

    @router.patch("/model-versions/update")
    def update_version(body: _UpdateVersion) -> _Json:
        number = _number(body.version)
        return one_version(
            registry.update_model_version(body.name, number, description=body.description)
        )

    @router.post("/model-versions/transition-stage")
    def transition(body: _Transition) -> _Json:
        number, stage = _number(body.version), _stage_in(body.stage)
        if body.archive_existing_versions and stage not in (Stage.STAGING, Stage.PRODUCTION):
            raise InvalidArgument(
                f"archive_existing_versions applies to the stages Staging and Production, "
                f"not {body.stage!r}"
            )
        reason = "transition-stage by an MLflow client"
        moved = registry.set_stage(body.name, number, stage, reason, allow_archived=True)
        if body.archive_existing_versions:  # PRODUCTION archives its previous one itself
            for other in _versions_in(body.name, stage):
                if other.version != number:
                    registry.set_stage(body.name, other.version, Stage.ARCHIVED, reason)
        return one_version(moved)

    def _versions_in(name: str, stage: Stage) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        token: str | None = None
        while True:
            listed = registry.list_model_versions(name, stage, 10_000, token)
            found.extend(listed.items)
            token = listed.next_page_token
            if not token:
                return found

    @router.delete("/model-versions/delete")
    def delete_version(request: Request, body: _Version | None = None) -> _Json:
        args = body or _Version(name=_query(request, "name"), version=_query(request, "version"))
        registry.delete_model_version(
            args.name, _number(args.version), "deleted by an MLflow client"
        )
        return {}

    @router.get("/model-versions/search")
    def search_versions(
        filter: str = "",
        max_results: int = 10_000,
        order_by: Annotated[list[str] | None, Query()] = None,
        page_token: str | None = None,
    ) -> _Json:
        if not 1 <= max_results <= 200_000:
            raise InvalidArgument(f"max_results must be between 1 and 200000, not {max_results}")
        matches = parse_filter(filter, VERSIONS)
        # the listing narrows by an exact name or run first; the filter decides
        exact = matches.exact
        listed = registry.search_model_versions(
            name=exact.get("name"), run_id=exact.get("run_id"), max_results=10_000
        )
        found = [v for v in listed if matches(_version_fields(v), _visible_tags(v))]
        chosen, token = page(
            found, VERSIONS, order_by or [], _version_fields, max_results, page_token
        )
        answer: _Json = {"model_versions": [version_json(v) for v in chosen]}
        if token:
            answer["next_page_token"] = token
        return answer

    @router.get("/model-versions/get-download-uri")
    def get_download_uri(name: str, version: str) -> _Json:
        found = registry.get_model_version(name, _number(version))
        return {"artifact_uri": download_uri(found.model_name, found.version)}

    @router.post("/model-versions/set-tag")
    def set_version_tag(body: _VersionTag) -> _Json:
        _check_tag_key(body.key)
        registry.update_model_version(body.name, _number(body.version), tags={body.key: body.value})
        return {}

    @router.delete("/model-versions/delete-tag")
    def delete_version_tag(request: Request, body: _VersionTag | None = None) -> _Json:
        args = body or _VersionTag(
            name=_query(request, "name"),
            version=_query(request, "version"),
            key=_query(request, "key"),
        )
        _check_tag_key(args.key)
        registry.delete_model_version_tag(args.name, _number(args.version), args.key)
        return {}

    return router


def _query(request: Request, key: str) -> str:
    value = request.query_params.get(key)
    if value is None:
        raise InvalidArgument(f"{key} is required (in the JSON body or the query)")
    return value


def _model_fields(m: RegisteredModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "creation_timestamp": ms(m.created_at),
        "last_updated_timestamp": ms(m.updated_at),
    }


def _version_fields(v: ModelVersion) -> dict[str, Any]:
    return {
        "name": v.model_name,
        "version_number": v.version,
        "run_id": v.run_id,
        "source_path": v.tags.get(packages.SOURCE_TAG) or download_uri(v.model_name, v.version),
        "creation_timestamp": ms(v.created_at),
        "last_updated_timestamp": ms(v.created_at),
    }


def _visible_tags(v: ModelVersion) -> dict[str, str]:
    return {k: val for k, val in v.tags.items() if k not in _HIDDEN_TAGS}
