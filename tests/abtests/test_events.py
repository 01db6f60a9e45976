"""Outcome events: a batch is checked whole (the fault named by its field) before one
commit; on every backend through the client, and by ``plinth.log_event``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from plinth.abtests.events import Event, append_events, check_events, events_uri
from plinth.client import Client
from plinth.errors import InvalidArgument, NotFound
from tests.abtests.test_service import create

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

NOW = 1_800_000_000_000


def event(**kw: Any) -> dict[str, Any]:
    return {
        "experiment": "exp",
        "name": "purchase",
        "event_id": "e1",
        "at_ms": NOW,
        "unit": "u1",
        **kw,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"unit": None}, r"events\[1\]\.unit: give the unit or the request_id"),
        ({"value": "3"}, r"events\[1\]\.value: must be a number, got str"),
        ({"value": True}, r"events\[1\]\.value: must be a number, got bool"),
        ({"value": float("nan")}, r"events\[1\]\.value: must be finite"),
        ({"value": float("inf")}, r"events\[1\]\.value: must be finite"),
        ({"at_ms": NOW + 10 * 60_000}, r"events\[1\]\.at_ms: .* 600 s in the future"),
        ({"at_ms": 1.5}, r"events\[1\]\.at_ms: must be an integer"),
        ({"event_id": ""}, r"events\[1\]\.event_id: must not be empty"),
        ({"name": 7}, r"events\[1\]\.name: must be a string, got int"),
        ({"unit": 42}, r"events\[1\]\.unit: must be a string, got int"),
        ({"experiment": "other"}, r"events\[1\]\.experiment: 'other' in a batch for 'exp'"),
        ({"colour": "red"}, r"events\[1\]\.colour: not a field of an event"),
    ],
)
def test_a_bad_event_is_refused_naming_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_events("exp", [event(), event(**fields)], now_ms=NOW)


def test_good_events_are_normalised() -> None:
    checked = check_events(
        "exp",
        [event(value=3, unit="", request_id="r1"), event(at_ms=NOW + 60_000)],
        now_ms=NOW,
    )
    assert checked[0] == Event("exp", "purchase", "e1", NOW, 3.0, None, "r1")
    assert isinstance(checked[0].value, float)
    assert checked[1].at_ms == NOW + 60_000  # a clock a minute ahead is tolerated
    with pytest.raises(InvalidArgument, match="events: the batch is empty"):
        check_events("exp", [])


def test_a_batch_is_one_commit(tmp_path: Path) -> None:
    root = str(tmp_path)
    events = check_events("exp", [event(event_id=f"e{i}") for i in range(3)], now_ms=NOW)
    assert append_events(root, "exp", events) == 3
    append_events(root, "exp", events[:1])
    table = DeltaTable(events_uri(root, "exp"))
    assert table.version() == 1
    assert sorted(table.to_pyarrow_table()["event_id"].to_pylist()) == ["e0", "e0", "e1", "e2"]


def _stored(root: Path, name: str) -> list[str]:
    uri = events_uri(str(root), name)
    if not Path(uri).exists():
        return []
    return sorted(DeltaTable(uri).to_pyarrow_table()["event_id"].to_pylist())


def _root(client: Client, tmp_path: Path) -> Path:
    return tmp_path / ("server-home/artifacts" if client.remote else "artifacts")


def test_events_through_the_api(client: Client, tmp_path: Path) -> None:
    create(client.abtests, "exp")
    now = int(time.time() * 1000)
    good = [event(at_ms=now, event_id="a"), event(at_ms=now, event_id="b", value=2.5)]
    bad = [*good, event(at_ms=now + 3_600_000, event_id="c")]
    with pytest.raises(InvalidArgument, match=r"events\[2\]\.at_ms: .* in the future"):
        client.abtests.log_events("exp", bad)
    assert _stored(_root(client, tmp_path), "exp") == []  # nothing of the batch is kept
    assert client.abtests.log_events("exp", good) == 2
    with pytest.raises(NotFound, match="'nope' does not exist"):
        client.abtests.log_events("nope", [event(experiment="nope", at_ms=now)])
    at = datetime.fromtimestamp(now / 1000, UTC)
    assert client.log_event("exp", "purchase", 4.0, unit="u2", event_id="d", at=at) == "d"
    generated = client.log_event("exp", "click", request_id="r9")
    assert len(generated) == 32
    assert _stored(_root(client, tmp_path), "exp") == sorted(["a", "b", "d", generated])
