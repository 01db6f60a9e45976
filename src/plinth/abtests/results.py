"""An experiment's results, read from its exposure and event logs with DuckDB.

1. Each unit's arm is the arm of its FIRST exposure (earliest ``at_ms``); a unit also
   seen in another arm stays in its first and is counted in ``units_in_several_arms`` (a
   sign of a changed allocation or a leaky router).
2. Events are deduplicated by ``event_id`` (the earliest copy wins), given a unit (their
   own, else their request's exposure's) and counted only at or after the unit's first
   exposure: late events count, events before the unit was exposed do not.
3. Per unit: proportion, 1 if it has any ``kpi.event``; mean, the sum of its
   ``kpi.event`` values (0 without events); ratio, the sums of the numerator and the
   denominator events. Per arm, DuckDB reduces these to sufficient statistics (counts,
   means, sample variances, covariance), which ``stats.*_from_*`` turn into summaries:
   the same figures as ``stats.summarize_*`` on the per-unit arrays, without moving
   millions of rows into Python.
4. Every arm against control (``stats.compare_arms``), Holm-adjusted across arms, a
   Bayesian probability to beat control, the sample-ratio-mismatch check against the
   planned shares, and each KPI guardrail (the primary KPI by its name, or any other event
   name as the mean of that event per unit) against its ``max_drop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from plinth.abtests.bayes import BayesComparison, beta_binomial, normal_approximation
from plinth.abtests.checks import (
    AdjustedPValue,
    GuardrailCheck,
    SrmCheck,
    adjust_p_values,
    check_guardrail,
    sample_ratio_mismatch,
)
from plinth.abtests.design import BUILT_IN_GUARDRAILS
from plinth.abtests.events import EVENTS_SCHEMA, events_uri, storage_options
from plinth.abtests.stats import (
    ArmSummary,
    Comparison,
    compare_arms,
    mean_from_moments,
    proportion_from_counts,
    ratio_from_moments,
)
from plinth.abtests.traffic import SCHEMA as EXPOSURES_SCHEMA
from plinth.abtests.traffic import exposures_uri
from plinth.abtests.types import Experiment, Kpi, KpiKind
from plinth.errors import InvalidArgument

_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class Results:
    """``primary``, ``bayes`` and ``adjusted`` are keyed by treatment arm; ``guardrails``
    by metric, then arm. Each figure carries its ``method``. ``notes`` say what could not
    be computed and why."""

    __pydantic_config__ = _JSON

    experiment: str
    computed_at: datetime
    kpi: Kpi
    control: str
    units_by_arm: dict[str, int]
    units_in_several_arms: int
    summaries: dict[str, ArmSummary] = field(default_factory=dict)
    primary: dict[str, Comparison] = field(default_factory=dict)
    guardrails: dict[str, dict[str, GuardrailCheck]] = field(default_factory=dict)
    srm: SrmCheck | None = None
    bayes: dict[str, BayesComparison] = field(default_factory=dict)
    adjusted: dict[str, AdjustedPValue] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def compute_results(exp: Experiment, root: str) -> Results:
    kpis = [exp.primary, *_guardrail_kpis(exp)]
    names = sorted({k.event for k in kpis} | {k.denominator_event or k.event for k in kpis})
    with _logs(root, exp.name) as con:
        units, several = _assign_units(con)
        if not units:
            return Results(
                exp.name, _now(), exp.primary, exp.control.name, {}, 0,
                notes=["no exposures logged yet"],
            )  # fmt: skip
        _per_unit(con, names)
        moments = {k.name: _arm_moments(con, k, names, units) for k in kpis}
    return _analyse(exp, units, several, moments)


# -- reading -----------------------------------------------------------------------------------


@contextmanager
def _logs(root: str, experiment: str) -> Iterator[duckdb.DuckDBPyConnection]:
    from plinth.features.duck import cursor

    with cursor() as con:
        con.register("exposures", _dataset(exposures_uri(root, experiment), EXPOSURES_SCHEMA))
        con.register("events", _dataset(events_uri(root, experiment), EVENTS_SCHEMA))
        yield con


def _dataset(uri: str, schema: pa.Schema) -> Any:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        return schema.empty_table()
    return table.to_pyarrow_dataset()


def _assign_units(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], int]:
    # Two exposures of one unit in the same millisecond in two arms: either arm (rare, and
    # the unit is counted in ``units_in_several_arms``).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE first_exposure AS
        SELECT unit,
               arg_min(arm, at_ms) AS arm,
               min(at_ms) AS first_ms,
               min(arm) <> max(arm) AS several
        FROM exposures WHERE unit IS NOT NULL AND arm IS NOT NULL
        GROUP BY unit
        """
    )
    rows = con.execute(
        "SELECT arm, count(*), count(*) FILTER (WHERE several) FROM first_exposure GROUP BY arm"
    ).fetchall()
    return {arm: int(n) for arm, n, _ in rows}, sum(int(s) for _, _, s in rows)


_ALL = "SELECT * FROM relevant"
# An event id's copies are one event: the earliest copy is kept (by at_ms; copies at the
# same ms are the same event re-sent, any of them). Finding the few re-sent ids first and
# picking among their copies only costs a fraction of picking among every event's.
_KEPT = f"""
    SELECT e.* FROM ({_ALL}) e ANTI JOIN resent r ON e.event_id = r.event_id
    UNION ALL
    SELECT e.event_id, arg_min(name, at_ms), arg_min(value, at_ms), arg_min(unit, at_ms),
           arg_min(request_id, at_ms), min(at_ms)
    FROM ({_ALL}) e SEMI JOIN resent r
    ON e.event_id = r.event_id
    GROUP BY e.event_id
"""


def _per_unit(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """``unit_values``: per exposed unit WITH counted events, its arm, ``s{i}`` (sum of
    values) and ``c{i}`` (count) of the events named ``names[i]``. Units without events
    are not rows: the per-arm moments add them as zeros. Only column names are composed
    here (from indices); every value is a bound parameter."""
    # read once: the events of the KPIs' names, in DuckDB's own columnar format
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE relevant AS
        SELECT event_id, name, value, unit, CASE WHEN unit IS NULL THEN request_id END
               AS request_id, at_ms
        FROM events WHERE list_contains($names, name)
        """,
        {"names": names},
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE resent AS
        SELECT event_id FROM relevant GROUP BY event_id HAVING count(*) > 1
        """
    )
    if _count(con, "SELECT count(*) FROM resent"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE kept AS {_KEPT}")
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW kept AS SELECT * FROM relevant")
    unit, requests = "k.unit", ""
    if _count(con, "SELECT count(*) FROM kept WHERE unit IS NULL AND request_id IS NOT NULL"):
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE request_units AS
            SELECT x.request_id, arg_min(x.unit, x.at_ms) AS unit FROM exposures x
            SEMI JOIN (SELECT request_id FROM kept WHERE unit IS NULL) k
            ON x.request_id = k.request_id
            GROUP BY x.request_id
            """
        )
        unit = "coalesce(k.unit, r.unit)"
        requests = "LEFT JOIN request_units r ON k.request_id = r.request_id"
    columns = ", ".join(
        f"sum(v.value) FILTER (WHERE v.name = ${i + 1}) AS s{i}, "
        f"count(*) FILTER (WHERE v.name = ${i + 1}) AS c{i}"
        for i in range(len(names))
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE unit_values AS
        WITH ev AS (SELECT {unit} AS unit, k.name, k.value, k.at_ms FROM kept k {requests})
        SELECT f.arm, {columns}
        FROM ev v JOIN first_exposure f ON v.unit = f.unit AND v.at_ms >= f.first_ms
        GROUP BY f.unit, f.arm
        """,  # composed of indices only
        names,
    )


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    found = con.execute(query).fetchone()
    return int(found[0]) if found else 0


def _arm_moments(
    con: duckdb.DuckDBPyConnection, kpi: Kpi, names: list[str], units: dict[str, int]
) -> dict[str, tuple[Any, ...]]:
    """Per arm: ``(units, successes)`` for a proportion, ``(units, mean, variance)`` for a
    mean, ``(units, mean num, mean den, var num, var den, cov)`` for a ratio. Sums of
    products over the units with events; the others add zeros, so only ``units`` grows."""
    num = f"coalesce(s{names.index(kpi.event)}, 0)"
    den = f"coalesce(s{names.index(kpi.denominator_event or kpi.event)}, 0)"
    select = (
        f"count(*) FILTER (WHERE c{names.index(kpi.event)} > 0), "
        f"sum({num}), sum({num} * {num}), sum({den}), sum({den} * {den}), sum({num} * {den})"
    )
    found = {
        row[0]: row[1:]
        for row in con.execute(f"SELECT arm, {select} FROM unit_values GROUP BY arm").fetchall()
    }
    moments: dict[str, tuple[Any, ...]] = {}
    for arm, n in units.items():
        converted, sx, sxx, sy, syy, sxy = (float(v or 0) for v in found.get(arm, (0,) * 6))
        if kpi.kind is KpiKind.PROPORTION:
            moments[arm] = (n, int(converted))
            continue
        mx, my = sx / n, sy / n
        dof = max(n - 1, 1)
        var_x, var_y = (sxx - sx * mx) / dof, (syy - sy * my) / dof
        cov = (sxy - sx * my) / dof
        if kpi.kind is KpiKind.MEAN:
            moments[arm] = (n, mx, max(var_x, 0.0))
        else:
            moments[arm] = (n, mx, my, max(var_x, 0.0), max(var_y, 0.0), cov)
    return moments


# -- analysis ----------------------------------------------------------------------------------


def _guardrail_kpis(exp: Experiment) -> list[Kpi]:
    """A guardrail on another event than the primary KPI's is the mean of it per unit."""
    return [
        Kpi(g.metric, KpiKind.MEAN, g.metric)
        for g in exp.guardrails
        if g.metric not in BUILT_IN_GUARDRAILS and g.metric != exp.primary.name
    ]


def _summary(kpi: Kpi, moments: tuple[Any, ...]) -> ArmSummary:
    units = int(moments[0])
    if kpi.kind is KpiKind.PROPORTION:
        return proportion_from_counts(int(moments[1]), units)
    if kpi.kind is KpiKind.MEAN:
        return mean_from_moments(units, float(moments[1]), float(moments[2]))
    return ratio_from_moments(units, *(float(m) for m in moments[1:]))


def _compare(
    exp: Experiment, kpi: Kpi, moments: dict[str, tuple[Any, ...]], notes: list[str]
) -> tuple[dict[str, ArmSummary], dict[str, Comparison]]:
    summaries: dict[str, ArmSummary] = {}
    for arm in exp.arms:
        if arm.name not in moments:
            notes.append(f"{kpi.name}: arm {arm.name!r} has no units yet")
            continue
        try:
            summaries[arm.name] = _summary(kpi, moments[arm.name])
        except InvalidArgument as exc:
            notes.append(f"{kpi.name}: arm {arm.name!r}: {exc}")
    if exp.control.name not in summaries:
        return summaries, {}
    try:
        return summaries, compare_arms(summaries, exp.control.name, alpha=exp.alpha)
    except (ArithmeticError, ValueError) as exc:  # numbers beyond what floats hold
        notes.append(f"{kpi.name}: the arms cannot be compared: {exc}")
        return summaries, {}


def _analyse(
    exp: Experiment,
    units: dict[str, int],
    several: int,
    moments: dict[str, dict[str, tuple[Any, ...]]],
) -> Results:
    notes: list[str] = []
    planned = {a.name: a.share for a in exp.arms if a.share > 0}
    stray = sorted(set(units) - set(exp.shares))
    if stray:
        notes.append(f"exposures name arms not in the design, left out: {', '.join(stray)}")
    if several:
        notes.append(
            f"{several:,} units were exposed to more than one arm: each counts in its first"
        )
    kpi = exp.primary
    summaries, primary = _compare(exp, kpi, moments[kpi.name], notes)
    observed = {arm: units.get(arm, 0) for arm in planned}
    srm = sample_ratio_mismatch(observed, planned) if len(planned) > 1 else None
    bayes = {
        arm: _bayes(kpi, c.control, c.treatment, moments[kpi.name], exp.control.name, arm)
        for arm, c in primary.items()
    }
    adjusted = adjust_p_values(
        {arm: c.p_value for arm, c in primary.items()}, method="holm", alpha=exp.alpha
    )
    guardrails = _guardrails(exp, primary, moments, notes)
    return Results(
        experiment=exp.name,
        computed_at=_now(),
        kpi=kpi,
        control=exp.control.name,
        units_by_arm={arm: units.get(arm, 0) for arm in exp.shares},
        units_in_several_arms=several,
        summaries=summaries,
        primary=primary,
        guardrails=guardrails,
        srm=srm,
        bayes=bayes,
        adjusted=adjusted,
        notes=notes,
    )


def _bayes(
    kpi: Kpi,
    control: ArmSummary,
    treatment: ArmSummary,
    moments: dict[str, tuple[Any, ...]],
    control_arm: str,
    arm: str,
) -> BayesComparison:
    if kpi.kind is KpiKind.PROPORTION:
        c, t = moments[control_arm], moments[arm]
        return beta_binomial((int(c[1]), int(c[0])), (int(t[1]), int(t[0])))
    return normal_approximation(control, treatment)


def _guardrails(
    exp: Experiment,
    primary: dict[str, Comparison],
    moments: dict[str, dict[str, tuple[Any, ...]]],
    notes: list[str],
) -> dict[str, dict[str, GuardrailCheck]]:
    checks: dict[str, dict[str, GuardrailCheck]] = {}
    for rail in exp.guardrails:
        if rail.metric in BUILT_IN_GUARDRAILS:
            notes.append(f"guardrail {rail.metric}: measured by the router, not from events")
            continue
        if rail.max_drop is None:
            notes.append(f"guardrail {rail.metric}: only max_drop is checked from events")
            continue
        if rail.metric == exp.primary.name:
            comparisons = primary
        else:
            kpi = Kpi(rail.metric, KpiKind.MEAN, rail.metric)
            comparisons = _compare(exp, kpi, moments[rail.metric], notes)[1]
        checks[rail.metric] = {}
        for arm, comparison in comparisons.items():
            try:
                checks[rail.metric][arm] = check_guardrail(comparison, max_worsening=rail.max_drop)
            except InvalidArgument as exc:
                notes.append(f"guardrail {rail.metric}, arm {arm!r}: {exc}")
    return checks


def _now() -> datetime:
    return datetime.now(UTC)
