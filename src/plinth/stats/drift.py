"""Data drift: per-column two-sample tests and a dataset verdict.

`drift_report(reference, current)` compares two tables (or their `TableProfile`s)
column by column and says which columns drifted and whether the dataset did (the share
of drifted columns reaches `share_threshold`, 0.5 by default). `trend(times, values)`
tests a statistic for a slope over time.

Tests and their defaults (`thresholds` overrides a test's threshold; `tests` picks
the test for a column):

- numeric: ``ks`` two-sample Kolmogorov-Smirnov (p < alpha; Evidently: p <= 0.05),
  ``wasserstein`` W1 distance / population std of the reference (>= 0.1), ``psi``
  population stability index (>= 0.1), ``anderson`` Anderson-Darling k-sample (p-value
  capped by scipy to [0.001, 0.25]; p < alpha, Evidently 0.1), ``interval`` share of
  current values outside the reference's [q2.5, q97.5] (drifted when above 0.10 AND
  its one-sided beta-binomial p-value, which allows for the reference's own noise, is
  below alpha).
- categorical (and numeric columns with at most 5 distinct values): ``chisquare``,
  ``jensenshannon`` distance (natural log, >= 0.1), ``psi``, ``ztest`` two-proportion
  z-test for binary columns (p < alpha).

Default test per column, both presets (Evidently 0.7's rule, registry.py
`_get_default_stattest`): reference of at most 1,000 non-null values: numeric ``ks``,
binary ``ztest``, otherwise ``chisquare``; larger references: numeric ``wasserstein``,
otherwise ``jensenshannon``. Numeric columns with at most 5 distinct values (both sides
together) count as categorical.

Presets: ``evidently`` reproduces Evidently 0.7's DataDriftPreset (its column typing,
its chi-square that takes the reference proportions as exact, no multiple-testing
control). ``plinth`` (default) uses the two-sample chi-square test of homogeneity and
Benjamini-Hochberg across the p-value tests at `alpha`. docs/monitoring.md has every
rule with its source.

Large data: a side is *exact* when its profile's sample holds all its values (raw
input of at most `sample_size` rows). Otherwise ``wasserstein``, ``psi``,
``jensenshannon`` and ``interval`` run on the profiles (fixed-grid histograms, tracked
counts; method ``profile``), ``ks`` and ``anderson`` on the samples (method ``sample``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
from scipy import stats  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument
from plinth.stats import _columns
from plinth.stats._columns import P_VALUE_TESTS, TESTS, Settings
from plinth.stats.profile import TableProfile, profile

PRESETS = ("plinth", "evidently")
DEFAULT_SHARE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ColumnDrift:
    """The drift test of one column; `error` says why it could not be tested."""

    column: str
    kind: str
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    method: str
    sample_size: int | None
    reference_rows: int
    current_rows: int
    detail: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnDrift:
        return cls(**_known(cls, d))

    @property
    def score(self) -> float | None:
        """The figure the verdict is judged on: the p-value of a p-value test, else the
        statistic (a distance)."""
        return self.p_value if self.p_value is not None else self.statistic


@dataclass(frozen=True)
class DriftReport:
    """Per-column results and the dataset verdict."""

    preset: str
    columns: list[ColumnDrift]
    tested_columns: int
    drifted_columns: int
    drifted_share: float
    share_threshold: float
    dataset_drifted: bool
    correction: str | None
    alpha: float
    reference_rows: int
    current_rows: int

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "columns"}
        d["columns"] = [c.to_dict() for c in self.columns]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftReport:
        """Also from a dict with more keys (a stored verdict may add its reference)."""
        cols = [ColumnDrift.from_dict(c) for c in d["columns"]]
        return cls(**{**_known(cls, d), "columns": cols})

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        raise InvalidArgument(f"column '{name}' is not in this drift report")

    def summary(self) -> str:
        text = (
            f"{self.drifted_columns} of {self.tested_columns} columns drifted "
            f"({100 * self.drifted_share:.0f}%)"
        )
        errors = sum(1 for c in self.columns if c.error is not None)
        if errors:
            text += f"; {errors} not tested"
        return text


@dataclass(frozen=True)
class Trend:
    """OLS fit of a statistic on time (seconds when times are datetimes)."""

    slope: float
    intercept: float
    p_value: float
    r: float
    n: int = field(default=0)


def drift_report(
    reference: Any,
    current: Any,
    *,
    preset: str = "plinth",
    columns: Sequence[str] | None = None,
    tests: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
    share_threshold: float | None = None,
    alpha: float = 0.05,
    sample_size: int = 5000,
    seed: int = 0,
) -> DriftReport:
    """Test each column of `current` against `reference` (TableProfiles or their
    `to_dict()`, or anything `profile()` takes, profiled here with `sample_size`)."""
    settings = _settings(preset, tests, thresholds, alpha, sample_size)
    share = DEFAULT_SHARE_THRESHOLD if share_threshold is None else share_threshold
    if not 0 < share <= 1:
        raise InvalidArgument(f"share_threshold must be in (0, 1], got {share}")
    ref = _as_profile(reference, columns, sample_size, seed, "reference")
    cur = _as_profile(current, columns, sample_size, seed + 1, "current")
    names = _columns.select(ref, cur, columns, settings)
    results = [_columns.column_drift(name, ref, cur, settings, ColumnDrift) for name in names]
    if preset == "plinth":
        results = _benjamini_hochberg(results, alpha)
    tested = [r for r in results if r.error is None]
    drifted = sum(1 for r in tested if r.drifted)
    share_drifted = drifted / len(tested) if tested else 0.0
    return DriftReport(
        preset=preset,
        columns=results,
        tested_columns=len(tested),
        drifted_columns=drifted,
        drifted_share=share_drifted,
        share_threshold=share,
        dataset_drifted=bool(tested) and share_drifted >= share,
        correction="benjamini-hochberg" if preset == "plinth" else None,
        alpha=alpha,
        reference_rows=ref.rows,
        current_rows=cur.rows,
    )


def trend(times: Iterable[Any], values: Iterable[Any]) -> Trend:
    """Slope of `values` regressed on `times` (scipy.stats.linregress) and its two-sided
    p-value; NaN pairs are dropped, datetimes become epoch seconds."""
    t = _as_seconds(times)
    v = np.asarray(list(values), dtype=np.float64)
    if t.shape != v.shape:
        raise InvalidArgument(f"trend needs as many times as values, got {t.size} and {v.size}")
    keep = np.isfinite(t) & np.isfinite(v)
    t, v = t[keep], v[keep]
    if t.size < 3:
        raise InvalidArgument(f"trend needs at least 3 points with a value, got {t.size}")
    if np.ptp(t) == 0:
        raise InvalidArgument("trend needs at least two distinct times")
    if np.ptp(v) == 0:
        return Trend(0.0, float(v[0]), 1.0, 0.0, int(t.size))
    res = stats.linregress(t, v)
    return Trend(
        float(res.slope), float(res.intercept), float(res.pvalue), float(res.rvalue), int(t.size)
    )


def _settings(
    preset: str,
    tests: dict[str, str] | None,
    thresholds: dict[str, float] | None,
    alpha: float,
    sample_size: int,
) -> Settings:
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown drift preset '{preset}'; use one of {', '.join(PRESETS)}")
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha must be in (0, 1), got {alpha}")
    if sample_size < 1:
        raise InvalidArgument(f"sample_size must be positive, got {sample_size}")
    for column, test in (tests or {}).items():
        if test not in TESTS:
            raise InvalidArgument(
                f"unknown drift test '{test}' for column '{column}'; use one of {', '.join(TESTS)}"
            )
    for test, value in (thresholds or {}).items():
        if test not in TESTS:
            raise InvalidArgument(f"threshold for unknown drift test '{test}'")
        if preset == "plinth" and test in P_VALUE_TESTS and test != "interval":
            raise InvalidArgument(
                f"the plinth preset tests '{test}' at alpha with Benjamini-Hochberg; "
                "pass alpha instead of a threshold"
            )
        if not value > 0:
            raise InvalidArgument(f"threshold for '{test}' must be positive, got {value}")
    return Settings(preset, dict(tests or {}), dict(thresholds or {}), alpha, sample_size)


def _as_profile(
    data: Any, columns: Sequence[str] | None, sample_size: int, seed: int, side: str
) -> TableProfile:
    if isinstance(data, TableProfile):
        return data
    if isinstance(data, dict) and "rows" in data and "columns" in data:
        return TableProfile.from_dict(data)  # a stored profile's to_dict()
    if data is None:
        raise InvalidArgument(f"no {side} data given")
    wanted = None
    if columns is not None:
        present = _column_names(data)
        if present is not None:
            wanted = [c for c in columns if c in present]
    return profile(data, wanted, sample_size=sample_size, seed=seed)


def _column_names(data: Any) -> list[str] | None:
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return list(data.schema.names)
    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns]
    return None


def _benjamini_hochberg(results: list[ColumnDrift], alpha: float) -> list[ColumnDrift]:
    idx = [
        i
        for i, r in enumerate(results)
        if r.error is None and r.test in P_VALUE_TESTS and r.p_value is not None
    ]
    if not idx:
        return results
    pvals = np.array([results[i].p_value for i in idx], dtype=np.float64)
    # scipy's Benjamini-Hochberg equals statsmodels' fdr_bh (tested); importing
    # statsmodels for it alone would cost ~200 MB of the process's memory
    adjusted = stats.false_discovery_control(pvals, method="bh")
    out = list(results)
    for i, adj in zip(idx, adjusted, strict=True):
        r = results[i]
        significant = bool(adj < alpha)
        if r.test == "interval":
            significant = significant and _columns.interval_share_exceeded(r)
        note = f"Benjamini-Hochberg adjusted p = {adj:.3g}"
        out[i] = replace(r, drifted=significant, detail=f"{r.detail}; {note}" if r.detail else note)
    return out


def _as_seconds(times: Iterable[Any]) -> np.ndarray:
    items = list(times)
    if items and isinstance(items[0], datetime):
        return np.array([t.timestamp() for t in items], dtype=np.float64)
    arr = np.asarray(items)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    return arr.astype(np.float64)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
