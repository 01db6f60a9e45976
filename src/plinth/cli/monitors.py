"""``plinth monitors``: named drift and performance checks of feature groups and models,
on a schedule or on each new commit / score job; their evaluations and alerts, locally or
against a server."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from plinth.cli.common import JsonOption, _client, _print_json, _say, _table, err, out
from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    from plinth.monitoring.service import MonitorService
    from plinth.monitoring.types import Evaluation, Monitor

monitors_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Monitors: drift of a feature group's commits, of a model's inputs and predictions, "
        "its measured or estimated performance; evaluations and alerts."
    ),
)
NameArgument = Annotated[str, typer.Argument(help="the monitor's name")]
EXIT_ERROR = 1  # the check itself failed (status error)
EXIT_BREACH = 3  # with --fail-on-breach: the monitor breached

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d+)([smhd]?)")


def _service() -> MonitorService:
    service: MonitorService = _client().monitors
    return service


def parse_seconds(value: str, option: str) -> int:
    """``90``, ``30m``, ``1h``, ``7d`` as seconds; InvalidArgument names the option."""
    found = _DURATION.fullmatch(value.strip().lower())
    if found is None:
        raise InvalidArgument(
            f"{option}: {value!r} is not a duration: give seconds (3600) or 30m, 1h, 7d"
        )
    return int(found.group(1)) * _UNITS[found.group(2) or "s"]


@monitors_app.command("create")
def create(
    name: NameArgument,
    kind: Annotated[
        str,
        typer.Option(
            help="feature_drift, input_drift, prediction_drift, performance, estimated_performance"
        ),
    ],
    target: Annotated[
        str, typer.Option(help="a feature group (feature_drift), else a registered model")
    ],
    reference: Annotated[
        str | None,
        typer.Option(
            help="group (default), previous, days:N or commit:V (feature groups); training (models)"
        ),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="the current window of a model's traffic: 1d, 6h...")
    ] = None,
    columns: Annotated[str | None, typer.Option(help="only these columns: a,b,c")] = None,
    preset: Annotated[str | None, typer.Option(help="plinth or evidently")] = None,
    max_drifted_share: Annotated[
        float | None, typer.Option(help="drift kinds: breach at this share of drifted columns")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="performance kinds: auc, accuracy, f1, log_loss, rmse, mae")
    ] = None,
    min_value: Annotated[float | None, typer.Option(help="breach below this value")] = None,
    max_value: Annotated[float | None, typer.Option(help="breach above this value")] = None,
    tolerance: Annotated[
        float | None, typer.Option(help="without bounds: the validation metric -/+ this")
    ] = None,
    model_version: Annotated[
        int | None, typer.Option(help="this version (default: production, else the newest)")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="evaluate every 30m, 1h, 1d or N seconds (60 at least)")
    ] = None,
    on_event: Annotated[
        bool, typer.Option("--on-event", help="evaluate on each new commit / score job")
    ] = False,
    webhook: Annotated[str | None, typer.Option(help="POST each alert to this http(s) URL")] = None,
    cooldown: Annotated[
        str, typer.Option(help="no new alert for the same finding within this time")
    ] = "1h",
    json_: JsonOption = False,
) -> None:
    """Create a monitor. Without a schedule or --on-event it runs only with
    ``plinth monitors run``."""
    given = {
        "reference": reference,
        "window_seconds": None if window is None else parse_seconds(window, "--window"),
        "columns": None if columns is None else [c.strip() for c in columns.split(",")],
        "preset": preset,
        "max_drifted_share": max_drifted_share,
        "metric": metric,
        "min_value": min_value,
        "max_value": max_value,
        "tolerance": tolerance,
        "model_version": model_version,
    }
    spec = {k: v for k, v in given.items() if v is not None}
    made = _service().create_monitor(
        name,
        kind,
        target,
        spec or None,  # type: ignore[arg-type]  # the service checks and coerces it
        schedule_seconds=None if schedule is None else parse_seconds(schedule, "--schedule"),
        on_event=on_event,
        webhook_url=webhook,
        cooldown_seconds=parse_seconds(cooldown, "--cooldown"),
    )
    _say(json_, made, f"created monitor {made.name} ({made.kind} on {made.target}): {_when(made)}")


@monitors_app.command("list")
def list_(
    kind: Annotated[str | None, typer.Option(help="only this kind's")] = None,
    target: Annotated[str | None, typer.Option(help="only this target's")] = None,
    json_: JsonOption = False,
) -> None:
    """List the monitors you may see."""
    found = _service().list_monitors(kind, target).items
    if json_:
        return _print_json(found)
    rows = [
        (m.name, m.kind, m.target, _when(m), "yes" if m.enabled else "no", m.last_run_at, m.owner)
        for m in found
    ]
    columns = ("name", "kind", "target", "runs", "enabled", "last run", "owner")
    out.print(_table("monitors", columns, rows))


@monitors_app.command("show")
def show(
    name: NameArgument,
    last: Annotated[int, typer.Option(help="evaluations shown")] = 10,
    json_: JsonOption = False,
) -> None:
    """A monitor's check, thresholds, triggers and its latest evaluations."""
    service = _service()
    monitor = service.get_monitor(name)
    evaluations = service.list_evaluations(name, max_results=last).items
    if json_:
        return _print_json({"monitor": monitor, "evaluations": evaluations})
    spec = monitor.spec
    facts: list[tuple[Any, ...]] = [
        ("kind", monitor.kind),
        ("target", monitor.target),
        ("enabled", "yes" if monitor.enabled else "no"),
        ("runs", _when(monitor)),
        ("reference", spec.reference),
        ("columns", ", ".join(spec.columns) if spec.columns else "all"),
    ]
    if monitor.kind in ("performance", "estimated_performance"):
        bounds = f"min {spec.min_value}, max {spec.max_value}"
        if spec.min_value is None and spec.max_value is None:
            bounds = f"validation metric -/+ {spec.tolerance:g}"
        facts += [("metric", spec.metric), ("bounds", bounds)]
    else:
        facts += [("preset", spec.preset), ("breach at drifted share", spec.max_drifted_share)]
    if monitor.kind != "feature_drift":
        facts += [("window", _duration(spec.window_seconds)), ("model version", spec.model_version)]
    facts += [
        ("webhook", monitor.webhook_url),
        ("cooldown", _duration(monitor.cooldown_seconds)),
        ("owner", monitor.owner),
        ("last run", monitor.last_run_at),
        ("last event", monitor.last_event),
    ]
    out.print(_table(f"monitor {monitor.name}", ("", ""), facts))
    out.print(_evaluations_table(evaluations, "latest evaluations"))


@monitors_app.command("run")
def run(
    name: NameArgument,
    fail_on_breach: Annotated[
        bool, typer.Option("--fail-on-breach", help=f"exit {EXIT_BREACH} on a breach")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Evaluate a monitor now and print what it found. Exits 0 when the check ran (ok,
    breach or skipped), 1 when the check itself failed, and with --fail-on-breach 3 on a
    breach."""
    found = _service().run_monitor(name)
    if json_:
        _print_json(found)
    else:
        alert = ""
        if found.alert_id is not None:
            alert = f" -> alert {found.alert_id} (plinth monitors ack {found.alert_id})"
        elif found.suppressed_by is not None:
            alert = f" (within the cooldown of alert {found.suppressed_by}: no new alert)"
        color = {"ok": "green", "breach": "red", "error": "red"}.get(found.status, "yellow")
        out.print(
            f"[{color}]{found.status}[/{color}] {escape(found.summary)}{escape(alert)}",
            highlight=False,
            soft_wrap=True,
        )
    if found.status == "error":
        raise typer.Exit(EXIT_ERROR)
    if found.status == "breach" and fail_on_breach:
        raise typer.Exit(EXIT_BREACH)


@monitors_app.command("evaluations")
def evaluations(
    name: NameArgument,
    status: Annotated[str | None, typer.Option(help="ok, breach, error or skipped")] = None,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
) -> None:
    """A monitor's evaluations, newest first."""
    found = _service().list_evaluations(name, status, max_results).items
    if json_:
        return _print_json(found)
    out.print(_evaluations_table(found, f"evaluations of {name}"))


@monitors_app.command("alerts")
def alerts(
    monitor: Annotated[str | None, typer.Option(help="only this monitor's")] = None,
    open_: Annotated[bool, typer.Option("--open", help="only those not acknowledged")] = False,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
) -> None:
    """Alerts of the monitors you may see, newest first."""
    found = _service().list_alerts(monitor, "open" if open_ else None, max_results).items
    if json_:
        return _print_json(found)
    rows = [
        (
            a.id,
            a.at,
            a.monitor,
            a.severity,
            a.status,
            a.message,
            _delivery(a.delivery, a.attempts, a.last_error),
        )
        for a in found
    ]
    columns = ("id", "at", "monitor", "severity", "status", "message", "webhook")
    out.print(_table("alerts", columns, rows))


@monitors_app.command("ack")
def ack(
    alert_id: Annotated[int, typer.Argument(help="the alert's id")], json_: JsonOption = False
) -> None:
    """Acknowledge an alert: seen, being dealt with."""
    done = _service().acknowledge_alert(alert_id)
    _say(json_, done, f"alert {done.id} acknowledged by {done.acknowledged_by}")


@monitors_app.command("enable")
def enable(name: NameArgument, json_: JsonOption = False) -> None:
    """Let the scheduler evaluate a monitor again."""
    done = _service().update_monitor(name, enabled=True)
    _say(json_, done, f"monitor {done.name} enabled: {_when(done)}")


@monitors_app.command("disable")
def disable(name: NameArgument, json_: JsonOption = False) -> None:
    """Stop the scheduler evaluating a monitor (it can still be run by hand)."""
    done = _service().update_monitor(name, enabled=False)
    _say(json_, done, f"monitor {done.name} disabled")


@monitors_app.command("delete")
def delete(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    json_: JsonOption = False,
) -> None:
    """Delete a monitor with its evaluations and alerts."""
    if not yes and not typer.confirm(
        f"delete monitor {name} and its evaluations and alerts?", err=True
    ):
        raise typer.Exit(1)
    _service().delete_monitor(name)
    _say(json_, {"deleted": name}, f"deleted monitor {name}")


@monitors_app.command("tick")
def tick(json_: JsonOption = False) -> None:
    """One pass of the monitor scheduler, as the server runs it in the background: due and
    event-triggered monitors evaluated, failed webhook deliveries retried (admins only).
    Exits 1 when a monitor could not be evaluated."""
    done = _service().tick_monitors()
    if json_:
        _print_json(done)
    else:
        rows = [(a.monitor, a.action, a.detail, a.evaluation_id, a.alert_id) for a in done]
        columns = ("monitor", "action", "detail", "evaluation", "alert")
        out.print(_table("monitor scheduler", columns, rows) if rows else "nothing was due")
    failed = sorted({a.monitor for a in done if a.action == "error"})
    if failed:
        err.print(f"[red]error:[/red] could not evaluate {escape(', '.join(failed))}")
        raise typer.Exit(EXIT_ERROR)


def _evaluations_table(found: list[Evaluation], title: str) -> Any:
    rows = [
        (
            e.id,
            e.at,
            e.status,
            e.trigger,
            e.summary,
            e.alert_id if e.alert_id is not None else _cooldown(e.suppressed_by),
        )
        for e in found
    ]
    return _table(title, ("id", "at", "status", "trigger", "summary", "alert"), rows)


def _cooldown(alert_id: int | None) -> str | None:
    return None if alert_id is None else f"(cooldown of {alert_id})"


def _delivery(state: str, attempts: int, error: str | None) -> str:
    if state == "none":
        return "-"
    tried = f" after {attempts} attempts" if attempts else ""
    return f"{state}{tried}" + (f": {error}" if error and state != "delivered" else "")


def _when(monitor: Monitor) -> str:
    parts = []
    if monitor.schedule_seconds is not None:
        parts.append(f"every {_duration(monitor.schedule_seconds)}")
    if monitor.on_event:
        parts.append(
            "on each new commit" if monitor.kind == "feature_drift" else "on each score job"
        )
    return " and ".join(parts) or "by hand only"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


from plinth.cli.monitors_report import report as _report  # noqa: E402

monitors_app.command("report")(_report)
