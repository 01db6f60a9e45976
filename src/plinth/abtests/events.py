"""Outcome events of A/B experiments (a click, a conversion, revenue): validated whole, then
appended to a Delta table per experiment beside its exposure log.

Layout under the server's artifact root (the router writes the exposures)::

    {root}/abtests/{experiment}/exposures   at_ms, unit, arm, request_id, model_version
    {root}/abtests/{experiment}/events      at_ms, name, value, unit, request_id, event_id

An event names its unit, or the request whose exposure names it (or both). A batch is
checked in full before anything is written: one bad event refuses the batch, naming
``events[i].field``, and nothing is stored.

Idempotency: an event sent twice (a retry after a lost answer) is stored twice and counted
once. Results read the events grouped by ``event_id`` and keep the earliest (by ``at_ms``,
then the smaller value), so appends never read the table and clients may retry freely.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

from plinth.abtests.traffic import MAX_FUTURE_MS, append, storage_options
from plinth.errors import InvalidArgument

# An event may come from a clock a little ahead of ours; more than this is a bug upstream.
MAX_BATCH = 10_000
_MAX_TEXT = 500

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("at_ms", pa.int64(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("event_id", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Event:
    """One outcome: ``name`` (the KPI's ``event``), ``value`` (1 for a count, the amount for
    revenue), the ``unit`` it belongs to or the ``request_id`` of its exposure, an
    ``event_id`` unique to it (a re-sent event keeps it) and its time in ms since the epoch
    (UTC)."""

    experiment: str
    name: str
    event_id: str
    at_ms: int
    value: float = 1.0
    unit: str | None = None
    request_id: str | None = None


# Larger values are mistakes, not revenue, and their squares would overflow the statistics.
MAX_VALUE = 1e15


def experiment_uri(root: str, experiment: str) -> str:
    return f"{root.rstrip('/')}/abtests/{experiment}"


def events_uri(root: str, experiment: str) -> str:
    return f"{experiment_uri(root, experiment)}/events"


def check_events(
    experiment: str, events: Sequence[Event | dict[str, Any]], *, now_ms: int | None = None
) -> list[Event]:
    """Every event checked (a dict becomes an Event); InvalidArgument names the first fault
    as ``events[i].field``."""
    if not isinstance(events, (list, tuple)):
        raise InvalidArgument("events: give a list of events")
    if not events:
        raise InvalidArgument("events: the batch is empty")
    if len(events) > MAX_BATCH:
        raise InvalidArgument(f"events: at most {MAX_BATCH:,} per batch, got {len(events):,}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [_check(experiment, event, f"events[{i}]", now) for i, event in enumerate(events)]


_FIELDS = {f.name for f in fields(Event)}


def _as_event(raw: Event | dict[str, Any], where: str) -> Event:
    if isinstance(raw, Event):
        return raw
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: give an object of the event's fields")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"{where}.{unknown[0]}: not a field of an event")
    missing = sorted({"experiment", "name", "event_id", "at_ms"} - set(raw))
    if missing:
        raise InvalidArgument(f"{where}.{missing[0]}: missing")
    return Event(**raw)


def _check(experiment: str, raw: Event | dict[str, Any], where: str, now: int) -> Event:
    event = _as_event(raw, where)
    if event.experiment != experiment:
        raise InvalidArgument(
            f"{where}.experiment: {event.experiment!r} in a batch for {experiment!r}"
        )
    _text(event.name, f"{where}.name")
    _text(event.event_id, f"{where}.event_id")
    unit = _optional_text(event.unit, f"{where}.unit")
    request_id = _optional_text(event.request_id, f"{where}.request_id")
    if unit is None and request_id is None:
        raise InvalidArgument(f"{where}.unit: give the unit or the request_id it belongs to")
    value = event.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{where}.value: must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > MAX_VALUE:
        raise InvalidArgument(
            f"{where}.value: must be finite and at most {MAX_VALUE:g} in size, got {value!r}"
        )
    at = event.at_ms
    if isinstance(at, bool) or not isinstance(at, int):
        raise InvalidArgument(
            f"{where}.at_ms: must be an integer (ms since the epoch, UTC), got {type(at).__name__}"
        )
    if at < 0:
        raise InvalidArgument(f"{where}.at_ms: must not be before 1970, got {at}")
    if at > now + MAX_FUTURE_MS:
        raise InvalidArgument(
            f"{where}.at_ms: {at} is {(at - now) / 1000:.0f} s in the future "
            f"(at most {MAX_FUTURE_MS // 1000} s ahead is accepted)"
        )
    return Event(experiment, event.name, event.event_id, at, float(value), unit, request_id)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgument(f"{where}: must not be empty")
    if len(value) > _MAX_TEXT:
        raise InvalidArgument(f"{where}: at most {_MAX_TEXT} characters, got {len(value)}")
    return value


def _optional_text(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    return _text(value, where)


def events_table(events: Sequence[Event]) -> pa.Table:
    return pa.table(
        {
            "at_ms": [e.at_ms for e in events],
            "name": [e.name for e in events],
            "value": [e.value for e in events],
            "unit": [e.unit for e in events],
            "request_id": [e.request_id for e in events],
            "event_id": [e.event_id for e in events],
        },
        schema=EVENTS_SCHEMA,
    )


def append_events(root: str, experiment: str, events: Sequence[Event]) -> int:
    """One Delta commit for the whole (already checked) batch: all of it or none."""

    uri = events_uri(root, experiment)
    append(uri, events_table(events), storage_options(uri), f"the events of {experiment}")
    return len(events)
