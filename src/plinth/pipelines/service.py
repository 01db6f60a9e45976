"""Registered pipelines in the central store: what the scheduler may run (an importable
entrypoint, default params, limits), their runs queued by hand or by a schedule, each
run's steps and logs, reruns and cancellations; cron schedules and event triggers.

A pipeline carries its own permissions (``Kind.PIPELINE``): reading it shows its runs,
steps and schedules; WRITE queues, reruns, cancels and schedules it; MANAGE deletes it.
Its entrypoint is code the scheduler's workers import and run with the store's
credentials, so registering a pipeline, or changing its entrypoint, needs the admin role:
pipeline code is deployed by an admin, as DAG files are in Airflow.
A run and a schedule are the pipeline's: a caller who may not read the pipeline is told
they do not exist. A trigger watches a monitor, a feature group or a model: whoever
creates it must be able to read that too (its runs would reveal when it changes).

The service only records: runs are executed by the scheduler's workers, or in the
caller's own process (``plinth.pipelines.runner``), which write their progress through
``plinth.pipelines.records``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, Unavailable
from plinth.pipelines import records, rows, validation
from plinth.pipelines.types import (
    FINISHED,
    RUN_STATUSES,
    PipelineInfo,
    PipelineRun,
    PipelineSpec,
    Schedule,
    ScheduleSpec,
)
from plinth.store.engine import Store
from plinth.store.schema import (
    alerts,
    feature_commits,
    feature_groups,
    monitors,
    pipeline_runs,
    pipeline_schedules,
    pipeline_steps,
    pipelines,
    registered_models,
    score_jobs,
)
from plinth.store.sql import check_max_results, decode_page_token, encode_page_token, now_ms
from plinth.tracking.types import Page

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from plinth.tracking.service import TrackingService


class PipelineService:
    """Pipelines, their runs and schedules. ``tracking`` reads the steps' logs (artifacts
    of each pipeline run's tracking run)."""

    def __init__(self, store: Store, tracking: TrackingService | None = None) -> None:
        self.store = store
        self.tracking = tracking

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- pipelines -------------------------------------------------------------------------

    @endpoint("POST", "/pipelines")
    @guarded(role=Role.EDITOR)
    def register_pipeline(self, spec: PipelineSpec) -> PipelineInfo:
        """Register a pipeline (its creator owns it), or register one again: that needs
        WRITE on it and replaces its steps, params, limits and description (its owner, runs
        and schedules stay).

        The entrypoint is code the scheduler's workers import and run with the store's
        credentials: registering a new pipeline, or changing an existing one's entrypoint,
        needs the admin role (pipeline code is deployed by an admin, as DAG files are in
        Airflow)."""
        checked = validation.check_pipeline(spec)
        name = checked.name
        with self.store.read() as conn:
            row = rows.pipeline_row(conn, name)
        existed = None if row is None else str(row.entrypoint)
        self._may_register(checked, existed)
        at = now_ms()
        columns = rows.pipeline_columns(checked)
        with self.store.write() as conn:
            found = _lock(conn, name)
            now = None if found is None else str(found.entrypoint)
            if now != existed:  # registered, deleted or changed by another caller meanwhile
                self._may_register(checked, now, log=False)
            if found is None:
                conn.execute(
                    insert(pipelines).values(
                        name=name,
                        owner=self.access.actor(),
                        created_at=at,
                        updated_at=at,
                        **columns,
                    )
                )
                self.access.on_created(conn, Kind.PIPELINE, name)
            else:
                conn.execute(
                    update(pipelines)
                    .where(pipelines.c.name == name)
                    .values(updated_at=at, **columns)
                )
            return rows.load_pipeline(conn, name)

    def _may_register(self, spec: PipelineSpec, existing: str | None, log: bool = True) -> None:
        """A new pipeline, or a new entrypoint, needs an admin; the same one again, WRITE
        on the pipeline (checked first: a pipeline the caller may not read is not found)."""
        name = spec.name
        if existing is not None:
            self.access.require(Action.WRITE, Kind.PIPELINE, name, repr(name), log=log)
            if existing == spec.entrypoint:
                return
        doing = (
            "register a pipeline"
            if existing is None
            else f"change the entrypoint of pipeline {name!r} (from {existing!r})"
        )
        try:
            self.access.require_role(Role.ADMIN, doing)
        except PermissionDenied as exc:
            raise PermissionDenied(
                f"{exc.message}; the scheduler's workers run a pipeline's code with the "
                "store's credentials, so an admin deploys it"
            ) from None

    @endpoint("GET", "/pipelines")
    @guarded()
    def list_pipelines(
        self, max_results: int = 100, page_token: str | None = None
    ) -> Page[PipelineInfo]:
        """The pipelines the caller may read, by name."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        query = select(pipelines).order_by(pipelines.c.name)
        visible = self.access.visible(Kind.PIPELINE)
        if visible is not None:
            query = query.where(pipelines.c.name.in_(visible))
        with self.store.read() as conn:
            found = conn.execute(query.offset(offset).limit(limit + 1)).all()
        items = [rows.pipeline_of(row) for row in found[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(found) > limit else None)

    @endpoint("GET", "/pipelines/{name}")
    @guarded(Action.READ, Kind.PIPELINE, "name")
    def get_pipeline(self, name: str) -> PipelineInfo:
        with self.store.read() as conn:
            return rows.load_pipeline(conn, name)

    @endpoint("DELETE", "/pipelines/{name}")
    @guarded(Action.MANAGE, Kind.PIPELINE, "name")
    def delete_pipeline(self, name: str) -> None:
        """Delete a pipeline with its schedules, runs and their steps (owner or admin);
        refused while a run of it is queued or running (cancel those first)."""
        r = pipeline_runs.c
        with self.store.write() as conn:
            if _lock(conn, name) is None:
                raise NotFound(f"pipeline {name!r} does not exist")
            active = conn.execute(
                select(func.count())
                .select_from(pipeline_runs)
                .where(r.pipeline == name, r.status.in_(("queued", "running")))
            ).scalar_one()
            if active:
                raise Conflict(
                    f"pipeline {name!r} has {active} queued or running run(s): cancel them "
                    "first (plinth pipelines cancel RUN)"
                )
            runs_of = select(r.id).where(r.pipeline == name).scalar_subquery()
            conn.execute(delete(pipeline_steps).where(pipeline_steps.c.pipeline_run.in_(runs_of)))
            conn.execute(delete(pipeline_runs).where(r.pipeline == name))
            conn.execute(delete(pipeline_schedules).where(pipeline_schedules.c.pipeline == name))
            conn.execute(delete(pipelines).where(pipelines.c.name == name))
            self.access.on_deleted(conn, Kind.PIPELINE, name)
        self.access.record("pipeline_deleted", f"pipeline:{name}")

    # -- runs ------------------------------------------------------------------------------

    @endpoint("POST", "/pipelines/{name}/runs")
    @guarded(Action.WRITE, Kind.PIPELINE, "name")
    def queue_run(self, name: str, params: dict[str, Any] | None = None) -> PipelineRun:
        """Queue a run for the scheduler's workers (trigger ``manual``); ``params`` go over
        the pipeline's own. A failed run is retried as the pipeline's ``retries`` say."""
        given = validation.check_params(params, "params")
        with self.store.read() as conn:
            info = rows.load_pipeline(conn, name)
        return self._queue(
            pipeline=name, trigger="manual", params=given, max_attempts=1 + info.retries
        )

    @endpoint("GET", "/pipelines/{name}/runs")
    @guarded(Action.READ, Kind.PIPELINE, "name")
    def list_runs(
        self,
        name: str,
        status: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[PipelineRun]:
        """A pipeline's runs, newest first (without their steps); only one status's if
        given."""
        return self._runs_page([name], status, max_results, page_token)

    @endpoint("GET", "/pipeline-runs")
    @guarded()
    def list_all_runs(
        self, status: str | None = None, max_results: int = 100, page_token: str | None = None
    ) -> Page[PipelineRun]:
        """The runs of every pipeline the caller may read, newest first (without their
        steps); only one status's if given."""
        visible = self.access.visible(Kind.PIPELINE)
        return self._runs_page(
            None if visible is None else sorted(visible), status, max_results, page_token
        )

    @endpoint("GET", "/pipeline-runs/{run_id}")
    @guarded(check=lambda access, arguments: _on_run(access, arguments, Action.READ))
    def get_run(self, run_id: int) -> PipelineRun:
        """A run with its steps (READ on its pipeline)."""
        with self.store.read() as conn:
            return rows.load_run(conn, run_id)

    @endpoint("GET", "/pipeline-runs/{run_id}/logs")
    @guarded(check=lambda access, arguments: _on_run(access, arguments, Action.READ))
    def run_logs(self, run_id: int, step: str | None = None) -> str:
        """The captured logs of a run's steps (logging, stdout and stderr), each under a
        header naming the step; only ``step``'s log (no header) if given. A step that has
        not started yet has none. Reading them also needs READ on the run's experiment."""
        with self.store.read() as conn:
            run = rows.load_run(conn, run_id)
        steps = run.steps
        if step is not None:
            steps = [s for s in run.steps if s.name == step]
            if not steps:
                names = ", ".join(s.name for s in run.steps) or "none yet"
                raise NotFound(f"pipeline run {run_id} has no step {step!r} (its steps: {names})")
        parts = []
        for found in steps:
            text = self._log_of(run, found.name, found.log_path)
            if step is not None:
                return text or ""
            if text is not None:
                parts.append(f"== {found.name} ({found.status}) ==\n{text.rstrip()}\n")
        return "".join(parts)

    def _log_of(self, run: PipelineRun, step: str, log_path: str | None) -> str | None:
        if run.run_id is None:
            return None  # not started yet
        if self.tracking is None:
            raise Unavailable("this server reads no artifacts: logs are not available")
        try:
            with self.tracking.open_artifact_reader(
                run.run_id, log_path or f"pipeline/{step}/log.txt"
            ) as reader:
                data: bytes = reader.read()
        except NotFound as exc:
            if "artifact" in exc.message:  # the step's log, not its run: none written (yet)
                return None
            raise NotFound(
                f"the logs of pipeline run {run.id} are in tracking run {run.run_id}, which "
                "does not exist or which you may not read (ask for read on its experiment)"
            ) from None
        return data.decode("utf-8", errors="replace")

    @endpoint("POST", "/pipeline-runs/{run_id}/rerun")
    @guarded(check=lambda access, arguments: _on_run(access, arguments, Action.WRITE))
    def rerun(self, run_id: int, from_step: str | None = None) -> PipelineRun:
        """Queue a new run of a finished run's pipeline with the same params (trigger
        ``rerun``), resuming at ``from_step``: the steps before it take their outputs from
        ``run_id``, so each must be done there (succeeded, cached or reused). Without
        ``from_step``: at the first step that did not succeed (all did: a fresh run)."""
        with self.store.read() as conn:
            before = rows.load_run(conn, run_id)
            if before.status not in FINISHED:
                raise Conflict(
                    f"pipeline run {run_id} is {before.status}: rerun a finished run (or "
                    "cancel it first)"
                )
            info = rows.load_pipeline(conn, before.pipeline)
        names = [s.name for s in before.steps] or info.steps
        if from_step is not None and from_step not in names:
            raise InvalidArgument(
                f"from_step: pipeline run {run_id} has no step {from_step!r}: give one of "
                f"{', '.join(names) or '(none recorded)'}"
            )
        if from_step is None:
            from_step = next(
                (s.name for s in before.steps if s.status not in records.DONE_STEPS), None
            )
        # a resume from the first step reuses nothing: a fresh run with the same params
        resumes = from_step is not None and bool(names) and from_step != names[0]
        if resumes and from_step is not None:
            validation.check_resume(before, from_step, names)
        return self._queue(
            pipeline=before.pipeline,
            trigger="rerun",
            params=before.params,
            max_attempts=1 + info.retries,
            resumed_from=run_id if resumes else None,
            from_step=from_step if resumes else None,
        )

    @endpoint("POST", "/pipeline-runs/{run_id}/cancel")
    @guarded(check=lambda access, arguments: _on_run(access, arguments, Action.WRITE))
    def cancel_run(self, run_id: int) -> PipelineRun:
        """Cancel a queued run (it never starts) or a running one (its worker sees it at
        its next heartbeat and stops; the scheduler ends its process). A run cancelled
        already is returned as it is; a finished one cannot be cancelled."""
        at = now_ms()
        r = pipeline_runs.c
        with self.store.write() as conn:
            row = conn.execute(
                select(pipeline_runs).where(r.id == run_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"pipeline run {run_id} does not exist")
            if row.status in FINISHED:
                if row.status == "cancelled":
                    return rows.load_run(conn, run_id)
                raise Conflict(
                    f"pipeline run {run_id} has {row.status} already: only a queued or "
                    "running run can be cancelled"
                )
            message = f"cancelled by {self.access.actor()}"
            conn.execute(
                update(pipeline_runs)
                .where(r.id == run_id, r.status == row.status)
                .values(status="cancelled", finished_at=at, error=message)
            )
            s = pipeline_steps.c
            conn.execute(
                update(pipeline_steps)
                .where(s.pipeline_run == run_id, s.status == "running")
                .values(status="failed", finished_at=at, error=message)
            )
            conn.execute(
                update(pipeline_steps)
                .where(s.pipeline_run == run_id, s.status == "pending")
                .values(status="skipped")
            )
            return rows.load_run(conn, run_id)

    def _queue(self, **fields: Any) -> PipelineRun:
        with self.store.write() as conn:
            made = records.insert_run(conn, created_by=self.access.actor(), **fields)
            if made is None:  # only a schedule's trigger key can be taken already
                raise Conflict(f"pipeline {fields['pipeline']!r}: this run is queued already")
            return rows.load_run(conn, made, steps=False)

    def _runs_page(
        self,
        names: list[str] | None,
        status: str | None,
        max_results: int,
        page_token: str | None,
    ) -> Page[PipelineRun]:
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        r = pipeline_runs.c
        query = select(pipeline_runs).order_by(r.id.desc())
        if names is not None:
            query = query.where(r.pipeline.in_(names))
        if status is not None:
            if status not in RUN_STATUSES:
                raise InvalidArgument(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
            query = query.where(r.status == status)
        with self.store.read() as conn:
            found = conn.execute(query.offset(offset).limit(limit + 1)).all()
        items = [records.run_from_row(row) for row in found[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(found) > limit else None)

    # -- schedules and triggers --------------------------------------------------------------

    @endpoint("POST", "/pipelines/{name}/schedules")
    @guarded(Action.WRITE, Kind.PIPELINE, "name")
    def create_schedule(self, name: str, spec: ScheduleSpec) -> Schedule:
        """Run the pipeline on a cron schedule, or on each new alert of a monitor / commit
        of a feature group / score job of a model (``spec.target``, which the caller must
        be able to read). Only what happens from now on starts runs: a cron schedule's
        first run is its next occurrence, a trigger's the next new event."""
        checked = validation.check_schedule(spec)
        if checked.target is not None:
            self._require_target(checked.kind, checked.target)
        at = now_ms()
        with self.store.write() as conn:
            if _lock(conn, name) is None:
                raise NotFound(f"pipeline {name!r} does not exist")
            made = conn.execute(
                insert(pipeline_schedules)
                .returning(pipeline_schedules.c.id)
                .values(
                    pipeline=name,
                    kind=checked.kind,
                    cron=checked.cron,
                    timezone=checked.timezone,
                    target=checked.target,
                    params=json.dumps(checked.params),
                    catchup=checked.catchup,
                    paused=False,
                    cursor=_start_cursor(conn, checked.kind, checked.target, at),
                    created_by=self.access.actor(),
                    created_at=at,
                    updated_at=at,
                )
            ).scalar_one()
            return rows.load_schedule(conn, int(made))

    @endpoint("GET", "/pipelines/{name}/schedules")
    @guarded(Action.READ, Kind.PIPELINE, "name")
    def list_schedules(self, name: str) -> list[Schedule]:
        """A pipeline's schedules and triggers, oldest first."""
        with self.store.read() as conn:
            rows.load_pipeline(conn, name)
            return self._schedules(conn, [name])

    @endpoint("GET", "/pipeline-schedules")
    @guarded()
    def list_all_schedules(self) -> list[Schedule]:
        """The schedules and triggers of every pipeline the caller may read, oldest first."""
        visible = self.access.visible(Kind.PIPELINE)
        with self.store.read() as conn:
            return self._schedules(conn, None if visible is None else sorted(visible))

    @endpoint("POST", "/pipeline-schedules/{schedule_id}/pause")
    @guarded(check=lambda access, arguments: _on_schedule(access, arguments))
    def pause_schedule(self, schedule_id: int) -> Schedule:
        """Stop a schedule starting runs (its queued runs stay queued)."""
        return self._set_paused(schedule_id, True)

    @endpoint("POST", "/pipeline-schedules/{schedule_id}/resume")
    @guarded(check=lambda access, arguments: _on_schedule(access, arguments))
    def resume_schedule(self, schedule_id: int) -> Schedule:
        """Let a paused schedule start runs again, from now on: what it missed while paused
        (cron occurrences, events) does not run. One not paused stays as it is. A trigger's
        resumer must be able to read what it watches, as its creator had to."""
        with self.store.read() as conn:
            row = rows.schedule_row(conn, schedule_id)
        if row is not None and row.target is not None:  # a schedule's target never changes
            self._require_target(row.kind, row.target, f"pipeline schedule {schedule_id}")
        return self._set_paused(schedule_id, False)

    @endpoint("DELETE", "/pipeline-schedules/{schedule_id}")
    @guarded(check=lambda access, arguments: _on_schedule(access, arguments))
    def delete_schedule(self, schedule_id: int) -> None:
        """Delete a schedule (the runs it started stay)."""
        with self.store.write() as conn:
            rows.load_schedule(conn, schedule_id)
            conn.execute(delete(pipeline_schedules).where(pipeline_schedules.c.id == schedule_id))

    def _set_paused(self, schedule_id: int, paused: bool) -> Schedule:
        at = now_ms()
        c = pipeline_schedules.c
        with self.store.write() as conn:
            row = conn.execute(
                select(pipeline_schedules).where(c.id == schedule_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"pipeline schedule {schedule_id} does not exist")
            if bool(row.paused) != paused:
                values: dict[str, Any] = {"paused": paused, "updated_at": at}
                if not paused:
                    values["cursor"] = _start_cursor(conn, row.kind, row.target, at)
                conn.execute(update(pipeline_schedules).where(c.id == schedule_id).values(values))
            return rows.load_schedule(conn, schedule_id)

    def _schedules(self, conn: Connection, names: list[str] | None) -> list[Schedule]:
        c = pipeline_schedules.c
        query = select(pipeline_schedules).order_by(c.id)
        if names is not None:
            query = query.where(c.pipeline.in_(names))
        return [rows.schedule_of(row) for row in conn.execute(query)]

    def _require_target(self, kind: str, target: str, field: str = "spec.target") -> None:
        """A trigger fires on changes of what it watches: whoever creates or resumes it
        must be able to read that (else, as for one that does not exist, it is not
        found)."""
        resource, table, label = _WATCHED[kind]
        try:
            self.access.require(Action.READ, resource, target, repr(target), log=False)
        except NotFound as exc:
            raise NotFound(f"{field}: {exc.message}") from None
        with self.store.read() as conn:
            found = conn.execute(select(table.c.name).where(table.c.name == target)).first()
        if found is None:
            raise NotFound(f"{field}: {label} {target!r} does not exist")


# -- permissions of runs and schedules: their pipeline's --------------------------------------

_WATCHED = {
    "alert": (Kind.MONITOR, monitors, "monitor"),
    "commit": (Kind.FEATURE_GROUP, feature_groups, "feature group"),
    "score_job": (Kind.MODEL, registered_models, "registered model"),
}


def _on_run(access: Access, arguments: dict[str, Any], action: Action) -> None:
    """read (get, logs) or write (rerun, cancel) on the run's pipeline"""
    run_id = arguments["run_id"]
    with access.store.read() as conn:
        name = conn.execute(
            select(pipeline_runs.c.pipeline).where(pipeline_runs.c.id == run_id)
        ).scalar()
    if name is None:
        return  # the method says it does not exist
    try:
        access.require(action, Kind.PIPELINE, str(name), repr(str(name)))
    except NotFound:  # in the words used for a run that is not there
        raise NotFound(f"pipeline run {run_id} does not exist") from None


def _on_schedule(access: Access, arguments: dict[str, Any]) -> None:
    """write on the schedule's pipeline"""
    schedule_id = arguments["schedule_id"]
    with access.store.read() as conn:
        name = conn.execute(
            select(pipeline_schedules.c.pipeline).where(pipeline_schedules.c.id == schedule_id)
        ).scalar()
    if name is None:
        return
    try:
        access.require(Action.WRITE, Kind.PIPELINE, str(name), repr(str(name)))
    except NotFound:
        raise NotFound(f"pipeline schedule {schedule_id} does not exist") from None


# -- where a new (or resumed) schedule starts: now, so history never fires ------------------------

_NEWEST: dict[str, Callable[[str], Any]] = {
    "alert": lambda target: select(func.max(alerts.c.id)).where(alerts.c.monitor == target),
    "commit": lambda target: select(func.max(feature_commits.c.id)).where(
        feature_commits.c.group_name == target
    ),
    "score_job": lambda target: select(func.max(score_jobs.c.id)).where(
        score_jobs.c.model_name == target
    ),
}


def _start_cursor(conn: Connection, kind: str, target: str | None, at: int) -> int:
    """A cron schedule's cursor is the last occurrence enqueued (now: the next one is the
    first to run); a trigger's is the newest event id seen (the current newest, or 0)."""
    if kind == "cron":
        return at
    newest = conn.execute(_NEWEST[kind](str(target))).scalar()
    return int(newest or 0)


def _lock(conn: Connection, name: str) -> Any:
    # registering again, scheduling and deleting take turns on the pipeline (a PostgreSQL
    # row lock; SQLite's writers already queue)
    return conn.execute(
        select(pipelines.c.name, pipelines.c.entrypoint)
        .where(pipelines.c.name == name)
        .with_for_update()
    ).first()
