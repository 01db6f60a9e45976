"""Labels that arrive after the prediction (``plinth.log_labels``): checked whole, stored in
one transaction, and joined to the logged predictions when performance is measured.

A label names its prediction either by ``request_id`` (and ``row`` within the request) or
by ``entity`` keys: it then belongs to the newest prediction for that entity (the key
columns must be among the model's logged inputs) made at or before the label's time.

Labels whose request id the prediction log does not hold (yet: the log is written in the
background, a second or so behind) are stored anyway and named in the receipt, so a caller
sees a typo at once and a label sent just after its prediction is not lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
from sqlalchemy import Connection, insert, select

from plinth.errors import InvalidArgument
from plinth.monitoring.windows import AT, REQUEST_ID, ROW
from plinth.store.schema import labels, predictions

MAX_LABELS = 10_000  # per call
MAX_LABELS_READ = 200_000  # per performance call, as the windows' predictions
MAX_NAMED = 100  # unmatched request ids named in a receipt
_MAX_TEXT = 64
MAX_ROW = 2**31 - 1  # the row column is a 32-bit integer
_MAX_FUTURE_MS = 5 * 60_000
_EARLIEST_MS = 946_684_800_000  # 2000-01-01: an earlier label time is a mistake (s, not ms?)
_CHUNK = 500  # request ids per IN (...) look-up
LABEL = "__label"
LABEL_AT = "__label_at"


@dataclass(frozen=True)
class LabelIn:
    """One outcome: its ``label`` (a number, boolean or string), the prediction it belongs
    to (``request_id`` and ``row`` within the request, or ``entity`` keys such as
    ``{"customer_id": 42}``) and when it happened (``at``: a datetime or ms since the
    epoch; default now)."""

    label: Any
    request_id: str | None = None
    row: int = 0
    entity: dict[str, Any] | None = None
    at: datetime | int | None = None


@dataclass(frozen=True)
class LabelReceipt:
    """What ``log_labels`` stored: ``accepted`` labels (all of them, or none when refused),
    how many name a request and how many an entity, and the request ids the prediction log
    does not hold (up to 100 named; ``unmatched`` counts them all). Unmatched labels are
    kept: a prediction logged later still gets its label."""

    model_name: str
    accepted: int
    by_request: int
    by_entity: int
    unmatched: int = 0
    unmatched_request_ids: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        text = f"{self.accepted} label(s) stored for {self.model_name}"
        if self.unmatched:
            named = ", ".join(self.unmatched_request_ids[:5])
            text += f"; {self.unmatched} name no logged prediction (e.g. {named})"
        return text


@dataclass(frozen=True)
class _Checked:
    request_id: str | None
    row: int
    entity_key: str | None
    label: str
    at: int


def check_labels(items: list[LabelIn | dict[str, Any]], now: int) -> list[_Checked]:
    """Every label checked; InvalidArgument names the first fault as ``labels[i].field``."""
    if not isinstance(items, list | tuple):
        raise InvalidArgument(f"labels must be a list, not {type(items).__name__}")
    if not items:
        raise InvalidArgument("labels is empty: give at least one label")
    if len(items) > MAX_LABELS:
        raise InvalidArgument(
            f"{len(items)} labels in one call; at most {MAX_LABELS} (send them in batches)"
        )
    return [_check(i, _as_label(i, item), now) for i, item in enumerate(items)]


def _as_label(i: int, item: LabelIn | dict[str, Any]) -> LabelIn:
    if isinstance(item, LabelIn):
        return item
    if not isinstance(item, dict):
        raise InvalidArgument(f"labels[{i}] must be a LabelIn or a dict, not {type(item).__name__}")
    unknown = set(item) - {"label", "request_id", "row", "entity", "at"}
    if unknown:
        raise InvalidArgument(f"labels[{i}] has unknown field(s) {sorted(unknown)}")
    if "label" not in item:
        raise InvalidArgument(f"labels[{i}].label is missing")
    return LabelIn(**item)


def _check(i: int, item: LabelIn, now: int) -> _Checked:
    where = f"labels[{i}]"
    if (item.request_id is None) == (item.entity is None):
        raise InvalidArgument(f"{where}: give exactly one of request_id and entity")
    if item.request_id is not None and not 0 < len(str(item.request_id)) <= _MAX_TEXT:
        raise InvalidArgument(f"{where}.request_id must have 1 to {_MAX_TEXT} characters")
    if isinstance(item.row, bool) or not isinstance(item.row, int) or not 0 <= item.row <= MAX_ROW:
        raise InvalidArgument(
            f"{where}.row must be a row number from 0 to {MAX_ROW}, not {item.row!r}"
        )
    if item.entity is not None and (not isinstance(item.entity, dict) or not item.entity):
        raise InvalidArgument(f"{where}.entity must be a dict of key columns, e.g. {{'id': 42}}")
    return _Checked(
        None if item.request_id is None else str(item.request_id),
        item.row,
        None if item.entity is None else entity_key(item.entity, f"{where}.entity"),
        _label_text(item.label, f"{where}.label"),
        _time(item.at, now, f"{where}.at"),
    )


def _label_text(value: Any, where: str) -> str:
    if value is None or not isinstance(value, bool | int | float | str):
        raise InvalidArgument(f"{where} must be a number, boolean or string, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{where} must be a finite number, not {value!r}")
    if isinstance(value, str) and len(value) > 500:
        raise InvalidArgument(f"{where} is longer than 500 characters")
    return _json(value, where)


def _json(value: Any, where: str, option: int | None = None) -> str:
    try:
        return orjson.dumps(value, option=option).decode()
    except orjson.JSONEncodeError as e:  # an integer past 64 bits
        raise InvalidArgument(f"{where}: {e} (integers must fit in 64 bits)") from e


def _time(value: datetime | int | None, now: int, where: str) -> int:
    if value is None:
        return now
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgument(f"{where} must be timezone-aware (e.g. UTC), not {value}")
        ms = int(value.timestamp() * 1000)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        raise InvalidArgument(f"{where} must be a datetime or ms since the epoch, not {value!r}")
    if not _EARLIEST_MS <= ms <= now + _MAX_FUTURE_MS:
        raise InvalidArgument(
            f"{where} = {value} is in the future or before 2000-01-01 (give ms since the epoch)"
        )
    return ms


def entity_key(entity: dict[str, Any], where: str = "entity") -> str:
    """The canonical text of entity keys: sorted names, integral floats as integers, so a
    key logged as 42.0 in a float column matches ``{"id": 42}``."""
    plain: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is not None and not isinstance(value, bool | int | float | str):
            raise InvalidArgument(f"{where}.{name} must be a number or string, not {value!r}")
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            raise InvalidArgument(f"{where}.{name} = {value} does not fit in 64 bits")
        plain[str(name)] = value
    return _json(plain, where, orjson.OPT_SORT_KEYS)


def store_labels(
    conn: Connection, model: str, checked: list[_Checked], logged_by: str, now: int
) -> LabelReceipt:
    """Insert every label in the caller's transaction; the receipt names unmatched ids."""
    conn.execute(
        insert(labels),
        [
            {
                "model_name": model,
                "request_id": c.request_id,
                "row": c.row,
                "entity_key": c.entity_key,
                "label": c.label,
                "at": c.at,
                "logged_at": now,
                "logged_by": logged_by,
            }
            for c in checked
        ],
    )
    unmatched = _unmatched(conn, model, checked)
    by_request = sum(c.request_id is not None for c in checked)
    return LabelReceipt(
        model,
        len(checked),
        by_request,
        len(checked) - by_request,
        len(unmatched),
        unmatched[:MAX_NAMED],
    )


def _unmatched(conn: Connection, model: str, checked: list[_Checked]) -> list[str]:
    """Request ids (``id`` or ``id row N`` for a row the request lacks) not in the log."""
    wanted = sorted({c.request_id for c in checked if c.request_id is not None})
    rows: dict[str, int] = {}
    p = predictions.c
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = select(p.request_id, p.rows).where(p.model_name == model, p.request_id.in_(chunk))
        for request_id, count in conn.execute(query).all():
            rows[request_id] = max(rows.get(request_id, 0), int(count))
    missing: list[str] = []
    seen: set[str] = set()
    for c in checked:
        if c.request_id is None:
            continue
        name = c.request_id if c.request_id not in rows else f"{c.request_id} row {c.row}"
        if (c.request_id in rows and c.row < rows[c.request_id]) or name in seen:
            continue
        seen.add(name)
        missing.append(name)
    return missing


# -- the join ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelsRead:
    """The labels ``read_labels`` found (``table``) and whether older ones were left out."""

    table: pa.Table
    capped: bool

    def note(self) -> str:
        if not self.capped:
            return ""
        return f"only the {self.table.num_rows:,} labels logged last were read"


def read_labels(
    conn: Connection, model: str, since: int, max_rows: int | None = None
) -> LabelsRead:
    """The model's labels that happened at or after ``since`` (ms), oldest logged first:
    ``request_id``, ``row``, ``entity_key``, ``label`` (JSON text), ``at``; at most
    ``max_rows`` of them, the ones logged last (``capped`` says when others were left
    out), so a model's performance stays bounded in time and memory as its windows are."""
    limit = MAX_LABELS_READ if max_rows is None else max_rows
    lc = labels.c
    query = (
        select(lc.request_id, lc.row, lc.entity_key, lc.label, lc.at)
        .where(lc.model_name == model, lc.at >= since)
        .order_by(lc.id.desc())
        .limit(limit + 1)
    )
    found = conn.execute(query).all()
    capped = len(found) > limit
    found = found[:limit][::-1]
    table = pa.table(
        {
            "request_id": pa.array([r.request_id for r in found], pa.string()),
            "row": pa.array([r.row for r in found], pa.int64()),
            "entity_key": pa.array([r.entity_key for r in found], pa.string()),
            "label": pa.array([r.label for r in found], pa.string()),
            "at": pa.array([r.at for r in found], pa.int64()),
        }
    )
    return LabelsRead(table, capped)


def join_labels(window: pa.Table, found: pa.Table) -> pa.Table:
    """``window`` (read with its meta columns) with ``__label`` (the decoded value, null
    where no label) and ``__label_at``. A request label goes to its request's row; an
    entity label to the newest prediction for that entity at or before the label's time.
    A prediction labelled twice keeps the label logged last."""
    n = window.num_rows
    values: list[Any] = [None] * n
    times: list[int | None] = [None] * n
    if n and found.num_rows:
        ids = window[REQUEST_ID].to_pylist()
        positions = window[ROW].to_pylist()
        index = {(r, p): i for i, (r, p) in enumerate(zip(ids, positions, strict=True))}
        entity = _EntityIndex(window)
        for request_id, row, key, text, at in zip(
            found["request_id"].to_pylist(),
            found["row"].to_pylist(),
            found["entity_key"].to_pylist(),
            found["label"].to_pylist(),
            found["at"].to_pylist(),
            strict=True,
        ):
            i = index.get((request_id, row)) if request_id is not None else entity.find(key, at)
            if i is not None:
                values[i] = orjson.loads(text)
                times[i] = at
    return window.append_column(LABEL, _label_array(values)).append_column(
        LABEL_AT, pa.array(times, pa.int64())
    )


def _label_array(values: list[Any]) -> pa.Array:
    """The labels as one Arrow array: booleans among numbers as 1 and 0, and labels of
    other mixed kinds as their JSON text (true, 1, "yes" -> true, 1, yes)."""
    if any(isinstance(v, bool) for v in values) and any(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        values = [int(v) if isinstance(v, bool) else v for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in values]
        return pa.array([None if v is None else t for v, t in zip(values, text, strict=True)])


class _EntityIndex:
    """Rows of a window by the canonical key of some of its input columns, newest first
    (a window is read newest first), built once per set of key columns."""

    def __init__(self, window: pa.Table) -> None:
        self.window = window
        self.times: list[int] = window[AT].to_pylist()
        self.by_columns: dict[tuple[str, ...], dict[str, list[int]] | None] = {}

    def find(self, key: str | None, at: int) -> int | None:
        if key is None:
            return None
        columns = tuple(sorted(orjson.loads(key)))
        if columns not in self.by_columns:
            self.by_columns[columns] = self._index(columns)
        index = self.by_columns[columns]
        if index is None:
            return None
        for i in index.get(key, []):  # newest first: the first made at or before ``at``
            if self.times[i] <= at:
                return i
        return None

    def _index(self, columns: tuple[str, ...]) -> dict[str, list[int]] | None:
        if any(c not in self.window.column_names for c in columns):
            return None  # the key columns are not among the logged inputs
        lists = [self.window[c].to_pylist() for c in columns]
        index: dict[str, list[int]] = {}
        for i, values in enumerate(zip(*lists, strict=True)):
            try:
                key = entity_key(dict(zip(columns, values, strict=True)))
            except InvalidArgument:  # a key value that is not a number or string
                continue
            index.setdefault(key, []).append(i)
        return index
