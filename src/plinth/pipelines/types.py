"""Pipelines, their schedules, runs and steps, as value objects (checked in
``service.py``; stored by ``records.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

_JSON = {"ser_json_inf_nan": "strings"}
# a misspelt field is refused, not silently left at its default
_STRICT = {**_JSON, "extra": "forbid"}

#: queued (waiting for a worker) -> running -> succeeded | failed; cancelled by hand
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
#: ``cached``: its output came from an earlier run with the same cache key; ``reused``: a
#: resumed run took it from the run it resumes; ``skipped``: an earlier step failed
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cached", "reused"]
STEP_STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cached",
    "reused",
)
#: what starts a run: by hand, a cron schedule, a monitor's alert, a feature group's new
#: commit, a model's new delivered score job; a rerun (``--from``) or a retry
Trigger = Literal["manual", "cron", "alert", "commit", "score_job", "rerun", "retry"]
ScheduleKind = Literal["cron", "alert", "commit", "score_job"]
SCHEDULE_KINDS: tuple[str, ...] = ("cron", "alert", "commit", "score_job")
#: cron occurrences missed while no scheduler ran: ``latest`` runs the newest one only,
#: ``all`` runs each (oldest first, at most ``MAX_CATCHUP``), ``skip`` runs none of them
Catchup = Literal["skip", "latest", "all"]
CATCHUPS: tuple[str, ...] = ("skip", "latest", "all")
MAX_CATCHUP = 100


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline to register: ``entrypoint`` names the ``plinth.Pipeline`` object the
    scheduler's workers import (``package.module:attr`` or ``path/to/file.py:attr``).
    ``experiment``: where its runs are tracked (default: the pipeline's name).
    ``timeout_seconds``: a run's limit; ``retries``: further attempts of a failed run,
    ``retry_backoff_seconds`` apart, doubling; ``concurrency``: its runs at once."""

    __pydantic_config__ = _STRICT

    name: str
    entrypoint: str
    description: str = ""
    steps: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    timeout_seconds: float | None = None
    retries: int = 0
    retry_backoff_seconds: float = 30.0
    concurrency: int = 1


@dataclass(frozen=True)
class PipelineInfo:
    """A registered pipeline (``steps``: its step names in order, as last registered)."""

    __pydantic_config__ = _JSON

    name: str
    entrypoint: str
    description: str
    steps: list[str]
    params: dict[str, Any]
    experiment: str
    timeout_seconds: float | None
    retries: int
    retry_backoff_seconds: float
    concurrency: int
    owner: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleSpec:
    """When a pipeline runs by itself: on a ``cron`` expression (in ``timezone``), or on
    each new alert of the monitor / commit of the feature group / delivered score job of
    the model named by ``target``. ``params`` go over the pipeline's own."""

    __pydantic_config__ = _STRICT

    kind: str = "cron"
    cron: str | None = None
    timezone: str = "UTC"
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    catchup: str = "latest"


@dataclass(frozen=True)
class Schedule:
    """A stored schedule or trigger. ``cursor``: the last cron occurrence enqueued (ms
    since the epoch) or the last alert / commit / score job id seen; ``next_at``: a cron
    schedule's next occurrence."""

    __pydantic_config__ = _JSON

    id: int
    pipeline: str
    kind: str
    cron: str | None
    timezone: str
    target: str | None
    params: dict[str, Any]
    catchup: str
    paused: bool
    cursor: int | None
    next_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StepRun:
    """One step of a run. ``output``: its kind (``arrow``, ``pandas``, ``json``,
    ``model_version``, ``training_dataset``, ``pickle``, ``none``...), where it is stored,
    its digest and a short summary; ``inputs``: each input's name and digest; ``error``:
    the traceback of a failed step."""

    __pydantic_config__ = _JSON

    name: str
    position: int
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    code_version: str | None = None
    cache_key: str | None = None
    reused_from: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] | None = None
    log_path: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PipelineRun:
    """One attempt at running a pipeline (``steps`` filled when asked for one run)."""

    __pydantic_config__ = _JSON

    id: int
    pipeline: str
    status: str
    trigger: str
    run_id: str | None = None
    schedule_id: int | None = None
    trigger_key: str | None = None
    scheduled_for: datetime | None = None
    alert_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = 1
    retry_of: int | None = None
    resumed_from: int | None = None
    from_step: str | None = None
    queued_at: datetime | None = None
    not_before: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker: str | None = None
    created_by: str = ""
    error: str | None = None
    steps: list[StepRun] = field(default_factory=list)
