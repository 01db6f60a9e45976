"""``plinth.feature_store()``: define groups, insert (validated, one Delta commit each),
get point-in-time-correct training data, materialise and look features up online.

Metadata goes through the feature service (local or remote); data moves between this
process and the offline (Delta) and online (SQLite/Redis) stores directly.
"""

from __future__ import annotations

import numbers
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument
from plinth.features.datasets import ViewsMixin, view_of
from plinth.features.ingest import as_table
from plinth.features.insert import CHUNK_ROWS, Progress
from plinth.features.lookup import OnlineResponse, entity_columns, key_rows, statuses_of
from plinth.features.refs import by_group, online_table
from plinth.features.types import (
    CommitInfo,
    Entity,
    FeatureGroup,
    FeatureSpec,
    FeatureView,
)

if TYPE_CHECKING:
    from plinth.auth.access import Access
    from plinth.features.offline import OfflineTables
    from plinth.features.online.base import OnlineStore
    from plinth.features.repair import Repaired
    from plinth.features.service import FeatureService

# How long online lookups trust the group definitions they read (another process's change
# to a TTL or a new group version shows within this time).
DEFINITIONS_SECONDS = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(ttl: str | int | timedelta | None) -> int | None:
    """``"30d"``, ``"12h"``, seconds or a timedelta -> seconds."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        return int(ttl.total_seconds())
    if isinstance(ttl, int) and not isinstance(ttl, bool):
        return ttl
    match = _DURATION.match(str(ttl))
    if match is None:
        raise InvalidArgument(
            f"ttl {ttl!r} is not a duration such as '30d', '12h', '90m' or seconds"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]


def specs_of(schema: Any, exclude: set[str]) -> list[FeatureSpec]:
    """Feature specs from a list of FeatureSpec, a {name: dtype} dict, pandas dtypes or an
    Arrow schema; key and event time columns are left out."""
    if isinstance(schema, list) and all(isinstance(s, FeatureSpec) for s in schema):
        return [s for s in schema if s.name not in exclude]
    if isinstance(schema, pa.Schema):
        pairs = [(f.name, f.type) for f in schema]
    elif hasattr(schema, "items"):
        pairs = list(schema.items())
    else:
        raise InvalidArgument(
            "schema must be FeatureSpecs, a {name: dtype} dict, DataFrame.dtypes or an Arrow schema"
        )
    return [
        FeatureSpec(str(name), _dtype_name(dtype))
        for name, dtype in pairs
        if str(name) not in exclude
    ]


def _dtype_name(dtype: Any) -> str:
    text = str(dtype).lower()
    for prefix, name in (
        ("bool", "bool"),
        ("int32", "int32"),
        ("int", "int64"),
        ("uint", "int64"),
        ("float32", "float32"),
        ("float", "float64"),
        ("double", "float64"),
        ("datetime64", "timestamp"),
        ("timestamp", "timestamp"),
        ("date", "date"),
        ("str", "string"),
        ("object", "string"),
        ("large_string", "string"),
    ):
        if text.startswith(prefix):
            return name
    raise InvalidArgument(
        f"dtype {dtype!r} is not a feature type (bool, int, float, string, timestamp, date)"
    )


@dataclass
class GroupHandle:
    """A feature group bound to its store: ``stats.insert(df)``."""

    store: FeatureStore
    group: FeatureGroup

    def insert(self, data: Any, **options: Any) -> CommitInfo:
        # by name and version: expectations attached after this handle was made apply
        return self.store.insert(self.group.ref, data, **options)

    def read(self, as_of: int | datetime | None = None) -> pa.Table:
        return self.store.offline.read(self.group, as_of=as_of)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.group, name)


@dataclass
class RetrievalJob:
    """A lazy point-in-time join: nothing runs until ``to_arrow()`` or ``to_pandas()``.
    For a feature view, its transformations are applied to the joined rows; ``commits``
    pins groups (``"group:vN"``) to Delta versions (a training dataset's rebuild)."""

    store: FeatureStore
    entity: pa.Table
    features: list[str]
    timestamp_column: str
    engine: str
    view: FeatureView | None = None
    commits: dict[str, int] | None = None
    _result: pa.Table | None = field(default=None, repr=False)

    def to_arrow(self) -> pa.Table:
        if self._result is None:
            table = self.store._join(
                self.entity, self.features, self.timestamp_column, self.engine, self.commits
            )
            if self.view is not None and self.view.transformations:
                from plinth.features.transform import apply

                table = apply(self.view.transformations, table, self.view.ref)
            self._result = table
        return self._result

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()


def _check_integers(group: FeatureGroup, keys: list[tuple[Any, ...]]) -> None:
    for key in keys:
        for name, value in zip(group.keys, key, strict=True):
            # numpy's integers are Integral too; a bool is not a key
            if type(value) is not int and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral)
            ):
                raise InvalidArgument(f"key {name!r} of {group.ref} is an integer, got {value!r}")


@dataclass(frozen=True)
class _Lookup:
    group: FeatureGroup
    features: list[str]
    table: str
    integer_keys: bool  # the entity's keys are integers: a text key is a mistake, not a miss


class Materializer(ABC):
    """Materialisation done elsewhere: by a server, next to the stores it reaches, for a
    remote client that reaches neither (its rows then never travel to the client)."""

    @abstractmethod
    def materialize(self, group: FeatureGroup, start: datetime | None, end: datetime | None) -> int:
        """``FeatureStore.materialize`` of ``group`` (checked already) where the stores are."""

    @abstractmethod
    def materialize_incremental(self, group: FeatureGroup) -> int:
        """``FeatureStore.materialize_incremental`` where the stores are."""


class FeatureStore(ViewsMixin):
    def __init__(
        self,
        service: FeatureService,
        offline: OfflineTables,
        online: OnlineStore,
        materializer: Materializer | None = None,
        spark_master: str = "local[*]",
    ) -> None:
        self.service = service
        self.spark_master = spark_master  # where engine="spark" runs (Settings.spark_master)
        self.offline = offline
        self.online = online
        self.materializer = materializer
        self._plans: dict[tuple[str, ...], tuple[float, list[_Lookup]]] = {}
        self._access = _local_access(service)

    # -- definitions -------------------------------------------------------------------

    def create_entity(
        self, name: str, join_keys: list[str], value_type: str = "int64", description: str = ""
    ) -> Entity:
        return self.service.create_entity(name, join_keys, value_type, description)

    def create_feature_group(
        self,
        name: str,
        entity: str,
        event_time: str,
        schema: Any,
        *,
        online: bool = False,
        ttl: str | int | timedelta | None = None,
        description: str = "",
    ) -> GroupHandle:
        keys = set(self.service.get_entity(entity).join_keys)
        features = specs_of(schema, keys | {event_time})
        self.forget_definitions()
        group = self.service.create_feature_group(
            name, entity, event_time, features, online, parse_ttl(ttl), description
        )
        return GroupHandle(self, group)

    def get_feature_group(self, name: str, version: int | None = None) -> GroupHandle:
        return GroupHandle(self, self.service.get_feature_group(name, version))

    # -- writing -----------------------------------------------------------------------

    def insert(
        self,
        group: FeatureGroup | str,
        data: Any,
        *,
        write_online: bool = False,
        chunk_rows: int = CHUNK_ROWS,
        progress: Progress | None = None,
    ) -> CommitInfo:
        """Validate, then upsert ``data`` on (keys, event time) as ONE commit of the offline
        table; statistics and the validation report are recorded with the commit. Inputs of
        more than ``chunk_rows`` rows stream in chunks (``progress(rows_so_far)`` after each);
        ``write_online`` also writes the new values to the online store."""
        from plinth.features.insert import insert

        group = self._group(group, write=True)  # a caller who may not is refused before
        # the commits before this one without a record are recorded before it (insert.py)
        commit, table = insert(self.service, self.offline, group, data, chunk_rows, progress)
        if write_online:
            if table is None:
                self._materialize_incremental(group)
            else:
                self._write_online(group, table)
        return commit

    def repair(self, group: FeatureGroup | str) -> Repaired:
        """Record the commits of the group's offline table that have no record (a writer
        killed between its commit and its record) and delete files no commit refers to."""
        from plinth.features.repair import repair

        return repair(self.service, self.offline, self._group(group, write=True))

    # -- reading -----------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_df: Any,
        features: list[str] | Any,
        *,
        timestamp_column: str = "event_timestamp",
        engine: str = "duckdb",
    ) -> RetrievalJob:
        """Point-in-time-correct features (``"group:feature"``, ``"group:v2:feature"`` or a
        feature view) for each entity row: the latest values at or before its timestamp,
        within TTL; a view's transformations are applied to the result."""
        if engine not in ("duckdb", "spark"):
            raise InvalidArgument(f"engine must be 'duckdb' or 'spark', not {engine!r}")
        entity = as_table(entity_df, doing="read entity_df from")
        view = view_of(features)
        if view is not None:
            missing = [r.name for r in view.request if r.name not in entity.column_names]
            if missing:
                raise InvalidArgument(
                    f"feature view {view.ref} needs the request values {missing} as entity columns"
                )
            features = view.features
        by_group(features)  # malformed references fail now, not when the job runs
        return RetrievalJob(self, entity, list(features), timestamp_column, engine, view)

    def _join(
        self,
        entity: pa.Table,
        features: list[str],
        timestamp_column: str,
        engine: str,
        commits: dict[str, int] | None = None,
    ) -> pa.Table:
        from plinth.features.retrieval import FeatureRequest, point_in_time_join

        requests = []
        for (name, version), wanted in by_group(features).items():
            group = self.service.get_feature_group(name, version)
            known = {f.name for f in group.features}
            missing = [w for w in wanted if w not in known]
            if missing:
                raise InvalidArgument(
                    f"feature group {group.ref} has no feature {missing[0]!r}; it has {sorted(known)}"
                )
            as_of = None if commits is None else commits[group.ref]
            requests.append(FeatureRequest(group, self.offline.dataset(group, as_of), wanted))
        if engine == "spark":
            from plinth.features.spark import spark_point_in_time_join, spark_session

            spark = spark_session(self.spark_master)
            return spark_point_in_time_join(spark, entity, requests, timestamp_column)
        return point_in_time_join(entity, requests, timestamp_column)

    # -- online ------------------------------------------------------------------------

    def materialize(
        self, group: FeatureGroup | str, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Copy the latest value per key with event time in [start, end) to the online store."""
        return self._materialize(self._group(group, write=True), start, end)

    def _materialize(
        self, group: FeatureGroup, start: datetime | None, end: datetime | None
    ) -> int:
        import pyarrow.compute as pc

        if not group.online:
            raise InvalidArgument(
                f"feature group {group.ref} is not online; define it with online=True to serve it"
            )
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and bound.tzinfo is None:
                raise InvalidArgument(
                    f"{name} {bound.isoformat()} has no timezone; give an aware time, e.g. "
                    "datetime(..., tzinfo=UTC)"
                )
        if self.materializer is not None:
            return self.materializer.materialize(group, start, end)
        version = self.offline.version(group)
        if version is None:
            return 0
        table = self.offline.read(group, as_of=version)
        times = table[group.event_time]
        mask = None
        if start is not None:
            mask = pc.greater_equal(times, pa.scalar(start, times.type))
        if end is not None:
            upper = pc.less(times, pa.scalar(end, times.type))
            mask = upper if mask is None else pc.and_(mask, upper)
        if mask is not None:
            table = table.filter(mask)
        written = self._write_online(group, table)
        if mask is None:  # only a full copy makes later incremental runs start from here
            self.service.set_materialized_until(group.name, group.version, version)
        return written

    def materialize_incremental(self, group: FeatureGroup | str) -> int:
        """Materialise the rows written to the offline table since the last materialisation."""
        return self._materialize_incremental(self._group(group, write=True))

    def _materialize_incremental(self, group: FeatureGroup) -> int:
        from plinth.features import duck

        if self.materializer is not None:
            return self.materializer.materialize_incremental(group)
        done = self.service.get_materialized_until(group.name, group.version)
        current = self.offline.version(group)
        if done is None or current is None:
            return self._materialize(group, None, None)
        if current == done:
            return 0
        with duck.cursor() as connection:
            connection.register("now_rows", self.offline.read(group, as_of=current))
            connection.register("before_rows", self.offline.read(group, as_of=done))
            changed = connection.sql(
                "SELECT * FROM now_rows EXCEPT SELECT * FROM before_rows"
            ).to_arrow_table()
        written = self._write_online(group, changed) if changed.num_rows else 0
        self.service.set_materialized_until(group.name, group.version, current)
        return written

    def _write_online(self, group: FeatureGroup, table: pa.Table) -> int:
        latest = _latest_per_key(table, group.keys, group.event_time)
        columns = [*group.keys, group.event_time, *(f.name for f in group.features)]
        return self.online.write(
            online_table(group), group.keys, latest.select(columns), group.event_time
        )

    def get_online_features(
        self,
        features: list[str] | Any,
        entity_rows: list[dict[str, Any]],
        *,
        now: datetime | None = None,
    ) -> OnlineResponse:
        """Feature values for a batch of entities, one online read per feature group. For a
        feature view, rows also carry its request values and get its transformations."""
        view = view_of(features)
        if view is not None:
            if not entity_rows:
                return OnlineResponse({}, {}, 0)
            return self._online_view(view, entity_rows, now)
        if not entity_rows:  # answers nothing, but only to a caller who may read the groups
            self._check_readable(self._lookups(features))
            return OnlineResponse({}, {}, 0)
        # event times compared as microseconds since the epoch: no datetime per row
        now_micros = ((now or datetime.now(UTC)) - _EPOCH) // _MICROSECOND
        columns = entity_columns(entity_rows)
        statuses: dict[str, Sequence[str]] = {}
        plan = self._lookups(features)
        self._check_readable(plan)
        for lookup in plan:
            group, wanted = lookup.group, lookup.features
            clash = [w for w in wanted if w in columns]
            if clash:
                raise InvalidArgument(
                    f"feature {clash[0]!r} of {group.ref} is also an entity column; rename it"
                )
            keys = key_rows(entity_rows, group.keys, group.ref)
            if lookup.integer_keys:
                _check_integers(group, keys)
            ttl = group.ttl_seconds
            cutoff = None if ttl is None else now_micros - ttl * 1_000_000
            found = self.online.read_columns(lookup.table, keys, wanted, not_before=cutoff)
            columns.update(found.columns)
            statuses.update(dict.fromkeys(wanted, statuses_of(found.micros, cutoff)))
        return OnlineResponse(columns, statuses, len(entity_rows))

    def plan_is_cached(self, features: list[str]) -> bool:
        """Whether a lookup of ``features`` made right after this needs no metadata query:
        its plan stays cached for at least another second (the lookup reads the clock
        again, and must not find it expired in between), and the caller's permissions
        need no look-up (an admin's, or a remote service's, which checks them itself)."""
        cached = self._plans.get(tuple(features))
        if cached is None or cached[0] <= time.monotonic() + 1.0:
            return False
        if self._access is None:
            return True
        from plinth.auth.context import is_pending

        return not is_pending() and self._access.principal().is_admin

    def _check_readable(self, plan: list[_Lookup]) -> None:
        """Refuse a lookup of a group the caller may not read (NotFound). The plan is
        shared by every caller, so this runs on every lookup: one grants query, none for
        an admin. A remote service checks the groups itself as the plan is made."""
        if self._access is None or self._access.principal().is_admin:
            return
        from plinth.auth.types import Kind
        from plinth.features.rules import require_readable

        require_readable(self._access, Kind.FEATURE_GROUP, (p.group.name for p in plan))

    def _lookups(self, features: list[str]) -> list[_Lookup]:
        """What a list of references reads, per group; kept for ``DEFINITIONS_SECONDS`` so a
        lookup costs no metadata query (definitions made through this store clear it)."""
        key = tuple(features)
        at = time.monotonic()
        cached = self._plans.get(key)
        if cached is not None and cached[0] > at:
            return cached[1]
        plan: list[_Lookup] = []
        seen: set[str] = set()
        for (name, version), wanted in by_group(features).items():
            group = self.service.get_feature_group(name, version)
            known = {f.name for f in group.features}
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise InvalidArgument(f"feature group {group.ref} has no feature {unknown[0]!r}")
            clash = [w for w in wanted if w in seen]
            if clash:
                raise InvalidArgument(
                    f"feature {clash[0]!r} of {group.ref} is requested twice; request it once"
                )
            seen.update(wanted)
            integers = self.service.get_entity(group.entity).value_type.startswith(("int", "uint"))
            plan.append(_Lookup(group, wanted, online_table(group), integers))
        if len(self._plans) > 1000:
            self._plans.clear()
        self._plans[key] = (at + DEFINITIONS_SECONDS, plan)
        return plan

    def forget_definitions(self) -> None:
        """Drop cached definitions: the next lookup reads them from the central store."""
        self._plans.clear()

    def _group(self, group: FeatureGroup | str, write: bool = False) -> FeatureGroup:
        """A group given as itself, ``"name"`` (the latest version) or ``"name:v2"``; to
        ``write`` its data, as the service gives it to a caller who may (or refuses)."""
        if not isinstance(group, str):
            if not write:
                return group
            return self.service.get_feature_group_to_write(group.name, group.version)
        name, _, version = group.partition(":v")
        get = self.service.get_feature_group_to_write if write else self.service.get_feature_group
        if version.isdigit():
            return get(name, int(version))
        return get(group)


def _local_access(service: FeatureService) -> Access | None:
    """The access checks of an in-process service's store (None for a remote one, and for
    a service without a store: an app that only serves the API's description)."""
    from plinth.auth.access import access_for
    from plinth.features.service import FeatureService

    if not isinstance(service, FeatureService) or service.store is None:
        return None
    return access_for(service.store)


def _latest_per_key(table: pa.Table, keys: list[str], event_time: str) -> pa.Table:
    from plinth.features import duck

    quoted = ", ".join(f'"{k}"' for k in keys)  # identifiers checked when the group was defined
    with duck.cursor() as connection:
        connection.register("rows", table)
        return connection.sql(
            f'SELECT * FROM rows QUALIFY row_number() OVER (PARTITION BY {quoted} ORDER BY "{event_time}" DESC) = 1'
        ).to_arrow_table()
