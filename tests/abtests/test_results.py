"""Results from hand-made exposure and event logs: who counts in which arm, which events
count, and the figures against stats.compare on the same per-unit arrays."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from plinth.abtests.assign import Allocation
from plinth.abtests.checks import adjust_p_values
from plinth.abtests.events import events_uri
from plinth.abtests.results import EXPOSURES_SCHEMA, compute_results
from plinth.abtests.stats import compare, summarize_mean, summarize_proportion, summarize_ratio
from plinth.abtests.traffic import exposures_uri
from plinth.abtests.types import Arm, Experiment, Guardrail, Kpi, KpiKind, Mode, Status, Unit
from plinth.client import Client
from tests.abtests.test_events import _root
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


def exposures(root: Path, rows: list[tuple[int, str, str]], name: str = "exp") -> None:
    """``(at_ms, unit, arm)`` rows; request ids are ``req-{unit}-{i}``."""
    table = pa.table(
        {
            "at_ms": [r[0] for r in rows],
            "unit": [r[1] for r in rows],
            "arm": [r[2] for r in rows],
            "request_id": [f"req-{r[1]}-{i}" for i, r in enumerate(rows)],
            "model_version": [None] * len(rows),
            "latency_ms": [None] * len(rows),
            "outcome": ["ok"] * len(rows),
        },
        schema=EXPOSURES_SCHEMA,
    )
    write_deltalake(exposures_uri(str(root), name), table, mode="append")


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
