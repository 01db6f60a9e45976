"""The feature store's metadata service: entities, versioned feature groups, commits,
validation reports and statistics, all in the central store. The data itself (Delta
tables, online stores) is read and written by the caller's ``FeatureStore``."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, func, insert, select, update

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import AlreadyExists, InvalidArgument, NotFound
from plinth.features.drift import (
    check_reference,
    dump_reference,
    dump_verdict,
    judge,
    load_reference,
)
from plinth.features.refs import check_identifier
from plinth.features.rules import may_define_group, require_in_transaction
from plinth.features.types import (
    DTYPES,
    ColumnStatistics,
    CommitInfo,
    DriftReference,
    Entity,
    Expectation,
    FeatureGroup,
    FeatureSpec,
    ValidationReport,
)
from plinth.features.views import ViewService
from plinth.store.engine import Store
from plinth.store.schema import entities, feature_commits, feature_groups, validation_reports
from plinth.store.sql import now_ms, opt_datetime, to_datetime

_specs = TypeAdapter(list[FeatureSpec])
_expectations = TypeAdapter(list[Expectation])
_stats = TypeAdapter(list[ColumnStatistics])
_results = TypeAdapter(list[Any])
logger = logging.getLogger(__name__)


class FeatureService(ViewService):
    """Every operation carries its access rule (``@guarded``): groups and views have
    grants of their own (keyed by name, shared by all versions); entities are shared
    definitions any editor may add."""

    def __init__(self, store: Store, offline_root: str) -> None:
        self.store = store
        self.offline_root = offline_root.rstrip("/")

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- entities ----------------------------------------------------------------------

    @endpoint("POST", "/entities")
    @guarded(role=Role.EDITOR)
    def create_entity(
        self, name: str, join_keys: list[str], value_type: str = "int64", description: str = ""
    ) -> Entity:
        check_identifier(name, "entity name")
        if not join_keys:
            raise InvalidArgument(f"entity {name!r} needs at least one join key")
        for key in join_keys:
            check_identifier(key, "join key")
        if value_type not in DTYPES:
            raise InvalidArgument(f"value_type {value_type!r} is not one of {', '.join(DTYPES)}")
        with self.store.write() as conn:
            existing = conn.execute(select(entities).where(entities.c.name == name)).first()
            if existing is not None:
                if json.loads(existing.join_keys) == join_keys:
                    return _entity(existing)
                raise AlreadyExists(f"entity {name!r} exists with join keys {existing.join_keys}")
            conn.execute(
                insert(entities).values(
                    name=name,
                    join_keys=json.dumps(join_keys),
                    value_type=value_type,
                    description=description,
                    owner=self.access.actor(),
                    created_at=now_ms(),
                )
            )
        return self.get_entity(name)

    @endpoint("GET", "/entities/{name}")
    @guarded()
    def get_entity(self, name: str) -> Entity:
        with self.store.read() as conn:
            row = conn.execute(select(entities).where(entities.c.name == name)).first()
        if row is None:
            raise NotFound(f"entity {name!r} does not exist")
        return _entity(row)

    @endpoint("GET", "/entities")
    @guarded()
    def list_entities(self) -> list[Entity]:
        with self.store.read() as conn:
            return [_entity(r) for r in conn.execute(select(entities).order_by(entities.c.name))]

    # -- feature groups ----------------------------------------------------------------

    @endpoint("POST", "/feature-groups")
    @guarded(role=Role.EDITOR, check=may_define_group)
    def create_feature_group(
        self,
        name: str,
        entity: str,
        event_time: str,
        features: list[FeatureSpec],
        online: bool = False,
        ttl_seconds: int | None = None,
        description: str = "",
    ) -> FeatureGroup:
        """Define a feature group, owned by its creator. The same definition again returns
        the current version; a changed schema creates the next version (older versions stay
        readable)."""
        check_identifier(name, "feature group name")
        check_identifier(event_time, "event time column")
        keys = self.get_entity(entity).join_keys
        _check_features(features, keys, event_time)
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise InvalidArgument(f"ttl_seconds must be positive, got {ttl_seconds}")
        with self.store.write() as conn:
            latest = self._latest(conn, name)
            if latest is None:
                _refuse_case_twin(conn, name)
                self.access.on_created(conn, Kind.FEATURE_GROUP, name)
            else:
                # perhaps created by another caller since the rule's check: its grants decide
                require_in_transaction(self.access, Action.WRITE, Kind.FEATURE_GROUP, name)
                current = _group(latest)
                same = (current.entity, current.event_time, current.features) == (
                    entity,
                    event_time,
                    features,
                )
                if same:
                    if (current.online, current.ttl_seconds, current.description) != (
                        online,
                        ttl_seconds,
                        description,
                    ):
                        conn.execute(
                            update(feature_groups)
                            .where(
                                feature_groups.c.name == name,
                                feature_groups.c.version == current.version,
                            )
                            .values(online=online, ttl_seconds=ttl_seconds, description=description)
                        )
                    return self._feature_group(name, current.version)
            version = 1 if latest is None else latest.version + 1
            conn.execute(
                insert(feature_groups).values(
                    name=name,
                    version=version,
                    entity=entity,
                    keys=json.dumps(keys),
                    event_time=event_time,
                    features=_specs.dump_json(features).decode(),
                    online=online,
                    ttl_seconds=ttl_seconds,
                    description=description,
                    owner=self.access.actor(),
                    created_at=now_ms(),
                    table_uri=f"{self.offline_root}/features/{name}/v{version}",
                    expectations="[]",
                    validation_mode="strict",
                )
            )
        return self._feature_group(name, version)

    @endpoint("GET", "/feature-groups/{name}")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def get_feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        """A group's given version, or its latest."""
        return self._feature_group(name, version)

    @endpoint("GET", "/feature-groups/{name}/to-write")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def get_feature_group_to_write(self, name: str, version: int | None = None) -> FeatureGroup:
        """A group's given version, or its latest, for a caller about to write its data:
        refused unless it may, before any row is written to the offline or online store."""
        return self._feature_group(name, version)

    def group_named(self, name: str, version: int) -> str | None:
        """The name of the defined group version ``name`` names, in any letter case (as
        table names are read: SQLite's are case-insensitive), whoever may see it; None when
        there is none (for the server's removal of a deleted group's data)."""
        with self.store.read() as conn:
            found: str | None = conn.execute(
                select(feature_groups.c.name).where(
                    func.lower(feature_groups.c.name) == name.lower(),
                    feature_groups.c.version == version,
                )
            ).scalar()
            return found

    def _feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        with self.store.read() as conn:
            if version is None:
                row = self._latest(conn, name)
            else:
                row = conn.execute(
                    select(feature_groups).where(
                        feature_groups.c.name == name, feature_groups.c.version == version
                    )
                ).first()
        if row is None:
            raise NotFound(
                f"feature group {name!r}{'' if version is None else f' v{version}'} does not exist"
            )
        return _group(row)

    @endpoint("GET", "/feature-groups")
    @guarded()
    def list_feature_groups(
        self, query: str | None = None, entity: str | None = None, all_versions: bool = False
    ) -> list[FeatureGroup]:
        """The catalog: groups the caller may see (latest versions unless ``all_versions``)
        whose name, description, or any feature's name, description or tags contain
        ``query``; by entity."""
        select_groups = select(feature_groups).order_by(
            feature_groups.c.name, feature_groups.c.version
        )
        visible = self.access.visible(Kind.FEATURE_GROUP)
        if visible is not None:
            select_groups = select_groups.where(feature_groups.c.name.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(select_groups).all()
        groups = [_group(r) for r in rows]
        if not all_versions:
            latest: dict[str, FeatureGroup] = {}
            for g in groups:
                latest[g.name] = g
            groups = list(latest.values())
        if entity:
            groups = [g for g in groups if g.entity == entity]
        if query:
            needle = query.lower()
            groups = [g for g in groups if needle in _searchable(g)]
        return groups

    @endpoint("POST", "/feature-groups/{name}/expectations")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def set_expectations(
        self, name: str, version: int, expectations: list[Expectation], mode: str = "strict"
    ) -> FeatureGroup:
        """Attach an expectation suite, checked on every insert: ``strict`` refuses a failing
        write, ``warn`` writes it and records the report."""
        from plinth.features.validation import check_expectation

        if mode not in ("strict", "warn"):
            raise InvalidArgument(f"mode must be 'strict' or 'warn', not {mode!r}")
        group = self._feature_group(name, version)
        columns = set(group.keys) | {group.event_time} | {f.name for f in group.features}
        for e in expectations:
            check_expectation(e)
            for column in [*(filter(None, [e.column])), *e.columns]:
                if column not in columns:
                    raise InvalidArgument(
                        f"expectation {e.kind} names {column!r}, which {group.ref} does not have"
                    )
        with self.store.write() as conn:
            conn.execute(
                update(feature_groups)
                .where(feature_groups.c.name == name, feature_groups.c.version == version)
                .values(
                    expectations=_expectations.dump_json(expectations).decode(),
                    validation_mode=mode,
                )
            )
        return self._feature_group(name, version)

    # -- commits, reports, statistics --------------------------------------------------

    @endpoint("POST", "/feature-groups/{name}/commits")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def record_commit(
        self, name: str, commit: CommitInfo, report: ValidationReport | None = None
    ) -> CommitInfo:
        """Record an insert the caller committed to the offline table (and its report),
        written by the caller (whatever ``commit.written_by`` says); returns the record.
        The commit's profile is stored and compared with the group's drift reference in the
        same transaction; the record returned holds the verdict (``drift``), not the
        profile. A commit already recorded (by a repair that found it first) is left as it
        is. A profile that is not one of the commit's rows and the group's features is
        refused (InvalidArgument), and nothing is recorded."""
        group = self._feature_group(name, commit.version)
        features = [f.name for f in group.features]
        commit = replace(commit, group=name, written_by=self.access.actor())
        with self.store.write() as conn:
            # the group's row is locked (PostgreSQL; SQLite writers queue anyway), so two
            # recorders of one commit cannot both see it missing
            reference = conn.execute(
                select(feature_groups.c.drift_reference)
                .where(feature_groups.c.name == name, feature_groups.c.version == commit.version)
                .with_for_update()
            ).scalar()
            recorded = conn.execute(
                select(feature_commits.c.id).where(
                    feature_commits.c.group_name == name,
                    feature_commits.c.group_version == commit.version,
                    feature_commits.c.commit_version == commit.commit_version,
                )
            ).first()
            if recorded is not None:
                return self._commits(conn, name, commit.version, recorded.id)[0]
            commit = replace(
                commit,
                profile=None,
                drift=self._drift(conn, commit, load_reference(reference), features),
            )
            conn.execute(
                insert(feature_commits).values(
                    group_name=name,
                    group_version=commit.version,
                    commit_version=commit.commit_version,
                    rows=commit.rows,
                    operation=commit.operation,
                    written_by=commit.written_by,
                    at=_ms(commit),
                    validation_passed=commit.validation_passed,
                    statistics=_stats.dump_json(commit.statistics).decode(),
                    drift=dump_verdict(commit.drift),
                )
            )
            if report is not None:
                self._insert_report(conn, name, report)
        return commit

    def _drift(
        self,
        conn: Connection,
        commit: CommitInfo,
        reference: DriftReference,
        features: list[str],
    ) -> dict[str, Any] | None:
        """Store the commit's profile; its drift verdict. A profile that cannot be stored
        fails the whole record (nothing half-stored); a failed check gives a verdict naming
        the failure."""
        if commit.profile is None:
            # an older writer (no verdict), or one whose profiling failed (its error)
            sent = commit.drift
            return (
                {"reference": None, "error": str(sent["error"])}
                if sent and "error" in sent
                else None
            )
        from plinth.store.profiles import received_profile, save_profile

        # the writer's bad data: refused (400), nothing stored, rather than a verdict
        current = received_profile(
            commit.profile,
            of=f"commit {commit.commit_version} of {commit.group}:v{commit.version}",
            rows=commit.rows,
            columns=features,
        )
        profile_id = save_profile(
            conn,
            current,
            subject_kind="feature_commit",
            subject=f"{commit.group}/{commit.version}@{commit.commit_version}",
            group_name=commit.group,
            group_version=commit.version,
            commit_version=commit.commit_version,
            created_by=commit.written_by,
            at_ms=_ms(commit),
        )
        return judge(
            conn,
            commit.group,
            commit.version,
            commit.commit_version,
            _ms(commit),
            current,
            profile_id,
            reference,
        )

    @endpoint("POST", "/feature-groups/{name}/drift-reference")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def set_drift_reference(
        self, name: str, version: int, reference: DriftReference
    ) -> FeatureGroup:
        """Choose what each insert into the group version is compared with for drift: the
        previous commit (the default), the commits of the last N days, a pinned commit, or
        none."""
        check_reference(reference)
        group = self._feature_group(name, version)  # NotFound names it
        with self.store.write() as conn:
            if reference.kind == "commit":
                known = self._commit_versions(conn, name, version)
                if reference.commit not in known:
                    listed = ", ".join(str(v) for v in known) or "none yet"
                    raise NotFound(
                        f"feature group {group.ref} has no commit at Delta version "
                        f"{reference.commit} (its commits: {listed})"
                    )
            conn.execute(
                update(feature_groups)
                .where(feature_groups.c.name == name, feature_groups.c.version == version)
                .values(drift_reference=dump_reference(reference))
            )
        return self._feature_group(name, version)

    @endpoint("POST", "/feature-groups/{name}/reports")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def record_report(self, name: str, report: ValidationReport) -> None:
        """Record a validation report of a refused write."""
        self._feature_group(name, report.version)
        with self.store.write() as conn:
            self._insert_report(conn, name, report)

    @endpoint("GET", "/feature-groups/{name}/commits")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def list_commits(self, name: str, version: int) -> list[CommitInfo]:
        self._feature_group(name, version)  # NotFound names it
        with self.store.read() as conn:
            return self._commits(conn, name, version)

    def _commits(
        self, conn: Connection, name: str, version: int, commit_id: int | None = None
    ) -> list[CommitInfo]:
        query = select(feature_commits).where(
            feature_commits.c.group_name == name, feature_commits.c.group_version == version
        )
        if commit_id is not None:
            query = query.where(feature_commits.c.id == commit_id)
        rows = conn.execute(query.order_by(feature_commits.c.id)).all()
        return [
            CommitInfo(
                name,
                r.group_version,
                r.commit_version,
                r.rows,
                r.operation,
                r.written_by,
                to_datetime(r.at),
                r.validation_passed,
                _stats.validate_json(r.statistics),
                drift=None if r.drift is None else json.loads(r.drift),
            )
            for r in rows
        ]

    @endpoint("GET", "/feature-groups/{name}/commit-versions")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def list_commit_versions(self, name: str, version: int) -> list[int]:
        """The Delta versions of the group's recorded commits, ascending."""
        self._feature_group(name, version)  # NotFound names it
        with self.store.read() as conn:
            return self._commit_versions(conn, name, version)

    def _commit_versions(self, conn: Connection, name: str, version: int) -> list[int]:
        return list(
            conn.execute(
                select(feature_commits.c.commit_version)
                .where(
                    feature_commits.c.group_name == name,
                    feature_commits.c.group_version == version,
                )
                .order_by(feature_commits.c.commit_version)
            ).scalars()
        )

    @endpoint("GET", "/feature-groups/{name}/reports")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def list_reports(self, name: str, version: int) -> list[ValidationReport]:
        self._feature_group(name, version)  # NotFound names it
        with self.store.read() as conn:
            rows = conn.execute(
                select(validation_reports)
                .where(
                    validation_reports.c.group_name == name,
                    validation_reports.c.group_version == version,
                )
                .order_by(validation_reports.c.id)
            ).all()
        adapter = TypeAdapter(ValidationReport)
        return [
            adapter.validate_python(
                {
                    "group": name,
                    "version": r.group_version,
                    "mode": r.mode,
                    "passed": r.passed,
                    "rows": r.rows,
                    "results": json.loads(r.results),
                    "commit_version": r.commit_version,
                    "at": opt_datetime(r.at),
                    "id": r.id,
                }
            )
            for r in rows
        ]

    @endpoint("POST", "/feature-groups/{name}/materialized")
    @guarded(Action.WRITE, Kind.FEATURE_GROUP, "name")
    def set_materialized_until(self, name: str, version: int, offline_version: int) -> None:
        self._feature_group(name, version)  # NotFound names it
        with self.store.write() as conn:
            conn.execute(
                update(feature_groups)
                .where(feature_groups.c.name == name, feature_groups.c.version == version)
                .values(materialized_until=offline_version)
            )

    @endpoint("GET", "/feature-groups/{name}/materialized")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def get_materialized_until(self, name: str, version: int) -> int | None:
        self._feature_group(name, version)  # NotFound names it
        with self.store.read() as conn:
            return conn.execute(
                select(feature_groups.c.materialized_until).where(
                    feature_groups.c.name == name, feature_groups.c.version == version
                )
            ).scalar()

    # -- helpers -----------------------------------------------------------------------

    def _latest(self, conn: Connection, name: str) -> Any:
        return conn.execute(
            select(feature_groups)
            .where(feature_groups.c.name == name)
            .order_by(feature_groups.c.version.desc())
            .limit(1)
        ).first()

    def _insert_report(self, conn: Connection, name: str, report: ValidationReport) -> None:
        results = json.dumps([_plain(asdict(r)) for r in report.results], default=str)
        conn.execute(
            insert(validation_reports).values(
                group_name=name,
                group_version=report.version,
                commit_version=report.commit_version,
                mode=report.mode,
                passed=report.passed,
                rows=report.rows,
                results=results,
                at=now_ms(),
            )
        )


def _check_features(features: list[FeatureSpec], keys: list[str], event_time: str) -> None:
    if not features:
        raise InvalidArgument("a feature group needs at least one feature")
    seen: set[str] = set(keys) | {event_time}
    for f in features:
        check_identifier(f.name, "feature name")
        if f.name in seen:
            raise InvalidArgument(
                f"column {f.name!r} appears twice (keys, event time and features must differ)"
            )
        seen.add(f.name)
        if f.dtype not in DTYPES:
            raise InvalidArgument(
                f"feature {f.name!r} has dtype {f.dtype!r}; use one of {', '.join(DTYPES)}"
            )


def _ms(commit: CommitInfo) -> int:
    return int(commit.at.timestamp() * 1000)


def _entity(row: Any) -> Entity:
    return Entity(
        row.name,
        json.loads(row.join_keys),
        row.value_type,
        row.description,
        to_datetime(row.created_at),
    )


def _refuse_case_twin(conn: Connection, name: str) -> None:
    """Group names differ in more than letter case: their tables' names are read without
    it (SQLite), so two such groups would share one online table."""
    twin = conn.execute(
        select(feature_groups.c.name).where(func.lower(feature_groups.c.name) == name.lower())
    ).scalar()
    if twin is not None:
        raise AlreadyExists(
            f"feature group {twin!r} exists: a group's name must differ from it in more "
            "than letter case"
        )


def _group(row: Any) -> FeatureGroup:
    return FeatureGroup(
        name=row.name,
        version=row.version,
        entity=row.entity,
        keys=json.loads(row.keys),
        event_time=row.event_time,
        features=_specs.validate_json(row.features),
        online=row.online,
        ttl_seconds=row.ttl_seconds,
        description=row.description,
        owner=row.owner,
        table_uri=row.table_uri,
        created_at=to_datetime(row.created_at),
        expectations=_expectations.validate_json(row.expectations),
        validation_mode=row.validation_mode,
        drift_reference=load_reference(row.drift_reference),
    )


def _searchable(group: FeatureGroup) -> str:
    parts = [group.name, group.description]
    for f in group.features:
        parts += [f.name, f.description, *f.tags.keys(), *f.tags.values()]
    return " ".join(parts).lower()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
