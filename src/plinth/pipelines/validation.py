"""The checks of a pipeline's and a schedule's arguments: each refusal an InvalidArgument
(or NotFound) naming the field at fault and what would be right."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError

from plinth.abtests.design import check_name as _check_name
from plinth.abtests.design import field_path
from plinth.errors import InvalidArgument
from plinth.pipelines.records import DONE_STEPS
from plinth.pipelines.types import (
    CATCHUPS,
    SCHEDULE_KINDS,
    PipelineRun,
    PipelineSpec,
    ScheduleSpec,
)

T = TypeVar("T")

MAX_RETRIES = 10
MAX_CONCURRENCY = 100
MAX_CRON = 200  # the column's width
# bounds on what one call may make the server check, store and send to each worker
MAX_STEPS = 1_000
MAX_DESCRIPTION = 10_000  # characters
MAX_PARAMS = 64 * 1024  # bytes of JSON
# ``package.module:attr`` or ``path/to/file.py:attr`` (attr may be dotted: ``mod:obj.pipe``)
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ATTR = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_PIPELINE: TypeAdapter[PipelineSpec] = TypeAdapter(PipelineSpec)
_SCHEDULE: TypeAdapter[ScheduleSpec] = TypeAdapter(ScheduleSpec)


def check_name(name: str) -> str:
    return _check_name(name, "pipeline name")


def coerce(adapter: TypeAdapter[T], value: Any, field: str) -> T:
    """``value`` (a dataclass, or a dict as JSON gives it) as the spec; InvalidArgument
    names the field at fault."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidArgument(f"{field}{field_path(first['loc'])}: {first['msg']}") from None


def check_pipeline(spec: PipelineSpec | dict[str, Any]) -> PipelineSpec:
    checked = coerce(_PIPELINE, spec, "spec")
    check_name(checked.name)
    check_entrypoint(checked.entrypoint)
    if len(checked.description) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"spec.description: at most {MAX_DESCRIPTION} characters, got "
            f"{len(checked.description)}"
        )
    _check_steps(checked.steps)
    check_params(checked.params, "spec.params")
    if checked.experiment is not None:
        _check_name(checked.experiment, "spec.experiment: experiment name")
    if checked.timeout_seconds is not None and not (
        _finite(checked.timeout_seconds) and checked.timeout_seconds > 0
    ):
        raise InvalidArgument(
            f"spec.timeout_seconds: more than 0 (or none), got {checked.timeout_seconds!r}"
        )
    _check_int(checked.retries, "spec.retries", 0, MAX_RETRIES)
    backoff = checked.retry_backoff_seconds
    if not (_finite(backoff) and backoff >= 0):
        raise InvalidArgument(f"spec.retry_backoff_seconds: 0 or more, got {backoff!r}")
    _check_int(checked.concurrency, "spec.concurrency", 1, MAX_CONCURRENCY)
    return checked


def check_entrypoint(entrypoint: str) -> str:
    module, sep, attr = entrypoint.rpartition(":") if isinstance(entrypoint, str) else ("", "", "")
    path_like = module.endswith(".py") and len(module) > 3
    if not sep or not _ATTR.fullmatch(attr) or not (path_like or _MODULE.fullmatch(module)):
        raise InvalidArgument(
            f"spec.entrypoint: {entrypoint!r} does not name a pipeline: give "
            "'package.module:attr' or 'path/to/file.py:attr'"
        )
    return entrypoint


def _check_steps(steps: list[str]) -> None:
    if len(steps) > MAX_STEPS:
        raise InvalidArgument(f"spec.steps: at most {MAX_STEPS} steps, got {len(steps)}")
    seen: set[str] = set()
    twice: set[str] = set()
    for step in steps:
        if not isinstance(step, str) or not step:
            raise InvalidArgument(f"spec.steps: step names are non-empty strings, got {step!r}")
        (twice if step in seen else seen).add(step)
    if twice:
        raise InvalidArgument(f"spec.steps: {', '.join(sorted(twice))} named twice")


def check_params(params: Any, field: str) -> dict[str, Any]:
    """A JSON object of at most ``MAX_PARAMS`` bytes (the params are stored, and sent to
    workers, as JSON)."""
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise InvalidArgument(f"{field}: a mapping of names to values, got {_short(params)}")
    try:
        size = len(json.dumps(params, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"{field}: values must be JSON (text, numbers, lists...): {exc}"
        ) from None
    if size > MAX_PARAMS:
        raise InvalidArgument(
            f"{field}: at most {MAX_PARAMS // 1024} KiB as JSON, got {size} bytes: pass large "
            "data as a path or a URI"
        )
    return params


def check_resume(run: PipelineRun, from_step: str, names: list[str]) -> None:
    """A run resumed at ``from_step`` takes the outputs of the steps before it from
    ``run``: each must be done there."""
    recorded = {s.name: s.status for s in run.steps}
    for name in names[: names.index(from_step)]:
        status = recorded.get(name)
        if status not in DONE_STEPS:
            raise InvalidArgument(
                f"from_step: pipeline run {run.id} cannot be resumed at {from_step!r}: its "
                f"step {name!r} before it is {status or 'not recorded'}, so it has no output "
                f"to reuse (resume at {name!r} or an earlier step)"
            )


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 200 else f"{shown[:200]}..."


def check_schedule(spec: ScheduleSpec | dict[str, Any]) -> ScheduleSpec:
    """The schedule's fields, each checked against its kind (the target's existence and
    the caller's right to read it are the service's)."""
    checked = coerce(_SCHEDULE, spec, "spec")
    if checked.kind not in SCHEDULE_KINDS:
        raise InvalidArgument(
            f"spec.kind: {checked.kind!r} is not one of {', '.join(SCHEDULE_KINDS)}"
        )
    if checked.catchup not in CATCHUPS:
        raise InvalidArgument(
            f"spec.catchup: {checked.catchup!r} is not one of {', '.join(CATCHUPS)}"
        )
    zone(checked.timezone)
    check_params(checked.params, "spec.params")
    if checked.kind == "cron":
        if not checked.cron:
            raise InvalidArgument("spec.cron: a cron schedule needs one, e.g. '0 3 * * *'")
        if checked.target is not None:
            raise InvalidArgument("spec.target: a cron schedule watches nothing: leave it out")
        check_cron(checked.cron, checked.timezone)
    else:
        if checked.cron is not None:
            raise InvalidArgument(f"spec.cron: a {checked.kind} trigger has no cron: leave it out")
        if not checked.target:
            raise InvalidArgument(f"spec.target: name the {_TARGETS[checked.kind]} to watch")
    return checked


_TARGETS = {"alert": "monitor", "commit": "feature group", "score_job": "registered model"}


def zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument(
            f"spec.timezone: {timezone!r} is not a time zone: give an IANA name such as "
            "'UTC' or 'Europe/Paris'"
        ) from None


def check_cron(expr: str, timezone: str) -> None:
    """A cron expression the scheduler can use (``plinth.pipelines.cron``: five fields,
    the one at fault named)."""
    from plinth.pipelines import cron

    zone(timezone)
    if isinstance(expr, str) and len(expr) > MAX_CRON:
        raise InvalidArgument(f"spec.cron: at most {MAX_CRON} characters, got {len(expr)}")
    try:
        cron.check_cron(expr, timezone)
    except InvalidArgument as exc:
        raise InvalidArgument(f"spec.cron: {exc.message}") from None


def cron_next(expr: str, timezone: str, after_ms: int) -> int:
    """The first occurrence of ``expr`` after ``after_ms`` (ms since the epoch)."""
    from plinth.pipelines import cron

    return cron.next_at(expr, timezone, after_ms)


def _check_int(value: Any, field: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{field}: a whole number from {low} to {high}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
