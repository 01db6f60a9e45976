"""Checks over an experiment's results: sample-ratio mismatch (over the periods of constant
shares a canary or bandit goes through), multiple testing, guardrails."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

from plinth.abtests.stats import Comparison, Interval
from plinth.abtests.types import ExperimentVersion, Status
from plinth.errors import InvalidArgument

K = TypeVar("K", bound=Hashable)

SRM_THRESHOLD = 0.001
# After a change of shares while running, the router (and an embedded Predictor) routes by
# the shares before until it re-reads the experiment (every 2 s by default): units first
# exposed this long after a change are left out of the sample-ratio check.
SETTLE_SECONDS = 60.0
Correction = Literal["holm", "benjamini-hochberg"]
_CORRECTION_NAME: dict[str, str] = {
    "holm": "Holm step-down (family-wise error rate)",
    "benjamini-hochberg": "Benjamini-Hochberg (false discovery rate)",
}


@dataclass(frozen=True)
class SrmCheck:
    """Observed units per arm against the planned shares; ``flagged`` when the assignment
    is very unlikely to have produced the counts (p below ``threshold``)."""

    method: str
    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    df: int
    p_value: float
    threshold: float
    flagged: bool
    unexpected: int = 0  # units first exposed in an arm that had no share then


@dataclass(frozen=True)
class SharePeriod:
    """The shares in force from ``start_ms`` (ms since the epoch) until the next period's
    start: a unit first exposed then reached its arm by them. Units first exposed in its
    first ``settle_ms`` are left out of the check (``SETTLE_SECONDS``)."""

    start_ms: int
    shares: dict[str, float] = field(default_factory=dict)
    settle_ms: int = 0


def share_periods(
    versions: Sequence[ExperimentVersion], settle_seconds: float = SETTLE_SECONDS
) -> list[SharePeriod]:
    """The periods of constant shares in an experiment's history (oldest first): each
    version that is running with other shares than the period before starts one (a start,
    a resume with changed shares, a canary step, a re-allocation). A paused or stopped
    experiment logs no exposures, so it starts no period: an exposure logged just after a
    pause or a rollback was routed by the shares before it, and counts there. Only a change
    made while running leaves the router on the old shares for a moment: that period
    settles for ``settle_seconds`` first."""
    periods: list[SharePeriod] = []
    was_running = False
    for version in versions:
        exp = version.experiment
        running = exp.status is Status.RUNNING
        if running and (not periods or periods[-1].shares != exp.shares):
            start = int(version.changed_at.timestamp() * 1000)
            if periods:  # a clock set back must not reorder the periods
                start = max(start, periods[-1].start_ms)
            settle = round(settle_seconds * 1000) if was_running and periods else 0
            periods.append(SharePeriod(start, dict(exp.shares), settle))
        was_running = running
    return periods


@dataclass(frozen=True)
class AdjustedPValue:
    method: str
    p_value: float
    adjusted_p_value: float
    rejected: bool


@dataclass(frozen=True)
class GuardrailCheck:
    """Whether a lift crosses a "must not get worse by more than ``bound``" line.

    ``breached``: the interval reaches past the bound (a harm that large cannot be ruled
    out at this level). ``significant``: the whole interval lies past it (the harm is
    established); an automatic stop that must not fire on early noise may prefer it.
    """

    method: str
    relative: bool
    higher_is_better: bool
    bound: float
    lift: float
    ci: Interval
    breached: bool
    significant: bool
    evidence: str


def sample_ratio_mismatch(
    observed: Mapping[str, int],
    planned_shares: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SrmCheck:
    """Chi-square goodness of fit of the units per arm to the planned shares (which are
    normalised to sum to 1, so traffic weights work too)."""
    if set(observed) != set(planned_shares) or len(observed) < 2:
        raise InvalidArgument(
            f"SRM check needs the same two or more arms in observed ({sorted(observed)}) and planned shares ({sorted(planned_shares)})"
        )
    arms = list(planned_shares)
    shares = np.array([planned_shares[arm] for arm in arms], dtype=np.float64)
    counts = np.array([observed[arm] for arm in arms], dtype=np.float64)
    if (shares <= 0).any() or not np.isfinite(shares).all():
        raise InvalidArgument(f"planned shares must be positive, got {dict(planned_shares)}")
    if (counts < 0).any() or counts.sum() == 0:
        raise InvalidArgument(f"observed units must be >= 0 and not all 0, got {dict(observed)}")
    expected = counts.sum() * shares / shares.sum()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    df = len(arms) - 1
    p_value = float(stats.chi2.sf(statistic, df))
    return SrmCheck(
        method="chi-square goodness of fit to the planned shares",
        observed={arm: int(observed[arm]) for arm in arms},
        expected=dict(zip(arms, expected.tolist(), strict=True)),
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        flagged=p_value < threshold,
    )


def sample_ratio_mismatch_by_period(
    observed: Sequence[Mapping[str, int]],
    periods: Sequence[SharePeriod],
    *,
    settling: int = 0,
    threshold: float = SRM_THRESHOLD,
) -> SrmCheck | None:
    """One chi-square test over periods of constant shares: ``observed[i]`` are the units
    first exposed in ``periods[i]`` (after it settled) by arm. Each period with two or more
    arms with a share and with units is tested against its own shares; the statistics and
    the degrees of freedom are summed (independent periods: the sum is chi-square under
    the shares). A unit first exposed in an arm without a share in its period cannot
    happen under the shares (its expected count is 0): any such unit flags the check with
    p = 0. ``settling``: units left out while a period settled (said in ``method``). None
    when no period can be tested and no unit is unexpected."""
    if len(observed) != len(periods):
        raise InvalidArgument(
            f"SRM by period needs one count per period, got {len(observed)} for "
            f"{len(periods)} periods"
        )
    statistic, df, checked, unexpected = 0.0, 0, 0, 0
    totals: dict[str, int] = {}
    expected: dict[str, float] = {}
    single: SrmCheck | None = None
    for counts, period in zip(observed, periods, strict=True):
        active = {arm: share for arm, share in period.shares.items() if share > 0}
        for arm in period.shares:
            totals.setdefault(arm, 0)
            expected.setdefault(arm, 0.0)
        stray = {arm: n for arm, n in counts.items() if arm not in active and n}
        for arm, n in stray.items():  # counted, with an expected count of 0
            totals[arm] = totals.get(arm, 0) + n
            expected.setdefault(arm, 0.0)
            unexpected += n
        units = {arm: counts.get(arm, 0) for arm in active}
        if len(active) < 2 or not sum(units.values()):
            continue
        single = sample_ratio_mismatch(units, active, threshold=threshold)
        statistic, df, checked = statistic + single.statistic, df + single.df, checked + 1
        for arm, n in units.items():
            totals[arm] += n
            expected[arm] += single.expected[arm]
    if len(periods) == 1 and single is not None and not unexpected:
        return single  # one period: the plain check, word for word
    if not checked and not unexpected:
        return None
    method = (
        "chi-square goodness of fit per period of constant shares (a change of shares "
        "while running starts one), each unit in the period of its first exposure against "
        "the shares then; the periods' statistics and degrees of freedom summed into one "
        f"test ({checked} of {len(periods)} periods tested: a period with fewer than two "
        "arms with a share, or without units, is skipped)"
    )
    if settling:
        seconds = max(p.settle_ms for p in periods) / 1000
        method += (
            f"; {settling:,} units first exposed within {seconds:g} s after a change of "
            "shares left out (the router may still have routed them by the shares before)"
        )
    p_value = float(stats.chi2.sf(statistic, df)) if df else 1.0
    if unexpected:
        method += (
            f"; {unexpected:,} units were first exposed in an arm that had no share at the "
            "time, which the shares cannot produce: p = 0"
        )
        p_value = 0.0
    return SrmCheck(
        method=method,
        observed=totals,
        expected=expected,
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        flagged=p_value < threshold,
        unexpected=unexpected,
    )


def adjust_p_values(
    p_values: Mapping[K, float], *, method: Correction, alpha: float = 0.05
) -> dict[K, AdjustedPValue]:
    """Corrects a family of p-values (e.g. keyed by ``(metric, arm)``).

    Benjamini-Hochberg is statsmodels' ``multipletests(method="fdr_bh")``. Holm is computed
    here, equal to ``multipletests(method="holm")`` (the tests compare them): statsmodels'
    Holm branch runs ``gc.collect()`` on every call, 50 ms or more in a busy process.
    """
    if method not in _CORRECTION_NAME:
        raise InvalidArgument(
            f"correction must be one of {sorted(_CORRECTION_NAME)}, got {method!r}"
        )
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    if not p_values:
        return {}
    keys = list(p_values)
    raw = np.array([p_values[key] for key in keys], dtype=np.float64)
    if not ((raw >= 0) & (raw <= 1)).all():
        raise InvalidArgument(f"p-values must lie in [0, 1], got {raw.tolist()}")
    if method == "holm":
        adjusted = _holm(raw)
        rejected = adjusted <= alpha
    else:
        rejected, adjusted, _, _ = multipletests(raw, alpha=alpha, method="fdr_bh")
    name = _CORRECTION_NAME[method]
    return {
        key: AdjustedPValue(name, float(p), float(a), bool(r))
        for key, p, a, r in zip(keys, raw, adjusted, rejected, strict=True)
    }


def _holm(raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """Holm's step-down: the i-th smallest of m p-values times ``m - i`` (from 0), made
    non-decreasing in that order, capped at 1."""
    order = np.argsort(raw, kind="stable")
    steps = np.maximum.accumulate((raw.size - np.arange(raw.size)) * raw[order])
    adjusted = np.empty_like(raw)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def check_guardrail(
    comparison: Comparison,
    *,
    max_worsening: float,
    relative: bool = True,
    higher_is_better: bool = True,
) -> GuardrailCheck:
    """The comparison's relative (or absolute) lift against a bound: a metric where higher
    is better must not drop by more than ``max_worsening`` (0.05 = 5 % when relative); one
    where lower is better (latency, errors) must not rise by more than it."""
    if relative:
        if comparison.relative_lift is None or comparison.relative_ci is None:
            raise InvalidArgument("relative guardrail: control's estimate is 0, no relative lift")
        lift, ci = comparison.relative_lift, comparison.relative_ci
    else:
        lift, ci = comparison.absolute_lift, comparison.absolute_ci
    return check_interval(
        lift,
        ci,
        max_worsening=max_worsening,
        relative=relative,
        higher_is_better=higher_is_better,
        method=f"{comparison.method}; interval at level {1 - comparison.alpha:g}",
    )


def check_interval(
    lift: float,
    ci: Interval,
    *,
    max_worsening: float,
    relative: bool,
    higher_is_better: bool,
    method: str,
) -> GuardrailCheck:
    """The same check on any lift and interval (e.g. a sequential confidence sequence's)."""
    if not max_worsening >= 0 or math.isinf(max_worsening):
        raise InvalidArgument(f"max_worsening must be a finite number >= 0, got {max_worsening}")
    low, high = ci
    if higher_is_better:
        bound = -max_worsening
        breached, significant = low < bound, high < bound
        side, word = ("lower", low), "drop"
    else:
        bound = max_worsening
        breached, significant = high > bound, low > bound
        side, word = ("upper", high), "rise"
    fmt = _percent if relative else _number
    kind = "relative" if relative else "absolute"
    size = fmt(max_worsening).lstrip("+")
    state = (
        f"the whole interval is past the bound: a {word} beyond {size} is established"
        if significant
        else f"its {side[0]} bound {fmt(side[1])} is past the bound {fmt(bound)}: a {word} beyond {size} cannot be ruled out"
        if breached
        else f"its {side[0]} bound {fmt(side[1])} is within the bound {fmt(bound)}"
    )
    evidence = f"{kind} lift {fmt(lift)}, interval [{fmt(low)}, {fmt(high)}]; {state}"
    return GuardrailCheck(
        method, relative, higher_is_better, bound, lift, ci, breached, significant, evidence
    )


def _percent(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _number(value: float) -> str:
    return f"{value:+.4g}"
