"""An experiment's plan: the sample its design needs (``power.sample_size``) and how long
its traffic takes to bring it.

The traffic is what the arms' models served recently: the requests of their prediction
logs (every version of each arm's model, the last ``days`` days) per day, times the
experiment's ``traffic`` share. An experiment by request has a unit per request; one by
user or session has at most one, so the duration is then a lower bound (stated in the
plan's ``traffic_method``). Arms served by a plain URL have no prediction log here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from plinth.abtests.power import PowerResult, duration_days, sample_size
from plinth.abtests.types import Experiment, KpiKind, Unit
from plinth.errors import InvalidArgument
from plinth.registry.uris import parse_model_uri
from plinth.store.schema import predictions

DAY_MS = 86_400_000
MAX_DAYS = 90


@dataclass(frozen=True)
class Plan:
    """``units_per_day`` and ``days`` are None when no arm's model served anything in the
    window; ``traffic_method`` says where the rate comes from, or why there is none."""

    experiment: str
    sample: PowerResult
    units_per_day: float | None
    days: float | None
    traffic_method: str


def plan(
    conn: Connection,
    exp: Experiment,
    now_ms: int,
    baseline: float | None,
    days: int,
    may_read: Callable[[str], bool],
) -> Plan:
    """``may_read(model)``: whether the caller may read a model; the traffic of the others
    is neither counted nor named."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidArgument(f"days: a window of 1 to {MAX_DAYS} days, got {days!r}")
    # every arm, not only those with traffic now: a canary (challenger at 0 at first)
    # plans for its final split
    arms = len(exp.arms)
    if exp.primary.kind is KpiKind.PROPORTION:
        if baseline is None:
            raise InvalidArgument(
                f"baseline: {exp.primary.name} is a proportion: give the control's current "
                "rate (e.g. 0.10) to plan for an absolute difference of the design's mde"
            )
        sample = sample_size("proportions", exp.mde, exp.alpha, exp.power, arms, baseline)
    else:
        sample = sample_size("means", exp.mde, exp.alpha, exp.power, arms)
    named = sorted({parse_model_uri(a.model_uri).name for a in exp.arms if a.model_uri})
    models = [m for m in named if may_read(m)]
    if not named:
        return Plan(exp.name, sample, None, None, "no arm serves a registered model: no log")
    if not models:
        return Plan(exp.name, sample, None, None, "you may not read the arms' models")
    since = now_ms - days * DAY_MS
    query = select(func.count()).where(
        predictions.c.model_name.in_(models), predictions.c.at >= since, predictions.c.at < now_ms
    )
    requests = int(conn.execute(query).scalar_one())
    where = f"the prediction logs of {', '.join(models)} over the last {days} days"
    if requests == 0:
        return Plan(exp.name, sample, None, None, f"no requests in {where}")
    per_day = requests / days * exp.traffic
    share = "" if exp.traffic == 1 else f" x traffic {exp.traffic:g}"
    method = f"{requests:,} requests in {where}{share}"
    if len(models) < len(named):
        method += f" (the traffic of {len(named) - len(models)} model(s) you may not read left out)"
    if exp.unit is not Unit.REQUEST:
        method += (
            f"; each counted as a {exp.unit} although a {exp.unit} may send several, so the "
            "duration is a lower bound"
        )
    return Plan(exp.name, sample, per_day, duration_days(sample, per_day), method)
