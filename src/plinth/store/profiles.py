"""Stored profiles: the statistics of a table at a place and time (``plinth.stats.profile``)
in the central store, keyed by what they describe.

A profile is one ``profiles`` row and one ``profile_columns`` row per column: the figures
people query as columns (count, nulls, distinct, mean, std, min, max, deciles) and the
whole mergeable column profile as JSON in ``data``. Callers save a profile on their own
connection, inside the transaction of whatever the profile belongs to, so a profile is
stored with its subject or not at all.

``subject_kind`` and ``subject``: feature_commit ("group/version@commit"), training_data
("model/version"), serving_window ("model/version"), score_job (the job's key), dataset
(a name).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select

from plinth.errors import InvalidArgument, NotFound
from plinth.store.schema import profile_columns, profiles
from plinth.store.sql import now_ms, opt_datetime, to_datetime

if TYPE_CHECKING:
    from plinth.stats.profile import ColumnProfile, TableProfile

SUBJECT_KINDS = ("feature_commit", "training_data", "serving_window", "score_job", "dataset")


@dataclass(frozen=True)
class ProfileRow:
    """What a stored profile describes, without its columns (``load_profile`` reads them)."""

    id: int
    subject_kind: str
    subject: str
    rows: int
    created_by: str
    created_at: datetime
    group_name: str | None = None
    group_version: int | None = None
    commit_version: int | None = None
    model_name: str | None = None
    model_version: int | None = None
    score_job_id: int | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None


def received_profile(
    data: Any, *, of: str, rows: int | None, columns: list[str] | None = None
) -> TableProfile:
    """The profile a caller sent (``TableProfile.to_dict()``) of ``of`` (named in errors),
    refused with InvalidArgument unless it reads as a profile of ``rows`` rows (None: any)
    whose columns are exactly ``columns`` (None: any), each counting every row."""
    from plinth.stats.profile import TableProfile

    try:
        profile = TableProfile.from_dict(data)
    except Exception as exc:  # whatever a malformed field raises: the caller sent it
        raise InvalidArgument(f"the profile of {of} is not a profile: {_named(exc)}") from exc
    if profile.rows < 0 or (rows is not None and profile.rows != rows):
        raise InvalidArgument(f"the profile of {of} has {profile.rows} rows, not {rows}")
    listed = len(data["columns"])
    if listed != len(profile.columns):
        raise InvalidArgument(f"the profile of {of} names a column more than once")
    if columns is not None and set(profile.columns) != set(columns):
        unknown = sorted(set(profile.columns) - set(columns))
        missing = sorted(set(columns) - set(profile.columns))
        raise InvalidArgument(
            f"the profile of {of} must have the columns {columns}: "
            f"unknown {unknown}, missing {missing}"
        )
    for column in profile.columns.values():
        if column.count != profile.rows or not 0 <= column.nulls <= column.count:
            raise InvalidArgument(
                f"column {column.name!r} of the profile of {of} counts {column.count} rows "
                f"({column.nulls} null), not the profile's {profile.rows}"
            )
    return profile


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def save_profile(
    conn: Connection,
    profile: TableProfile,
    *,
    subject_kind: str,
    subject: str,
    group_name: str | None = None,
    group_version: int | None = None,
    commit_version: int | None = None,
    model_name: str | None = None,
    model_version: int | None = None,
    score_job_id: int | None = None,
    window_start: int | None = None,
    window_end: int | None = None,
    created_by: str = "",
    at_ms: int | None = None,
) -> int:
    """Store ``profile`` in the caller's transaction; returns its id. ``window_start`` and
    ``window_end`` are epoch milliseconds."""
    if subject_kind not in SUBJECT_KINDS:
        raise InvalidArgument(
            f"subject_kind {subject_kind!r} is not one of {', '.join(SUBJECT_KINDS)}"
        )
    if not subject:
        raise InvalidArgument(f"a {subject_kind} profile needs a subject")
    profile_id: int = conn.execute(
        insert(profiles)
        .values(
            subject_kind=subject_kind,
            subject=subject,
            group_name=group_name,
            group_version=group_version,
            commit_version=commit_version,
            model_name=model_name,
            model_version=model_version,
            score_job_id=score_job_id,
            window_start=window_start,
            window_end=window_end,
            rows=profile.rows,
            created_by=created_by,
            created_at=now_ms() if at_ms is None else at_ms,
        )
        .returning(profiles.c.id)
    ).scalar_one()
    rows = [_column_row(profile_id, column) for column in profile.columns.values()]
    if rows:
        conn.execute(insert(profile_columns), rows)
    return profile_id


def load_profile(conn: Connection, profile_id: int) -> TableProfile:
    """The stored profile ``profile_id``; its columns in name order."""
    from plinth.stats.profile import ColumnProfile, TableProfile

    rows = conn.execute(select(profiles.c.rows).where(profiles.c.id == profile_id)).first()
    if rows is None:
        raise NotFound(f"profile {profile_id} does not exist")
    columns = conn.execute(
        select(profile_columns.c.column_name, profile_columns.c.data)
        .where(profile_columns.c.profile_id == profile_id)
        .order_by(profile_columns.c.column_name)
    ).all()
    return TableProfile(
        rows=rows.rows,
        columns={c.column_name: ColumnProfile.from_dict(json.loads(c.data)) for c in columns},
    )


def profile_rows(
    conn: Connection,
    *,
    subject_kind: str | None = None,
    subject: str | None = None,
    group_name: str | None = None,
    group_version: int | None = None,
    model_name: str | None = None,
    model_version: int | None = None,
    limit: int = 100,
) -> list[ProfileRow]:
    """Stored profiles matching every filter given, newest first."""
    if limit <= 0:
        raise InvalidArgument(f"limit must be positive, got {limit}")
    query = select(profiles)
    filters = {
        "subject_kind": subject_kind,
        "subject": subject,
        "group_name": group_name,
        "group_version": group_version,
        "model_name": model_name,
        "model_version": model_version,
    }
    for name, value in filters.items():
        if value is not None:
            query = query.where(profiles.c[name] == value)
    found = conn.execute(query.order_by(profiles.c.id.desc()).limit(limit)).all()
    return [_profile_row(r) for r in found]


def delete_profiles(
    conn: Connection,
    *,
    subject_kind: str | None = None,
    group_name: str | None = None,
    group_versions: list[int] | None = None,
    model_name: str | None = None,
    model_version: int | None = None,
) -> int:
    """Delete the profiles matching every filter given (at least one), with their columns,
    in the caller's transaction (that deletes what they describe); returns how many."""
    filters = []
    if subject_kind is not None:
        filters.append(profiles.c.subject_kind == subject_kind)
    if group_name is not None:
        filters.append(profiles.c.group_name == group_name)
    if group_versions is not None:
        filters.append(profiles.c.group_version.in_(group_versions))
    if model_name is not None:
        filters.append(profiles.c.model_name == model_name)
    if model_version is not None:
        filters.append(profiles.c.model_version == model_version)
    if not filters:
        raise InvalidArgument("delete_profiles needs a filter; it will not delete every profile")
    ids = select(profiles.c.id).where(*filters).scalar_subquery()
    conn.execute(delete(profile_columns).where(profile_columns.c.profile_id.in_(ids)))
    return int(conn.execute(delete(profiles).where(*filters)).rowcount)


def _column_row(profile_id: int, column: ColumnProfile) -> dict[str, Any]:
    numeric = column.kind in ("numeric", "temporal")
    return {
        "profile_id": profile_id,
        "column_name": column.name,
        "kind": column.kind,
        "dtype": column.dtype,
        "count": column.count,
        "nulls": column.nulls,
        "distinct": column.distinct,
        "mean": _finite(column.mean) if numeric else None,
        "std": _finite(column.std) if numeric else None,
        "min": _finite(column.min) if numeric else None,
        "max": _finite(column.max) if numeric else None,
        "deciles": json.dumps([_finite(d) for d in column.deciles] if numeric else []),
        "data": json.dumps(_jsonable(column.to_dict()), allow_nan=False, default=_plain),
    }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None: strict JSON, as PostgreSQL's reads it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (``json.dumps``'s fallback)."""
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _profile_row(row: Any) -> ProfileRow:
    return ProfileRow(
        id=row.id,
        subject_kind=row.subject_kind,
        subject=row.subject,
        rows=row.rows,
        created_by=row.created_by,
        created_at=to_datetime(row.created_at),
        group_name=row.group_name,
        group_version=row.group_version,
        commit_version=row.commit_version,
        model_name=row.model_name,
        model_version=row.model_version,
        score_job_id=row.score_job_id,
        window_start=opt_datetime(row.window_start),
        window_end=opt_datetime(row.window_end),
    )
