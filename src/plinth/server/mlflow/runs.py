"""MLflow's runs and metrics routes, answered by ``TrackingService`` (its permissions and
its rules apply): a run logged here is an ordinary Plinth run, its params in the group
"default".

MLflow's limits are checked before anything is written (``check_batch``): 1000 metrics,
100 params, 100 tags and 1000 entries in all per batch; keys up to 250 characters, param
values up to 6000 and tag values up to 8000. A violation is a 400
INVALID_PARAMETER_VALUE that names it. A log-batch is all or nothing: checked whole, then
written in one transaction (``TrackingService.log_batch``). A search names up to 1000
experiments.

MLflow's runs may share a name, Plinth's are unique in their experiment: a run created
or renamed here (``mlflow.runName`` through set-tag or log-batch, ``run_name`` through
update) to a name another run has gets a ``-xxxxxx`` suffix. Plinth's own ``rename_run``
still refuses a taken name.

``mlflow.log-model.history`` grows under the run's row lock; an entry that would take it
past 8000 characters is refused (400), as MLflow's server refuses it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Annotated, Any
from urllib.parse import urlparse

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import select

from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from plinth.server.mlflow.codes import ARTIFACTS_SCHEME, PREFIX
from plinth.server.mlflow.common import (
    DEFAULT_ID,
    DEFAULT_NAME,
    PLINTH_ID,
    Body,
    KeyValue,
    Services,
    check_max_results,
    decode_token,
    encode_token,
    experiment_by_id,
    ms,
    offset_of,
    reply,
    signed_in,
    view_of,
)
from plinth.server.mlflow.filters import RUN_NAME_TAG, run_filter, run_order_by
from plinth.store.schema import logged_models
from plinth.store.sql import MAX_PAGE
from plinth.tracking.types import DatasetInput, MetricBatch, Run, RunStatus

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ENTRIES = 1000
MAX_HISTORY = 25_000
MAX_EXPERIMENTS = 1000  # experiment ids one search names
MODELS_TAG = "mlflow.log-model.history"  # MLflow's record of the models a run logged
CONTEXT_TAG = "mlflow.data.context"  # what a run used a data set for: training, eval...
USER_TAG = "mlflow.user"  # who ran it: the authenticated caller, never what a client says
PARAM_GROUP = "default"
_NAME = re.compile(r"[\w.\- :/]*")  # the characters MLflow allows in a key
_STATUSES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


# -- requests --------------------------------------------------------------------------


class RunRef(Body):
    run_id: str | None = None
    run_uuid: str | None = None  # MLflow's old name for run_id

    @property
    def id(self) -> str:
        found = self.run_id or self.run_uuid
        if not found:
            raise InvalidArgument("run_id is required")
        return found


class CreateRun(Body):
    experiment_id: str | None = None
    user_id: str | None = None  # ignored: the run is the authenticated caller's
    run_name: str | None = None
    start_time: int | None = None  # ignored: the server's clock starts a run
    tags: list[KeyValue] = Field(default_factory=list)


class UpdateRun(RunRef):
    status: str | int | None = None
    end_time: int | None = None  # ignored: the server's clock ends a run
    run_name: str | None = None


class Metric(Body):
    key: str
    value: float
    timestamp: int
    step: int = 0
    # set when MLflow 3 links a run's metric to a logged model: log_model sends the run's
    # points at the model's step again with it (kept once: see ``unlinked``)
    model_id: str | None = None


class LogMetric(RunRef, Metric):
    pass


class LogParam(RunRef):
    key: str
    value: str


class SetTag(RunRef):
    key: str
    value: str


class DeleteTag(RunRef):
    key: str


class LogBatch(RunRef):
    metrics: list[Metric] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class Dataset(Body):
    name: str
    digest: str = ""
    source_type: str = ""
    source: str = ""
    schema_: str | None = Field(default=None, alias="schema")
    profile: str | None = None


class DatasetInputBody(Body):
    tags: list[KeyValue] = Field(default_factory=list)
    dataset: Dataset


class LogInputs(RunRef):
    datasets: list[DatasetInputBody] = Field(default_factory=list)
    models: list[dict[str, Any]] = Field(default_factory=list)  # model inputs: not kept


class LogModel(RunRef):
    model_json: str


class SearchRuns(Body):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    run_view_type: str | int | None = None
    max_results: int | None = None
    order_by: list[str] = Field(default_factory=list)
    page_token: str | None = None


# -- checks ----------------------------------------------------------------------------


def check_key(key: str, what: str) -> None:
    if not key:
        raise InvalidArgument(f"{what} name must not be empty")
    if len(key) > MAX_KEY:
        raise InvalidArgument(
            f"{what} name {key[:40]!r}... is {len(key)} characters; MLflow allows {MAX_KEY}"
        )
    if not _NAME.fullmatch(key):
        raise InvalidArgument(
            f"{what} name {key!r} may only contain alphanumerics, underscores, dashes, "
            "periods, spaces, colons and slashes"
        )


def check_value(key: str, value: str, what: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(
            f"{what} {key!r}: its value is {len(value)} characters; MLflow allows {limit}"
        )


def check_batch(metrics: list[Metric], params: list[KeyValue], tags: list[KeyValue]) -> None:
    counts = (("metrics", len(metrics), MAX_METRICS), ("params", len(params), MAX_PARAMS))
    for what, count, limit in (*counts, ("tags", len(tags), MAX_TAGS)):
        if count > limit:
            raise InvalidArgument(f"log-batch: {count} {what}; MLflow allows {limit} a batch")
    total = len(metrics) + len(params) + len(tags)
    if total > MAX_ENTRIES:
        raise InvalidArgument(
            f"log-batch: {total} metrics, params and tags in all; MLflow allows {MAX_ENTRIES}"
        )
    for metric in metrics:
        check_key(metric.key, "metric")
    seen: dict[str, str] = {}
    for param in params:
        check_key(param.key, "param")
        check_value(param.key, param.value, "param", MAX_PARAM_VALUE)
        if seen.setdefault(param.key, param.value) != param.value:
            raise InvalidArgument(
                f"log-batch: param {param.key!r} is given twice with different values"
            )
    for tag in tags:
        check_key(tag.key, "tag")
        check_value(tag.key, tag.value, "tag", MAX_TAG_VALUE)


# -- answers ---------------------------------------------------------------------------


def double(value: float) -> float | str:
    """A double as protobuf's JSON writes it: NaN and infinities as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def param_text(value: Any) -> str:
    """A param as MLflow shows it: text (Plinth's numbers, bools and JSON values printed)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value) if isinstance(value, int) else repr(value)
    return json.dumps(value, sort_keys=True)


def run_info(run: Run) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name,
        "experiment_id": run.experiment_id,
        "user_id": run.owner,
        "status": run.status.value,
        "start_time": ms(run.start_time),
        "artifact_uri": f"{ARTIFACTS_SCHEME}/{run.experiment_id}/{run.id}/artifacts",
        "lifecycle_stage": "deleted" if run.deleted_at is not None else "active",
    }
    if run.end_time is not None:
        info["end_time"] = ms(run.end_time)
    return info


def run_json(run: Run, model_ids: Iterable[str] = ()) -> dict[str, Any]:
    metrics = [
        {
            "key": key,
            "value": double(m.last),
            # None only in a summary made by hand: the run's last sign of life stands in
            "timestamp": ms(m.last_timestamp or run.heartbeat_at),
            "step": m.last_step,
        }
        for key, m in sorted(run.metrics.items())
    ]
    params = [
        {"key": key if group == PARAM_GROUP else f"{group}.{key}", "value": param_text(value)}
        for group, values in run.params.items()
        for key, value in values.items()
    ]
    tags = {**run.tags, RUN_NAME_TAG: run.name, USER_TAG: run.owner}
    return {
        "info": run_info(run),
        "data": {
            "metrics": metrics,
            "params": params,
            "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
        },
        "inputs": {"dataset_inputs": [dataset_json(d) for d in run.inputs]},
        "outputs": {"model_outputs": [{"model_id": m, "step": 0} for m in model_ids]},
    }


def dataset_json(dataset: DatasetInput) -> dict[str, Any]:
    """A run input as MLflow shows it: what an MLflow client sent comes back as it was;
    a Plinth input gets a source type guessed from its URI and its row count as profile."""
    found: dict[str, Any] = {
        "name": dataset.name,
        "digest": dataset.digest or "",
        "source_type": dataset.source_type or source_type(dataset.uri),
        "source": dataset.uri,
    }
    if dataset.schema is not None:
        found["schema"] = dataset.schema
    if dataset.profile is not None:
        found["profile"] = dataset.profile
    elif dataset.rows is not None:
        found["profile"] = json.dumps({"num_rows": dataset.rows})
    tags = [] if dataset.context is None else [{"key": CONTEXT_TAG, "value": dataset.context}]
    return {"tags": tags, "dataset": found}


def source_type(source: str) -> str:
    """MLflow's source type, from the scheme of the source's URI (Plinth keeps the source)."""
    uri = source
    try:
        parsed = json.loads(source)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("uri"), str):
        uri = parsed["uri"]
    scheme = urlparse(uri).scheme if "://" in uri or uri.startswith("file:") else ""
    return {"": "local", "file": "local", "https": "http"}.get(scheme, scheme)


def rows_of(profile: str | None) -> int | None:
    try:
        rows = json.loads(profile) if profile else None
    except ValueError:
        return None
    found = rows.get("num_rows") if isinstance(rows, dict) else None
    return found if type(found) is int and found >= 0 else None


def point_key(key: str, step: int, timestamp: int, value: float) -> tuple[str, int, int, str]:
    """A metric point as MLflow compares them (NaN equal to NaN)."""
    return key, step, timestamp, repr(value)


def metric_batch(metrics: list[Metric]) -> MetricBatch:
    return MetricBatch(
        keys=[m.key for m in metrics],
        values=[m.value for m in metrics],
        steps=[m.step for m in metrics],
        timestamps=[m.timestamp for m in metrics],
        is_best=[None] * len(metrics),
    )


def status_of(status: str | int) -> RunStatus:
    text = _STATUSES.get(status, "") if isinstance(status, int) else status.upper()
    if text.isdigit():
        text = _STATUSES.get(int(text), "")
    if text == "SCHEDULED":
        raise InvalidArgument("status SCHEDULED: Plinth runs start RUNNING")
    try:
        return RunStatus(text)
    except ValueError:
        raise InvalidArgument(
            f"status {status!r} is not RUNNING, FINISHED, FAILED or KILLED"
        ) from None


# -- routes ----------------------------------------------------------------------------


def routes(services: Services) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    tracking = services.tracking

    def models_of(run_ids: list[str]) -> dict[str, list[str]]:
        """The logged models each run made (its outputs); the caller may read these runs."""
        found: dict[str, list[str]] = {r: [] for r in run_ids}
        if not run_ids:
            return found
        lm = logged_models.c
        with services.store.read() as conn:
            # in slices: a search answers up to 50,000 runs, more ids than SQLite binds
            for start in range(0, len(run_ids), MAX_PAGE):
                query = (
                    select(lm.source_run_id, lm.id)
                    .where(
                        lm.source_run_id.in_(run_ids[start : start + MAX_PAGE]),
                        lm.deleted_at.is_(None),
                    )
                    .order_by(lm.created_at, lm.id)
                )
                for run_id, model_id in conn.execute(query):
                    found[run_id].append(model_id)
        return found

    def readable_experiments(experiment_ids: list[str]) -> list[str]:
        """The Plinth ids of MLflow's experiment ids, in one statement: "0" is "Default";
        one that is not there (or not the caller's to read) has no runs, as in MLflow."""
        if len(experiment_ids) > MAX_EXPERIMENTS:
            raise InvalidArgument(
                f"experiment_ids: {len(experiment_ids):,} given; a search takes up to "
                f"{MAX_EXPERIMENTS:,}"
            )
        refs = [
            DEFAULT_NAME if e == DEFAULT_ID else e
            for e in dict.fromkeys(experiment_ids)
            if e == DEFAULT_ID or PLINTH_ID.fullmatch(e)
        ]
        return tracking.readable_experiments(refs) if refs else []

    def answer_run(run: Run) -> Response:
        return reply({"run": run_json(run, models_of([run.id])[run.id])})

    def rename(run: Run, name: str) -> None:
        if name != run.name:  # a taken name gets a suffix
            tracking.log_batch(run.id, name=name)

    def log_params(run_id: str, params: dict[str, str]) -> None:
        with param_conflicts(run_id, params):
            tracking.log_params(run_id, params, PARAM_GROUP)

    @contextlib.contextmanager
    def param_conflicts(run_id: str, params: dict[str, str]) -> Iterator[None]:
        try:
            yield
        except Conflict:
            # MLflow's answer to a changed param is INVALID_PARAMETER_VALUE
            logged = tracking.get_run(run_id).params.get(PARAM_GROUP, {})
            for key, value in params.items():
                if key in logged and logged[key] != value:
                    raise InvalidArgument(
                        f"param {key!r} of run {run_id} is already {param_text(logged[key])!r}; "
                        f"params cannot change, so it cannot be {value!r}"
                    ) from None
            raise

    def set_tags(run_id: str, tags: dict[str, str]) -> None:
        tags.pop(USER_TAG, None)
        name = tags.pop(RUN_NAME_TAG, None)
        if name is not None or tags:
            tracking.log_batch(run_id, tags=tags, name=name)

    @router.post("/runs/create")
    def create_run(body: CreateRun) -> Response:
        signed_in()
        tags = {t.key: t.value for t in body.tags}
        check_batch([], [], body.tags)
        name = body.run_name or tags.get(RUN_NAME_TAG) or None
        tags.pop(RUN_NAME_TAG, None)
        tags.pop(USER_TAG, None)
        experiment = experiment_by_id(tracking, body.experiment_id or DEFAULT_ID).id
        try:
            run = tracking.create_run(experiment, name, tags=tags)
        except AlreadyExists:
            # MLflow lets runs share a name; Plinth's are unique in their experiment
            run = tracking.create_run(experiment, f"{name}-{uuid.uuid4().hex[:6]}", tags=tags)
        return answer_run(run)

    @router.get("/runs/get")
    def get_run(
        run_id: Annotated[str | None, Query()] = None,
        run_uuid: Annotated[str | None, Query()] = None,
    ) -> Response:
        signed_in()
        return answer_run(tracking.get_run(RunRef(run_id=run_id, run_uuid=run_uuid).id))

    @router.post("/runs/update")
    def update_run(body: UpdateRun) -> Response:
        signed_in()
        run = tracking.get_run(body.id)
        if body.run_name:
            rename(run, body.run_name)
        if body.status is not None:
            status = status_of(body.status)
            if status is RunStatus.RUNNING:
                if run.status is not RunStatus.RUNNING:  # mlflow.start_run(run_id=...)
                    tracking.reopen_run(run.id)
            else:
                tracking.end_run(run.id, status)
        return reply({"run_info": run_info(tracking.get_run(run.id))})

    @router.post("/runs/delete")
    def delete_run(body: RunRef) -> Response:
        signed_in()
        tracking.delete_run(body.id)
        return reply({})

    @router.post("/runs/restore")
    def restore_run(body: RunRef) -> Response:
        signed_in()
        tracking.restore_run(body.id)
        return reply({})

    @router.post("/runs/log-metric")
    def log_metric(body: LogMetric) -> Response:
        signed_in()
        check_batch([body], [], [])
        log_metrics(body.id, [body])
        return reply({})

    def log_metrics(run_id: str, metrics: list[Metric]) -> None:
        metrics = unlinked(run_id, metrics)
        if metrics:
            tracking.log_metric_batch(run_id, metric_batch(metrics))

    def unlinked(run_id: str, metrics: list[Metric]) -> list[Metric]:
        """``metrics`` without the points a logged model's link sends again: as in MLflow's
        store, a point equal to a stored one (key, step, time, value) is not a second
        point. Only linked points are compared (plain logging stays one write)."""
        linked = {m.key for m in metrics if m.model_id}
        if not linked:
            return metrics
        stored: set[tuple[str, int, int, str]] = set()
        for key in linked:
            with contextlib.suppress(NotFound):  # a key the run has no point of yet
                stored.update(
                    point_key(key, p.step, round(p.timestamp.timestamp() * 1000), p.value)
                    for p in tracking.get_metric_history(run_id, key)
                )
        return [
            m
            for m in metrics
            if not m.model_id or point_key(m.key, m.step, m.timestamp, m.value) not in stored
        ]

    @router.post("/runs/log-parameter")
    def log_param(body: LogParam) -> Response:
        signed_in()
        check_batch([], [KeyValue(key=body.key, value=body.value)], [])
        log_params(body.id, {body.key: body.value})
        return reply({})

    @router.post("/runs/log-batch")
    def log_batch(body: LogBatch) -> Response:
        signed_in()
        run_id = body.id
        check_batch(body.metrics, body.params, body.tags)
        params = {p.key: p.value for p in body.params}
        tags = {t.key: t.value for t in body.tags}
        tags.pop(USER_TAG, None)
        name = tags.pop(RUN_NAME_TAG, None)
        metrics = unlinked(run_id, body.metrics)
        with param_conflicts(run_id, params):  # all or nothing: one transaction
            tracking.log_batch(
                run_id,
                metric_batch(metrics) if metrics else None,
                params,
                tags,
                name,
                PARAM_GROUP,
            )
        return reply({})

    @router.post("/runs/set-tag")
    def set_tag(body: SetTag) -> Response:
        signed_in()
        check_batch([], [], [KeyValue(key=body.key, value=body.value)])
        set_tags(body.id, {body.key: body.value})
        return reply({})

    @router.post("/runs/delete-tag")
    def delete_tag(body: DeleteTag) -> Response:
        signed_in()
        if body.key in (RUN_NAME_TAG, USER_TAG):
            raise InvalidArgument(
                f"tag {body.key!r} cannot be deleted: it shows the run's {body.key.split('.')[1]}"
            )
        tracking.delete_tag(body.id, body.key)
        return reply({})

    @router.post("/runs/log-inputs")
    def log_inputs(body: LogInputs) -> Response:
        signed_in()
        run_id = body.id
        for given in body.datasets:
            d = given.dataset
            if not d.source:
                raise InvalidArgument(f"dataset {d.name!r}: source must not be empty")
            tags = {t.key: t.value for t in given.tags}
            dataset = DatasetInput(
                d.name,
                d.source,
                d.digest or None,
                rows=rows_of(d.profile),
                context=tags.get(CONTEXT_TAG) or None,
                source_type=d.source_type or None,
                schema=d.schema_,
                profile=d.profile,
            )
            tracking.log_input(run_id, dataset)
        if not body.datasets:
            tracking.get_run(run_id)
        return reply({})

    @router.post("/runs/log-model")
    def log_model(body: LogModel) -> Response:
        """MLflow's record of a model logged under the run: appended to a tag, as MLflow
        does (the model's files go through the artifact routes)."""
        signed_in()
        try:
            model = json.loads(body.model_json)
        except ValueError:
            model = None
        if not isinstance(model, dict):
            raise InvalidArgument("model_json must be a JSON object (an MLmodel as JSON)")
        tracking.append_to_tag(body.id, MODELS_TAG, model, MAX_TAG_VALUE)
        return reply({})

    def search(request: SearchRuns) -> Response:
        signed_in()
        limit = check_max_results(request.max_results, 1000)
        view = view_of(request.run_view_type)
        matching = run_filter(request.filter)
        order = run_order_by(request.order_by)
        state = decode_token(request.page_token)
        token, skip = state.get("plinth"), state.get("skip", 0)
        if not (token is None or isinstance(token, str)) or type(skip) is not int or skip < 0:
            raise InvalidArgument("page_token is not a token this server gave")
        experiments = readable_experiments(request.experiment_ids)
        runs: list[Run] = []
        next_token = None
        while experiments:
            # Plinth's pages are smaller than MLflow's: read on until the page is full
            wanted = limit - len(runs) if not matching.datasets else max(limit - len(runs), 100)
            page = tracking.search_runs(
                filter=matching.plinth,
                order_by=order,
                experiments=experiments,
                max_results=min(MAX_PAGE, skip + wanted),
                page_token=token,
                view=view,
            )
            items = page.items
            for index in range(skip, len(items)):
                if matching.keeps(items[index].inputs):
                    runs.append(items[index])
                    if len(runs) == limit:
                        break
            else:
                index = len(items)
            if len(runs) == limit:
                if index + 1 < len(items):
                    next_token = encode_token({"plinth": token, "skip": index + 1})
                elif page.next_page_token is not None:
                    next_token = encode_token({"plinth": page.next_page_token, "skip": 0})
                break
            if page.next_page_token is None:
                break
            token, skip = page.next_page_token, 0
        models = models_of([r.id for r in runs])
        answer: dict[str, Any] = {"runs": [run_json(r, models[r.id]) for r in runs]}
        if next_token is not None:
            answer["next_page_token"] = next_token
        return reply(answer)

    @router.post("/runs/search")
    def search_runs(body: SearchRuns) -> Response:
        return search(body)

    @router.get("/metrics/get-history")
    def get_metric_history(
        metric_key: Annotated[str, Query()],
        run_id: Annotated[str | None, Query()] = None,
        run_uuid: Annotated[str | None, Query()] = None,
        page_token: Annotated[str | None, Query()] = None,
        max_results: Annotated[int | None, Query()] = None,
    ) -> Response:
        signed_in()
        run = RunRef(run_id=run_id, run_uuid=run_uuid).id
        limit = check_max_results(max_results, 0, MAX_HISTORY)
        offset = offset_of(page_token)
        try:
            points = tracking.get_metric_history(run, metric_key)
        except NotFound:
            tracking.get_run(run)  # a run without the metric has an empty history
            points = []
        chosen = points[offset : offset + limit] if limit else points[offset:]
        answer: dict[str, Any] = {
            "metrics": [
                {
                    "key": metric_key,
                    "value": double(p.value),
                    "timestamp": ms(p.timestamp),
                    "step": p.step,
                }
                for p in chosen
            ]
        }
        if limit and offset + limit < len(points):
            answer["next_page_token"] = encode_token({"offset": offset + limit})
        return reply(answer)

    return router
