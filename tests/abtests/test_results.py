"""Results from hand-made exposure and event logs: who counts in which arm, which events
count, and the figures against stats.compare on the same per-unit arrays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from scipy import stats  # type: ignore[import-untyped]

from plinth.abtests.buckets import Allocation
from plinth.abtests.checks import SharePeriod, adjust_p_values, share_periods
from plinth.abtests.events import events_uri
from plinth.abtests.results import EXPOSURES_SCHEMA, compute_results
from plinth.abtests.stats import compare, summarize_mean, summarize_proportion, summarize_ratio
from plinth.abtests.traffic import exposures_uri
from plinth.abtests.types import Arm, Experiment, Guardrail, Kpi, KpiKind, Mode, Status, Unit
from plinth.client import Client
from tests.abtests.test_events import _root
from tests.abtests.test_service import arms as service_arms
from tests.abtests.test_service import create

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

T0 = 1_700_000_000_000
CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "buy")


def experiment(primary: Kpi = CONVERSION, arms: int = 2, **kw: Any) -> Experiment:
    names = ["control", "b", "c"][:arms]
    at = datetime.now(UTC)
    return Experiment(
        name="exp",
        hypothesis="h",
        owner="o",
        status=Status.RUNNING,
        mode=Mode.AB,
        unit=Unit.USER,
        primary=primary,
        arms=[Arm(n, 1 / arms, url=f"http://{n}", control=n == "control") for n in names],
        mde=0.01,
        alpha=0.05,
        power=0.8,
        salt="s",
        allocation=Allocation(),
        version=1,
        created_at=at,
        updated_at=at,
        **kw,
    )


def exposures(
    root: Path, rows: list[tuple[Any, ...]], name: str = "exp", *, legacy: bool = False
) -> None:
    """``(at_ms, unit, arm[, latency_ms, outcome])`` rows; request ids are
    ``req-{unit}-{i}``. ``legacy``: the log as written before latency_ms and outcome."""
    columns: dict[str, Any] = {
        "at_ms": [r[0] for r in rows],
        "unit": [r[1] for r in rows],
        "arm": [r[2] for r in rows],
        "request_id": [f"req-{r[1]}-{i}" for i, r in enumerate(rows)],
        "model_version": [None] * len(rows),
    }
    schema = EXPOSURES_SCHEMA
    if legacy:
        schema = pa.schema([schema.field(n) for n in columns])
    else:
        columns["latency_ms"] = [r[3] if len(r) > 3 else None for r in rows]
        columns["outcome"] = [r[4] if len(r) > 4 else "ok" for r in rows]
    table = pa.table(columns, schema=schema)
    write_deltalake(exposures_uri(str(root), name), table, mode="append", schema_mode="merge")


def events(root: Path, rows: list[dict[str, Any]], name: str = "exp") -> None:
    table = pa.table(
        {
            "at_ms": pa.array([r.get("at_ms", T0 + 10) for r in rows], pa.int64()),
            "name": [r.get("name", "buy") for r in rows],
            "value": pa.array([float(r.get("value", 1.0)) for r in rows], pa.float64()),
            "unit": pa.array([r.get("unit") for r in rows], pa.string()),
            "request_id": pa.array([r.get("request_id") for r in rows], pa.string()),
            "event_id": [r.get("event_id", f"ev{i}") for i, r in enumerate(rows)],
        }
    )
    write_deltalake(events_uri(str(root), name), table, mode="append")


def test_which_units_and_events_count(tmp_path: Path) -> None:
    exposures(
        tmp_path,
        [
            (T0, "u1", "control"),
            (T0 + 5, "u1", "b"),  # later in another arm: stays in control
            (T0 + 100, "u2", "b"),
            (T0, "u3", "b"),
            (T0, "u4", "control"),
        ],
    )
    events(
        tmp_path,
        [
            {"unit": "u1", "at_ms": T0 - 1, "event_id": "early"},  # before exposure: ignored
            {"unit": "u2", "at_ms": T0 + 50, "event_id": "early2"},
            {"unit": "u2", "at_ms": T0 + 10**9, "event_id": "late"},  # late: counts
            {"request_id": "req-u4-4", "event_id": "by-request"},
            {"unit": "u9", "event_id": "never-exposed"},
            {"unit": "u3", "name": "click", "event_id": "other-event"},
        ],
    )
    events(tmp_path, [{"unit": "u2", "at_ms": T0 + 10**9, "event_id": "late"}])  # re-sent
    results = compute_results(experiment(), str(tmp_path))
    assert results.units_by_arm == {"control": 2, "b": 2}
    assert results.units_in_several_arms == 1
    assert any("1 units were exposed to more than one arm" in n for n in results.notes)
    # converted: u4 (by request) in control; u2 (late) in b; u1 (early) and u3 not
    assert results.summaries["control"].estimate == 0.5
    assert results.summaries["b"].estimate == 0.5


def test_a_re_sent_event_counts_once(tmp_path: Path) -> None:
    exposures(tmp_path, [(T0, "u1", "control"), (T0, "u2", "control"), (T0, "u3", "b")])
    exposures(tmp_path, [(T0, "u4", "b")])
    revenue = Kpi("revenue", KpiKind.MEAN, "pay")
    paid = [{"unit": "u1", "name": "pay", "value": 10.0, "event_id": "p1"}]
    events(tmp_path, [*paid, {"unit": "u3", "name": "pay", "value": 4.0, "event_id": "p2"}])
    events(tmp_path, paid)
    results = compute_results(experiment(revenue), str(tmp_path))
    assert results.summaries["control"].estimate == 5.0  # (10 + 0) / 2, not (20 + 0) / 2
    assert results.summaries["b"].estimate == 2.0


def _arms_logs(tmp_path: Path, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Two arms of ``n`` units each with random purchases and revenue."""
    rows, evs = [], []
    values: dict[str, np.ndarray] = {}
    for arm, rate in (("control", 0.2), ("b", 0.26)):
        bought = rng.random(n) < rate
        revenue = np.where(bought, rng.exponential(30, n), 0.0).round(2)
        sessions = rng.integers(1, 4, n)
        values[arm] = np.stack([bought.astype(float), revenue, sessions.astype(float)])
        for i in range(n):
            unit = f"{arm}-{i}"
            rows.append((T0, unit, arm))
            evs.append({"unit": unit, "name": "session", "value": float(sessions[i])})
            if bought[i]:
                evs.append({"unit": unit, "name": "buy"})
                evs.append({"unit": unit, "name": "pay", "value": revenue[i]})
    exposures(tmp_path, rows)
    events(tmp_path, [dict(e, event_id=f"e{i}") for i, e in enumerate(evs)])
    return values


def test_figures_agree_with_stats_on_the_per_unit_arrays(tmp_path: Path) -> None:
    values = _arms_logs(tmp_path, np.random.default_rng(7), 400)
    c, b = values["control"], values["b"]
    cases = [
        (CONVERSION, compare(summarize_proportion(c[0]), summarize_proportion(b[0]))),
        (Kpi("rev", KpiKind.MEAN, "pay"), compare(summarize_mean(c[1]), summarize_mean(b[1]))),
        (
            Kpi("rps", KpiKind.RATIO, "pay", "session"),
            compare(summarize_ratio(c[1], c[2]), summarize_ratio(b[1], b[2])),
        ),
    ]
    for kpi, expected in cases:
        got = compute_results(experiment(kpi), str(tmp_path)).primary["b"]
        assert got.method == expected.method
        assert got.p_value == pytest.approx(expected.p_value, rel=1e-9)
        assert got.absolute_ci == pytest.approx(expected.absolute_ci, rel=1e-9)
        assert got.relative_ci == pytest.approx(expected.relative_ci, rel=1e-9)
        assert got.treatment.variance == pytest.approx(expected.treatment.variance, rel=1e-9)


def test_three_arms_holm_bayes_srm_and_guardrails(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = [(T0, f"u{i}", arm) for i, arm in enumerate(rng.choice(["control", "b", "c"], 3000))]
    exposures(tmp_path, rows)
    buys = [{"unit": u, "event_id": u} for _, u, arm in rows if rng.random() < 0.3]
    events(tmp_path, buys)
    exp = experiment(arms=3, guardrails=[Guardrail("conversion", max_drop=0.5)])
    results = compute_results(exp, str(tmp_path))
    assert set(results.primary) == {"b", "c"}
    raw = {arm: c.p_value for arm, c in results.primary.items()}
    assert results.adjusted == adjust_p_values(raw, method="holm")
    assert results.adjusted["b"].method.startswith("Holm")
    for arm in ("b", "c"):
        bayes = results.bayes[arm]
        assert bayes.method.startswith("Beta-Binomial")
        # the posterior's lift sits near the observed one
        assert bayes.lift == pytest.approx(results.primary[arm].absolute_lift, abs=0.01)
        assert not results.guardrails["conversion"][arm].breached
    assert results.srm is not None and not results.srm.flagged


def test_a_skewed_exposure_log_is_flagged(tmp_path: Path) -> None:
    rows = [(T0, f"c{i}", "control") for i in range(1100)]
    rows += [(T0, f"b{i}", "b") for i in range(900)]
    exposures(tmp_path, rows)
    results = compute_results(experiment(), str(tmp_path))
    assert results.srm is not None and results.srm.flagged
    assert results.srm.observed == {"control": 1100, "b": 900}
    assert results.primary["b"].p_value == 1.0  # no events at all: both arms convert 0 %


def test_no_exposures_yet(tmp_path: Path) -> None:
    results = compute_results(experiment(), str(tmp_path))
    assert results.units_by_arm == {} and results.primary == {}
    assert results.notes == ["no exposures logged yet"]


def test_results_through_the_api(client: Client, tmp_path: Path) -> None:
    create(client.abtests, "exp")  # arms champion (control) and challenger
    root = _root(client, tmp_path)
    units = [(T0, f"u{i}", "champion" if i % 2 else "challenger") for i in range(200)]
    exposures(root, units)
    events(root, [{"unit": f"u{i}", "event_id": str(i)} for i in range(0, 200, 3)])
    results = client.abtests.abtest_results("exp")
    assert results.units_by_arm == {"champion": 100, "challenger": 100}
    assert results.primary["challenger"].method.startswith("two-proportion z-test")
    assert results.srm is not None and results.srm.p_value == 1.0


# -- every figure against a direct computation on the same per-unit arrays -------------------


def reference_units(
    exposure_rows: list[tuple[Any, ...]], event_rows: list[dict[str, Any]], names: set[str]
) -> dict[str, tuple[str, dict[str, list[float]]]]:
    """The results' rules in plain Python: per unit, its arm and, per event name, the
    values counted after its first exposure (``post``) and before it (``pre``)."""
    first: dict[str, tuple[int, str]] = {}
    request_unit: dict[str, tuple[int, str]] = {}
    for i, (at, unit, arm, *_) in enumerate(exposure_rows):
        if unit not in first or at < first[unit][0]:
            first[unit] = (at, arm)
        request = f"req-{unit}-{i}"
        if request not in request_unit or at < request_unit[request][0]:
            request_unit[request] = (at, unit)
    kept: dict[str, dict[str, Any]] = {}
    for e in event_rows:
        if e["name"] not in names:
            continue
        before = kept.get(e["event_id"])
        if before is None or (e["at_ms"], e["value"]) < (before["at_ms"], before["value"]):
            kept[e["event_id"]] = e
    units: dict[str, tuple[str, dict[str, list[float]]]] = {
        u: (arm, {}) for u, (_, arm) in first.items()
    }
    for e in kept.values():
        unit = e.get("unit") or request_unit.get(e.get("request_id") or "", (0, None))[1]
        if unit not in first:
            continue
        when = "post" if e["at_ms"] >= first[unit][0] else "pre"
        units[unit][1].setdefault(f"{when}:{e['name']}", []).append(e["value"])
    return units


def arrays(
    units: dict[str, tuple[str, dict[str, list[float]]]], key: str, any_: bool
) -> dict[str, np.ndarray]:
    """Per arm, one value per unit: the sum of its ``key`` values, or 1 if it has any."""
    out: dict[str, list[float]] = {}
    for arm, values in units.values():
        found = values.get(key, [])
        out.setdefault(arm, []).append(float(bool(found)) if any_ else float(sum(found)))
    return {arm: np.array(v) for arm, v in out.items()}


def messy_logs(root: Path, seed: int, n: int = 600) -> tuple[list[Any], list[dict[str, Any]]]:
    """Units with 1-3 exposures (a few in two arms), purchases and revenue before and after
    their first exposure, a tenth by request id, and re-sent copies (some earlier, with
    another unit or by request)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        arm = "control" if i % 2 else "b"
        start = T0 + int(rng.integers(0, 10**6)) * 1000
        for j in range(int(rng.integers(1, 4))):
            other = "b" if arm == "control" else "control"
            shown = other if j and rng.random() < 0.05 else arm
            rows.append((start + j * 7 + int(rng.integers(0, 5)), f"u{i}", shown))
    rows = [r for _, r in sorted(enumerate(rows), key=lambda x: x[1][0])]
    exposures(root, rows)
    evs: list[dict[str, Any]] = []
    for i, (at, unit, arm) in enumerate(rows):
        rate = 0.3 if arm == "b" else 0.22
        for name, value in (("buy", 1.0), ("pay", float(rng.exponential(20)))):
            if rng.random() < rate:
                e: dict[str, Any] = {
                    "name": name,
                    "value": round(value, 2),
                    "at_ms": at + int(rng.integers(-3 * 10**6, 3 * 10**6)),
                    "event_id": f"{name}-{i}",
                }
                if rng.random() < 0.1:
                    e["request_id"] = f"req-{unit}-{i}"
                else:
                    e["unit"] = unit
                evs.append(e)
    copies = []
    for e in evs[::9]:
        copy = dict(e, at_ms=e["at_ms"] + int(rng.integers(-2000, 2000)))
        if rng.random() < 0.3:
            copy.pop("unit", None)
            copy["request_id"] = "req-nobody"
        elif rng.random() < 0.3:
            copy.pop("request_id", None)
            copy["unit"] = f"u{int(rng.integers(0, n))}"
        copies.append(copy)
    events(root, evs)
    events(root, copies)
    everything = [{"unit": None, "request_id": None, "value": 1.0, **e} for e in [*evs, *copies]]
    return rows, everything


def test_messy_logs_agree_with_the_rules_in_plain_python(tmp_path: Path) -> None:
    rows, evs = messy_logs(tmp_path, seed=11)
    units = reference_units(rows, evs, {"buy", "pay"})
    for kpi, key, any_ in (
        (CONVERSION, "post:buy", True),
        (Kpi("rev", KpiKind.MEAN, "pay"), "post:pay", False),
    ):
        found = compute_results(experiment(kpi), str(tmp_path))
        per_arm = arrays(units, key, any_)
        assert found.units_by_arm == {arm: v.size for arm, v in per_arm.items()}
        summarize = summarize_proportion if any_ else summarize_mean
        expected = compare(summarize(per_arm["control"]), summarize(per_arm["b"]))
        assert found.primary["b"].p_value == pytest.approx(expected.p_value, rel=1e-9)
        assert found.primary["b"].absolute_ci == pytest.approx(expected.absolute_ci, rel=1e-9)
    # the earliest copy wins with all its fields: one whose earliest copy went to
    # "req-nobody" (no such request) does not count for its original unit
    lost = [e for e in evs if e.get("request_id") == "req-nobody"]
    assert lost, "the logs must hold re-sent copies by an unknown request"


def test_cuped_agrees_with_compare_cuped_on_the_arrays(tmp_path: Path) -> None:
    from plinth.abtests.cuped import compare_cuped

    rows, evs = messy_logs(tmp_path, seed=12)
    units = reference_units(rows, evs, {"buy", "pay"})
    for kpi, event, any_ in (
        (CONVERSION, "buy", True),
        (Kpi("rev", KpiKind.MEAN, "pay"), "pay", False),
    ):
        found = compute_results(experiment(kpi), str(tmp_path))
        y, x = arrays(units, f"post:{event}", any_), arrays(units, f"pre:{event}", any_)
        assert x["control"].sum() > 0  # units with events before their first exposure
        expected = compare_cuped(y, x, "control")["b"]
        got = found.cuped["b"]
        assert got.method == expected.method
        assert got.variance_reduction == pytest.approx(expected.variance_reduction, rel=1e-9)
        assert got.p_value == pytest.approx(expected.p_value, rel=1e-9)
        assert got.absolute_ci == pytest.approx(expected.absolute_ci, rel=1e-9)
        assert got.treatment.variance == pytest.approx(expected.treatment.variance, rel=1e-9)


def test_no_pre_exposure_events_no_cuped(tmp_path: Path) -> None:
    exposures(tmp_path, [(T0, f"u{i}", "control" if i % 2 else "b") for i in range(40)])
    events(tmp_path, [{"unit": f"u{i}", "event_id": str(i)} for i in range(0, 40, 3)])
    found = compute_results(experiment(), str(tmp_path))
    assert found.cuped == {}
    assert any("no unit has 'buy' events before its first exposure" in n for n in found.notes)
    ratio = compute_results(experiment(Kpi("r", KpiKind.RATIO, "buy", "buy")), str(tmp_path))
    assert ratio.cuped == {} and any("CUPED: not computed for a ratio" in n for n in ratio.notes)


def test_sequential_agrees_with_sequential_test(tmp_path: Path) -> None:
    from plinth.abtests.power import sample_size
    from plinth.abtests.sequential import mixing_variance_for_horizon, sequential_test

    rows, evs = messy_logs(tmp_path, seed=13)
    units = reference_units(rows, evs, {"buy"})
    y = arrays(units, "post:buy", True)
    control, treatment = summarize_proportion(y["control"]), summarize_proportion(y["b"])
    exp = experiment()
    planned = sample_size("proportions", exp.mde, 0.05, 0.8, 2, control.estimate).per_arm
    per_unit = control.variance * control.units + treatment.variance * treatment.units
    tau2 = mixing_variance_for_horizon(per_unit / planned, alpha=0.05)
    expected = sequential_test([control], [treatment], mixing_variance=tau2).latest
    got = compute_results(exp, str(tmp_path)).sequential["b"]
    assert got.lift == pytest.approx(expected.lift, rel=1e-9)
    assert got.ci == pytest.approx(expected.ci, rel=1e-9)
    assert got.p_value == pytest.approx(expected.p_value, rel=1e-9)
    assert got.method.startswith("mSPRT") and f"planned {planned:,} units" in got.method
    # always valid costs width: wider than the fixed-horizon interval
    fixed = compare(control, treatment).absolute_ci
    assert got.ci[0] < fixed[0] and got.ci[1] > fixed[1]


def _router_logs(root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """2,000 exposures per arm; b slower (p99 near 400 ms against 200) and failing 8 % of
    the time against 1 %; the first 100 of control have no latency (null)."""
    latency = {"control": rng.gamma(4, 25, 2000), "b": rng.gamma(4, 50, 2000)}
    latency["control"][:100] = np.nan
    failed = {"control": rng.random(2000) < 0.01, "b": rng.random(2000) < 0.08}
    rows = [
        (
            T0 + i,
            f"{arm}-{i}",
            arm,
            None if np.isnan(latency[arm][i]) else float(latency[arm][i]),
            "fallback:timeout" if failed[arm][i] else "ok",
        )
        for arm in ("control", "b")
        for i in range(2000)
    ]
    exposures(root, rows)
    return {"latency": latency, "failed": failed}


def test_router_guardrails_agree_with_numpy_and_statsmodels(tmp_path: Path) -> None:
    from scipy import stats as sps
    from statsmodels.stats.proportion import proportion_confint

    made = _router_logs(tmp_path, np.random.default_rng(5))
    exp = experiment(
        guardrails=[
            Guardrail("latency_p99", max_drop=0.2),
            Guardrail("error_rate", max_value=0.05),
        ]
    )
    found = compute_results(exp, str(tmp_path))
    latency = found.guardrails["latency_p99"]
    assert set(latency) == {"b"}  # max_drop: treatment arms against control
    values = {arm: v[~np.isnan(v)] for arm, v in made["latency"].items()}
    # numpy's default percentile (method="linear") is DuckDB's quantile_cont
    p99 = {arm: float(np.percentile(v, 99)) for arm, v in values.items()}
    assert latency["b"].lift == pytest.approx(p99["b"] / p99["control"] - 1, rel=1e-12)

    def order_interval(v: np.ndarray, alpha: float) -> tuple[float, float]:
        s = np.sort(v)
        low = int(sps.binom.ppf(alpha / 2, v.size, 0.99))
        high = int(sps.binom.ppf(1 - alpha / 2, v.size, 0.99)) + 1
        return float(s[low - 1]), float(s[high - 1])

    (t_low, t_high), (c_low, c_high) = (order_interval(values[a], 0.025) for a in ("b", "control"))
    assert latency["b"].ci == pytest.approx((t_low / c_high - 1, t_high / c_low - 1), rel=1e-12)
    assert latency["b"].breached and latency["b"].significant  # twice as slow: established
    errors = found.guardrails["error_rate"]
    assert set(errors) == {"control", "b"}  # a ceiling applies to every arm
    for arm in ("control", "b"):
        failed = made["failed"][arm]
        assert errors[arm].lift == pytest.approx(failed.mean(), rel=1e-12)
        low, high = proportion_confint(int(failed.sum()), failed.size, 0.05, method="normal")
        assert errors[arm].ci == pytest.approx((low, high), rel=1e-9)
    assert not errors["control"].breached
    assert errors["b"].breached and errors["b"].significant
    from plinth.abtests.decisions import breached_guardrails

    assert [r.split(":")[0] for r in breached_guardrails(found)] == [
        "guardrail latency_p99 broken in arm b",
        "guardrail error_rate broken in arm b",
    ]


def test_error_rate_rise_against_control_is_the_two_proportion_comparison(
    tmp_path: Path,
) -> None:
    made = _router_logs(tmp_path, np.random.default_rng(6))
    exp = experiment(guardrails=[Guardrail("error_rate", max_drop=0.5)])
    check = compute_results(exp, str(tmp_path)).guardrails["error_rate"]["b"]
    c, b = made["failed"]["control"], made["failed"]["b"]
    expected = compare(summarize_proportion(c), summarize_proportion(b))
    assert check.lift == pytest.approx(expected.relative_lift, rel=1e-12)
    assert check.ci == pytest.approx(expected.relative_ci, rel=1e-12)
    assert check.relative and check.bound == 0.5 and check.breached and check.significant


def test_a_log_without_latency_or_outcome_still_gives_results(tmp_path: Path) -> None:
    exposures(
        tmp_path, [(T0, f"u{i}", "control" if i % 2 else "b") for i in range(40)], legacy=True
    )
    events(tmp_path, [{"unit": f"u{i}", "event_id": str(i)} for i in range(0, 40, 3)])
    exp = experiment(guardrails=[Guardrail("latency_p99", max_value=300.0)])
    found = compute_results(exp, str(tmp_path))
    assert found.units_by_arm == {"control": 20, "b": 20} and "b" in found.primary
    assert found.guardrails == {}
    assert any(
        "guardrail latency_p99: the exposure log has no latency_ms" in n for n in found.notes
    )
    # rows appended later with the columns: old rows read as null, new ones count
    exposures(
        tmp_path, [(T0 + 1, f"v{i}", "control" if i % 2 else "b", 100.0 + i) for i in range(40)]
    )
    found = compute_results(exp, str(tmp_path))
    assert found.units_by_arm == {"control": 40, "b": 40}
    assert found.guardrails["latency_p99"]["b"].lift == pytest.approx(
        float(np.percentile(np.arange(0, 40, 2) + 100.0, 99))
    )


def test_arms_not_in_the_design_are_named_and_left_out(tmp_path: Path) -> None:
    rows = [(T0, f"u{i}", ["control", "b", "old", "zz"][i % 4]) for i in range(80)]
    exposures(tmp_path, [*rows, (T0 + 1, "u2", "control")])  # u2: first in "old"
    found = compute_results(experiment(), str(tmp_path))
    assert found.units_by_arm == {"control": 20, "b": 20}
    assert "exposures name arms not in the design, left out: old, zz" in found.notes
    assert found.units_in_several_arms == 1


def test_plinth_ab_results_shows_the_new_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from plinth.abtests.types import Arm, Guardrail
    from plinth.cli import app
    from tests.backends import local_client

    with local_client(f"sqlite:///{tmp_path / 'p.db'}", str(tmp_path / "artifacts")) as local:
        local.abtests.create_abtest(
            "exp",
            "b converts more",
            CONVERSION,
            [Arm("control", 0.5, url="http://c", control=True), Arm("b", 0.5, url="http://b")],
            mde=0.05,
            guardrails=[Guardrail("latency_p99", max_value=10.0)],
        )
        root = tmp_path / "artifacts"
        messy_logs(root, seed=23, n=300)
        exposures(root, [(T0, f"lat{i}", "control" if i % 2 else "b", 50.0) for i in range(300)])
        monkeypatch.setattr("plinth.cli.abtests._service", lambda: local.abtests)
        shown = CliRunner().invoke(app, ["ab", "results", "exp"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "sequential, b: lift" in text and "always-valid interval" in text
    assert "CUPED, b: lift" in text and "variance reduced by" in text
    assert "guardrail latency_p99, b: BREACHED (established)" in text


def test_a_table_duckdb_cannot_read_directly_goes_through_pyarrow(tmp_path: Path) -> None:
    """A partitioned log (its partition column is not in the parquet files) is read
    through pyarrow's dataset, with the same results."""
    messy_logs(tmp_path / "plain", seed=31, n=200)
    other = tmp_path / "partitioned"
    table = DeltaTable(exposures_uri(str(tmp_path / "plain"), "exp")).to_pyarrow_table()
    write_deltalake(exposures_uri(str(other), "exp"), table, partition_by=["arm"])
    events_table = DeltaTable(events_uri(str(tmp_path / "plain"), "exp")).to_pyarrow_table()
    write_deltalake(events_uri(str(other), "exp"), events_table)
    from plinth.abtests.logs import _local_files

    partitioned = exposures_uri(str(other), "exp")
    assert _local_files(DeltaTable(partitioned), partitioned) is None
    plain = compute_results(experiment(), str(tmp_path / "plain"))
    found = compute_results(experiment(), str(other))
    assert found.units_by_arm == plain.units_by_arm
    assert found.primary["b"].p_value == pytest.approx(plain.primary["b"].p_value, rel=1e-12)
    assert found.cuped["b"].p_value == pytest.approx(plain.cuped["b"].p_value, rel=1e-12)


# -- sample-ratio mismatch over periods of constant shares ---------------------------------


def canary(root: Path, late: tuple[int, int] = (530, 470)) -> list[SharePeriod]:
    """A canary's logs and periods: b at 0 (50 units, all control), then at 0.1 (880/120),
    then at 0.5 (30 control units while the change settled, then ``late``)."""
    periods = [
        SharePeriod(T0, {"control": 1.0, "b": 0.0}),
        SharePeriod(T0 + 1_000, {"control": 0.9, "b": 0.1}),
        SharePeriod(T0 + 100_000, {"control": 0.5, "b": 0.5}, settle_ms=60_000),
    ]
    rows = [(T0 + 10, f"p0-{i}", "control") for i in range(50)]
    rows += [(T0 + 2_000, f"p1-{i}", "control" if i < 880 else "b") for i in range(1000)]
    rows += [(T0 + 100_010, f"settling-{i}", "control") for i in range(30)]
    rows += [(T0 + 200_000, f"p2-{i}", "control" if i < late[0] else "b") for i in range(sum(late))]
    rows += [(T0 + 300_000, "p1-0", "b")]  # seen again later, in another arm: counts in its first
    exposures(root, rows)
    return periods


def test_each_unit_is_checked_against_the_shares_at_its_first_exposure(tmp_path: Path) -> None:
    periods = canary(tmp_path)
    found = compute_results(experiment(), str(tmp_path), periods).srm
    assert found is not None
    first = stats.chisquare([880, 120], [900, 100])
    second = stats.chisquare([530, 470], [500, 500])
    assert found.statistic == pytest.approx(first.statistic + second.statistic, rel=1e-12)
    assert found.df == 2
    assert found.p_value == pytest.approx(
        stats.chi2.sf(first.statistic + second.statistic, 2), rel=1e-9
    )
    assert not found.flagged and found.unexpected == 0
    # the first period (one arm with a share) is skipped; the settling units are left out
    assert found.observed == {"control": 880 + 530, "b": 120 + 470}
    assert found.expected == pytest.approx({"control": 900 + 500, "b": 100 + 500})
    assert "2 of 3 periods tested" in found.method
    assert "30 units first exposed within 60 s after a change" in found.method
    # the same units against the shares now (the old check) look badly broken
    now = compute_results(experiment(), str(tmp_path)).srm
    assert now is not None and now.flagged and now.p_value < 1e-20


def test_a_skew_within_one_period_is_flagged(tmp_path: Path) -> None:
    found = compute_results(experiment(), str(tmp_path), canary(tmp_path, late=(600, 400))).srm
    assert found is not None and found.flagged
    skew = stats.chisquare([600, 400], [500, 500]).statistic
    first = stats.chisquare([880, 120], [900, 100]).statistic
    assert found.p_value == pytest.approx(stats.chi2.sf(skew + first, 2), rel=1e-9)


def test_a_unit_in_an_arm_without_a_share_flags_the_check(tmp_path: Path) -> None:
    periods = canary(tmp_path)
    exposures(tmp_path, [(T0 + 20, "early-b", "b")])  # b had no share yet
    found = compute_results(experiment(), str(tmp_path), periods).srm
    assert found is not None and found.flagged
    assert (found.unexpected, found.p_value) == (1, 0.0)
    assert found.observed["b"] == 120 + 470 + 1
    assert "1 units were first exposed in an arm that had no share" in found.method


def test_one_period_is_the_plain_check(tmp_path: Path) -> None:
    rows = [(T0, f"c{i}", "control") for i in range(1100)]
    exposures(tmp_path, [*rows, *((T0, f"b{i}", "b") for i in range(900))])
    plain = compute_results(experiment(), str(tmp_path)).srm
    one = [SharePeriod(T0 - 5, {"control": 0.5, "b": 0.5})]
    assert compute_results(experiment(), str(tmp_path), one).srm == plain
    assert plain is not None and plain.method == "chi-square goodness of fit to the planned shares"
    by_hand = stats.chisquare([1100, 900])
    assert plain.statistic == pytest.approx(by_hand.statistic, rel=1e-12)
    assert plain.p_value == pytest.approx(by_hand.pvalue, rel=1e-9)


def test_the_periods_come_from_the_history(client: Client, tmp_path: Path) -> None:
    ab = client.abtests
    create(ab, "exp", arms=service_arms(0.9))
    ab.update_abtest("exp", shares={"champion": 0.8, "challenger": 0.2})  # a draft: no period
    ab.start_abtest("exp")
    ab.update_abtest("exp", shares={"champion": 0.5, "challenger": 0.5}, reason="step")
    ab.pause_abtest("exp")
    ab.resume_abtest("exp")  # the same shares: the same period
    ab.pause_abtest("exp")
    ab.update_abtest("exp", shares={"champion": 0.3, "challenger": 0.7}, reason="more")
    ab.resume_abtest("exp")
    ab.stop_abtest("exp")
    history = ab.abtest_history("exp")
    periods = share_periods(history)
    at = {v.action + str(v.version): int(v.changed_at.timestamp() * 1000) for v in history}
    assert [(p.start_ms, p.shares, p.settle_ms) for p in periods] == [
        (at["start3"], {"champion": 0.8, "challenger": 0.2}, 0),
        (at["update4"], {"champion": 0.5, "challenger": 0.5}, 60_000),
        (at["resume9"], {"champion": 0.3, "challenger": 0.7}, 0),
    ]


def test_a_stepped_share_is_no_mismatch_through_the_api(client: Client, tmp_path: Path) -> None:
    ab = client.abtests
    create(ab, "exp", arms=service_arms(0.8))
    ab.start_abtest("exp")
    ab.update_abtest("exp", shares={"champion": 0.5, "challenger": 0.5}, reason="step")
    step = share_periods(ab.abtest_history("exp"))[1].start_ms
    # 80/20 before the step, 50/50 once it settled
    rows = [(step - 1, f"a{i}", "champion" if i < 800 else "challenger") for i in range(1000)]
    rows += [(step + 60_000, f"b{i}", "champion" if i % 2 else "challenger") for i in range(1000)]
    root = _root(client, tmp_path)
    exposures(root, rows)
    found = ab.abtest_results("exp").srm
    assert found is not None and not found.flagged and found.p_value == 1.0
    assert found.observed == {"champion": 1300, "challenger": 700}
    now = compute_results(ab.get_abtest("exp"), str(root)).srm  # all against 50/50
    assert now is not None and now.flagged


def test_a_tie_at_the_first_exposure_goes_to_the_arm_listed_first(tmp_path: Path) -> None:
    exposures(tmp_path, [(T0, "tied", "b"), (T0, "tied", "control"), (T0 + 1, "u2", "b")])
    found = compute_results(experiment(), str(tmp_path))
    assert found.units_by_arm == {"control": 1, "b": 1}
    assert found.units_in_several_arms == 1
