"""An experiment's primary KPI over time: at evenly spaced cut times from its first exposure
to its last counted event or exposure, the cumulative units, estimate per arm, lift against
control and the always-valid (mSPRT) interval on the lift, narrowing as data come in.

Each point counts what was known at its cut time under the results' rules (``logs.py``):
units whose first exposure is at or before it, and their events at or after their first
exposure and at or before it. The estimates and lifts are the fixed-horizon ones
(``stats.compare``) at each cut; the interval is the confidence sequence of
``sequential.py`` over the points, each the running intersection of those before it, with
the mixing variance ``results.mixing_variance`` picks from the data at the last cut, so
the last point's interval lies within ``Results.sequential``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from plinth.abtests.logs import ArmMoments, Figure, Increments, Logs
from plinth.abtests.results import (
    kpi_figures,
    kpi_moments,
    kpi_pairs,
    mixing_variance,
    summary,
)
from plinth.abtests.sequential import sequential_test
from plinth.abtests.stats import ArmSummary, compare
from plinth.abtests.types import Experiment, Kpi
from plinth.errors import InvalidArgument

_JSON = {"ser_json_inf_nan": "strings"}
MAX_POINTS = 1000


@dataclass(frozen=True)
class TimelinePoint:
    """Cumulative from the start up to ``at``. ``estimate`` has the arms with at least two
    units; ``lift``, ``lower`` and ``upper`` the treatment arms compared with control."""

    __pydantic_config__ = _JSON

    at: datetime
    units: dict[str, int]
    estimate: dict[str, float]
    lift: dict[str, float]
    lower: dict[str, float]
    upper: dict[str, float]


@dataclass(frozen=True)
class Timeline:
    __pydantic_config__ = _JSON

    experiment: str
    kpi: Kpi
    control: str
    method: str
    points: list[TimelinePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compute_timeline(exp: Experiment, root: str, points: int = 60) -> Timeline:
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= MAX_POINTS:
        raise InvalidArgument(f"points: a whole number from 1 to {MAX_POINTS}, got {points!r}")
    kpi = exp.primary
    figures, pairs = kpi_figures(kpi), [(f, f) for f in kpi_figures(kpi)] + kpi_pairs(kpi)
    method = (
        "cumulative at each cut time: the arm's KPI as in the results; lift: treatment "
        "minus control; interval: "
    )
    arms = [a.name for a in exp.arms]
    with Logs(root, exp.name, arms) as logs:
        span = logs.span(sorted({f.event for f in figures}))
        if span is None:
            return Timeline(exp.name, kpi, exp.control.name, method + "none yet",
                            notes=["no exposures logged yet"])  # fmt: skip
        start, end = span
        found = logs.increments(figures, pairs, start, end - start, points)
    cuts = points if end > start else 1
    looks = _looks(exp, found, figures, pairs, cuts)
    notes: list[str] = []
    points_out, mixing_method = _points(exp, looks, start, end, cuts, notes)
    return Timeline(exp.name, kpi, exp.control.name, method + mixing_method, points_out, notes)


def _looks(
    exp: Experiment,
    found: Increments,
    figures: list[Figure],
    pairs: list[tuple[Figure, Figure]],
    cuts: int,
) -> list[dict[str, ArmMoments]]:
    """Per cut, each design arm's moments over the units exposed by then (running sums of
    the increments); an arm's variances need two units, before that they are 0."""
    looks: list[dict[str, ArmMoments]] = []
    units = dict.fromkeys(found.units, 0)
    sums: dict[str, dict[Figure, float]] = {arm: {} for arm in found.units}
    products: dict[str, dict[tuple[Figure, Figure], float]] = {arm: {} for arm in found.units}
    for k in range(1, cuts + 1):
        look: dict[str, ArmMoments] = {}
        for arm in found.units:
            units[arm] += found.units[arm].get(k, 0)
            for f, v in found.sums.get(arm, {}).get(k, {}).items():
                sums[arm][f] = sums[arm].get(f, 0.0) + v
            for p, v in found.products.get(arm, {}).get(k, {}).items():
                products[arm][p] = products[arm].get(p, 0.0) + v
            if units[arm]:
                look[arm] = _moments(units[arm], sums[arm], products[arm], figures, pairs)
        looks.append(look)
    return looks


def _moments(
    n: int,
    sums: dict[Figure, float],
    products: dict[tuple[Figure, Figure], float],
    figures: list[Figure],
    pairs: list[tuple[Figure, Figure]],
) -> ArmMoments:
    means = {f: sums.get(f, 0.0) / n for f in figures}
    dof = max(n - 1, 1)
    cov = {(a, b): (products.get((a, b), 0.0) - n * means[a] * means[b]) / dof for a, b in pairs}
    variances = {f: max(cov.get((f, f), 0.0), 0.0) for f in figures}
    return ArmMoments(n, 0, {f: sums.get(f, 0.0) for f in figures}, means, variances, cov)


def _points(
    exp: Experiment,
    looks: list[dict[str, ArmMoments]],
    start: int,
    end: int,
    cuts: int,
    notes: list[str],
) -> tuple[list[TimelinePoint], str]:
    kpi, control = exp.primary, exp.control.name
    summaries: list[dict[str, ArmSummary]] = []
    for look in looks:
        at_cut: dict[str, ArmSummary] = {}
        for arm, m in look.items():
            try:
                at_cut[arm] = summary(kpi, kpi_moments(kpi, m))
            except InvalidArgument:
                continue
        summaries.append(at_cut)
    treatments = [a.name for a in exp.arms if a.name != control]
    bounds: dict[str, dict[int, tuple[float, float]]] = {}
    method = "no interval yet (no variance)"
    last = summaries[-1] if summaries else {}
    for arm in treatments:
        if control not in last or arm not in last:
            continue
        mixing = mixing_variance(exp, last[control], last[arm], notes)
        if mixing is None:
            notes.append(f"sequential: arm {arm!r} has no variance yet")
            continue
        tau2, method = mixing
        index = [i for i, s in enumerate(summaries) if control in s and arm in s]
        result = sequential_test(
            [summaries[i][control] for i in index],
            [summaries[i][arm] for i in index],
            alpha=exp.alpha,
            mixing_variance=tau2,
        )
        bounds[arm] = {i: look.ci for i, look in zip(index, result.looks, strict=True)}
    out: list[TimelinePoint] = []
    for i, at_cut in enumerate(summaries):
        at_ms = start + (end - start) * (i + 1) / cuts
        lift: dict[str, float] = {}
        lower: dict[str, float] = {}
        upper: dict[str, float] = {}
        for arm in treatments:
            if control in at_cut and arm in at_cut:
                lift[arm] = compare(at_cut[control], at_cut[arm], alpha=exp.alpha).absolute_lift
            if i in bounds.get(arm, {}):
                lower[arm], upper[arm] = bounds[arm][i]
        out.append(
            TimelinePoint(
                at=datetime.fromtimestamp(at_ms / 1000, UTC),
                units={arm: m.units for arm, m in looks[i].items()},
                estimate={arm: s.estimate for arm, s in at_cut.items()},
                lift=lift,
                lower=lower,
                upper=upper,
            )
        )
    return out, method
