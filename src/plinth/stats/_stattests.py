"""The individual two-sample drift tests, on plain arrays and counts.

Pure functions: numpy/scipy in, floats out, no warnings escape (degenerate inputs give a
defined answer instead). `plinth.stats.drift` picks the test, feeds it exact values, a
sample or a profile's histogram, and turns the result into a `ColumnDrift`.

Two forms of the categorical chi-square live here on purpose:
`chisquare_vs_reference` is Evidently's (the reference proportions are taken as exact
and the current counts tested against them) and `chisquare_two_sample` is the test of
homogeneity of the 2 x k table, which accounts for the reference being a sample too.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

FloatArray = NDArray[np.float64]
_HAS_VARIANT = "variant" in inspect.signature(stats.anderson_ksamp).parameters


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float | None = None


def ks(reference: FloatArray, current: FloatArray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov, two-sided (scipy's exact/asymptotic choice)."""
    res = stats.ks_2samp(reference, current)
    return TestResult(float(res.statistic), float(res.pvalue))


def anderson(reference: FloatArray, current: FloatArray) -> TestResult:
    """Anderson-Darling k-sample (midrank); scipy caps the p-value to [0.001, 0.25]."""
    if np.unique(np.concatenate([reference, current])).size < 2:
        return TestResult(0.0, 1.0)  # all values equal: nothing to compare
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="p-value (capped|floored)")
        # SciPy 1.17 added `variant` (and warns without it); before, midrank was the default
        kwargs = {"variant": "midrank"} if _HAS_VARIANT else {}
        res = stats.anderson_ksamp([reference, current], **kwargs)
    return TestResult(float(res.statistic), float(res.pvalue))


def wasserstein_norm(reference: FloatArray, current: FloatArray) -> TestResult:
    """W1 distance divided by max(population std of the reference, 0.001)."""
    norm = max(float(np.std(reference)), 0.001)
    return TestResult(float(stats.wasserstein_distance(reference, current)) / norm)


def wasserstein_from_cdfs(points: FloatArray, cdf_ref: FloatArray, cdf_cur: FloatArray) -> float:
    """Integral of |F_ref - F_cur| for CDFs linear between consecutive `points`."""
    a = cdf_ref[:-1] - cdf_cur[:-1]
    b = cdf_ref[1:] - cdf_cur[1:]
    h = np.diff(points)
    same = a * b >= 0
    area = np.where(same, (np.abs(a) + np.abs(b)) / 2, 0.0)
    denom = np.abs(a) + np.abs(b)
    crossing = np.divide(a * a + b * b, 2 * denom, out=np.zeros_like(a), where=denom > 0)
    return float(np.sum(h * np.where(same, area, crossing)))


def fill_zeros(shares: FloatArray) -> FloatArray:
    """Evidently's zero filling for PSI: empty bins get min(nonzero)/1e6 if that minimum
    is <= 0.0001, else 0.0001 (utils.get_binned_data, feel_zeroes=True)."""
    out = shares.astype(np.float64).copy()
    nonzero = out[out != 0]
    if nonzero.size == 0:
        return out
    low = float(nonzero.min())
    out[out == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return out


def psi(ref_counts: FloatArray, cur_counts: FloatArray) -> TestResult:
    """Population stability index of two binned distributions (zero-filled shares)."""
    ref = fill_zeros(_shares(ref_counts))
    cur = fill_zeros(_shares(cur_counts))
    return TestResult(float(np.sum((ref - cur) * np.log(ref / cur))))


def jensenshannon(ref_counts: FloatArray, cur_counts: FloatArray) -> TestResult:
    """Jensen-Shannon distance (natural log, so in [0, sqrt(ln 2)]), no zero filling."""
    ref, cur = _shares(ref_counts), _shares(cur_counts)
    if ref.sum() == 0 or cur.sum() == 0:
        return TestResult(0.0)
    return TestResult(float(distance.jensenshannon(ref, cur)))


def chisquare_vs_reference(ref_counts: FloatArray, cur_counts: FloatArray) -> TestResult:
    """Evidently's chi-square: current counts against reference counts scaled to the
    current size, the reference taken as exact. A category absent from the reference but
    present in the current data gives an infinite statistic and p = 0."""
    n_ref, n_cur = float(ref_counts.sum()), float(cur_counts.sum())
    expected = ref_counts * (n_cur / n_ref)
    if np.any((expected == 0) & (cur_counts > 0)):
        return TestResult(math.inf, 0.0)
    keep = expected > 0
    if keep.sum() < 2:
        return TestResult(0.0, 1.0)
    res = stats.chisquare(cur_counts[keep], expected[keep])
    return TestResult(float(res.statistic), float(res.pvalue))


def chisquare_two_sample(ref_counts: FloatArray, cur_counts: FloatArray) -> TestResult:
    """Chi-square test of homogeneity of the 2 x k table (no continuity correction)."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return TestResult(0.0, 1.0)
    res = stats.chi2_contingency(table, correction=False)
    return TestResult(float(res.statistic), float(res.pvalue))


def ztest(ref_ones: float, n_ref: float, cur_ones: float, n_cur: float) -> TestResult:
    """Pooled two-proportion z-test, two-sided (Evidently's z_stattest form)."""
    p1, p2 = ref_ones / n_ref, cur_ones / n_cur
    pooled = (ref_ones + cur_ones) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if var <= 0:
        return TestResult(0.0, 1.0)  # one value on both sides
    z = (p1 - p2) / math.sqrt(var)
    return TestResult(z, float(2 * (1 - stats.norm.cdf(abs(z)))))


def interval(outside: int, n: int, ref_outside: int, m: int) -> TestResult:
    """Share of the `n` current values outside the reference's central interval, and the
    one-sided p-value of at least `outside` of them falling there under no drift.

    The interval's ends are estimated from the `m` reference values, `ref_outside` of
    which lie outside it; with no drift (exchangeable values) the mass outside an interval
    between order statistics is Beta(ref_outside + 1, m - ref_outside), so the current
    count outside is beta-binomial. A binomial test at 5% would ignore the reference's
    own noise (with 50 reference rows it flags ~27% of undrifted columns)."""
    a, b = ref_outside + 1, max(m - ref_outside, 1)
    p = float(stats.betabinom.sf(outside - 1, n, a, b)) if outside > 0 else 1.0
    return TestResult(outside / n, min(max(p, 0.0), 1.0))


def _shares(counts: FloatArray) -> FloatArray:
    total = float(counts.sum())
    return counts / total if total > 0 else counts.astype(np.float64)
