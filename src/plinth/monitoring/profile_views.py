"""Stored profiles as the dashboard and reports read them: a list, one profile with its
histograms cut to a few display bins, and the deciles metadata table (per model version,
kind of subject and column, the deciles of its newest profile: a query over
``profile_columns``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, or_, select

from plinth.auth.access import Access
from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument, NotFound
from plinth.stats.profile import ColumnProfile
from plinth.store.schema import profile_columns, profiles

MAX_LIST = 1_000
MAX_DECILE_ROWS = 10_000
TOP = 10
_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class ProfileInfo:
    """A stored profile: what it describes (``subject_kind`` and ``subject``, with their
    keys), its row count and time span (ms) and when it was made."""

    __pydantic_config__ = _JSON

    id: int
    subject_kind: str
    subject: str
    rows: int
    created_at: int
    created_by: str = ""
    group_name: str | None = None
    group_version: int | None = None
    commit_version: int | None = None
    model_name: str | None = None
    model_version: int | None = None
    score_job_id: int | None = None
    window_start: int | None = None
    window_end: int | None = None


@dataclass(frozen=True)
class ColumnView:
    """One column for charts: ``edges`` (len(counts) + 1) and ``counts`` of its histogram in
    display bins (numeric and temporal columns), ``top`` values with counts (categorical
    ones, and numeric ones with few values)."""

    __pydantic_config__ = _JSON

    name: str
    kind: str
    dtype: str
    count: int
    nulls: int
    distinct: int | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    deciles: list[float] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    top: list[tuple[str, int]] = field(default_factory=list)
    other: int = 0  # values beyond the tracked ones


@dataclass(frozen=True)
class ProfileView:
    __pydantic_config__ = _JSON

    profile: ProfileInfo
    columns: list[ColumnView]


@dataclass(frozen=True)
class DecileRow:
    """A row of the deciles metadata table."""

    __pydantic_config__ = _JSON

    model_name: str
    model_version: int | None
    subject_kind: str
    subject: str
    profile_id: int
    created_at: int
    column: str
    kind: str
    count: int
    nulls: int
    deciles: list[float]


def readable_profile(access: Access, arguments: dict[str, Any]) -> None:
    """viewer on the profile's model or feature group"""
    profile_id = arguments["profile_id"]
    with access.store.read() as conn:
        row = conn.execute(
            select(profiles.c.model_name, profiles.c.group_name).where(
                profiles.c.id == int(profile_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"profile {profile_id} not found")
    try:
        if row.model_name is not None:
            access.require(Action.READ, Kind.MODEL, row.model_name, repr(row.model_name))
        if row.group_name is not None:
            access.require(Action.READ, Kind.FEATURE_GROUP, row.group_name, repr(row.group_name))
    except NotFound:  # a profile of what the caller may not see is not there either
        raise NotFound(f"profile {profile_id} not found") from None


def _visible(access: Access) -> list[Any]:
    """Conditions keeping the profiles of models and groups the caller may see."""
    conditions: list[Any] = []
    models = access.visible(Kind.MODEL)
    if models is not None:
        conditions.append(or_(profiles.c.model_name.is_(None), profiles.c.model_name.in_(models)))
    groups = access.visible(Kind.FEATURE_GROUP)
    if groups is not None:
        conditions.append(or_(profiles.c.group_name.is_(None), profiles.c.group_name.in_(groups)))
    return conditions


def list_profile_rows(
    access: Access,
    subject_kind: str | None,
    model_name: str | None,
    model_version: int | None,
    group_name: str | None,
    limit: int,
) -> list[ProfileInfo]:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidArgument(f"limit must be from 1 to {MAX_LIST}, not {limit}")
    query = select(profiles).where(*_visible(access)).order_by(profiles.c.id.desc()).limit(limit)
    for column, value in (
        (profiles.c.subject_kind, subject_kind),
        (profiles.c.model_name, model_name),
        (profiles.c.model_version, model_version),
        (profiles.c.group_name, group_name),
    ):
        if value is not None:
            query = query.where(column == value)
    with access.store.read() as conn:
        return [_info(row) for row in conn.execute(query).all()]


def _info(row: Any) -> ProfileInfo:
    m = row._mapping
    return ProfileInfo(**{f: m[f] for f in ProfileInfo.__dataclass_fields__})


def profile_view(
    conn: Connection, profile_id: int, bins: int, compare_to: int | None
) -> ProfileView:
    if not 1 <= bins <= 200:
        raise InvalidArgument(f"bins must be from 1 to 200, not {bins}")
    row = conn.execute(select(profiles).where(profiles.c.id == profile_id)).first()
    if row is None:
        raise NotFound(f"profile {profile_id} not found")
    columns = _columns(conn, profile_id)
    others = _columns(conn, compare_to) if compare_to is not None else {}
    views = [
        _column_view(stored, parsed, others.get(name), bins)
        for name, (stored, parsed) in columns.items()
    ]
    return ProfileView(_info(row), views)


def _columns(conn: Connection, profile_id: int) -> dict[str, tuple[Any, ColumnProfile]]:
    query = (
        select(profile_columns)
        .where(profile_columns.c.profile_id == profile_id)
        .order_by(profile_columns.c.column_name)
    )
    rows = conn.execute(query).all()
    if (
        not rows
        and conn.execute(select(profiles.c.id).where(profiles.c.id == profile_id)).first() is None
    ):
        raise NotFound(f"profile {profile_id} not found")
    return {r.column_name: (r, ColumnProfile.from_dict(json.loads(r.data))) for r in rows}


def _column_view(
    stored: Any, column: ColumnProfile, other: tuple[Any, ColumnProfile] | None, bins: int
) -> ColumnView:
    edges: list[float] = []
    counts: list[float] = []
    if column.histogram is not None and column.min is not None and column.max is not None:
        low, high = column.min, column.max
        if other is not None and other[1].min is not None and other[1].max is not None:
            low, high = min(low, other[1].min), max(high, other[1].max)
        grid = _edges(low, high, bins)
        edges = [float(e) for e in grid]
        counts = [float(c) for c in column.histogram.rebin(grid)]
    return ColumnView(
        column.name, column.kind, column.dtype, column.count, column.nulls, stored.distinct,
        _finite(stored.mean), _finite(stored.std), _finite(stored.min), _finite(stored.max),
        [float(d) for d in json.loads(stored.deciles or "[]")], edges, counts,
        [(str(k), int(v)) for k, v in column.top(TOP)], column.other,
    )  # fmt: skip


def _edges(low: float, high: float, bins: int) -> np.ndarray[Any, Any]:
    if high <= low:  # one value: one bin around it
        return np.array([low - 0.5, low + 0.5]) if low == high else np.array([low, low + 1.0])
    return np.linspace(low, high, bins + 1)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def decile_rows(
    access: Access,
    model_name: str | None,
    subject_kind: str | None,
    column: str | None,
    limit: int,
) -> list[DecileRow]:
    """Per model version, subject kind and column, the deciles of the newest profile."""
    if not 1 <= limit <= MAX_DECILE_ROWS:
        raise InvalidArgument(f"limit must be from 1 to {MAX_DECILE_ROWS}, not {limit}")
    if model_name is not None:
        access.require(Action.READ, Kind.MODEL, model_name, repr(model_name))
    p, c = profiles.c, profile_columns.c
    query = (
        select(
            p.id,
            p.model_name,
            p.model_version,
            p.subject_kind,
            p.subject,
            p.created_at,
            c.column_name,
            c.kind,
            c.count.label("column_count"),
            c.nulls,
            c.deciles,
        )
        .join(profile_columns, c.profile_id == p.id)
        .where(and_(p.model_name.is_not(None), *_visible(access)))
        .order_by(p.id.desc(), c.column_name)
    )
    for col, value in (
        (p.model_name, model_name),
        (p.subject_kind, subject_kind),
        (c.column_name, column),
    ):
        if value is not None:
            query = query.where(col == value)
    found: list[DecileRow] = []
    seen: set[tuple[Any, ...]] = set()
    with access.store.read() as conn:
        result = conn.execute(query)
        for r in result:
            key = (r.model_name, r.model_version, r.subject_kind, r.column_name)
            if key in seen:
                continue  # an older profile of the same thing
            seen.add(key)
            found.append(
                DecileRow(
                    r.model_name,
                    r.model_version,
                    r.subject_kind,
                    r.subject,
                    r.id,
                    r.created_at,
                    r.column_name,
                    r.kind,
                    r.column_count,
                    r.nulls,
                    [float(d) for d in json.loads(r.deciles or "[]")],
                )
            )
            if len(found) >= limit:
                break
        result.close()
    return found
