"""What each kind of monitor checks, as one ``evaluate`` giving a ``CheckOutcome``:

- ``feature_drift`` (target: a feature group, ``name`` or ``name:vN``): the newest commit
  (or the one a ``commit:N`` trigger names) against its reference. With the default
  reference the verdict drift on write stored with the commit is read back; with
  ``previous``, ``days:N`` or ``commit:V`` it is computed from the stored commit profiles.
- ``input_drift`` / ``prediction_drift`` (target: a model): the prediction log's last
  ``window_seconds`` (or the score job a ``job:N`` trigger names) against the version's
  training data; a breach when the share of drifted inputs reaches ``max_drifted_share`` /
  when the prediction column drifted from the training labels.
- ``performance`` / ``estimated_performance``: the latest window's measured (labels
  joined) / CBPE-estimated metric against ``min_value``/``max_value``, else the version's
  validation metric minus (plus, for losses) ``tolerance``.

Anything that cannot be judged (no training data linked, an empty window, no labels, no
bound) is ``skipped`` with a summary saying why, never a breach. A score job delivered
without its input profile yet (its runner stores it before marking the job delivered; an
older one after) is ``skipped`` with ``retry``: not ready, look again (for up to
``PROFILE_GRACE_MS`` after the job ended, then it is judged without one: skipped).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from plinth.errors import InvalidArgument
from plinth.monitoring.performance import ESTIMABLE, LOWER_IS_BETTER, Performance
from plinth.monitoring.windows import iso
from plinth.stats.drift import DriftReport, drift_report
from plinth.stats.profile import TableProfile
from plinth.store.profiles import load_profile
from plinth.store.schema import feature_commits, profiles, score_jobs

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from plinth.monitoring.data import InputDrift, MonitoringData
    from plinth.monitoring.types import Monitor, MonitorSpec

PERFORMANCE_WINDOWS = 7  # windows read: older ones give CBPE its labelled reference
_DAY_MS = 86_400_000
_MAX_MERGED = 1_000  # commit profiles merged into a days:N reference
#: how long after a score job ended its input profile may still be on its way
PROFILE_GRACE_MS = 15 * 60_000


@dataclass(frozen=True)
class CheckOutcome:
    status: str  # ok | breach | skipped
    summary: str  # one line for lists and alert messages
    result: dict[str, Any] = field(default_factory=dict)  # JSON-able
    reference_profile: int | None = None
    current_profile: int | None = None
    event: int | None = None  # the commit version / score job id it looked at
    retry: bool = False  # not ready (the event's data is still on its way): look again


def evaluate(data: MonitoringData, monitor: Monitor, *, now_ms: int, trigger: str) -> CheckOutcome:
    """Evaluate ``monitor`` at ``now_ms``; ``trigger`` (schedule | manual | commit:N |
    job:N) names the commit or score job an on-event evaluation looks at."""
    kind = monitor.kind
    if kind == "feature_drift":
        return _feature_drift(data, monitor, _event(trigger, "commit"))
    if kind in ("input_drift", "prediction_drift"):
        return _model_drift(data, monitor, now_ms, _event(trigger, "job"))
    if kind in ("performance", "estimated_performance"):
        return _performance(data, monitor, now_ms)
    raise InvalidArgument(f"monitor {monitor.name!r} has an unknown kind {kind!r}")


def newest_event(data: MonitoringData, monitor: Monitor) -> int | None:
    """The newest commit version of a feature_drift monitor's group, or the id of the
    newest delivered score job of a drift monitor's model (None: none, or a kind that
    events do not trigger)."""
    with data.store.read() as conn:
        if monitor.kind == "feature_drift":
            name, version = _group(data, monitor.target)
            fc = feature_commits.c
            found = conn.execute(
                select(fc.commit_version)
                .where(fc.group_name == name, fc.group_version == version)
                .order_by(fc.commit_version.desc())
                .limit(1)
            ).scalar()
        elif monitor.kind in ("input_drift", "prediction_drift"):
            sj = score_jobs.c
            found = conn.execute(
                select(sj.id)
                .where(sj.model_name == monitor.target, sj.status == "DELIVERED")
                .order_by(sj.id.desc())
                .limit(1)
            ).scalar()
        else:
            return None
    return None if found is None else int(found)


def _event(trigger: str, prefix: str) -> int | None:
    head, _, number = trigger.partition(":")
    if head != prefix:
        return None
    try:
        return int(number)
    except ValueError:
        raise InvalidArgument(f"trigger {trigger!r} is not {prefix}:NUMBER") from None


# -- model input and prediction drift --------------------------------------------------------


def _model_drift(
    data: MonitoringData, monitor: Monitor, now_ms: int, job: int | None
) -> CheckOutcome:
    spec = monitor.spec
    if job is not None:
        waiting = _awaiting_profile(data, job, now_ms)
        if waiting is not None:
            return CheckOutcome("skipped", waiting, {}, event=job, retry=True)
    mv = data.model_version(monitor.target, spec.model_version)
    found = data.drift(
        mv, window_seconds=spec.window_seconds, preset=spec.preset, columns=spec.columns,
        score_job=job, max_drifted_share=spec.max_drifted_share, now_ms=now_ms, save=True,
    )  # fmt: skip
    profiles_: dict[str, Any] = {
        "reference_profile": found.reference_profile,
        "current_profile": found.current_profile,
    }
    result = _plain(dataclasses.asdict(found))
    if found.status == "skipped" or found.report is None:
        return CheckOutcome("skipped", found.summary, result, event=job, **profiles_)
    if monitor.kind == "prediction_drift":
        return _prediction_outcome(found, result, job, profiles_)
    report = DriftReport.from_dict(found.report)
    breach = report.drifted_columns > 0 and report.drifted_share >= spec.max_drifted_share
    summary = found.summary + (
        f"; breach: drifted share {report.drifted_share:.0%} >= {spec.max_drifted_share:.0%}"
        if breach
        else ""
    )
    return CheckOutcome("breach" if breach else "ok", summary, result, event=job, **profiles_)


def _awaiting_profile(data: MonitoringData, job: int, now_ms: int) -> str | None:
    """Why score job ``job`` is not ready to be judged (its input profile is not stored
    yet, and it ended less than ``PROFILE_GRACE_MS`` ago); None when it is."""
    sj, p = score_jobs.c, profiles.c
    with data.store.read() as conn:
        row = conn.execute(select(sj.job_key, sj.finished_at).where(sj.id == job)).first()
        if row is None:
            return None  # the check says it is not there
        stored = conn.execute(
            select(p.id).where(p.subject_kind == "score_job", p.subject == row.job_key).limit(1)
        ).first()
    if stored is not None:
        return None
    if row.finished_at is not None and now_ms - int(row.finished_at) > PROFILE_GRACE_MS:
        return None  # it will not come: judged without it
    return f"skipped: score job {job} has no input profile yet (looked at again next time)"


def _prediction_outcome(
    found: InputDrift, result: dict[str, Any], job: int | None, profiles_: dict[str, Any]
) -> CheckOutcome:
    what = f"version {found.version} of {found.model_name}, {found.subject}"
    if found.prediction is None:
        return CheckOutcome(
            "skipped", f"skipped: {found.prediction_note}", result, event=job, **profiles_
        )
    report = DriftReport.from_dict(found.prediction)
    column = report.columns[0] if report.columns else None
    if column is None or column.error:
        why = column.error if column is not None else "the prediction column was not tested"
        return CheckOutcome("skipped", f"skipped: {what}: {why}", result, event=job, **profiles_)
    verdict = "drifted from" if column.drifted else "in line with"
    stat = "" if column.statistic is None else f", {column.test} {column.statistic:.4g}"
    summary = f"{what}: predictions {verdict} the training labels{stat}"
    status = "breach" if column.drifted else "ok"
    return CheckOutcome(status, summary, result, event=job, **profiles_)


# -- performance -------------------------------------------------------------------------


def _performance(data: MonitoringData, monitor: Monitor, now_ms: int) -> CheckOutcome:
    spec = monitor.spec
    estimated = monitor.kind == "estimated_performance"
    if estimated and spec.metric is not None and spec.metric not in ESTIMABLE:
        raise InvalidArgument(
            f"estimated performance covers {', '.join(ESTIMABLE)}, not {spec.metric!r}"
        )
    perf = data.performance(
        monitor.target, spec.model_version, spec.window_seconds, PERFORMANCE_WINDOWS,
        spec.metric or ("auc" if estimated else None), now_ms,
    )  # fmt: skip
    result = _plain(dataclasses.asdict(perf))
    what = f"version {perf.version} of {perf.model_name}"
    window = perf.latest_estimated if estimated else perf.latest_measured
    if window is None:
        why = (
            f"no estimate of {perf.metric}: {perf.estimator}"
            if estimated
            else f"no labelled predictions to measure {perf.metric} on in the last "
            f"{PERFORMANCE_WINDOWS} windows of {spec.window_seconds} s"
        )
        return CheckOutcome("skipped", f"skipped: {what}: {why}", result)
    metric = (window.estimated if estimated else window.metrics)[perf.metric]
    bounds = _bounds(spec, perf)
    if not bounds:
        why = f"no bound for {perf.metric}: give min_value/max_value, or log a validation metric"
        return CheckOutcome("skipped", f"skipped: {what}: {why}", result)
    label = "estimated" if estimated else "measured"
    interval = (
        ""
        if metric.lower is None or metric.upper is None
        else f" [{metric.lower:.4g}, {metric.upper:.4g}]"
    )
    broken = [
        text
        for op, bound, text in bounds
        if (metric.value < bound if op == "min" else metric.value > bound)
    ]
    summary = (
        f"{what}: {label} {perf.metric} {metric.value:.4g}{interval} on {metric.n} prediction(s)"
        f" of the window from {iso(window.start)}"
    )
    if broken:
        summary += f"; breach: {'; '.join(broken)}"
    result["checked"] = {"window_start": window.start, "metric": perf.metric, "value": _num(metric.value),
                         "bounds": [{"op": op, "value": b, "why": t} for op, b, t in bounds]}  # fmt: skip
    return CheckOutcome("breach" if broken else "ok", summary, result)


def _bounds(spec: MonitorSpec, perf: Performance) -> list[tuple[str, float, str]]:
    """(min | max, value, description) of each bound the metric must keep."""
    found: list[tuple[str, float, str]] = []
    if spec.min_value is not None:
        found.append(("min", spec.min_value, f"below min_value {spec.min_value:.4g}"))
    if spec.max_value is not None:
        found.append(("max", spec.max_value, f"above max_value {spec.max_value:.4g}"))
    if found or perf.validation is None:
        return found
    base = f"validation {perf.validation_key} {perf.validation:.4g}"
    if perf.metric in LOWER_IS_BETTER:
        bound = perf.validation + spec.tolerance
        return [("max", bound, f"above {base} + tolerance {spec.tolerance:.4g}")]
    bound = perf.validation - spec.tolerance
    return [("min", bound, f"below {base} - tolerance {spec.tolerance:.4g}")]


# -- feature group drift -------------------------------------------------------------------


def _feature_drift(data: MonitoringData, monitor: Monitor, commit: int | None) -> CheckOutcome:
    spec = monitor.spec
    name, version = _group(data, monitor.target)
    fc = feature_commits.c
    query = select(fc.commit_version, fc.at, fc.drift).where(
        fc.group_name == name, fc.group_version == version
    )
    if commit is not None:
        query = query.where(fc.commit_version == commit)
    with data.store.read() as conn:
        row = conn.execute(query.order_by(fc.commit_version.desc()).limit(1)).first()
        if row is None:
            what = f"commit {commit}" if commit is not None else "commits"
            return CheckOutcome(
                "skipped", f"skipped: feature group {name} v{version} has no {what}"
            )
        event = int(row.commit_version)
        where = f"feature group {name} v{version} commit {event}"
        if spec.reference in ("training", "group", "") and row.drift:
            return _stored_verdict(where, json.loads(row.drift), spec, event)
        current_id = _commit_profile(conn, name, version, event)
        if current_id is None:
            return CheckOutcome("skipped", f"skipped: {where} has no stored profile", event=event)
        reference = _reference(conn, name, version, int(row.at), event, spec.reference)
    if isinstance(reference, str):
        return CheckOutcome("skipped", f"skipped: {where}: {reference}", event=event)
    with data.store.read() as conn:
        current = load_profile(conn, current_id)
    ref_profile, ref_id, ref_text = reference
    report = drift_report(
        ref_profile, current, preset=spec.preset, columns=spec.columns,
        share_threshold=spec.max_drifted_share,
    )  # fmt: skip
    verdict = {**report.to_dict(), "reference": ref_text}
    return _feature_outcome(where, verdict, spec, event, ref_id, current_id)


def _stored_verdict(
    where: str, verdict: dict[str, Any], spec: MonitorSpec, event: int
) -> CheckOutcome:
    """The verdict drift on write stored with the commit (``plinth.features.drift``):
    checked, without a reference (``reason``) or failed (``error``)."""
    current = verdict.get("profile")
    references = verdict.get("reference_profiles") or []
    reference = references[0] if len(references) == 1 else None
    if "columns" not in verdict:
        why = verdict.get("error") or verdict.get("reason") or "no drift verdict was stored"
        return CheckOutcome("skipped", f"skipped: {where}: {why}", _plain(verdict), event=event)
    return _feature_outcome(where, verdict, spec, event, reference, current)


def _feature_outcome(
    where: str,
    verdict: dict[str, Any],
    spec: MonitorSpec,
    event: int,
    reference_id: int | None,
    current_id: int | None,
) -> CheckOutcome:
    report = DriftReport.from_dict(verdict)  # a stored verdict has more keys: ignored
    drifted = [c.column for c in report.columns if c.drifted]
    breach = bool(drifted) and report.drifted_share >= spec.max_drifted_share
    against = verdict.get("reference", "its reference")
    summary = f"{where} against {against}: {report.summary()}"
    if drifted:
        summary += f" ({', '.join(drifted[:8])}{', ...' if len(drifted) > 8 else ''})"
    status = "breach" if breach else "ok"
    return CheckOutcome(status, summary, _plain(verdict), reference_id, current_id, event)


def _group(data: MonitoringData, target: str) -> tuple[str, int]:
    """``name`` (its newest version) or ``name:vN``."""
    name, sep, number = target.rpartition(":v")
    if sep and number.isdigit():
        return name, int(number)
    group = data.features.get_feature_group(target)
    return group.name, group.version


def _commit_profile(conn: Connection, name: str, version: int, commit: int) -> int | None:
    p = profiles.c
    found = conn.execute(
        select(p.id)
        .where(
            p.subject_kind == "feature_commit",
            p.group_name == name,
            p.group_version == version,
            p.commit_version == commit,
        )
        .order_by(p.id.desc())
        .limit(1)
    ).scalar()
    return None if found is None else int(found)


def _reference(
    conn: Connection, name: str, version: int, at: int, commit: int, reference: str
) -> tuple[TableProfile, int | None, str] | str:
    """The reference profile a commit is compared with, or why there is none."""
    p = profiles.c
    base = select(p.id, p.commit_version).where(
        p.subject_kind == "feature_commit", p.group_name == name, p.group_version == version
    )
    kind, _, value = reference.partition(":")
    if kind in ("previous", "training", "group", ""):
        row = conn.execute(
            base.where(p.commit_version < commit).order_by(p.commit_version.desc()).limit(1)
        ).first()
        if row is None:
            return "no earlier commit with a stored profile to compare with"
        return load_profile(conn, row.id), int(row.id), f"previous commit {row.commit_version}"
    if kind == "commit" and value.isdigit():
        row = conn.execute(base.where(p.commit_version == int(value)).order_by(p.id.desc())).first()
        if row is None:
            return f"pinned commit {value} has no stored profile"
        return load_profile(conn, row.id), int(row.id), f"commit {value}"
    if kind == "days" and value.isdigit():
        since = at - int(value) * _DAY_MS
        ids = conn.execute(
            base.where(p.commit_version < commit, p.created_at >= since)
            .order_by(p.commit_version.desc())
            .limit(_MAX_MERGED)
        ).all()
        if not ids:
            return f"no commit in the {value} day(s) before it to compare with"
        merged = load_profile(conn, ids[0].id)
        for row in ids[1:]:
            merged = merged.merge(load_profile(conn, row.id))
        return merged, None, f"the {len(ids)} commit(s) of the {value} day(s) before"
    raise InvalidArgument(
        f"reference {reference!r} is not previous, days:N or commit:V for a feature group"
    )


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
