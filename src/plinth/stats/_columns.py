"""One column's drift test: which columns, which test, on what, and the verdict.

Private to `plinth.stats.drift` (which documents the rules); kept apart so that the
public module reads as API and dataset verdict only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from plinth.errors import InvalidArgument
from plinth.stats import _stattests as st
from plinth.stats._sides import PairCounts, Side, combined_distinct, distinct, pair_counts

if TYPE_CHECKING:
    from plinth.stats.drift import ColumnDrift
    from plinth.stats.profile import ColumnProfile, TableProfile

TestKind = Literal["numeric", "categorical"]
TESTS = (
    "ks",
    "wasserstein",
    "psi",
    "anderson",
    "interval",
    "chisquare",
    "jensenshannon",
    "ztest",
)
P_VALUE_TESTS = frozenset({"ks", "anderson", "chisquare", "ztest", "interval"})
NUMERIC_ONLY = frozenset({"ks", "wasserstein", "anderson", "interval"})
DISTANCE_DEFAULTS = {"wasserstein": 0.1, "psi": 0.1, "jensenshannon": 0.1, "interval": 0.10}
# Evidently's StatTest default_threshold values (legacy/calculations/stattests/*.py).
EVIDENTLY_P_DEFAULTS = {"ks": 0.05, "chisquare": 0.05, "ztest": 0.05, "anderson": 0.1}
SMALL_REFERENCE = 1000  # registry._get_default_stattest: reference_data.shape[0] <= 1000
FEW_VALUES = 5  # numeric columns with <= 5 distinct values get categorical tests
BINNING_DISTINCT = 20  # utils.get_binned_data: reference nunique > 20 -> histogram bins
EVIDENTLY_INT_CARDINALITY = 10  # core/datasets.py INTEGER_CARDINALITY_LIMIT
INTERVAL_TAIL = 0.025  # [q2.5, q97.5]
PLINTH_PSI_BINS = 10


@dataclass(frozen=True)
class Settings:
    preset: str
    tests: dict[str, str]
    thresholds: dict[str, float]
    alpha: float
    sample_size: int


@dataclass(frozen=True)
class Outcome:
    result: st.TestResult
    method: str
    sample_size: int | None = None
    detail: str = ""


class Untestable(Exception):
    """The column cannot be tested; the message names it and says why."""


def select(
    ref: TableProfile, cur: TableProfile, columns: Sequence[str] | None, settings: Settings
) -> list[str]:
    """The columns to test: the named ones (each must exist on both sides), else every
    numeric or categorical column of either side (Evidently: its typing of current)."""
    if columns is not None:
        for name in columns:
            _check_named(name, ref, cur)
        return list(dict.fromkeys(columns))
    names = list(ref.columns) + [c for c in cur.columns if c not in ref.columns]
    return [n for n in names if _tested_by_default(n, ref, cur, settings.preset)]


def column_drift(
    name: str, ref: TableProfile, cur: TableProfile, s: Settings, result: type[ColumnDrift]
) -> ColumnDrift:
    """The column's `ColumnDrift` (the class is passed in: drift.py owns it)."""
    rows = (ref.rows, cur.rows)
    try:
        rcol, ccol = _both_sides(name, ref, cur)
        kind = _test_kind_of(name, rcol, ccol, s.preset)
        r, c = Side(rcol, _numeric(rcol)), Side(ccol, _numeric(ccol))
        test = _choose_test(name, kind, r, c, s)
        out = _run(test, kind, r, c, s)
        _check_finite(name, test, out.result)
    except Untestable as e:
        kind_name = _plain_kind(ref, cur, name)
        return result(name, kind_name, "", None, None, 0.0, False, "", None, *rows, error=str(e))
    threshold = _threshold(test, s)
    drifted = _verdict(test, out.result, threshold, s)
    return result(
        column=name,
        kind=kind,
        test=test,
        statistic=out.result.statistic,
        p_value=out.result.p_value,
        threshold=threshold,
        drifted=drifted,
        method=out.method,
        sample_size=out.sample_size,
        reference_rows=ref.rows,
        current_rows=cur.rows,
        detail=out.detail,
    )


def _check_finite(name: str, test: str, result: st.TestResult) -> None:
    """A NaN statistic is no verdict (values near +-1.7e308 overflow the arithmetic)."""
    p = result.p_value
    if math.isnan(result.statistic) or (p is not None and math.isnan(p)):
        raise Untestable(
            f"column '{name}': '{test}' gives no finite result on these values (they "
            "overflow float64 arithmetic, e.g. values near +-1.7e308)"
        )


def interval_share_exceeded(r: ColumnDrift) -> bool:
    return r.statistic is not None and r.statistic > r.threshold


def evidently_type(col: ColumnProfile) -> str | None:
    """Evidently 0.7's column type (core/datasets.py infer_column_type) of the column as
    pandas holds it after Arrow's to_pandas(): "numerical", "categorical", "text" or None
    (not tested: unsigned ints, datetimes, decimals, booleans with nulls)."""
    dtype, valid = col.dtype, col.count - col.nulls
    if dtype.startswith(("double", "float", "halffloat")):
        return "numerical"
    if dtype.startswith(("int", "uint")):
        if col.nulls:
            return "numerical"  # an integer column with nulls arrives as float64
        if dtype.startswith("uint"):
            return None  # dtype name "uint.." does not start with "int": Unknown
        few = (col.distinct if col.distinct is not None else 1 << 62) <= EVIDENTLY_INT_CARDINALITY
        return "categorical" if few else "numerical"
    if dtype in ("string", "large_string", "string_view", "utf8", "large_utf8"):
        if valid == 0:
            return None
        return "text" if (col.distinct or 0) > valid * 0.5 else "categorical"
    if dtype == "bool":
        return None if col.nulls else "categorical"
    if dtype.startswith("dictionary"):
        return "categorical"
    return None


def _check_named(name: str, ref: TableProfile, cur: TableProfile) -> None:
    for side, table in (("reference", ref), ("current", cur)):
        if name not in table.columns:
            raise InvalidArgument(f"column '{name}' is not in the {side} data")
    for table in (ref, cur):
        col = table.columns[name]
        if col.kind == "other":
            raise InvalidArgument(
                f"column '{name}' has type {col.dtype}, which no drift test takes"
            )


def _tested_by_default(name: str, ref: TableProfile, cur: TableProfile, preset: str) -> bool:
    col = _typed(cur.columns.get(name), ref.columns.get(name))
    if preset == "evidently" and col is cur.columns.get(name) and cur.rows > 0:
        return evidently_type(col) is not None or col.valid == 0
    return col.kind in ("numeric", "categorical")


def _typed(first: ColumnProfile | None, second: ColumnProfile | None) -> ColumnProfile:
    """The first side's column unless it is missing or has no typed values (an all-null
    column of Arrow's null type), then the second's."""
    if first is None or (first.dtype == "null" and second is not None):
        assert second is not None
        return second
    return first


def _both_sides(
    name: str, ref: TableProfile, cur: TableProfile
) -> tuple[ColumnProfile, ColumnProfile]:
    for side, table in (("reference", ref), ("current", cur)):
        if name not in table.columns:
            raise Untestable(f"column '{name}' is missing from the {side} data")
        if table.rows == 0:
            raise Untestable(f"column '{name}': the {side} data has no rows")
    rcol, ccol = ref.columns[name], cur.columns[name]
    for side, col in (("reference", rcol), ("current", ccol)):
        if Side(col, _numeric(col)).n == 0:
            what = "finite" if _numeric(col) and col.valid else "non-null"
            raise Untestable(f"column '{name}' has no {what} values in the {side} data")
    if rcol.kind != ccol.kind:
        raise Untestable(
            f"column '{name}' changed type: {rcol.dtype} in the reference, "
            f"{ccol.dtype} in the current data"
        )
    return rcol, ccol


def _test_kind_of(name: str, rcol: ColumnProfile, ccol: ColumnProfile, preset: str) -> TestKind:
    if preset == "evidently":
        etype = evidently_type(ccol)
        if etype == "text":
            raise Untestable(
                f"column '{name}': Evidently 0.7 treats it as text (distinct values > 50% "
                "of rows) and runs a text-drift classifier, which Plinth does not replicate"
            )
        if etype is None:
            raise Untestable(
                f"column '{name}': Evidently 0.7 gives type {ccol.dtype} no drift test"
            )
        return "numeric" if etype == "numerical" else "categorical"
    if ccol.kind == "other":
        raise Untestable(f"column '{name}' has type {ccol.dtype}, which no drift test takes")
    return "categorical" if ccol.kind == "categorical" else "numeric"


def _choose_test(name: str, kind: TestKind, r: Side, c: Side, s: Settings) -> str:
    asked = s.tests.get(name)
    if asked is not None:
        if kind == "categorical" and asked in NUMERIC_ONLY:
            raise InvalidArgument(
                f"drift test '{asked}' needs a numeric column; '{name}' is categorical"
            )
        return asked
    n_values = combined_distinct(r, c)
    small = r.n <= SMALL_REFERENCE
    if kind == "numeric" and n_values > FEW_VALUES:
        return "ks" if small else "wasserstein"
    if small:
        return "ztest" if n_values <= 2 else "chisquare"
    return "jensenshannon"


def _run(test: str, kind: TestKind, r: Side, c: Side, s: Settings) -> Outcome:
    if test in ("ks", "anderson"):
        return _on_values(test, r, c)
    if test == "wasserstein":
        return _wasserstein(r, c)
    if test == "interval":
        return _interval(r, c)
    by_value = kind == "categorical" or test in ("chisquare", "ztest")
    if test in ("psi", "jensenshannon") and not by_value:
        by_value = distinct(r) <= BINNING_DISTINCT
    if by_value:
        return _on_counts(test, r, c, s)
    return _binned(test, r, c, s)


def _on_values(test: str, r: Side, c: Side) -> Outcome:
    ra, ca = r.values(), c.values()
    result = st.ks(ra, ca) if test == "ks" else st.anderson(ra, ca)
    if r.exact and c.exact:
        return Outcome(result, "exact")
    sampled = [len(x) for x, side in ((ra, r), (ca, c)) if not side.exact]
    return Outcome(result, "sample", max(sampled), f"on samples of {len(ra)} and {len(ca)} values")


def _wasserstein(r: Side, c: Side) -> Outcome:
    if r.exact and c.exact:
        return Outcome(st.wasserstein_norm(r.values(), c.values()), "exact")
    rp, cp = _on_common_grid(r, c)
    assert rp.histogram is not None and cp.histogram is not None
    edges = np.union1d(rp.histogram.edges(), cp.histogram.edges())
    points = np.union1d(edges, np.union1d(r.values(), c.values()))
    w = st.wasserstein_from_cdfs(points, rp.cdf(points), cp.cdf(points))
    norm = max(r.population_std(), 0.001)
    return Outcome(
        st.TestResult(w / norm), "profile", None, "on the profiles' fixed-grid histograms"
    )


def _interval(r: Side, c: Side) -> Outcome:
    if r.exact and c.exact:
        ra, ca = r.values(), c.values()
        lo, hi = np.quantile(ra, [INTERVAL_TAIL, 1 - INTERVAL_TAIL])
        ref_out = int(np.sum(ra < lo) + np.sum(ra > hi))
        outside, n, method = int(np.sum(ca < lo) + np.sum(ca > hi)), len(ca), "exact"
    else:
        rp, cp = _on_common_grid(r, c)
        lo, hi = (float(x) for x in rp.quantile(np.array([INTERVAL_TAIL, 1 - INTERVAL_TAIL])))
        n, method = c.n, "profile"
        outside = _count_outside(cp, lo, hi, n)
        ref_out = _count_outside(rp, lo, hi, r.n)
    result = st.interval(outside, n, ref_out, r.n)
    return Outcome(result, method, None, f"reference [q2.5, q97.5] = [{lo:.6g}, {hi:.6g}]")


def _count_outside(col: ColumnProfile, lo: float, hi: float, n: int) -> int:
    share = float(col.cdf(lo)) + 1.0 - float(col.cdf(hi))
    return min(n, max(0, round(share * n)))


def _on_counts(test: str, r: Side, c: Side, s: Settings) -> Outcome:
    counts = pair_counts(r, c)
    if counts is None:
        raise Untestable(
            f"column '{r.col.name}': '{test}' needs counts per value, and the profiles do "
            "not track this column's values"
        )
    result = _count_test(test, counts, s)
    method = "exact" if r.exact and c.exact else "profile"
    detail = "" if counts.exact else "values beyond the profile's tracked ones counted as one"
    if test == "ztest" and len(counts.keys) > 2:
        detail = f"'{counts.keys[0]}' against all other values"
    return Outcome(result, method, None, detail)


def _count_test(test: str, counts: PairCounts, s: Settings) -> st.TestResult:
    ref, cur = counts.reference, counts.current
    if test == "chisquare":
        if s.preset == "evidently":
            return st.chisquare_vs_reference(ref, cur)
        return st.chisquare_two_sample(ref, cur)
    if test == "ztest":
        n_ref, n_cur = float(ref.sum()), float(cur.sum())
        return st.ztest(n_ref - ref[0], n_ref, n_cur - cur[0], n_cur)
    if test == "psi":
        return st.psi(ref, cur)
    return st.jensenshannon(ref, cur)


def _binned(test: str, r: Side, c: Side, s: Settings) -> Outcome:
    exact = r.exact and c.exact
    if s.preset == "evidently":
        ref_counts, cur_counts = _sturges_counts(r, c, exact)
        detail = f"{len(ref_counts)} Sturges bins on reference and current together"
    else:
        ref_counts, cur_counts = _decile_counts(r, c, exact)
        detail = f"{len(ref_counts)} bins at the reference's deciles"
    result = (
        st.psi(ref_counts, cur_counts)
        if test == "psi"
        else st.jensenshannon(ref_counts, cur_counts)
    )
    return Outcome(result, "exact" if exact else "profile", None, detail)


def _sturges_counts(r: Side, c: Side, exact: bool) -> tuple[st.FloatArray, st.FloatArray]:
    """numpy's 'sturges' edges over both sides, as Evidently's get_binned_data."""
    if exact:
        ra, ca = r.values(), c.values()
        edges = np.histogram_bin_edges(np.concatenate([ra, ca]), bins="sturges")
        return _f(np.histogram(ra, edges)[0]), _f(np.histogram(ca, edges)[0])
    lo = min(_num(r.col.min), _num(c.col.min))
    hi = max(_num(r.col.max), _num(c.col.max))
    n = r.n + c.n
    if hi <= lo:
        lo, hi, bins = lo - 0.5, hi + 0.5, 1
    else:
        width = (hi - lo) / (math.log2(n) + 1.0)
        bins = max(1, math.ceil((hi - lo) / width))
    edges = np.linspace(lo, hi, bins + 1)
    rp, cp = _on_common_grid(r, c)
    return _f(rp.rebin(edges)), _f(cp.rebin(edges))


def _decile_counts(r: Side, c: Side, exact: bool) -> tuple[st.FloatArray, st.FloatArray]:
    q = np.linspace(0, 1, PLINTH_PSI_BINS + 1)[1:-1]
    if exact:
        ra, ca = r.values(), c.values()
        inner = np.unique(np.quantile(ra, q))
        return _bucket(ra, inner), _bucket(ca, inner)
    rp, cp = _on_common_grid(r, c)
    inner = np.unique(rp.quantile(q))
    lo = min(_num(r.col.min), _num(c.col.min), float(inner[0]))
    hi = max(_num(r.col.max), _num(c.col.max), float(inner[-1]))
    edges = np.concatenate([[lo], inner, [hi]])
    return _f(rp.rebin(edges, clip=True)), _f(cp.rebin(edges, clip=True))


def _bucket(values: st.FloatArray, inner: st.FloatArray) -> st.FloatArray:
    """Counts in the bins (-inf, inner[0]), [inner[0], inner[1]), ..., [inner[-1], inf)."""
    index = np.searchsorted(inner, values, side="right")
    return _f(np.bincount(index, minlength=len(inner) + 1))


def _on_common_grid(r: Side, c: Side) -> tuple[ColumnProfile, ColumnProfile]:
    """Both sides' profiles with their histograms on the coarser of the two grids: read
    on grids of different widths, the straight lines inside bins invent differences
    between identical data. Tests read them through ColumnProfile.cdf/quantile/rebin,
    which shape a coarse bin with the sample's points there."""
    hr, hc = r.histogram(), c.histogram()
    if hr is None or hc is None:
        raise Untestable(f"column '{r.col.name}' has no histogram in its profile")
    width = max(hr.width, hc.width)
    return (
        replace(r.col, histogram=hr.coarsened(width)),
        replace(c.col, histogram=hc.coarsened(width)),
    )


def _threshold(test: str, s: Settings) -> float:
    if test in s.thresholds:
        return s.thresholds[test]
    if test in DISTANCE_DEFAULTS:
        return DISTANCE_DEFAULTS[test]
    if s.preset == "evidently":
        return EVIDENTLY_P_DEFAULTS[test]
    return s.alpha


def _verdict(test: str, result: st.TestResult, threshold: float, s: Settings) -> bool:
    if test == "interval":
        p = result.p_value if result.p_value is not None else 1.0
        return result.statistic > threshold and p < s.alpha
    if test in P_VALUE_TESTS:
        p = result.p_value if result.p_value is not None else 1.0
        # ks_stattest.py: p_value <= threshold; the others: p_value < threshold
        return p <= threshold if (test == "ks" and s.preset == "evidently") else p < threshold
    return result.statistic >= threshold


def _numeric(col: ColumnProfile) -> bool:
    return col.kind in ("numeric", "temporal")


def _plain_kind(ref: TableProfile, cur: TableProfile, name: str) -> str:
    col = _typed(cur.columns.get(name), ref.columns.get(name))
    return "categorical" if col.kind == "categorical" else "numeric"


def _num(value: float | None) -> float:
    return float(value) if value is not None else 0.0


def _f(counts: Any) -> st.FloatArray:
    return np.asarray(counts, dtype=np.float64)
