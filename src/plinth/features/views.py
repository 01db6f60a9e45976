"""Feature views, training datasets and lineage in the central store (the metadata half;
``datasets.py`` moves the data).

A view pins the group versions it reads (``group:feature`` becomes ``group:v3:feature``
when the view is defined), so training and serving read the same definitions. Lineage is a
join: feature_view_groups (view -> group versions), training_datasets (-> view) and
model_version_datasets (model version -> training datasets).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, delete, insert, select

from plinth.api import endpoint
from plinth.auth.access import Access, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.features.refs import check_identifier, parse_ref
from plinth.features.rules import (
    may_define_view,
    may_list_datasets,
    may_read_dataset,
    require_in_transaction,
)
from plinth.features.source import check_source
from plinth.features.types import (
    DTYPES,
    FeatureGroup,
    FeatureSpec,
    FeatureView,
    ModelUse,
    TrainingDataset,
    Transformation,
    Usage,
)
from plinth.store.profiles import delete_profiles
from plinth.store.schema import (
    feature_commits,
    feature_groups,
    feature_view_groups,
    feature_views,
    model_version_datasets,
    model_versions,
    training_datasets,
    validation_reports,
)
from plinth.store.sql import now_ms, to_datetime

if TYPE_CHECKING:
    from plinth.store.engine import Store

_specs = TypeAdapter(list[FeatureSpec])
_transformations = TypeAdapter(list[Transformation])


class ViewService:
    """Endpoints of the feature service for views, training datasets and lineage."""

    store: Store

    if TYPE_CHECKING:

        @property
        def access(self) -> Access: ...

        def _feature_group(self, name: str, version: int | None = None) -> FeatureGroup: ...

    # -- feature views -----------------------------------------------------------------

    @endpoint("POST", "/feature-views")
    @guarded(role=Role.EDITOR, check=may_define_view)
    def create_feature_view(
        self,
        name: str,
        features: list[str],
        label: str | None = None,
        request: list[FeatureSpec] | None = None,
        transformations: list[Transformation] | None = None,
        description: str = "",
    ) -> FeatureView:
        """Define a view, owned by its creator. ``group:feature`` references are pinned to
        the group's latest version. The same definition again returns the current version;
        a changed one creates the next version."""

        check_identifier(name, "feature view name")
        request, transformations = list(request or []), list(transformations or [])
        pinned, keys, by_group = self._pin(features)
        _check_view(pinned, keys, label, request, transformations)
        with self.store.write() as conn:
            latest = _latest_view(conn, name)
            if latest is None:
                self.access.on_created(conn, Kind.FEATURE_VIEW, name)
            else:
                # perhaps created by another caller since the rule's check: its grants decide
                require_in_transaction(self.access, Action.WRITE, Kind.FEATURE_VIEW, name)
                current = _view(latest)
                if _definition(current) == (pinned, label, request, _comparable(transformations)):
                    return current
            version = 1 if latest is None else latest.version + 1
            conn.execute(
                insert(feature_views).values(
                    name=name,
                    version=version,
                    features=json.dumps(pinned),
                    keys=json.dumps(keys),
                    label=label,
                    request=_specs.dump_json(request).decode(),
                    transformations=_transformations.dump_json(transformations).decode(),
                    description=description,
                    owner=self.access.actor(),
                    created_at=now_ms(),
                )
            )
            conn.execute(
                insert(feature_view_groups),
                [
                    {
                        "view_name": name,
                        "view_version": version,
                        "group_name": group,
                        "group_version": group_version,
                        "features": json.dumps(read),
                    }
                    for (group, group_version), read in by_group.items()
                ],
            )
        return self._feature_view(name, version)

    @endpoint("GET", "/feature-views/{name}")
    @guarded(Action.READ, Kind.FEATURE_VIEW, "name")
    def get_feature_view(self, name: str, version: int | None = None) -> FeatureView:
        """A view's given version, or its latest."""
        return self._feature_view(name, version)

    def _feature_view(self, name: str, version: int | None = None) -> FeatureView:
        with self.store.read() as conn:
            if version is None:
                row = _latest_view(conn, name)
            else:
                row = conn.execute(
                    select(feature_views).where(
                        feature_views.c.name == name, feature_views.c.version == version
                    )
                ).first()
        if row is None:
            raise NotFound(
                f"feature view {name!r}{'' if version is None else f' v{version}'} does not exist"
            )
        return _view(row)

    @endpoint("GET", "/feature-views")
    @guarded()
    def list_feature_views(self) -> list[FeatureView]:
        """Every version of every view the caller may see."""
        query = select(feature_views).order_by(feature_views.c.name, feature_views.c.version)
        visible = self.access.visible(Kind.FEATURE_VIEW)
        if visible is not None:
            query = query.where(feature_views.c.name.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        return [_view(r) for r in rows]

    def _pin(
        self, features: list[str]
    ) -> tuple[list[str], list[str], dict[tuple[str, int], list[str]]]:

        if not features:
            raise InvalidArgument("a feature view needs at least one feature")
        pinned: list[str] = []
        keys: list[str] = []
        by_group: dict[tuple[str, int], list[str]] = {}
        for ref in features:
            name, version, feature = parse_ref(ref)
            group = self._feature_group(name, version)  # readable: the rule checked it
            if feature not in {f.name for f in group.features}:
                raise InvalidArgument(
                    f"feature group {group.ref} has no feature {feature!r}; it has "
                    f"{[f.name for f in group.features]}"
                )
            pinned.append(f"{group.name}:v{group.version}:{feature}")
            keys += [k for k in group.keys if k not in keys]
            by_group.setdefault((group.name, group.version), []).append(feature)
        return pinned, keys, by_group

    # -- training datasets -------------------------------------------------------------

    @endpoint("POST", "/training-datasets")
    @guarded(Action.READ, Kind.FEATURE_VIEW, "view", role=Role.EDITOR)
    def record_training_dataset(
        self,
        view: str,
        view_version: int,
        uri: str,
        entity_uri: str,
        rows: int,
        group_commits: dict[str, int],
        timestamp_column: str,
        label: str | None = None,
        description: str = "",
    ) -> TrainingDataset:
        """Record a snapshot the caller wrote (the rows at ``uri``, its entity rows at
        ``entity_uri``) with the group commits it read; the caller is its creator."""
        found = self._feature_view(view, view_version)
        if rows < 0:
            raise InvalidArgument(f"rows must be >= 0, got {rows}")
        groups = {f.rsplit(":", 1)[0] for f in found.features}
        if set(group_commits) != groups:
            raise InvalidArgument(
                f"group_commits must name exactly the groups of {found.ref}: {sorted(groups)}"
            )
        with self.store.write() as conn:
            new_id = conn.execute(
                insert(training_datasets)
                .values(
                    view_name=view,
                    view_version=view_version,
                    uri=uri,
                    entity_uri=entity_uri,
                    rows=rows,
                    group_commits=json.dumps(group_commits, sort_keys=True),
                    timestamp_column=timestamp_column,
                    label=label,
                    description=description,
                    created_by=self.access.actor(),
                    created_at=now_ms(),
                )
                .returning(training_datasets.c.id)
            ).scalar_one()
        return self._training_dataset(new_id)

    @endpoint("GET", "/training-datasets/{id}")
    @guarded(check=may_read_dataset)
    def get_training_dataset(self, id: int) -> TrainingDataset:
        return self._training_dataset(id)

    def _training_dataset(self, id: int) -> TrainingDataset:
        with self.store.read() as conn:
            row = conn.execute(
                select(training_datasets).where(training_datasets.c.id == id)
            ).first()
        if row is None:
            raise NotFound(f"training dataset {id} does not exist")
        return _dataset(row)

    @endpoint("GET", "/training-datasets")
    @guarded(check=may_list_datasets)
    def list_training_datasets(self, view: str | None = None) -> list[TrainingDataset]:
        """The training datasets (of one view) the caller may see: those of readable views."""
        query = select(training_datasets).order_by(training_datasets.c.id)
        if view is not None:
            query = query.where(training_datasets.c.view_name == view)
        else:
            visible = self.access.visible(Kind.FEATURE_VIEW)
            if visible is not None:
                query = query.where(training_datasets.c.view_name.in_(visible))
        with self.store.read() as conn:
            return [_dataset(r) for r in conn.execute(query)]

    def dataset_at(self, uri: str) -> int | None:
        """The training dataset keeping its rows or entity rows at ``uri``, whoever may see
        it (None: none does)."""
        with self.store.read() as conn:
            found: int | None = conn.execute(
                select(training_datasets.c.id)
                .where((training_datasets.c.uri == uri) | (training_datasets.c.entity_uri == uri))
                .limit(1)
            ).scalar()
        return found

    # -- lineage -----------------------------------------------------------------------

    @endpoint("GET", "/feature-groups/{name}/usage")
    @guarded(Action.READ, Kind.FEATURE_GROUP, "name")
    def where_used(
        self, name: str, version: int | None = None, feature: str | None = None
    ) -> Usage:
        """The feature views, training datasets and model versions that read ``name`` (one
        version, or all), or one feature of it: those the caller may see."""
        versions = self._group_versions(name, version)
        readable_views = self.access.visible(Kind.FEATURE_VIEW)
        readable_models = self.access.visible(Kind.MODEL)
        with self.store.read() as conn:
            views = [
                r
                for r in conn.execute(
                    select(feature_view_groups).where(
                        feature_view_groups.c.group_name == name,
                        feature_view_groups.c.group_version.in_(versions),
                    )
                )
                if (feature is None or feature in json.loads(r.features))
                and (readable_views is None or r.view_name in readable_views)
            ]
            pairs = sorted({(r.view_name, r.view_version) for r in views})
            datasets = _datasets_of(conn, pairs)
            uses = [
                u
                for u in _model_uses(conn, datasets)
                if readable_models is None or u.model in readable_models
            ]
        return Usage(
            name,
            feature,
            [f"{view}:v{v}" for view, v in pairs],
            datasets,
            uses,
        )

    @endpoint("DELETE", "/feature-groups/{name}")
    @guarded(Action.MANAGE, Kind.FEATURE_GROUP, "name")
    def delete_feature_group(
        self, name: str, version: int | None = None, force: bool = False
    ) -> list[FeatureGroup]:
        """Remove a group's definition (one version, or all) with its commits and reports;
        returns what was removed so the caller can delete the data. Refused while a
        PRODUCTION model version was trained on it; refused while feature views read it,
        unless ``force`` (which removes those views too, and needs their ownership)."""
        versions = self._group_versions(name, version)
        removed = [self._feature_group(name, v) for v in versions]
        checked: set[str] = set()
        if force:  # checked ahead of the transaction, so a refusal is logged
            with self.store.read() as conn:
                checked = {view for view, _ in _views_reading(conn, name, versions)}
            for view in sorted(checked):
                self.access.require(Action.MANAGE, Kind.FEATURE_VIEW, view)
        with self.store.write() as conn:
            pairs = _views_reading(conn, name, versions)
            production = [
                u for u in _model_uses(conn, _datasets_of(conn, pairs)) if u.stage == "PRODUCTION"
            ]
            if production:
                use = production[0]
                raise Conflict(
                    f"feature group {name!r} is used by {use.model} v{use.version}, which is in "
                    f"PRODUCTION (trained on training dataset {use.training_dataset}); move the "
                    "model out of production first"
                )
            if pairs and not force:
                raise Conflict(
                    f"feature group {name!r} is read by the feature views "
                    f"{[f'{v}:v{n}' for v, n in pairs]}; pass force=True to remove them too"
                )
            for view in sorted({view for view, _ in pairs} - checked):  # defined since
                require_in_transaction(self.access, Action.MANAGE, Kind.FEATURE_VIEW, view)
            for view, view_version in pairs:
                _delete_view(conn, view, view_version)
                self.access.record(
                    "deleted",
                    f"{Kind.FEATURE_VIEW.value}:{view}",
                    detail=f"v{view_version}",
                    conn=conn,
                )
                if _latest_view(conn, view) is None:
                    self.access.on_deleted(conn, Kind.FEATURE_VIEW, view)
            for table in (feature_commits, validation_reports):
                conn.execute(
                    delete(table).where(
                        table.c.group_name == name, table.c.group_version.in_(versions)
                    )
                )
            # the commits' profiles: a group defined again under this name starts afresh
            delete_profiles(
                conn, subject_kind="feature_commit", group_name=name, group_versions=versions
            )
            conn.execute(
                delete(feature_groups).where(
                    feature_groups.c.name == name, feature_groups.c.version.in_(versions)
                )
            )
            shown = ", ".join(f"v{v}" for v in versions)
            target = f"{Kind.FEATURE_GROUP.value}:{name}"
            self.access.record("deleted", target, detail=shown, conn=conn)
            left = conn.execute(
                select(feature_groups.c.version).where(feature_groups.c.name == name).limit(1)
            ).first()
            if left is None:
                self.access.on_deleted(conn, Kind.FEATURE_GROUP, name)
        return removed

    def _group_versions(self, name: str, version: int | None) -> list[int]:
        if version is not None:
            return [self._feature_group(name, version).version]
        with self.store.read() as conn:
            versions = list(
                conn.execute(
                    select(feature_groups.c.version).where(feature_groups.c.name == name)
                ).scalars()
            )
        if not versions:
            raise NotFound(f"feature group {name!r} does not exist")
        return versions


def _check_view(
    pinned: list[str],
    keys: list[str],
    label: str | None,
    request: list[FeatureSpec],
    transformations: list[Transformation],
) -> None:

    available: dict[str, str] = {k: "a key" for k in keys}

    def claim(column: str, what: str) -> None:
        if column in available:
            raise InvalidArgument(
                f"column {column!r} would be both {available[column]} and {what}; "
                "names in a view must differ"
            )
        available[column] = what

    for ref in pinned:
        claim(ref.rsplit(":", 1)[-1], f"feature {ref}")
    for spec in request:
        check_identifier(spec.name, "request value name")
        if spec.dtype not in DTYPES:
            raise InvalidArgument(
                f"request value {spec.name!r} has dtype {spec.dtype!r}; use one of {', '.join(DTYPES)}"
            )
        claim(spec.name, "a request value")
    for t in transformations:
        unknown = [c for c in t.inputs if c not in available]
        if unknown:
            raise InvalidArgument(
                f"transformation {t.name!r} reads {unknown}, which the view does not have "
                f"(it has {sorted(available)})"
            )
        check_source(t.source, t.name)  # parsed and compiled, not run
        for spec in t.outputs:
            check_identifier(spec.name, "transformation output name")
            if spec.dtype not in DTYPES:
                raise InvalidArgument(
                    f"output {spec.name!r} of {t.name!r} has dtype {spec.dtype!r}; use one of "
                    f"{', '.join(DTYPES)}"
                )
            claim(spec.name, f"an output of {t.name!r}")
    if label is not None:
        check_identifier(label, "label")
        claim(label, "the label")


def _comparable(transformations: list[Transformation]) -> list[Any]:
    # the source text is the code: the same text is the same transformation
    return [(t.name, t.inputs, t.outputs, t.source) for t in transformations]


def _definition(view: FeatureView) -> tuple[Any, ...]:
    return (view.features, view.label, view.request, _comparable(view.transformations))


def _latest_view(conn: Connection, name: str) -> Any:
    return conn.execute(
        select(feature_views)
        .where(feature_views.c.name == name)
        .order_by(feature_views.c.version.desc())
        .limit(1)
    ).first()


def _views_reading(conn: Connection, group: str, versions: list[int]) -> list[tuple[str, int]]:
    rows = conn.execute(
        select(feature_view_groups.c.view_name, feature_view_groups.c.view_version)
        .where(
            feature_view_groups.c.group_name == group,
            feature_view_groups.c.group_version.in_(versions),
        )
        .distinct()
    ).all()
    return sorted((r.view_name, r.view_version) for r in rows)


def _delete_view(conn: Connection, name: str, version: int) -> None:
    conn.execute(
        delete(feature_view_groups).where(
            feature_view_groups.c.view_name == name, feature_view_groups.c.view_version == version
        )
    )
    conn.execute(
        delete(feature_views).where(
            feature_views.c.name == name, feature_views.c.version == version
        )
    )


def _datasets_of(conn: Connection, views: list[tuple[str, int]]) -> list[int]:
    ids: set[int] = set()
    for name, version in views:
        ids.update(
            conn.execute(
                select(training_datasets.c.id).where(
                    training_datasets.c.view_name == name,
                    training_datasets.c.view_version == version,
                )
            ).scalars()
        )
    return sorted(ids)


def _model_uses(conn: Connection, datasets: list[int]) -> list[ModelUse]:
    if not datasets:
        return []
    rows = conn.execute(
        select(
            model_version_datasets.c.model_name,
            model_version_datasets.c.model_version,
            model_version_datasets.c.training_dataset,
            model_versions.c.stage,
        )
        .join(
            model_versions,
            (model_versions.c.model_name == model_version_datasets.c.model_name)
            & (model_versions.c.version == model_version_datasets.c.model_version),
        )
        .where(model_version_datasets.c.training_dataset.in_(datasets))
        .order_by(model_version_datasets.c.model_name, model_version_datasets.c.model_version)
    )
    return [ModelUse(r.model_name, r.model_version, r.stage, r.training_dataset) for r in rows]


def _view(row: Any) -> FeatureView:
    return FeatureView(
        name=row.name,
        version=row.version,
        features=json.loads(row.features),
        keys=json.loads(row.keys),
        label=row.label,
        request=_specs.validate_json(row.request),
        transformations=_transformations.validate_json(row.transformations),
        description=row.description,
        owner=row.owner,
        created_at=to_datetime(row.created_at),
    )


def _dataset(row: Any) -> TrainingDataset:
    return TrainingDataset(
        id=row.id,
        view=row.view_name,
        view_version=row.view_version,
        uri=row.uri,
        entity_uri=row.entity_uri,
        rows=row.rows,
        group_commits=json.loads(row.group_commits),
        timestamp_column=row.timestamp_column,
        label=row.label,
        description=row.description,
        created_by=row.created_by,
        created_at=to_datetime(row.created_at),
    )


def training_datasets_of(
    conn: Connection, explicit: int | None, input_uris: list[str]
) -> list[int]:
    """The training datasets a new model version was trained on: the one named, and any
    whose rows its run logged as an input."""
    ids: set[int] = set()
    if explicit is not None:
        found = conn.execute(
            select(training_datasets.c.id).where(training_datasets.c.id == explicit)
        ).scalar()
        if found is None:
            raise NotFound(f"training dataset {explicit} does not exist")
        ids.add(found)
    if input_uris:
        ids.update(
            conn.execute(
                select(training_datasets.c.id).where(training_datasets.c.uri.in_(input_uris))
            ).scalars()
        )
    return sorted(ids)
