"""``plinth pipelines``: register pipelines, run them here or queue them for the scheduler,
follow their runs, steps and logs, rerun from a step, schedule them on cron or on a
monitor's alerts, a feature group's commits or a model's score jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from plinth.cli.common import JsonOption, _client, _pairs, _print_json, _say, _table, err, out
from plinth.cli.pipelines_here import run_here, seconds_of
from plinth.errors import InvalidArgument, PlinthError

if TYPE_CHECKING:
    from plinth.pipelines.pipeline import Pipeline
    from plinth.pipelines.service import PipelineService
    from plinth.pipelines.types import PipelineRun, Schedule, StepRun

pipelines_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Pipelines: steps of plain Python run here or by `plinth scheduler`, on cron "
        "schedules or on alerts, commits and score jobs; their runs, steps and logs."
    ),
)
NameArgument = Annotated[str, typer.Argument(help="the pipeline's name")]
RunArgument = Annotated[int, typer.Argument(help="the pipeline run's id")]
ScheduleArgument = Annotated[int, typer.Argument(help="the schedule's id")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="a run param, name=value (value read as JSON if it is)"),
]
QueueOption = Annotated[
    bool,
    typer.Option("--queue", help="queue it for `plinth scheduler` instead of running it here"),
]


def _service() -> PipelineService:
    service: PipelineService = _client().pipelines
    return service


def parse_params(given: list[str] | None) -> dict[str, Any]:
    """``name=value`` pairs; a value that reads as JSON (3, 0.5, true, [1,2]) is that,
    anything else is text."""
    params: dict[str, Any] = {}
    for pair in given or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidArgument(f"--param: {pair!r} is not name=value")
        try:
            params[name.strip()] = json.loads(value)
        except ValueError:
            params[name.strip()] = value
    return params


def load(entrypoint: str) -> Pipeline:
    """The pipeline at ``entrypoint``; an exception while importing the user's code is a
    refusal naming it, not a crash of the CLI."""
    from plinth.pipelines.entrypoints import load_pipeline

    # as `python -m` does: a module of the current folder (the project's) is importable,
    # though the `plinth` script's own folder is first on the path
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return load_pipeline(entrypoint)
    except PlinthError:
        raise
    except Exception as exc:
        raise InvalidArgument(
            f"could not load pipeline {entrypoint!r}: {type(exc).__name__}: {exc}"
        ) from None


def _portable(entrypoint: str) -> str:
    """A file's entrypoint with its absolute path: workers run from another folder."""
    module, _, attr = entrypoint.rpartition(":")
    if module.endswith(".py") or "/" in module:
        return f"{Path(module).resolve()}:{attr}"
    return entrypoint


# -- pipelines ---------------------------------------------------------------------------------


@pipelines_app.command("list")
def list_(json_: JsonOption = False) -> None:
    """List the pipelines you may see."""
    found = _service().list_pipelines(max_results=1000).items
    if json_:
        return _print_json(found)
    rows = [
        (p.name, " > ".join(p.steps), p.entrypoint, _limits(p.retries, p.timeout_seconds), p.owner)
        for p in found
    ]
    out.print(_table("pipelines", ("name", "steps", "entrypoint", "limits", "owner"), rows))


@pipelines_app.command("register")
def register(
    entrypoint: Annotated[
        str, typer.Argument(help="FILE.py:ATTR or package.module:ATTR naming a plinth.Pipeline")
    ],
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="also run it on this cron, e.g. '0 3 * * *'")
    ] = None,
    timezone: Annotated[str, typer.Option(help="the schedule's time zone")] = "UTC",
    retries: Annotated[int, typer.Option(help="further attempts of a failed run (0-10)")] = 0,
    backoff: Annotated[
        float, typer.Option(help="seconds before the first retry (doubling after)")
    ] = 30.0,
    timeout: Annotated[float | None, typer.Option(help="a run's limit, in seconds")] = None,
    concurrency: Annotated[int, typer.Option(help="its runs at once (1-100)")] = 1,
    json_: JsonOption = False,
) -> None:
    """Register a pipeline from its code (again: an update).

    Its code is imported here to learn its name, steps and params; the scheduler's workers
    import it from the same place. Registering a pipeline, or changing its entrypoint,
    needs the admin role; registering it again from the same entrypoint replaces its steps,
    params and limits (write on it)."""
    from plinth.pipelines import validation
    from plinth.pipelines.types import PipelineSpec, ScheduleSpec

    wanted = None
    if schedule is not None:  # refused before anything is registered
        wanted = validation.check_schedule(
            ScheduleSpec(kind="cron", cron=schedule, timezone=timezone)
        )
    pipeline = load(entrypoint)
    service = _service()
    made = service.register_pipeline(
        PipelineSpec(
            name=pipeline.name,
            entrypoint=_portable(entrypoint),
            description=pipeline.description,
            steps=pipeline.step_names,
            params=pipeline.params,
            experiment=pipeline.experiment,
            timeout_seconds=timeout,
            retries=retries,
            retry_backoff_seconds=backoff,
            concurrency=concurrency,
        )
    )
    scheduled = None
    if wanted is not None:  # registered again with the same schedule: it is not doubled
        scheduled = next(
            (
                s
                for s in service.list_schedules(made.name)
                if (s.kind, s.cron, s.timezone) == ("cron", schedule, timezone)
            ),
            None,
        ) or service.create_schedule(made.name, wanted)
    if json_:
        return _print_json({"pipeline": made, "schedule": scheduled})
    out.print(escape(f"registered pipeline {made.name}: {' > '.join(made.steps)}"), highlight=False)
    if scheduled is not None:
        out.print(escape(f"schedule {scheduled.id}: {_trigger(scheduled)}"), highlight=False)


@pipelines_app.command("delete")
def delete(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    json_: JsonOption = False,
) -> None:
    """Delete a pipeline with its schedules and runs.

    Its tracking runs stay, in its experiment."""
    if not yes and not typer.confirm(f"delete pipeline {name}, its schedules and runs?", err=True):
        raise typer.Exit(1)
    _service().delete_pipeline(name)
    _say(json_, {"deleted": name}, f"deleted pipeline {name}")


# -- runs --------------------------------------------------------------------------------------


@pipelines_app.command("run")
def run(
    target: Annotated[
        str,
        typer.Argument(
            help="a registered pipeline's name, or FILE.py:ATTR / module:ATTR to run one "
            "that is not registered"
        ),
    ],
    param: ParamOption = None,
    queue: QueueOption = False,
    json_: JsonOption = False,
) -> None:
    """Run a pipeline here, step by step, or queue it (--queue).

    Here: each step's progress is shown; exit 1 when the run fails, naming the step. With
    --queue: `plinth scheduler` runs it (registered pipelines only)."""
    params = parse_params(param)
    if ":" in target:
        if queue:
            raise InvalidArgument(
                f"--queue: the scheduler runs registered pipelines only: first "
                f"`plinth pipelines register {target}`"
            )
        pipeline = load(target)
    else:
        if queue:
            queued = _service().queue_run(target, params)
            return _say(json_, queued, f"queued pipeline run {queued.id} of {target}")
        pipeline = _registered(target)
    run_here(_client(), pipeline, json_, params=params)


@pipelines_app.command("rerun")
def rerun(
    run_id: RunArgument,
    from_step: Annotated[
        str | None,
        typer.Option("--from", help="resume at this step (default: the first that failed)"),
    ] = None,
    queue: QueueOption = False,
    json_: JsonOption = False,
) -> None:
    """Run a finished run again from a step, here or queued (--queue).

    Same params; the steps before --from (default: the first that did not succeed) take
    their outputs from RUN. Exit 1 when it fails, naming the step."""
    service = _service()
    if queue:
        queued = service.rerun(run_id, from_step)
        where = f" from step {queued.from_step}" if queued.from_step else ""
        return _say(json_, queued, f"queued pipeline run {queued.id} (rerun of {run_id}{where})")
    from plinth.pipelines.records import DONE_STEPS
    from plinth.pipelines.validation import check_resume

    before = service.get_run(run_id)
    pipeline = _registered(before.pipeline)
    if from_step is None:
        from_step = next((s.name for s in before.steps if s.status not in DONE_STEPS), None)
    if from_step is not None and from_step == pipeline.step_names[0]:
        from_step = None  # from the start: nothing to reuse
    if from_step is not None:
        pipeline.step(from_step)  # InvalidArgument naming the steps
        check_resume(before, from_step, pipeline.step_names)
    run_here(
        _client(),
        pipeline,
        json_,
        params=before.params,
        resume_from=run_id if from_step else None,
        from_step=from_step,
        trigger="rerun",
    )


@pipelines_app.command("runs")
def runs(
    name: Annotated[str | None, typer.Argument(help="only this pipeline's")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")
    ] = None,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
) -> None:
    """Pipeline runs, newest first."""
    service = _service()
    if name is None:
        found = service.list_all_runs(status, max_results).items
    else:
        found = service.list_runs(name, status, max_results).items
    if json_:
        return _print_json(found)
    rows = [
        (r.id, r.pipeline, r.status, r.trigger, r.queued_at, _took(r), r.created_by, r.error)
        for r in found
    ]
    columns = ("id", "pipeline", "status", "trigger", "queued", "took", "by", "error")
    out.print(_table("pipeline runs", columns, rows))


@pipelines_app.command("show")
def show(run_id: RunArgument, json_: JsonOption = False) -> None:
    """A run and its steps: status, duration, output, errors."""
    found = _service().get_run(run_id)
    if json_:
        return _print_json(found)
    facts: list[tuple[Any, ...]] = [
        ("pipeline", found.pipeline),
        ("status", found.status),
        ("trigger", _trigger_of(found)),
        ("params", _pairs(found.params)),
        ("attempt", f"{found.attempt} of {found.max_attempts}"),
        ("tracking run", found.run_id),
        ("queued", found.queued_at),
        ("started", found.started_at),
        ("finished", found.finished_at),
        ("worker", found.worker),
        ("by", found.created_by),
        ("error", found.error),
    ]
    out.print(_table(f"pipeline run {found.id}", ("", ""), facts))
    out.print(_steps_table(found.steps))
    for step in found.steps:
        if step.error:
            err.print(
                f"[red]step {escape(step.name)}:[/red]\n{escape(step.error)}", highlight=False
            )


@pipelines_app.command("logs")
def logs(
    run_id: RunArgument,
    step: Annotated[str | None, typer.Option(help="only this step's log")] = None,
    json_: JsonOption = False,
) -> None:
    """The captured logs (logging, stdout, stderr) of a run's steps."""
    text = _service().run_logs(run_id, step)
    if json_:
        return _print_json({"pipeline_run": run_id, "step": step, "log": text})
    out.print(escape(text), end="", highlight=False, soft_wrap=True)


@pipelines_app.command("cancel")
def cancel(run_id: RunArgument, json_: JsonOption = False) -> None:
    """Cancel a queued or running run.

    A running one stops at its worker's next heartbeat."""
    done = _service().cancel_run(run_id)
    _say(json_, done, f"pipeline run {done.id} cancelled")


# -- schedules ---------------------------------------------------------------------------------


@pipelines_app.command("schedule")
def schedule(
    name: NameArgument,
    cron: Annotated[
        str | None, typer.Option(help="a cron expression, e.g. '0 3 * * *' (03:00 daily)")
    ] = None,
    timezone: Annotated[str, typer.Option(help="the cron's time zone")] = "UTC",
    catchup: Annotated[
        str, typer.Option(help="occurrences missed while no scheduler ran: latest, all or skip")
    ] = "latest",
    on_alert: Annotated[
        str | None, typer.Option("--on-alert", help="run on each new alert of this monitor")
    ] = None,
    on_commit: Annotated[
        str | None,
        typer.Option("--on-commit", help="run on each new commit of this feature group"),
    ] = None,
    on_score_job: Annotated[
        str | None,
        typer.Option("--on-score-job", help="run on each new score job of this model"),
    ] = None,
    param: ParamOption = None,
    json_: JsonOption = False,
) -> None:
    """Run a pipeline on a cron schedule or on a trigger.

    Give exactly one of --cron, --on-alert, --on-commit, --on-score-job. Only what happens
    from now on starts runs: a cron's next occurrence, the next new event."""
    from plinth.pipelines.types import ScheduleSpec

    chosen = [
        (kind, value)
        for kind, value in (
            ("cron", cron),
            ("alert", on_alert),
            ("commit", on_commit),
            ("score_job", on_score_job),
        )
        if value is not None
    ]
    if len(chosen) != 1:
        raise InvalidArgument(
            "give exactly one of --cron, --on-alert MONITOR, --on-commit GROUP, "
            "--on-score-job MODEL"
        )
    kind, value = chosen[0]
    spec = ScheduleSpec(
        kind=kind,
        cron=value if kind == "cron" else None,
        timezone=timezone,
        target=None if kind == "cron" else value,
        params=parse_params(param),
        catchup=catchup,
    )
    made = _service().create_schedule(name, spec)
    _say(json_, made, f"schedule {made.id} of {name}: {_trigger(made)}")


@pipelines_app.command("schedules")
def schedules(
    name: Annotated[str | None, typer.Argument(help="only this pipeline's")] = None,
    json_: JsonOption = False,
) -> None:
    """Schedules and triggers, oldest first."""
    service = _service()
    found = service.list_all_schedules() if name is None else service.list_schedules(name)
    if json_:
        return _print_json(found)
    rows = [
        (s.id, s.pipeline, _trigger(s), "paused" if s.paused else "active", s.next_at, s.created_by)
        for s in found
    ]
    columns = ("id", "pipeline", "runs", "state", "next", "by")
    out.print(_table("pipeline schedules", columns, rows))


@pipelines_app.command("pause")
def pause(schedule_id: ScheduleArgument, json_: JsonOption = False) -> None:
    """Stop a schedule starting runs."""
    done = _service().pause_schedule(schedule_id)
    _say(json_, done, f"schedule {done.id} of {done.pipeline} paused")


@pipelines_app.command("resume")
def resume(schedule_id: ScheduleArgument, json_: JsonOption = False) -> None:
    """Let a paused schedule start runs again.

    From now on: what it missed while paused does not run."""
    done = _service().resume_schedule(schedule_id)
    _say(json_, done, f"schedule {done.id} of {done.pipeline} resumed: {_trigger(done)}")


@pipelines_app.command("unschedule")
def unschedule(schedule_id: ScheduleArgument, json_: JsonOption = False) -> None:
    """Delete a schedule (the runs it started stay)."""
    _service().delete_schedule(schedule_id)
    _say(json_, {"deleted": schedule_id}, f"schedule {schedule_id} deleted")


# -- running here ------------------------------------------------------------------------------


def _registered(name: str) -> Pipeline:
    info = _service().get_pipeline(name)
    pipeline = load(info.entrypoint)
    if pipeline.name != name:
        raise InvalidArgument(
            f"pipeline {name!r} is registered at {info.entrypoint}, which now holds pipeline "
            f"{pipeline.name!r}: register it again"
        )
    return pipeline


# -- how things read ---------------------------------------------------------------------------


def _steps_table(steps: list[StepRun]) -> Any:
    rows = [
        (
            s.position + 1,
            s.name,
            s.status,
            None if s.duration_seconds is None else f"{s.duration_seconds:.1f}s",
            _output(s.output),
            f"run {s.reused_from}" if s.reused_from is not None else None,
        )
        for s in steps
    ]
    return _table("steps", ("#", "step", "status", "took", "output", "reused from"), rows)


def _output(output: dict[str, Any] | None) -> str | None:
    if not output:
        return None
    summary = output.get("summary")
    return f"{output.get('kind')}: {summary}" if summary else str(output.get("kind"))


def _trigger(schedule: Schedule) -> str:
    if schedule.kind == "cron":
        return f"cron {schedule.cron} ({schedule.timezone}, catch-up {schedule.catchup})"
    label = {"alert": "alert of monitor", "commit": "commit of", "score_job": "score job of"}
    return f"each new {label.get(schedule.kind, schedule.kind)} {schedule.target}"


def _trigger_of(run: PipelineRun) -> str:
    parts = [run.trigger]
    if run.schedule_id is not None:
        parts.append(f"schedule {run.schedule_id}")
    if run.alert_id is not None:
        parts.append(f"alert {run.alert_id}")
    if run.resumed_from is not None:
        parts.append(f"resumes run {run.resumed_from} from {run.from_step}")
    if run.retry_of is not None:
        parts.append(f"retry of run {run.retry_of}")
    return ", ".join(parts)


def _took(run: PipelineRun) -> str | None:
    seconds = seconds_of(run)
    return None if seconds is None else f"{seconds:.1f}s"


def _limits(retries: int, timeout: float | None) -> str:
    parts = [f"{retries} retries" if retries else "no retries"]
    if timeout is not None:
        parts.append(f"timeout {timeout:g}s")
    return ", ".join(parts)
