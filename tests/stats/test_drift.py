"""Drift tests: known drift is flagged, no drift is flagged no more often than alpha
allows, Benjamini-Hochberg holds the dataset verdict, large data runs on profiles and
samples, and bad input gives a named result or error. All seeded."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.stats.drift import ColumnDrift, DriftReport, drift_report, trend
from plinth.stats.profile import profile

ALPHA = 0.05
CATS = [f"c{i:02d}" for i in range(8)]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _max_rate(reps: int, alpha: float = ALPHA) -> float:
    """alpha plus three standard errors of a rate over `reps` repetitions."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def _one(ref: object, cur: object, column: str, **kw: object) -> ColumnDrift:
    report = drift_report(ref, cur, columns=[column], **kw)  # type: ignore[arg-type]
    return report.column(column)


# --- known drift of a stated size is flagged; none is not ---------------------------

NUMERIC_TESTS = ["ks", "wasserstein", "psi", "anderson", "interval"]


@pytest.mark.parametrize("test", NUMERIC_TESTS)
def test_numeric_shift_of_half_a_std_is_flagged(test: str) -> None:
    r = _rng(1)
    ref = pd.DataFrame({"x": r.normal(0, 1, 800)})
    # interval: a 0.5 sd shift moves ~8% outside [q2.5, q97.5]; it needs a larger one
    shift = 1.0 if test == "interval" else 0.5
    cur = pd.DataFrame({"x": r.normal(shift, 1, 800)})
    res = _one(ref, cur, "x", tests={"x": test})
    assert res.test == test and res.method == "exact"
    assert res.drifted, res


@pytest.mark.parametrize("test", NUMERIC_TESTS)
def test_numeric_same_distribution_is_not_flagged(test: str) -> None:
    r = _rng(2)
    ref = pd.DataFrame({"x": r.normal(0, 1, 800)})
    cur = pd.DataFrame({"x": r.normal(0, 1, 800)})
    res = _one(ref, cur, "x", tests={"x": test})
    assert not res.drifted, res


CATEGORICAL_TESTS = ["chisquare", "jensenshannon", "psi"]


def _cats(r: np.random.Generator, n: int, tilt: float) -> np.ndarray:
    w = np.exp(tilt * np.linspace(-1, 1, len(CATS)))
    return r.choice(CATS, n, p=w / w.sum())


@pytest.mark.parametrize("test", CATEGORICAL_TESTS)
def test_categorical_tilt_is_flagged_and_none_is_not(test: str) -> None:
    r = _rng(3)
    ref = pd.DataFrame({"c": _cats(r, 800, 0.0)})
    same = pd.DataFrame({"c": _cats(r, 800, 0.0)})
    tilted = pd.DataFrame({"c": _cats(r, 800, 1.0)})  # shares from 6% to 22%
    assert _one(ref, tilted, "c", tests={"c": test}).drifted
    assert not _one(ref, same, "c", tests={"c": test}).drifted


def test_binary_ztest_flags_ten_points_not_noise() -> None:
    r = _rng(4)
    ref = pd.DataFrame({"b": r.random(1000) < 0.30})
    moved = pd.DataFrame({"b": r.random(1000) < 0.40})
    same = pd.DataFrame({"b": r.random(1000) < 0.30})
    res = _one(ref, moved, "b")
    assert res.test == "ztest" and res.drifted and res.p_value is not None
    assert not _one(ref, same, "b").drifted


def test_default_tests_follow_column_type_and_reference_size() -> None:
    r = _rng(5)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "x": r.normal(size=n),
                "few": r.choice([1.0, 2.0, 3.0], n),
                "c": r.choice(CATS, n),
                "b": r.random(n) < 0.5,
            }
        )

    small = drift_report(frame(1000), frame(300))
    assert [c.test for c in small.columns] == ["ks", "chisquare", "chisquare", "ztest"]
    large = drift_report(frame(1001), frame(300))
    assert [c.test for c in large.columns] == [
        "wasserstein",
        "jensenshannon",
        "jensenshannon",
        "jensenshannon",
    ]


# --- false positives: no more often than alpha allows --------------------------------


@pytest.mark.parametrize("column", ["x", "c", "b"])
def test_false_positive_rate_of_p_value_tests_is_at_most_alpha(column: str) -> None:
    """200 undrifted small samples: KS (x), two-sample chi-square (c), z-test (b)."""
    reps, flagged = 200, 0
    for seed in range(reps):
        r = _rng(1000 + seed)
        frames = [
            pd.DataFrame(
                {"x": r.normal(size=150), "c": _cats(r, 150, 0.0), "b": r.random(150) < 0.3}
            )
            for _ in range(2)
        ]
        res = _one(frames[0], frames[1], column)
        assert res.test == {"x": "ks", "c": "chisquare", "b": "ztest"}[column]
        flagged += res.drifted
    assert flagged / reps <= _max_rate(reps)


def test_interval_check_accounts_for_a_small_reference() -> None:
    """With 50 reference rows the ends of [q2.5, q97.5] are noisy: a binomial test at 5%
    flags ~27% of undrifted columns; the beta-binomial one holds alpha."""
    reps, flagged = 200, 0
    for seed in range(reps):
        r = _rng(3000 + seed)
        ref, cur = pd.DataFrame({"x": r.normal(size=50)}), pd.DataFrame({"x": r.normal(size=50)})
        flagged += _one(ref, cur, "x", tests={"x": "interval"}).drifted
    assert flagged / reps <= _max_rate(reps)


def _many_small_categories(seed: int, k: int = 40, n: int = 1000) -> list[pd.DataFrame]:
    r = _rng(seed)
    names = np.array([f"k{i:02d}" for i in range(k)])
    return [pd.DataFrame({"c": names[r.integers(0, k, n)]}) for _ in range(2)]


def test_evidently_chi_square_flags_undrifted_small_samples_two_sample_does_not() -> None:
    """The issue's case: 1,000 vs 1,000 rows, same distribution, 40 categories of ~25.

    Evidently's chi-square takes the reference counts as the exact expected shares, so
    the reference's own sampling noise counts as drift: its statistic is about twice the
    true chi-square, p ~ 3e-4 here. The test of homogeneity of the 2 x 40 table knows
    both sides are samples: p ~ 0.57."""
    ref, cur = _many_small_categories(seed=6)
    evidently = _one(ref, cur, "c", preset="evidently")
    plinth = _one(ref, cur, "c", preset="plinth")
    assert evidently.test == plinth.test == "chisquare"
    assert evidently.p_value is not None and plinth.p_value is not None
    assert 1e-6 <= evidently.p_value <= 0.01 and evidently.drifted
    assert 0.4 <= plinth.p_value <= 0.6 and not plinth.drifted


def test_evidently_chi_square_false_positive_rate_is_far_above_alpha() -> None:
    reps = 60
    rates = {}
    for preset in ("evidently", "plinth"):
        flagged = sum(
            _one(*_many_small_categories(seed=500 + s), "c", preset=preset).drifted
            for s in range(reps)
        )
        rates[preset] = flagged / reps
    assert rates["evidently"] > 0.5
    assert rates["plinth"] <= _max_rate(reps)


# --- Benjamini-Hochberg controls the dataset verdict --------------------------------


def _wide(r: np.random.Generator, n: int, shifts: list[float]) -> pa.Table:
    return pa.table({f"x{i}": r.normal(s, 1, n) for i, s in enumerate(shifts)})


def test_benjamini_hochberg_holds_false_flags_at_alpha_across_columns() -> None:
    """10 undrifted numeric columns, 40 repetitions: without correction some column is
    flagged in ~40% of runs (1 - 0.95^10); with BH in at most alpha + 3 se of them."""
    reps, any_plinth, any_uncorrected = 40, 0, 0
    for seed in range(reps):
        r = _rng(2000 + seed)
        ref, cur = profile(_wide(r, 200, [0.0] * 10)), profile(_wide(r, 200, [0.0] * 10))
        plinth = drift_report(ref, cur)
        uncorrected = drift_report(ref, cur, preset="evidently")
        assert plinth.correction == "benjamini-hochberg"
        any_plinth += plinth.drifted_columns > 0
        any_uncorrected += uncorrected.drifted_columns > 0
    assert any_plinth / reps <= _max_rate(reps)
    assert any_uncorrected / reps > 0.2


def test_benjamini_hochberg_keeps_real_drift_and_dataset_verdict() -> None:
    r = _rng(7)
    shifts = [0.0] * 5 + [0.6] * 5
    report = drift_report(_wide(r, 300, [0.0] * 10), _wide(r, 300, shifts))
    flagged = {c.column for c in report.columns if c.drifted}
    assert flagged >= {f"x{i}" for i in range(5, 10)}  # BH may let one false one through
    assert len(flagged) <= 6
    assert report.drifted_share >= 0.5 and report.dataset_drifted
    assert "Benjamini-Hochberg adjusted p" in report.columns[0].detail
    below = drift_report(_wide(r, 300, [0.0] * 10), _wide(r, 300, shifts), share_threshold=0.7)
    assert below.drifted_share < 0.7 and not below.dataset_drifted


def test_benjamini_hochberg_adjusts_as_statsmodels_does() -> None:
    """The adjusted p-values in the details are statsmodels' fdr_bh ones (the reference
    implementation; Plinth computes them with scipy, which costs no extra import)."""
    from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

    r = _rng(8)
    report = drift_report(_wide(r, 300, [0.0] * 6), _wide(r, 300, [0.0, 0.1, 0.2, 0.3, 0.0, 0.4]))
    raw = np.array([c.p_value for c in report.columns], dtype=np.float64)
    expected = multipletests(raw, method="fdr_bh")[1]
    shown = [
        float(c.detail.split("adjusted p = ")[1].split()[0].rstrip(";,")) for c in report.columns
    ]
    assert np.allclose(shown, expected, rtol=2e-3)


# --- large data: profiles and samples, and what the report says ---------------------


def _large(seed: int, n: int, shift: float) -> pd.DataFrame:
    r = _rng(seed)
    return pd.DataFrame({"x": r.normal(shift, 1, n), "c": _cats(r, n, shift)})


def test_large_data_runs_on_profiles_and_samples_and_says_so() -> None:
    ref, cur = _large(8, 20_000, 0.0), _large(9, 20_000, 0.2)
    report = drift_report(
        ref, cur, sample_size=1000, tests={"x": "wasserstein", "c": "jensenshannon"}
    )
    x, c = report.column("x"), report.column("c")
    assert (x.method, x.sample_size) == ("profile", None)
    assert c.method == "profile"
    ks = _one(ref, cur, "x", sample_size=1000, tests={"x": "ks"})
    assert (ks.method, ks.sample_size) == ("sample", 1000)
    assert "1000" in ks.detail
    exact = drift_report(ref, cur, sample_size=20_000, tests={"x": "wasserstein"})
    assert exact.column("x").method == "exact"
    assert x.statistic == pytest.approx(exact.column("x").statistic, rel=0.02)
    assert c.statistic == pytest.approx(exact.column("c").statistic, rel=1e-9)


@pytest.mark.parametrize("test", ["psi", "interval", "jensenshannon"])
def test_profile_histogram_tests_match_exact_ones(test: str) -> None:
    ref, cur = _large(10, 20_000, 0.0), _large(11, 20_000, 0.3)
    approx = _one(ref, cur, "x", sample_size=500, tests={"x": test})
    exact = _one(ref, cur, "x", sample_size=20_000, tests={"x": test})
    assert (approx.method, exact.method) == ("profile", "exact")
    assert approx.statistic == pytest.approx(exact.statistic, rel=0.02)
    assert approx.drifted == exact.drifted


def test_table_profiles_are_accepted_as_input() -> None:
    ref, cur = _large(12, 3000, 0.0), _large(13, 3000, 0.5)
    from_frames = drift_report(ref, cur)
    from_profiles = drift_report(profile(ref, sample_size=5000), profile(cur, sample_size=5000))
    assert from_frames.to_dict() == from_profiles.to_dict()
    assert from_frames.column("x").drifted


# --- the trend test -------------------------------------------------------------------


def test_trend_finds_a_planted_slope_and_not_a_flat_series() -> None:
    r = _rng(14)
    t = np.arange(30, dtype=float)
    planted = trend(t, 0.05 * t + r.normal(0, 0.1, 30))
    assert planted.p_value < 0.001 and planted.slope == pytest.approx(0.05, abs=0.01)
    flat = trend(t, r.normal(0, 0.1, 30))
    assert flat.p_value > ALPHA


def test_trend_takes_datetimes_as_seconds() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(days=d) for d in range(5)]
    res = trend(times, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert res.slope == pytest.approx(1 / 86_400) and res.r == pytest.approx(1.0)
    naive = np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[s]")
    assert trend(naive, [0.0, 1.0, 2.0, 3.0, 4.0]).slope == pytest.approx(1 / 86_400)


def test_trend_rejects_too_few_points_and_mismatched_lengths() -> None:
    with pytest.raises(InvalidArgument, match="at least 3 points"):
        trend([1, 2], [1.0, 2.0])
    with pytest.raises(InvalidArgument, match="as many times as values"):
        trend([1, 2, 3], [1.0, 2.0])
    with pytest.raises(InvalidArgument, match="two distinct times"):
        trend([1, 1, 1], [1.0, 2.0, 3.0])
    assert trend([1, 2, 3], [5.0, 5.0, 5.0]).p_value == 1.0


# --- bad input ------------------------------------------------------------------------


def test_all_null_column_is_a_named_result_not_a_crash() -> None:
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})
    cur = pd.DataFrame({"x": [np.nan] * 3, "y": [1.0, 2.0, 4.0], "s": [None, None, None]})
    report = drift_report(ref, cur)
    for name in ("x", "s"):
        res = report.column(name)
        assert not res.drifted and res.error is not None
        assert f"column '{name}'" in res.error and "current" in res.error
    assert report.tested_columns == 1 and "2 not tested" in report.summary()


def test_changed_type_is_named() -> None:
    ref = pd.DataFrame({"x": [1, 2, 3]})
    cur = pd.DataFrame({"x": ["1", "2", "3"]})
    res = drift_report(ref, cur).column("x")
    assert res.error is not None and not res.drifted
    assert "column 'x' changed type: int64" in res.error


def test_empty_current_window_gives_a_clear_result() -> None:
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    cur = ref.iloc[:0]
    report = drift_report(ref, cur)
    assert report.current_rows == 0 and report.tested_columns == 0
    assert not report.dataset_drifted and report.drifted_share == 0.0
    assert all(c.error and "current data has no rows" in c.error for c in report.columns)


def test_column_missing_on_one_side_is_named_or_refused_when_asked_for() -> None:
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0], "old": [1.0, 2.0, 3.0]})
    cur = pd.DataFrame({"x": [1.0, 2.0, 3.0], "new": ["a", "b", "c"]})
    report = drift_report(ref, cur)
    assert report.column("old").error == "column 'old' is missing from the current data"
    assert report.column("new").error == "column 'new' is missing from the reference data"
    with pytest.raises(InvalidArgument, match="column 'old' is not in the current data"):
        drift_report(ref, cur, columns=["x", "old"])


def test_bad_arguments_are_refused_by_name() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "c"]})
    with pytest.raises(InvalidArgument, match="unknown drift preset 'nanny'"):
        drift_report(df, df, preset="nanny")
    with pytest.raises(InvalidArgument, match="unknown drift test 'ttest' for column 'x'"):
        drift_report(df, df, tests={"x": "ttest"})
    with pytest.raises(InvalidArgument, match="'ks' needs a numeric column; 'c'"):
        drift_report(df, df, tests={"c": "ks"})
    with pytest.raises(InvalidArgument, match="pass alpha"):
        drift_report(df, df, thresholds={"ks": 0.01})


def test_infinities_and_nans_are_dropped_like_evidently() -> None:
    r = _rng(15)
    x = r.normal(size=300)
    dirty = x.copy()
    dirty[:10] = np.inf
    dirty[10:20] = np.nan
    clean = drift_report(pd.DataFrame({"x": x[20:]}), pd.DataFrame({"x": x[20:]}))
    res = drift_report(pd.DataFrame({"x": dirty}), pd.DataFrame({"x": x[20:]})).column("x")
    assert res.error is None and res.p_value == clean.column("x").p_value == 1.0


# --- results as JSON ------------------------------------------------------------------


def test_report_round_trips_through_dict_and_summarises() -> None:
    ref, cur = _many_small_categories(seed=16)
    ref["x"] = _rng(17).normal(size=1000)
    cur["x"] = _rng(18).normal(1.0, 1, 1000)
    report = drift_report(ref, cur, preset="evidently")
    again = DriftReport.from_dict(report.to_dict())
    assert again == report
    stored = {**report.to_dict(), "reference": "previous commit 4"}
    assert DriftReport.from_dict(stored) == report
    as_json = drift_report(profile(ref).to_dict(), profile(cur).to_dict(), preset="evidently")
    assert as_json == report
    assert report.summary() == "2 of 2 columns drifted (100%)"


def test_a_category_new_in_current_is_infinite_for_evidently_and_json_stays_strict() -> None:
    ref = pd.DataFrame({"c": ["a", "b", "c"] * 100})
    cur = pd.DataFrame({"c": ["a", "b", "c"] * 99 + ["d", "d", "d"]})
    evidently = drift_report(ref, cur, preset="evidently")
    res = evidently.column("c")
    assert res.test == "chisquare" and res.p_value == 0.0 and res.drifted
    assert res.statistic == math.inf
    d = evidently.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["columns"][0]["statistic"] is None
    plinth = drift_report(ref, cur).column("c")
    assert plinth.p_value is not None and plinth.p_value > 0.1 and not plinth.drifted


def test_temporal_columns_only_when_named_and_then_as_seconds() -> None:
    start = np.datetime64("2026-01-01T00:00:00", "s")
    r = _rng(19)
    ref = pa.table({"t": start + r.integers(0, 86_400, 400).astype("timedelta64[s]")})
    cur = pa.table({"t": start + r.integers(43_200, 129_600, 400).astype("timedelta64[s]")})
    assert drift_report(ref, cur).columns == []
    res = _one(ref, cur, "t")
    assert (res.kind, res.test, res.drifted) == ("numeric", "ks", True)


def test_categories_beyond_the_tracked_ones_are_one_bucket_on_profiles() -> None:
    r = _rng(20)
    names = np.array([f"u{i:05d}" for i in range(12_000)])
    ref = pa.table({"c": names[r.integers(0, 12_000, 30_000)]})
    cur = pa.table({"c": names[r.integers(0, 12_000, 30_000)]})
    res = _one(ref, cur, "c", sample_size=1000)
    assert (res.test, res.method) == ("jensenshannon", "profile")
    assert "counted as one" in res.detail
    exact = _one(ref, cur, "c", sample_size=30_000)
    assert exact.method == "exact" and exact.detail == ""
    # merging values can only lower a divergence: the profiles give a lower bound
    assert res.statistic is not None and exact.statistic is not None
    assert 0 < res.statistic < exact.statistic


# --- profiles of heavy-tailed data: identical distributions are not drift ----------

PROFILE_TESTS = ["psi", "jensenshannon", "interval", "wasserstein"]


def _heavy(kind: str, seed: int, n: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    if kind == "lognormal2":
        return rng.lognormal(0, 2, n), rng.lognormal(0, 2, n)
    if kind == "lognormal3":
        return rng.lognormal(0, 3, n), rng.lognormal(0, 3, n)
    if kind == "outlier_both":
        return np.r_[rng.normal(size=n), 1e9], np.r_[rng.normal(size=n), 1e9]
    return rng.normal(size=n), np.r_[rng.normal(size=n), 1e9]  # outlier in current only


@pytest.mark.parametrize("kind", ["lognormal2", "lognormal3", "outlier_both", "outlier_cur"])
def test_same_heavy_tailed_distribution_on_profiles_is_not_flagged(kind: str) -> None:
    for seed in range(3):
        a, b = _heavy(kind, seed)
        ref, cur = profile(pa.table({"x": a})), profile(pa.table({"x": b}))
        for test in PROFILE_TESTS:
            if test == "wasserstein" and kind == "outlier_cur":
                continue  # the outlier really moves 1e9 / n of the mass: see below
            result = _one(ref, cur, "x", tests={"x": test})
            assert result.method == "profile"
            assert not result.drifted, (kind, seed, test, result.statistic, result.p_value)


def test_real_shift_of_heavy_tailed_data_on_profiles_is_flagged() -> None:
    rng = _rng(7)
    a, b = rng.lognormal(0, 3, 100_000), rng.lognormal(3, 3, 100_000)
    ref, cur = profile(pa.table({"x": a})), profile(pa.table({"x": b}))
    for test in PROFILE_TESTS:
        result = _one(ref, cur, "x", tests={"x": test})
        if test != "wasserstein":  # in units of a std of ~1e4: a shift of the bulk is tiny
            assert result.drifted, (test, result.statistic)


@pytest.mark.parametrize("where", ["reference", "current"])
def test_profile_wasserstein_with_an_outlier_matches_scipy(where: str) -> None:
    from scipy.stats import wasserstein_distance

    rng = _rng(3)
    a, b = rng.normal(size=100_000), rng.normal(size=100_000)
    if where == "reference":
        a = np.r_[a, 1e6]
    else:
        b = np.r_[b, 1e9]
    result = _one(pa.table({"x": a}), pa.table({"x": b}), "x", tests={"x": "wasserstein"})
    assert result.method == "profile"
    expected = wasserstein_distance(a, b) / np.std(a)
    assert result.statistic == pytest.approx(expected, rel=0.03)


def test_same_values_as_int_float_or_decimal_are_not_drift() -> None:
    from decimal import Decimal

    rng = _rng(1)
    for n in (500, 5000):
        ref = pa.table({"x": pa.array(rng.integers(0, 4, n), pa.int64())})
        cur = pa.table({"x": pa.array(rng.integers(0, 4, n).astype(float))})
        assert not _one(ref, cur, "x").drifted
    zeros = pa.table({"x": np.r_[np.zeros(3000), np.ones(3000)]})
    negative = pa.table({"x": np.r_[-np.zeros(3000), np.ones(3000)]})
    assert _one(zeros, negative, "x").statistic == 0.0
    one = pa.table({"x": pa.array([Decimal("1.5"), Decimal("2.5")] * 2000, pa.decimal128(5, 1))})
    two = pa.table({"x": pa.array([Decimal("1.50"), Decimal("2.50")] * 2000, pa.decimal128(6, 2))})
    assert _one(one, two, "x").statistic == 0.0


def test_values_that_overflow_the_statistic_give_a_named_error_not_a_verdict() -> None:
    ref = pa.table({"x": np.array([-1.7e308, 1.7e308, 0, 1, 2, 3, 4, 5] * 300)})
    cur = pa.table({"x": np.array([-1.7e308, 1.7e308, 0, 1, 2, 3, 4, 6] * 300)})
    with np.errstate(all="ignore"):
        result = _one(ref, cur, "x", tests={"x": "wasserstein"})
    assert result.error is not None and "'x'" in result.error and "finite" in result.error
    assert not result.drifted
