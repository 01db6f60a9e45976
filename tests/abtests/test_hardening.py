"""What a review of the A/B parts found, kept fixed: huge event values, racing first
commits, non-ASCII units in headers, oversized bodies, names with a trailing newline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from plinth.abtests.buckets import bucket
from plinth.abtests.events import Event, append_events, check_events
from plinth.abtests.router import create_router
from plinth.abtests.stats import compare, mean_from_moments
from plinth.abtests.traffic import Exposure, ExposureLog, exposures_uri
from plinth.errors import InvalidArgument


def test_an_event_value_beyond_1e15_is_refused() -> None:
    good = Event("e", "revenue", "id-1", 1_700_000_000_000, value=1e15, unit="u")
    check_events("e", [good])
    huge = Event("e", "revenue", "id-2", 1_700_000_000_000, value=1e80, unit="u")
    with pytest.raises(InvalidArgument, match=r"events\[0\].value"):
        check_events("e", [huge])


def test_large_estimates_compare_without_overflow() -> None:
    control = mean_from_moments(10, 1e80, 1e10)  # c**4 would overflow a float
    treatment = mean_from_moments(10, 2e80, 1e10)
    assert compare(control, treatment).relative_lift == pytest.approx(1.0)


def test_racing_first_commits_all_land(tmp_path: Path) -> None:
    root = str(tmp_path)
    failures: list[Exception] = []

    def send(i: int) -> None:
        try:
            append_events(
                root, "e1", [Event("e1", "click", f"id-{i}", 1_700_000_000_000, unit="u")]
            )
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert DeltaTable(f"{root}/abtests/e1/events").to_pyarrow_table().num_rows == 8


def test_two_exposure_logs_creating_one_table_lose_nothing(tmp_path: Path) -> None:
    logs = [ExposureLog(str(tmp_path), flush_seconds=0.01) for _ in range(3)]
    for n, log in enumerate(logs):
        for i in range(50):
            log.record(Exposure("e1", "a", f"u{n}-{i}", f"r{n}-{i}", None, 1_700_000_000_000))
    for log in logs:
        log.close()
    assert sum(log.failed for log in logs) == 0
    table = DeltaTable(exposures_uri(str(tmp_path), "e1")).to_pyarrow_table()
    assert table.num_rows == 150


pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def _router(max_body_bytes: int = 1024) -> Any:
    from starlette.testclient import TestClient

    from tests.abtests.test_router import experiment

    running = experiment({"champion": "http://127.0.0.1:9", "challenger": "http://127.0.0.1:9"})
    app = create_router(lambda: [running], None, max_body_bytes=max_body_bytes)
    return TestClient(app)


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole() -> None:
    with _router(max_body_bytes=1024) as http:
        answer = http.post("/churn/predict", content=b"x" * 4096, headers={"x-plinth-unit": "u"})
        assert answer.status_code == 413


def test_a_utf8_unit_in_the_header_is_hashed_as_documented() -> None:
    from types import SimpleNamespace

    from plinth.abtests.router import _unit_of
    from plinth.abtests.types import Unit

    unit = "Jürgen-7"
    raw = unit.encode()  # what the ASGI server hands over: the header's bytes
    exp = SimpleNamespace(unit=Unit.USER, name="e")
    found, _ = _unit_of(exp, raw, b"{}", "r1")  # type: ignore[arg-type]
    assert found == unit and bucket("s", found) == bucket("s", "Jürgen-7")


def test_names_with_a_trailing_newline_are_refused() -> None:
    from plinth.abtests.design import check_name

    with pytest.raises(InvalidArgument):
        check_name("e1\n")
