"""An experiment's results, read from its exposure and event logs with DuckDB (``logs.py``).

1. Each unit's arm is the arm of its FIRST exposure (earliest ``at_ms``; at a tie, the arm
   listed first in the design); a unit also seen in another arm stays in its first and is
   counted in ``units_in_several_arms`` (a sign of a changed allocation or a leaky router).
2. Events are deduplicated by ``event_id`` (the earliest copy wins), given a unit (their
   own, else their request's exposure's) and counted only at or after the unit's first
   exposure: late events count, events before the unit was exposed do not (they are the
   CUPED covariate).
3. Per unit: proportion, 1 if it has any ``kpi.event``; mean, the sum of its
   ``kpi.event`` values (0 without events); ratio, the sums of the numerator and the
   denominator events. Per arm, DuckDB reduces these to moments (counts, means, sample
   variances, covariances), which ``stats.*_from_*`` turn into summaries: the same
   figures as ``stats.summarize_*`` on the per-unit arrays, without moving millions of
   rows into Python.
4. Every arm against control (``stats.compare_arms``), Holm-adjusted across arms, a
   Bayesian probability to beat control, the sample-ratio-mismatch check (each unit
   against the shares in force at its first exposure: ``periods``, from the history, see
   ``checks.share_periods``; the design's shares when none are given), and each KPI
   guardrail (the primary KPI by its name, or any other event name as the mean of that
   event per unit) against its ``max_drop``.
5. ``sequential``: per treatment arm, the always-valid (mSPRT) interval and p-value of the
   primary KPI's absolute lift at this look; its mixing variance makes the interval
   narrowest at the planned sample size. The timeline (``timeline.py``) uses the same one
   over its looks, so its last interval lies within this one.
6. ``cuped``: the primary KPI (a proportion or a mean) CUPED-adjusted with the unit's own
   values of the same event before its first exposure as the covariate.
7. Router-measured guardrails (``latency_p99``, ``error_rate``) from the exposures' own
   ``latency_ms`` and ``outcome`` (per exposure, by its assigned arm): see
   ``_router_guardrails``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from scipy import special, stats  # type: ignore[import-untyped]

from plinth.abtests.bayes import BayesComparison, beta_binomial, normal_approximation
from plinth.abtests.checks import (
    AdjustedPValue,
    GuardrailCheck,
    SharePeriod,
    SrmCheck,
    adjust_p_values,
    check_guardrail,
    sample_ratio_mismatch_by_period,
)
from plinth.abtests.cuped import CupedMoments, compare_cuped_moments
from plinth.abtests.design import BUILT_IN_GUARDRAILS
from plinth.abtests.logs import ArmMoments, Figure, Logs, RouterFigures
from plinth.abtests.power import PowerResult, sample_size
from plinth.abtests.sequential import (
    METHOD as SEQUENTIAL_METHOD,
)
from plinth.abtests.sequential import (
    SequentialLook,
    mixing_variance_for_horizon,
    sequential_test,
)
from plinth.abtests.stats import (
    ArmSummary,
    Comparison,
    compare,
    compare_arms,
    mean_from_moments,
    proportion_from_counts,
    ratio_from_moments,
)
from plinth.abtests.traffic import SCHEMA as EXPOSURES_SCHEMA
from plinth.abtests.types import Experiment, Guardrail, Kpi, KpiKind
from plinth.errors import InvalidArgument

__all__ = ["EXPOSURES_SCHEMA", "Results", "compute_results"]

_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class Results:
    """``primary``, ``bayes``, ``adjusted``, ``sequential`` and ``cuped`` are keyed by
    treatment arm; ``guardrails`` by metric, then arm. Each figure carries its ``method``.
    ``notes`` say what could not be computed and why."""

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
    sequential: dict[str, SequentialLook] = field(default_factory=dict)
    cuped: dict[str, Comparison] = field(default_factory=dict)


def compute_results(
    exp: Experiment, root: str, periods: list[SharePeriod] | None = None
) -> Results:
    """``periods``: the experiment's periods of constant shares (``checks.share_periods``
    of its history), for the sample-ratio check; None or empty: the design's shares
    throughout."""
    periods = periods or [SharePeriod(0, exp.shares)]
    kpis = [exp.primary, *_guardrail_kpis(exp)]
    figures: list[Figure] = _unique([f for k in kpis for f in kpi_figures(k)])
    pairs = _unique([p for k in kpis for p in kpi_pairs(k)])
    covariate = _covariate(exp.primary)
    if covariate is not None:
        figures.append(covariate)
        pairs.append((covariate, kpi_figures(exp.primary)[0]))
    notes: list[str] = []
    with Logs(root, exp.name, [a.name for a in exp.arms]) as logs:
        split = [(p.start_ms, p.settle_ms) for p in periods] if len(periods) > 1 else None
        found = logs.arm_moments(figures, _unique(pairs), split)
        if not found:
            return Results(
                exp.name, _now(), exp.primary, exp.control.name, {}, 0,
                notes=["no exposures logged yet"],
            )  # fmt: skip
        if any(arm not in exp.shares for arm in found):
            notes.append(
                "exposures name arms not in the design, left out: " + ", ".join(logs.stray_arms())
            )
        router = _router_guardrails(exp, logs, notes)
    units = {arm: m.units for arm, m in found.items()}
    srm = _srm(exp, found, periods)
    several = sum(m.several for m in found.values())
    moments = {k.name: {arm: kpi_moments(k, m) for arm, m in found.items()} for k in kpis}
    results = _analyse(exp, units, several, moments, srm, notes)
    cuped = _cuped(exp, found, covariate, notes)
    sequential = _sequential(exp, results, notes)
    return replace(
        results,
        guardrails={**results.guardrails, **router},
        sequential=sequential,
        cuped=cuped,
    )


def _srm(
    exp: Experiment, found: dict[str, ArmMoments], periods: list[SharePeriod]
) -> SrmCheck | None:
    """Each unit against the shares of the period of its first exposure (one period: all
    of an arm's units)."""
    arms = {arm: m for arm, m in found.items() if arm in exp.shares}
    if len(periods) == 1:
        return sample_ratio_mismatch_by_period([{a: m.units for a, m in arms.items()}], periods)
    by_period = [{a: m.by_period.get(i, 0) for a, m in arms.items()} for i in range(len(periods))]
    settling = sum(m.settling for m in arms.values())
    return sample_ratio_mismatch_by_period(by_period, periods, settling=settling)


# -- per-unit figures of a KPI -------------------------------------------------------------


def kpi_figures(kpi: Kpi) -> list[Figure]:
    """The per-unit figures of ``kpi``: its outcome (and a ratio's denominator)."""
    if kpi.kind is KpiKind.PROPORTION:
        return [Figure(kpi.event, any=True)]
    if kpi.kind is KpiKind.MEAN:
        return [Figure(kpi.event)]
    return [Figure(kpi.event), Figure(kpi.denominator_event or kpi.event)]


def kpi_pairs(kpi: Kpi) -> list[tuple[Figure, Figure]]:
    figures = kpi_figures(kpi)
    return [(figures[0], figures[1])] if len(figures) == 2 else []


def _covariate(kpi: Kpi) -> Figure | None:
    if kpi.kind is KpiKind.RATIO:
        return None
    return replace(kpi_figures(kpi)[0], pre=True)


def kpi_moments(kpi: Kpi, m: ArmMoments) -> tuple[Any, ...]:
    """``(units, successes)`` for a proportion, ``(units, mean, variance)`` for a mean,
    ``(units, mean num, mean den, var num, var den, cov)`` for a ratio."""
    figures = kpi_figures(kpi)
    y = figures[0]
    if kpi.kind is KpiKind.PROPORTION:
        return (m.units, round(m.sums[y]))
    if kpi.kind is KpiKind.MEAN:
        return (m.units, m.means[y], max(m.variances[y], 0.0))
    d = figures[1]
    cov = m.covariances.get((y, d), m.covariances.get((d, y), 0.0))
    return (m.units, m.means[y], m.means[d], m.variances[y], m.variances[d], cov)


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


# -- analysis ----------------------------------------------------------------------------------


def _guardrail_kpis(exp: Experiment) -> list[Kpi]:
    """A guardrail on another event than the primary KPI's is the mean of it per unit."""
    return [
        Kpi(g.metric, KpiKind.MEAN, g.metric)
        for g in exp.guardrails
        if g.metric not in BUILT_IN_GUARDRAILS and g.metric != exp.primary.name
    ]


def summary(kpi: Kpi, moments: tuple[Any, ...]) -> ArmSummary:
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
            summaries[arm.name] = summary(kpi, moments[arm.name])
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
    srm: SrmCheck | None,
    notes: list[str],
) -> Results:
    if several:
        notes.append(
            f"{several:,} units were exposed to more than one arm: each counts in its first"
        )
    kpi = exp.primary
    summaries, primary = _compare(exp, kpi, moments[kpi.name], notes)
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
            continue  # measured by the router: _router_guardrails
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


# -- CUPED and sequential ------------------------------------------------------------------


def _cuped(
    exp: Experiment, found: dict[str, ArmMoments], x: Figure | None, notes: list[str]
) -> dict[str, Comparison]:
    kpi = exp.primary
    if x is None:
        notes.append(f"CUPED: not computed for a ratio KPI ({kpi.name})")
        return {}
    y = kpi_figures(kpi)[0]
    arms = {
        a.name: CupedMoments(
            m.units,
            m.means[y],
            m.means[x],
            m.variances[y],
            m.variances[x],
            m.covariances[(x, y)],
        )
        for a in exp.arms
        if (m := found.get(a.name)) is not None and m.units >= 2
    }
    if exp.control.name not in arms or len(arms) < 2:
        return {}
    if not any(m.sums[x] for m in found.values()):
        notes.append(
            f"CUPED: no unit has {kpi.event!r} events before its first exposure, "
            "so there is no covariate"
        )
        return {}
    try:
        return compare_cuped_moments(arms, exp.control.name, alpha=exp.alpha)
    except (InvalidArgument, ArithmeticError, ValueError) as exc:
        notes.append(f"CUPED: {exc}")
        return {}


def plan(exp: Experiment, control: ArmSummary | None, notes: list[str]) -> PowerResult | None:
    """The planned sample per arm (``power.sample_size``): for a proportion KPI ``mde`` is
    the absolute difference in rates from control's observed rate; for a mean or a ratio
    KPI ``mde`` is Cohen's d."""
    active = [a for a in exp.arms if a.share > 0]
    if len(active) < 2:
        notes.append("planned sample: fewer than two arms get traffic")
        return None
    try:
        if exp.primary.kind is KpiKind.PROPORTION:
            if control is None:
                notes.append("planned sample: the control arm has no units yet")
                return None
            return sample_size(
                "proportions", exp.mde, exp.alpha, exp.power, len(active), control.estimate
            )
        return sample_size("means", exp.mde, exp.alpha, exp.power, len(active))
    except InvalidArgument as exc:
        notes.append(f"planned sample: {exc.message}")
        return None
    except (ValueError, ArithmeticError) as exc:
        # a plan that cannot be computed must not keep a broken guardrail from stopping
        # the experiment (``stop_reasons`` has its guardrails already)
        notes.append(f"planned sample: none could be computed for mde {exp.mde!r} ({exc})")
        return None


def mixing_variance(
    exp: Experiment, control: ArmSummary, treatment: ArmSummary, notes: list[str]
) -> tuple[float, str] | None:
    """The mSPRT mixing variance for one treatment arm and how it was chosen: narrowest
    interval at the planned units per arm, the per-unit variances as observed now (at the
    current units when there is no plan); None when the lift has no variance yet."""
    per_unit = control.variance * control.units + treatment.variance * treatment.units
    if not per_unit > 0 or not math.isfinite(per_unit):
        return None
    why: list[str] = []
    planned = plan(exp, control, why)
    for note in why:
        line = (
            "sequential: no planned sample, the mixing variance is tuned to the current "
            f"units ({note})"
        )
        if line not in notes:
            notes.append(line)
    horizon = planned.per_arm if planned else max(control.units, treatment.units)
    source = "the planned" if planned else "the current"
    tau2 = mixing_variance_for_horizon(per_unit / horizon, alpha=exp.alpha)
    return tau2, (
        f"{SEQUENTIAL_METHOD}; level {1 - exp.alpha:g}; mixing variance {tau2:.4g}, "
        f"narrowest at {source} {horizon:,} units per arm"
    )


def _sequential(exp: Experiment, results: Results, notes: list[str]) -> dict[str, SequentialLook]:
    looks: dict[str, SequentialLook] = {}
    for arm, comparison in results.primary.items():
        mixing = mixing_variance(exp, comparison.control, comparison.treatment, notes)
        if mixing is None:
            notes.append(f"sequential: arm {arm!r} has no variance yet")
            continue
        tau2, method = mixing
        found = sequential_test(
            [comparison.control], [comparison.treatment], alpha=exp.alpha, mixing_variance=tau2
        )
        looks[arm] = replace(found.latest, method=method)
    return looks


# -- router-measured guardrails ------------------------------------------------------------


def _router_guardrails(
    exp: Experiment, logs: Logs, notes: list[str]
) -> dict[str, dict[str, GuardrailCheck]]:
    """``latency_p99`` and ``error_rate`` per arm from the exposures (each by the arm it
    was assigned, fallbacks included). ``breached``: the estimate is past the bound
    (``max_value``: a ceiling; ``max_drop``: a rise against control by more than that
    share); ``significant``: the whole interval is past it (the breach is established)."""
    rails = [g for g in exp.guardrails if g.metric in BUILT_IN_GUARDRAILS]
    if not rails:
        return {}
    figures = logs.router()
    checks: dict[str, dict[str, GuardrailCheck]] = {}
    for rail in rails:
        column = "latency_ms" if rail.metric == "latency_p99" else "outcome"
        if figures is None or column not in logs.exposure_columns:
            notes.append(
                f"guardrail {rail.metric}: the exposure log has no {column} column "
                "(written before the router measured it)"
            )
            continue
        arms = {a.name: figures[a.name] for a in exp.arms if a.name in figures}
        if rail.metric == "latency_p99":
            found = _latency_checks(exp, rail, arms, logs, notes)
        else:
            found = _error_checks(exp, rail, arms, notes)
        if found:
            checks[rail.metric] = found
    return checks


def _latency_checks(
    exp: Experiment,
    rail: Guardrail,
    arms: dict[str, RouterFigures],
    logs: Logs,
    notes: list[str],
) -> dict[str, GuardrailCheck]:
    """p99 per arm (linear interpolation between order statistics, numpy's default) with a
    distribution-free interval from two order statistics (binomial ranks); against
    control, each arm's interval at level ``1 - alpha/2`` so that the ratio's interval
    holds at ``1 - alpha`` (Bonferroni)."""
    known = {a: f for a, f in arms.items() if f.latencies and f.p99 is not None}
    if len(known) < len(arms) or not known:
        missing = sorted(set(arms) - set(known)) or sorted(arms)
        notes.append(f"guardrail latency_p99: no latency measured in arm(s) {', '.join(missing)}")
    level = exp.alpha / 2 if rail.max_drop is not None else exp.alpha
    ci = {a: _p99_interval(logs, a, f.latencies, level) for a, f in known.items()}
    p99 = {a: float(f.p99) for a, f in known.items() if f.p99 is not None}
    method = (
        "p99 of the exposures' latency_ms (linear interpolation); distribution-free "
        "interval from binomial order statistics"
    )
    checks: dict[str, GuardrailCheck] = {}
    control = exp.control.name
    for arm in p99:
        found: list[GuardrailCheck] = []
        if rail.max_value is not None:
            found.append(
                _rise("p99", p99[arm], ci[arm], rail.max_value, False, f"{method} at level "
                      f"{1 - level:g}; max_value {rail.max_value:g} ms")
            )  # fmt: skip
        if rail.max_drop is not None and arm != control and control in p99:
            (t_low, t_high), (c_low, c_high) = ci[arm], ci[control]
            rise = p99[arm] / p99[control] - 1 if p99[control] > 0 else math.inf
            interval = (
                t_low / c_high - 1 if c_high > 0 else math.inf,
                t_high / c_low - 1 if c_low > 0 else math.inf,
            )
            found.append(
                _rise("p99 rise against control", rise, interval, rail.max_drop, True,
                      f"{method}, each arm at level {1 - level:g}, so the ratio at "
                      f"{1 - exp.alpha:g}; may rise by at most {rail.max_drop:g}")
            )  # fmt: skip
        if found:
            checks[arm] = _worst(found)
    return checks


def _p99_interval(logs: Logs, arm: str, n: int, alpha: float) -> tuple[float, float]:
    """Ranks ``l < u`` with ``P(X_(l) <= p99 <= X_(u)) >= 1 - alpha`` from the binomial
    ``B(n, 0.99)``; an unbounded side when ``n`` is too small for it."""
    low_rank = int(stats.binom.ppf(alpha / 2, n, 0.99))  # 1-based rank of the lower bound
    high_rank = int(stats.binom.ppf(1 - alpha / 2, n, 0.99)) + 1
    ranks = [r for r in (low_rank, high_rank) if 1 <= r <= n]
    # quantile_disc(q) is the value at 0-based index ceil(q n) - 1: q = (index + 0.5) / n
    values = dict(
        zip(ranks, logs.latency_quantiles(arm, [(r - 0.5) / n for r in ranks]), strict=True)
    )
    return values.get(low_rank, 0.0), values.get(high_rank, math.inf)


def _error_checks(
    exp: Experiment, rail: Guardrail, arms: dict[str, RouterFigures], notes: list[str]
) -> dict[str, GuardrailCheck]:
    """Share of the arm's exposures whose outcome is not "ok" (exposures without an
    outcome, logged before the router measured it, are left out). ``max_value``: Wald
    interval of the rate; ``max_drop``: the two-proportion comparison with control (its
    relative lift by the delta method; the absolute lift when control has no errors)."""
    counted: dict[str, ArmSummary] = {}
    for arm, f in arms.items():
        try:
            counted[arm] = proportion_from_counts(f.errors, f.outcomes)
        except InvalidArgument as exc:
            notes.append(f"guardrail error_rate, arm {arm!r}: {exc.message}")
    z = float(special.ndtri(1 - exp.alpha / 2))
    checks: dict[str, GuardrailCheck] = {}
    control = counted.get(exp.control.name)
    for arm, rate in counted.items():
        found: list[GuardrailCheck] = []
        if rail.max_value is not None:
            half = z * math.sqrt(rate.variance)
            found.append(
                _rise("error rate", rate.estimate, (rate.estimate - half, rate.estimate + half),
                      rail.max_value, False, f"share of exposures with an outcome other than "
                      f"ok; Wald interval at level {1 - exp.alpha:g}; max_value "
                      f"{rail.max_value:g}")
            )  # fmt: skip
        if rail.max_drop is not None and control is not None and arm != exp.control.name:
            c = compare(control, rate, alpha=exp.alpha)
            if c.relative_lift is not None and c.relative_ci is not None:
                lift, ci, bound, relative = c.relative_lift, c.relative_ci, rail.max_drop, True
            else:  # control has no errors: any established rise is a breach
                lift, ci, bound, relative = c.absolute_lift, c.absolute_ci, 0.0, False
            found.append(
                _rise("error rate rise against control", lift, ci, bound, relative,
                      f"{c.method}; {c.relative_method if relative else 'absolute lift'}; "
                      f"may rise by at most {rail.max_drop:g}")
            )  # fmt: skip
        if found:
            checks[arm] = _worst(found)
    return checks


def _rise(
    what: str, value: float, ci: tuple[float, float], bound: float, relative: bool, method: str
) -> GuardrailCheck:
    low, high = ci
    breached, significant = value > bound, low > bound

    def fmt(v: float) -> str:
        return f"{v * 100:+.2f}%" if relative else f"{v:.4g}"

    state = (
        "the whole interval is above the bound: the breach is established"
        if significant
        else "above the bound, not established yet (the interval reaches below it)"
        if breached
        else "within the bound"
    )
    evidence = (
        f"{what} {fmt(value)}, interval [{fmt(low)}, {fmt(high)}], bound {fmt(bound)}: {state}"
    )
    return GuardrailCheck(
        method, relative, False, bound, value, (low, high), breached, significant, evidence
    )


def _worst(checks: list[GuardrailCheck]) -> GuardrailCheck:
    return max(checks, key=lambda c: (c.significant, c.breached))


def _now() -> datetime:
    return datetime.now(UTC)
