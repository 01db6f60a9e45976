"""``plinth ab``: design A/B experiments between models and move them through their
lifecycle (draft -> running <-> paused -> stopped), locally or against a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from plinth.abtests.types import Status
from plinth.cli.common import (
    JsonOption,
    ReasonOption,
    _client,
    _print_json,
    _say,
    _table,
    err,
    out,
)
from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    from plinth.abtests.results import Results
    from plinth.abtests.service import AbTestService
    from plinth.abtests.types import Experiment

ab_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "A/B experiments between models: design, start, pause, resume, stop, check, "
        "promote, history; reallocate a bandit; tick runs the controller once."
    ),
)
NameArgument = Annotated[str, typer.Argument(help="the experiment's name")]


def _service() -> AbTestService:
    service: AbTestService = _client().abtests
    return service


def read_spec(path: Path) -> dict[str, Any]:
    """The arguments of ``create_abtest`` from a JSON file, checked as the API checks them;
    InvalidArgument names the file and the field at fault."""
    from plinth.abtests.design import field_path
    from plinth.abtests.service import AbTestService
    from plinth.api import endpoints_of

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: give an object of the experiment's fields")
    [create] = [ep for ep in endpoints_of(AbTestService) if ep.name == "create_abtest"]
    try:
        body = create.body_model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path(first["loc"]).lstrip(".")
        raise InvalidArgument(f"{path}: {where}: {first['msg']}") from None
    return {name: getattr(body, name) for name in type(body).model_fields}


@ab_app.command("power")
def power(
    effect: Annotated[
        float,
        typer.Option(
            help="the effect to detect: Cohen's d for means, an absolute difference for proportions"
        ),
    ],
    alpha: Annotated[float, typer.Option(help="false-positive rate")] = 0.05,
    power_: Annotated[float, typer.Option("--power", help="chance to detect the effect")] = 0.8,
    kind: Annotated[str, typer.Option(help="means or proportions")] = "means",
    baseline: Annotated[
        float | None, typer.Option(help="the control's rate (proportions only)")
    ] = None,
    arms: Annotated[int, typer.Option(help="arms, control included")] = 2,
    units_per_day: Annotated[
        float | None, typer.Option(help="units a day the arms see in all: prints the duration")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Units per arm to detect an effect (statsmodels' power analysis)."""
    from plinth.abtests.power import duration_days, sample_size

    if kind not in ("means", "proportions"):
        raise InvalidArgument(f"--kind must be means or proportions, got {kind!r}")
    found = sample_size(kind, effect, alpha, power_, arms, baseline)  # type: ignore[arg-type]
    if json_:
        return _print_json(found)
    out.print(
        f"{found.per_arm_exact:,.2f} → {found.per_arm:,} units per arm "
        f"({found.total:,} in all; {escape(found.method)})",
        highlight=False,
        soft_wrap=True,
    )
    if units_per_day is not None:
        out.print(
            f"about {duration_days(found, units_per_day):,.1f} days at {units_per_day:,g} units a day"
        )


@ab_app.command("plan")
def plan(
    name: NameArgument,
    baseline: Annotated[
        float | None, typer.Option(help="the control's current rate (a proportion KPI)")
    ] = None,
    days: Annotated[int, typer.Option(help="days of the arms' recent traffic to go by")] = 7,
    json_: JsonOption = False,
) -> None:
    """The units per arm an experiment's design needs and, from its arms' models' recent
    traffic, how many days that takes."""
    found = _service().plan_abtest(name, baseline=baseline, days=days)
    if json_:
        return _print_json(found)
    sample = found.sample
    out.print(
        f"{sample.per_arm_exact:,.2f} → {sample.per_arm:,} units per arm "
        f"({sample.total:,} in all; {escape(sample.method)})",
        highlight=False,
        soft_wrap=True,
    )
    if found.days is None:
        out.print(f"duration unknown: {escape(found.traffic_method)}", soft_wrap=True)
    else:
        out.print(
            f"about {found.days:,.1f} days at {found.units_per_day:,.0f} units a day "
            f"({escape(found.traffic_method)})",
            highlight=False,
            soft_wrap=True,
        )


@ab_app.command("create")
def create(
    spec: Annotated[Path, typer.Argument(help="a JSON file of the experiment's fields")],
    json_: JsonOption = False,
) -> None:
    """Create an experiment in draft from a JSON design: name, hypothesis, primary
    ({name, kind, event}), arms ([{name, share, model_uri or url, control}]), mde, and
    optionally guardrails, mode, unit, alpha, power, layer, traffic, and the schedule of a
    canary ({steps, every_seconds}) or a bandit ({every_seconds, floor})."""
    made = _service().create_abtest(**read_spec(spec))
    _say(json_, made, f"created A/B experiment {made.name} (draft): start it with plinth ab start")


@ab_app.command("list")
def list_(
    status: Annotated[Status | None, typer.Option(case_sensitive=False)] = None,
    layer: Annotated[str | None, typer.Option(help="only this layer's")] = None,
    json_: JsonOption = False,
) -> None:
    """List the experiments you may see."""
    found = _service().list_abtests(status, layer).items
    if json_:
        return _print_json(found)
    rows = [
        (e.name, e.status, e.mode, _arms_line(e), e.layer, e.owner, e.updated_at) for e in found
    ]
    columns = ("name", "status", "mode", "arms", "layer", "owner", "updated")
    out.print(_table("A/B experiments", columns, rows))


@ab_app.command("show")
def show(name: NameArgument, json_: JsonOption = False) -> None:
    """An experiment's design, arms and state."""
    exp = _service().get_abtest(name)
    if json_:
        return _print_json(exp)
    kpi = exp.primary
    over = f" / {kpi.denominator_event}" if kpi.denominator_event else ""
    facts: list[tuple[Any, ...]] = [
        ("status", exp.status),
        ("hypothesis", exp.hypothesis),
        ("owner", exp.owner),
        ("mode", exp.mode),
        ("unit", exp.unit),
        ("primary KPI", f"{kpi.name}: {kpi.kind} of {kpi.event}{over}"),
        ("mde / alpha / power", f"{exp.mde:g} / {exp.alpha:g} / {exp.power:g}"),
        ("layer", f"{exp.layer} ({exp.traffic:g} of its units)" if exp.layer else None),
        ("version", exp.version),
        ("created", exp.created_at),
        ("started", exp.started_at),
        ("stopped", exp.stopped_at),
    ]
    facts += [(f"guardrail {g.metric}", _bounds(g.max_drop, g.max_value)) for g in exp.guardrails]
    if exp.canary is not None:
        steps = ", ".join(f"{step:g}" for step in exp.canary.steps)
        facts.append(
            (
                "canary",
                f"challenger share {steps}, a step every {_seconds(exp.canary.every_seconds)}",
            )
        )
    if exp.bandit is not None:
        every = _seconds(exp.bandit.every_seconds)
        facts.append(("bandit", f"re-allocated every {every}, floor {exp.bandit.floor:g} per arm"))
    out.print(_table(f"A/B experiment {escape(exp.name)}", ("field", "value"), facts))
    counts = exp.allocation.counts()
    arms = [
        (a.name, "yes" if a.control else "", a.model_uri or a.url, f"{a.share:g}", counts[a.name])
        for a in exp.arms
    ]
    out.print(_table("arms", ("arm", "control", "serves", "share", "buckets"), arms))


@ab_app.command("shares")
def shares(
    name: NameArgument,
    assignments: Annotated[list[str], typer.Argument(help="ARM=SHARE, e.g. challenger=0.2")],
    reason: ReasonOption = "",
    json_: JsonOption = False,
) -> None:
    """Change arms' shares (moving only the units that must move)."""
    parsed: dict[str, float] = {}
    for item in assignments:
        arm, _, value = item.partition("=")
        try:
            parsed[arm] = float(value)
        except ValueError:
            raise InvalidArgument(f"{item!r}: give ARM=SHARE, e.g. challenger=0.2") from None
    exp = _service().update_abtest(name, shares=parsed, reason=reason)
    _say(json_, exp, f"{exp.name}: {_arms_line(exp)} (version {exp.version})")


def _transition(action: str) -> Any:
    def command(name: NameArgument, reason: ReasonOption = "", json_: JsonOption = False) -> None:
        exp = getattr(_service(), f"{action}_abtest")(name, reason=reason)
        _say(json_, exp, f"A/B experiment {exp.name} is {exp.status} (version {exp.version})")

    command.__doc__ = {
        "start": "Start a draft experiment (in a layer: if the layer has room).",
        "pause": "Pause a running experiment: every unit gets the control arm.",
        "resume": "Resume a paused experiment, every unit in the arm it had.",
        "stop": "Stop a running or paused experiment, for good.",
    }[action]
    return command


for _action in ("start", "pause", "resume", "stop"):
    ab_app.command(_action)(_transition(_action))


@ab_app.command("promote")
def promote(
    name: NameArgument,
    arm: Annotated[
        str | None, typer.Option(help="the arm to promote (default: the significant winner)")
    ] = None,
    reason: ReasonOption = "",
    force: Annotated[
        bool, typer.Option("--force", help="promote even when the sample ratio mismatches")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Move the winning arm's model version to PRODUCTION through the registry's gates,
    and stop the experiment (both histories record it). Refused when the sample-ratio-
    mismatch check is flagged, unless --force."""
    done = _service().promote_abtest(name, arm=arm, reason=reason, force=force)
    if json_:
        return _print_json(done)
    mv, exp = done.model_version, done.experiment
    line = (
        f"promoted arm {done.arm} of {exp.name}: {mv.model_name} v{mv.version} is "
        f"{mv.stage.value}; the experiment is {exp.status} (version {exp.version})"
    )
    out.print(escape(line), highlight=False, soft_wrap=True)


@ab_app.command("check")
def check(name: NameArgument, json_: JsonOption = False) -> None:
    """Stop the experiment if every arm has its planned sample or a guardrail is broken;
    say what was decided and why."""
    found = _service().check_abtest(name)
    if json_:
        return _print_json(found)
    planned = (
        "" if found.planned_per_arm is None else f"; {found.planned_per_arm:,} planned per arm"
    )
    units = ", ".join(f"{arm} {n:,}" for arm, n in found.units_by_arm.items())
    state = "stopped it" if found.stopped else f"left it {found.status}"
    lines = [f"{name}: {state} (units: {units or 'none'}{planned})"]
    lines += [f"reason: {reason}" for reason in found.reasons]
    lines += [f"note: {note}" for note in found.notes]
    for line in lines:
        out.print(escape(line), highlight=False, soft_wrap=True)


@ab_app.command("tick")
def tick(json_: JsonOption = False) -> None:
    """One pass of the controller over the running experiments, as the server runs it in
    the background: canary steps and rollbacks, bandit re-allocations, automatic stops.
    Exits non-zero when an experiment could not be controlled."""
    done = _service().tick_abtests()
    if json_:
        _print_json(done)
    else:
        rows = [
            (
                a.experiment,
                a.action,
                a.version,
                "; ".join(f"{k}: {c}" for k, c in a.changes.items()),
                a.reason,
            )
            for a in done
        ]
        columns = ("experiment", "action", "version", "changes", "reason")
        out.print(_table("A/B controller", columns, rows) if rows else "no running experiment")
    failed = [a.experiment for a in done if a.action == "error"]
    if failed:
        err.print(f"[red]error:[/red] could not control {escape(', '.join(failed))}")
        raise typer.Exit(1)


@ab_app.command("reallocate")
def reallocate(name: NameArgument, reason: ReasonOption = "", json_: JsonOption = False) -> None:
    """Re-allocate a running bandit experiment now (Thompson sampling, its floor kept),
    without waiting for its schedule; the probabilities are recorded with the shares."""
    done = _service().reallocate_abtest(name, reason=reason)
    if json_:
        return _print_json(done)
    lines = [f"{name}: re-allocated (version {done.version})"]
    lines += [f"{k}: {c}" for k, c in done.changes.items()]
    lines.append(f"reason: {done.reason}")
    for line in lines:
        out.print(escape(line), highlight=False, soft_wrap=True)


@ab_app.command("history")
def history(name: NameArgument, json_: JsonOption = False) -> None:
    """Every change to an experiment: who, when, why, what."""
    versions = _service().abtest_history(name)
    if json_:
        return _print_json(versions)
    rows = [
        (
            v.version,
            v.changed_at,
            v.changed_by,
            v.action,
            "; ".join(f"{k}: {c}" for k, c in v.changes.items()),
            v.reason,
        )
        for v in versions
    ]
    columns = ("version", "at", "by", "action", "changes", "reason")
    out.print(_table(f"history of {escape(name)}", columns, rows))


@ab_app.command("results")
def results(name: NameArgument, json_: JsonOption = False) -> None:
    """Per arm: units, KPI estimate, lifts against control with their intervals, p-value,
    Holm-adjusted p-value and the probability to beat control; SRM and guardrail warnings."""
    found = _service().abtest_results(name)
    if json_:
        return _print_json(found)
    out.print(
        _table(
            f"{escape(name)}: {escape(found.kpi.name)} ({found.kpi.kind})", _COLUMNS, _rows(found)
        )
    )
    if found.srm is not None:
        srm = found.srm
        verdict = "SAMPLE RATIO MISMATCH" if srm.flagged else "no sample ratio mismatch"
        line = f"{verdict}: p = {srm.p_value:.3g} ({srm.method}; flagged below {srm.threshold:g})"
        out.print(f"[bold red]{escape(line)}[/]" if srm.flagged else escape(line))
    for arm, look in found.sequential.items():
        line = (
            f"sequential, {arm}: lift {look.lift:+.4g}, always-valid interval "
            f"[{look.ci[0]:+.4g}, {look.ci[1]:+.4g}], p {look.p_value:.3g} ({look.method})"
        )
        out.print(escape(line), highlight=False, soft_wrap=True)
    for arm, c in found.cuped.items():
        reduction = "" if c.variance_reduction is None else f"{c.variance_reduction:.1%}"
        line = (
            f"CUPED, {arm}: lift {c.absolute_lift:+.4g} [{c.absolute_ci[0]:+.4g}, "
            f"{c.absolute_ci[1]:+.4g}], p {c.p_value:.3g}, variance reduced by {reduction} "
            f"({c.method})"
        )
        out.print(escape(line), highlight=False, soft_wrap=True)
    for metric, arms in found.guardrails.items():
        for arm, check in arms.items():
            state = (
                "BREACHED (established)"
                if check.significant
                else "BREACHED"
                if check.breached
                else "ok"
            )
            out.print(escape(f"guardrail {metric}, {arm}: {state}: {check.evidence}"))
    for note in found.notes:
        out.print(escape(f"note: {note}"))


_COLUMNS = (
    "arm",
    "units",
    "estimate",
    "abs lift [CI]",
    "rel lift [CI]",
    "p",
    "adjusted p",
    "P(beat control)",
)


def _rows(found: Results) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for arm, units in found.units_by_arm.items():
        summary = found.summaries.get(arm)
        c = found.primary.get(arm)
        row: list[Any] = [arm + (" (control)" if arm == found.control else ""), f"{units:,}"]
        row.append(None if summary is None else f"{summary.estimate:.4g}")
        if c is None:
            rows.append((*row, None, None, None, None, None))
            continue
        rel = (
            None
            if c.relative_lift is None or c.relative_ci is None
            else f"{c.relative_lift:+.2%} [{c.relative_ci[0]:+.2%}, {c.relative_ci[1]:+.2%}]"
        )
        adjusted = found.adjusted.get(arm)
        bayes = found.bayes.get(arm)
        row += [
            f"{c.absolute_lift:+.4g} [{c.absolute_ci[0]:+.4g}, {c.absolute_ci[1]:+.4g}]",
            rel,
            f"{c.p_value:.3g}",
            None if adjusted is None else f"{adjusted.adjusted_p_value:.3g}",
            None if bayes is None else f"{bayes.probability_to_beat_control:.1%}",
        ]
        rows.append(tuple(row))
    return rows


def _arms_line(exp: Experiment) -> str:
    return ", ".join(f"{a.name} {a.share:g}" for a in exp.arms)


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def _bounds(max_drop: float | None, max_value: float | None) -> str:
    parts = []
    if max_drop is not None:
        parts.append(f"drops at most {max_drop:g} (relative)")
    if max_value is not None:
        parts.append(f"at most {max_value:g}")
    return " and ".join(parts)


@ab_app.command("report")
def report(
    name: NameArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the HTML file to write, e.g. churn.html")
    ],
    json_: JsonOption = False,
) -> None:
    """Write the experiment's results (figures, charts, warnings, history) as one
    self-contained HTML file: no network needed to open it."""
    from plinth.ui.report import write_report

    size = write_report(_service(), name, output)
    if json_:
        return _print_json({"experiment": name, "path": str(output), "bytes": size})
    line = f"wrote the report of {name} to {output} ({size:,} bytes)"
    out.print(escape(line), highlight=False, soft_wrap=True)
