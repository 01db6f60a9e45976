"""The timeline: every point against the rules applied in plain Python to what was known at
its cut time, its intervals against sequential.sequential_test over the same looks, and its
last point against the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plinth.abtests.results import compute_results, mixing_variance
from plinth.abtests.sequential import sequential_test
from plinth.abtests.stats import compare, summarize_mean, summarize_proportion
from plinth.abtests.timeline import compute_timeline
from plinth.abtests.types import Kpi, KpiKind
from plinth.client import Client
from plinth.errors import InvalidArgument
from tests.abtests.test_events import _root
from tests.abtests.test_results import (
    CONVERSION,
    T0,
    arrays,
    events,
    experiment,
    exposures,
    messy_logs,
    reference_units,
)
from tests.abtests.test_service import create

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.mark.parametrize(
    ("kpi", "event", "any_"),
    [(CONVERSION, "buy", True), (Kpi("rev", KpiKind.MEAN, "pay"), "pay", False)],
)
def test_each_point_is_what_was_known_at_its_cut(
    tmp_path: Path, kpi: Kpi, event: str, any_: bool
) -> None:
    rows, evs = messy_logs(tmp_path, seed=21, n=300)
    exp = experiment(kpi)
    timeline = compute_timeline(exp, str(tmp_path), points=8)
    assert len(timeline.points) == 8 and timeline.control == "control"
    summarize = summarize_proportion if any_ else summarize_mean
    looks = []
    for point in timeline.points:
        cut = int(point.at.timestamp() * 1000 + 0.5)
        known_rows = [r for r in rows if r[0] <= cut]
        known_events = [e for e in evs if e["at_ms"] <= cut]
        units = reference_units(known_rows, known_events, {event})
        y = arrays(units, f"post:{event}", any_)
        assert point.units == {arm: v.size for arm, v in y.items()}
        for arm, values in y.items():
            assert point.estimate[arm] == pytest.approx(summarize(values).estimate, rel=1e-9)
        c, t = summarize(y["control"]), summarize(y["b"])
        assert point.lift["b"] == pytest.approx(compare(c, t).absolute_lift, rel=1e-9, abs=1e-12)
        looks.append((c, t))
    mixing = mixing_variance(exp, looks[-1][0], looks[-1][1], [])
    assert mixing is not None and timeline.method.endswith(mixing[1])
    expected = sequential_test(
        [c for c, _ in looks], [t for _, t in looks], mixing_variance=mixing[0]
    )
    for point, look in zip(timeline.points, expected.looks, strict=True):
        assert (point.lower["b"], point.upper["b"]) == pytest.approx(look.ci, rel=1e-6)
    widths = [p.upper["b"] - p.lower["b"] for p in timeline.points]
    assert widths == sorted(widths, reverse=True)  # the running intersection narrows


def test_the_last_point_is_the_results(tmp_path: Path) -> None:
    messy_logs(tmp_path, seed=22, n=300)
    exp = experiment()
    results = compute_results(exp, str(tmp_path))
    last = compute_timeline(exp, str(tmp_path), points=5).points[-1]
    assert last.units == results.units_by_arm
    for arm, summary in results.summaries.items():
        assert last.estimate[arm] == pytest.approx(summary.estimate, rel=1e-12)
    assert last.lift["b"] == pytest.approx(results.primary["b"].absolute_lift, rel=1e-9)
    low, high = results.sequential["b"].ci
    assert low - 1e-12 <= last.lower["b"] <= last.upper["b"] <= high + 1e-12


def test_few_points_no_data_and_bad_points(tmp_path: Path) -> None:
    empty = compute_timeline(experiment(), str(tmp_path))
    assert empty.points == [] and empty.notes == ["no exposures logged yet"]
    exposures(tmp_path, [(T0, "u1", "control"), (T0, "u2", "b"), (T0, "u3", "b")])
    events(tmp_path, [{"unit": "u2", "event_id": "e", "at_ms": T0}])
    one = compute_timeline(experiment(), str(tmp_path), points=10)
    assert len(one.points) == 1  # everything at one instant: one cut
    assert one.points[0].units == {"control": 1, "b": 2}
    assert one.points[0].estimate == {"b": 0.5}  # control needs two units for a summary
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(InvalidArgument, match="points: a whole number from 1 to 1000"):
            compute_timeline(experiment(), str(tmp_path), points=bad)  # type: ignore[arg-type]


def test_timeline_through_the_api(client: Client, tmp_path: Path) -> None:
    create(client.abtests, "exp")  # arms champion (control) and challenger
    root = _root(client, tmp_path)
    rng = np.random.default_rng(3)
    units = [(T0 + i * 1000, f"u{i}", "champion" if i % 2 else "challenger") for i in range(200)]
    exposures(root, units)
    events(
        root,
        [
            {"unit": f"u{i}", "event_id": str(i), "at_ms": T0 + i * 1000 + 500}
            for i in range(200)
            if rng.random() < 0.3
        ],
    )
    found = client.abtests.abtest_timeline("exp", points=4)
    assert found.experiment == "exp" and found.control == "champion"
    assert [sum(p.units.values()) for p in found.points] == [50, 100, 150, 200]
    assert found.points[-1].estimate == pytest.approx(
        {arm: s.estimate for arm, s in client.abtests.abtest_results("exp").summaries.items()}
    )
