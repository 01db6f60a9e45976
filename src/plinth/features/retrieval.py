"""Point-in-time retrieval: the feature values each entity row could have seen at its time.

The rule, shared by every engine: for each entity row and each request, take the group's row
with the same join keys and the latest event time <= the entity row's timestamp, never a
later one (no label leakage). Unknown keys, and rows older than the first event, get nulls.
With a TTL, a value whose event time is before ``timestamp - ttl`` is missing too; a value
exactly ``ttl`` old is still valid (the window is inclusive at both ends).

The output has one row per entity row, in the entity table's order: the entity columns (its
timestamp column converted to UTC), then the requested features, typed as in their source.
Timestamps must be timezone-aware (the ingestion rule); they are compared as UTC instants
in the finest unit the data needs (microseconds, or nanoseconds when a source has them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]

from plinth.errors import InvalidArgument, PlinthError
from plinth.features import duck
from plinth.features.types import FeatureGroup

# Engines see positional names only (row id, e0.. for entity keys, ts, tu, k0.., t, v0..,
# c0..), so user column names never meet SQL quoting or case-insensitive matching.
ROW_ID = "rid"
TIME = "ts"
TTL_TIME = "tu"  # the entity time rounded up, which the TTL bound is taken from
_UNIT_SCALE = {"us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class FeatureRequest:
    """Some features of one group, read from that group's offline rows (``source``: its keys,
    event time and features). Output columns are named ``prefix + feature``."""

    group: FeatureGroup
    source: ds.Dataset | pa.Table
    features: list[str]
    prefix: str | None = None

    @property
    def output_names(self) -> list[str]:
        return [f"{self.prefix or ''}{name}" for name in self.features]


@dataclass(frozen=True)
class PlannedRequest:
    request: FeatureRequest
    entity_keys: list[str]  # the entity-side aliases (e0, e1, ...) of the group's keys
    first_output: int  # index of its first c<i> column
    ttl: int | None  # in the plan's unit
    types: list[pa.DataType]  # the source types of the requested features

    @property
    def source_columns(self) -> list[str]:
        group = self.request.group
        return [*group.keys, group.event_time, *self.request.features]


@dataclass(frozen=True)
class JoinPlan:
    """A validated join, in the shape engines consume: ``keys`` holds the row id, every
    join key column (as e0, e1, ...) and the timestamp as an int64 epoch in ``unit``."""

    entity: pa.Table
    keys: pa.Table
    unit: str
    requests: list[PlannedRequest]
    output_names: list[str]

    @property
    def epoch_sql(self) -> str:
        return f"epoch_{self.unit}"


def point_in_time_join(
    entity: pa.Table, requests: list[FeatureRequest], timestamp_column: str = "event_timestamp"
) -> pa.Table:
    """Attach to every entity row the features it could have seen at its timestamp."""
    plan = plan_join(entity, requests, timestamp_column)
    if not plan.requests:
        return plan.entity
    with duck.cursor() as con:
        con.register("entity", plan.keys)
        for i, planned in enumerate(plan.requests):
            con.register(f"s{i}", planned.request.source)
        values = con.sql(_asof_sql(plan)).to_arrow_table()
    return attach_features(plan, values)


def plan_join(entity: pa.Table, requests: list[FeatureRequest], timestamp_column: str) -> JoinPlan:
    """Check the entity table and the requests against each other; name what is wrong."""
    if timestamp_column not in entity.column_names:
        raise InvalidArgument(
            f"the entity table has no timestamp column {timestamp_column!r}; its columns are {entity.column_names}"
        )
    stamp = _timestamp_type(
        entity.schema.field(timestamp_column).type,
        f"the entity table's column {timestamp_column!r}",
    )
    schemas = [_source_schema(request) for request in requests]
    _check_output_names(entity, requests)
    units = {_event_time_type(r, s).unit for r, s in zip(requests, schemas, strict=True)}
    unit = "ns" if "ns" in units else "us"

    aliases: dict[str, str] = {}
    planned: list[PlannedRequest] = []
    first_output = 0
    for request, schema in zip(requests, schemas, strict=True):
        for key in request.group.keys:
            _check_key(entity, schema, key, request.group)
            aliases.setdefault(key, f"e{len(aliases)}")
        if request.features:
            ttl = request.group.ttl_seconds
            planned.append(
                PlannedRequest(
                    request=request,
                    entity_keys=[aliases[key] for key in request.group.keys],
                    first_output=first_output,
                    ttl=None if ttl is None else ttl * _UNIT_SCALE[unit],
                    types=[schema.field(name).type for name in request.features],
                )
            )
            first_output += len(request.features)

    timestamps = entity.column(timestamp_column).cast(pa.timestamp(stamp.unit, "UTC"))
    keys = pa.table(
        {
            ROW_ID: np.arange(entity.num_rows, dtype=np.int64),
            **{alias: _decoded(entity.column(key)) for key, alias in aliases.items()},
            TIME: _epoch(timestamps, unit),
            TTL_TIME: _epoch(timestamps, unit, up=True),
        }
    )
    return JoinPlan(
        entity=entity.set_column(
            entity.column_names.index(timestamp_column), timestamp_column, timestamps
        ),
        keys=keys,
        unit=unit,
        requests=planned,
        output_names=[name for request in requests for name in request.output_names],
    )


def attach_features(plan: JoinPlan, values: pa.Table) -> pa.Table:
    """Append an engine's c0, c1, ... columns (in entity order) under their output names,
    typed as in their source, so every engine returns the same schema."""
    if values.num_rows != plan.entity.num_rows:  # an engine bug, never the caller's
        raise PlinthError(
            f"the join returned {values.num_rows} rows for {plan.entity.num_rows} entity rows"
        )
    out = plan.entity
    for planned in plan.requests:
        for offset, type_ in enumerate(planned.types):
            index = planned.first_output + offset
            out = out.append_column(
                plan.output_names[index], values.column(f"c{index}").cast(type_)
            )
    return out


def source_columns(planned: PlannedRequest) -> list[str]:
    """The engine-side names of a request's source columns: k0.., t, v0.."""
    keys = [f"k{i}" for i in range(len(planned.request.group.keys))]
    return [*keys, "t", *(f"v{i}" for i in range(len(planned.request.features)))]


def project_source(planned: PlannedRequest, unit: str) -> pa.Table:
    """A request's source as an Arrow table of only the needed columns, renamed as in
    ``source_columns``, with the event time as an int64 epoch in ``unit``."""
    request = planned.request
    if isinstance(request.source, pa.Table):
        table = request.source.select(planned.source_columns)
    else:
        table = request.source.to_table(columns=planned.source_columns)
    time_index = len(request.group.keys)
    table = table.set_column(time_index, "t", _epoch(table.column(time_index), unit))
    return table.rename_columns(source_columns(planned))


def _asof_sql(plan: JoinPlan) -> str:
    # One ASOF LEFT JOIN per request, chained on the entity row: each keeps exactly one row
    # per entity row, so repeated (key, timestamp) rows each get their own output row.
    selects: list[str] = []
    joins: list[str] = []
    for i, planned in enumerate(plan.requests):
        group = planned.request.group
        columns = zip(planned.source_columns, source_columns(planned), strict=True)
        exprs = [f"{_quote(column)} AS {name}" for column, name in columns]
        exprs[len(group.keys)] = f"{plan.epoch_sql}({_quote(group.event_time)}) AS t"
        on = [f"entity.{e} = r{i}.k{j}" for j, e in enumerate(planned.entity_keys)]
        on.append(f"entity.{TIME} >= r{i}.t")
        joins.append(
            f"ASOF LEFT JOIN (SELECT {', '.join(exprs)} FROM s{i}) r{i} ON {' AND '.join(on)}"
        )
        for j in range(len(planned.request.features)):
            value = f"r{i}.v{j}"
            if planned.ttl is not None:
                value = f"CASE WHEN r{i}.t >= entity.{TTL_TIME} - {planned.ttl} THEN {value} END"
            selects.append(f"{value} AS c{planned.first_output + j}")
    return f"SELECT {', '.join(selects)} FROM entity {' '.join(joins)} ORDER BY entity.{ROW_ID}"


def _source_schema(request: FeatureRequest) -> pa.Schema:
    group = request.group
    known = {spec.name for spec in group.features}
    for name in request.features:
        if name not in known:
            raise InvalidArgument(
                f"feature {name!r} is not in feature group {group.ref}; it has {sorted(known)}"
            )
    schema = request.source.schema
    missing = [
        c for c in [*group.keys, group.event_time, *request.features] if c not in schema.names
    ]
    if missing:
        raise InvalidArgument(f"the offline rows of {group.ref} lack the columns {missing}")
    return schema


def _check_output_names(entity: pa.Table, requests: list[FeatureRequest]) -> None:
    seen: dict[str, str] = {}
    for request in requests:
        for name in request.output_names:
            if name in seen:
                raise InvalidArgument(
                    f"output column {name!r} is requested twice ({seen[name]} and {request.group.ref}); give one request a prefix"
                )
            if name in entity.column_names:
                raise InvalidArgument(
                    f"output column {name!r} of {request.group.ref} is already an entity column; give the request a prefix"
                )
            seen[name] = request.group.ref


def _check_key(entity: pa.Table, source: pa.Schema, key: str, group: FeatureGroup) -> None:
    if key not in entity.column_names:
        raise InvalidArgument(
            f"the entity table lacks join key {key!r} of feature group {group.ref}; its columns are {entity.column_names}"
        )
    ours, theirs = entity.schema.field(key).type, source.field(key).type
    if _key_kind(ours) != _key_kind(theirs):
        raise InvalidArgument(
            f"join key {key!r} is {ours} in the entity table but {theirs} in feature group {group.ref}"
        )


def _key_kind(type_: pa.DataType) -> str:
    # Keys join across widths and string layouts (int32 with int64, string with large_string).
    if pa.types.is_dictionary(type_):
        return _key_kind(type_.value_type)
    if pa.types.is_integer(type_):
        return "integer"
    if (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_string_view(type_)
    ):
        return "string"
    return str(type_)


def _event_time_type(request: FeatureRequest, schema: pa.Schema) -> pa.TimestampType:
    event_time = request.group.event_time
    return _timestamp_type(schema.field(event_time).type, f"{request.group.ref}'s event time")


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Categorical keys (pandas' category dtype) join by value in every engine.
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _timestamp_type(type_: pa.DataType, what: str) -> pa.TimestampType:
    if not isinstance(type_, pa.TimestampType):
        raise InvalidArgument(f"{what} is {type_}; it must be a timezone-aware timestamp")
    if type_.tz is None:
        raise InvalidArgument(
            f"{what} is a timestamp without a timezone; give it one (e.g. UTC) so its instants are unambiguous"
        )
    return type_


def _epoch(timestamps: pa.ChunkedArray, unit: str, up: bool = False) -> pa.ChunkedArray:
    # Flooring a finer entity timestamp is exact for "event <= entity": events in `unit`
    # precision are <= the floored value exactly when they are <= the original one. The TTL
    # test "event >= entity - ttl" is exact with the value rounded up instead (500 ns past
    # the TTL is past it).
    if timestamps.type.unit == "ns" and unit == "us":
        rounded = pc.ceil_temporal if up else pc.floor_temporal
        timestamps = rounded(timestamps, unit="microsecond")
    return timestamps.cast(pa.timestamp(unit, "UTC")).cast(pa.int64())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
