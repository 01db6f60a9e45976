"""Feature views and training datasets on the ``FeatureStore``: define a view, read it
offline (training) and online (serving) through the same transformations, snapshot it into
a training dataset that records the group commits it read, rebuild one, and lineage.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument, NotFound
from plinth.features.ingest import as_table
from plinth.features.refs import online_table, parse_ref
from plinth.features.types import (
    FeatureGroup,
    FeatureSpec,
    FeatureView,
    TrainingDataset,
    Transformation,
    Usage,
)

if TYPE_CHECKING:
    from plinth.features.lookup import OnlineResponse
    from plinth.features.offline import OfflineTables
    from plinth.features.online.base import OnlineStore
    from plinth.features.service import FeatureService
    from plinth.features.store import FeatureStore, RetrievalJob


@dataclass
class ViewHandle:
    """A feature view bound to its store."""

    store: FeatureStore
    view: FeatureView

    def get_historical_features(
        self, entity_df: Any, *, timestamp_column: str = "event_timestamp", engine: str = "duckdb"
    ) -> RetrievalJob:
        return self.store.get_historical_features(
            entity_df, self.view, timestamp_column=timestamp_column, engine=engine
        )

    def get_online_features(
        self, entity_rows: list[dict[str, Any]], *, now: datetime | None = None
    ) -> OnlineResponse:
        return self.store.get_online_features(self.view, entity_rows, now=now)

    def create_training_dataset(self, entity_df: Any, **kwargs: Any) -> TrainingData:
        return self.store.create_training_dataset(self.view, entity_df, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)


@dataclass
class TrainingData:
    """A training dataset: its record (``info``) and its rows, read when asked for."""

    store: FeatureStore
    info: TrainingDataset

    @property
    def id(self) -> int:
        return self.info.id

    def to_arrow(self) -> pa.Table:
        return self.store.offline.read_snapshot(self.info.uri)

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def entities(self) -> pa.Table:
        """The entity rows it was built from."""
        return self.store.offline.read_snapshot(self.info.entity_uri)

    def rebuild(self) -> pa.Table:
        """Recompute the rows from the recorded group commits (time travel): equal to the
        stored rows while those commits are kept."""
        return self.store.rebuild_training_dataset(self.info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.info, name)


def view_of(features: Any) -> FeatureView | None:
    if isinstance(features, FeatureView):
        return features
    if isinstance(features, ViewHandle):
        return features.view
    if isinstance(features, str):
        raise InvalidArgument(
            f"features must be a list of references or a feature view, not the string {features!r}"
        )
    return None


class ViewsMixin:
    service: FeatureService
    offline: OfflineTables
    online: OnlineStore

    if TYPE_CHECKING:

        def forget_definitions(self) -> None: ...

        def get_historical_features(
            self,
            entity_df: Any,
            features: list[str] | Any,
            *,
            timestamp_column: str = "event_timestamp",
            engine: str = "duckdb",
        ) -> RetrievalJob: ...

        def get_online_features(
            self,
            features: list[str] | Any,
            entity_rows: list[dict[str, Any]],
            *,
            now: datetime | None = None,
        ) -> OnlineResponse: ...

    # -- views -------------------------------------------------------------------------

    def create_feature_view(
        self,
        name: str,
        features: Sequence[str],
        *,
        label: str | None = None,
        request: dict[str, str] | Sequence[FeatureSpec] | None = None,
        transformations: Sequence[Transformation] = (),
        description: str = "",
    ) -> ViewHandle:
        """A named selection of features (pinned to the groups' current versions), with
        request-time values (``{"amount": "float64"}``), on-demand transformations
        (``plinth.on_demand``) and the label column training sets carry."""

        specs = (
            [FeatureSpec(str(k), str(v)) for k, v in request.items()]
            if isinstance(request, dict)
            else list(request or [])
        )
        for t in transformations:
            if not isinstance(t, Transformation):
                raise InvalidArgument(
                    f"transformations must be made with @plinth.on_demand(...), not {type(t).__name__}"
                )
        view = self.service.create_feature_view(
            name, list(features), label, specs, list(transformations), description
        )
        return ViewHandle(self, view)  # type: ignore[arg-type]

    def get_feature_view(self, name: str, version: int | None = None) -> ViewHandle:
        return ViewHandle(self, self.service.get_feature_view(name, version))  # type: ignore[arg-type]

    def _online_view(
        self, view: FeatureView, entity_rows: list[dict[str, Any]], now: datetime | None
    ) -> OnlineResponse:
        from plinth.features.ingest import ARROW_TYPES
        from plinth.features.lookup import OnlineResponse, first_problem
        from plinth.features.transform import apply

        wanted = {r.name for r in view.request}
        for i, row in enumerate(entity_rows):
            missing = sorted(wanted - row.keys())
            if missing:
                raise InvalidArgument(
                    f"entity row {i} lacks the request values {missing} of feature view {view.ref}"
                )
        found = self.get_online_features(view.features, entity_rows, now=now)
        if not view.transformations:
            return found
        # Typed columns, as the offline rows are, so a transformation sees the same dtypes.
        types = {r.name: ARROW_TYPES[r.dtype] for r in view.request}
        for group, features in _groups_of(view).items():
            declared = {f.name: f.dtype for f in self.service.get_feature_group(*group).features}
            types.update({f: ARROW_TYPES[declared[f]] for f in features})
        columns, statuses = found.columns, found.status_columns
        arrays = {name: _column(columns[name], name, type_, view) for name, type_ in types.items()}
        table = apply(view.transformations, pa.table(arrays), view.ref)
        for t in view.transformations:
            # an output is as fresh as its inputs: the first input that is not PRESENT says
            status = first_problem([statuses[c] for c in t.inputs if c in statuses], found.size)
            for spec in t.outputs:
                columns[spec.name] = table[spec.name].to_pylist()
                statuses[spec.name] = status
        return OnlineResponse(columns, statuses, found.size)

    # -- training datasets -------------------------------------------------------------

    def create_training_dataset(
        self,
        view: FeatureView | ViewHandle | str,
        entity_df: Any,
        *,
        timestamp_column: str = "event_timestamp",
        description: str = "",
        engine: str = "duckdb",
    ) -> TrainingData:
        """Snapshot ``view`` over ``entity_df`` (keys, timestamps, request values and the
        label): the point-in-time rows with transformations applied, stored with the group
        commits they read so a model version can point at them and they can be rebuilt.
        ``engine="spark"`` joins on Spark (as ``get_historical_features`` does)."""

        resolved = self._view(view)
        entity = as_table(entity_df, doing="read entity_df from")
        if resolved.label is not None and resolved.label not in entity.column_names:
            raise InvalidArgument(
                f"the entity table has no label column {resolved.label!r} of {resolved.ref}"
            )
        commits = {}
        for name, version in _groups_of(resolved):
            group = self.service.get_feature_group(name, version)
            commit = self.offline.version(group)
            if commit is None:
                raise NotFound(f"{group.ref} has no offline data yet to build a training set from")
            commits[group.ref] = commit
        table = self._rebuild(resolved, entity, timestamp_column, commits, engine)
        folder = self.offline.snapshot_uri(resolved.name, f"v{resolved.version}", uuid.uuid4().hex)
        data_uri, entity_uri = f"{folder}/rows", f"{folder}/entities"
        self.offline.write_snapshot(entity_uri, entity)
        self.offline.write_snapshot(data_uri, table)
        try:
            info = self.service.record_training_dataset(
                resolved.name,
                resolved.version,
                data_uri,
                entity_uri,
                table.num_rows,
                commits,
                timestamp_column,
                resolved.label,
                description,
            )
        except Exception:
            for uri in (data_uri, entity_uri):  # nothing unrecorded stays behind
                self.offline.delete_snapshot(uri)
            raise
        return TrainingData(self, info)  # type: ignore[arg-type]

    def get_training_dataset(self, id: int) -> TrainingData:
        return TrainingData(self, self.service.get_training_dataset(id))  # type: ignore[arg-type]

    def rebuild_training_dataset(self, dataset: TrainingDataset | int) -> pa.Table:
        info = self.service.get_training_dataset(dataset) if isinstance(dataset, int) else dataset
        view = self.service.get_feature_view(info.view, info.view_version)
        entity = self.offline.read_snapshot(info.entity_uri)
        return self._rebuild(view, entity, info.timestamp_column, info.group_commits)

    def _rebuild(
        self,
        view: FeatureView,
        entity: pa.Table,
        timestamp_column: str,
        commits: dict[str, int],
        engine: str = "duckdb",
    ) -> pa.Table:
        job = self.get_historical_features(
            entity, view, timestamp_column=timestamp_column, engine=engine
        )
        job.commits = commits
        return job.to_arrow()

    # -- lineage -----------------------------------------------------------------------

    def where_used(self, group: str, version: int | None = None) -> Usage:
        """Feature views, training datasets and model versions that read a group
        (``"customer_stats"``) or one feature of it (``"customer_stats:avg_spend"``)."""

        if ":" in group:
            name, pinned, feature = parse_ref(group)
            return self.service.where_used(name, pinned or version, feature)
        return self.service.where_used(group, version, None)

    def delete_feature_group(
        self, name: str, version: int | None = None, *, force: bool = False
    ) -> list[FeatureGroup]:
        """Delete a group (one version or all): definition, offline table, online rows.
        Refused while a PRODUCTION model was trained on it, or while views read it (unless
        ``force``)."""

        self.forget_definitions()
        removed = self.service.delete_feature_group(name, version, force)
        for group in removed:
            self.offline.delete_table(group)
            self.online.drop(online_table(group))
        return removed

    def _view(self, view: FeatureView | ViewHandle | str) -> FeatureView:
        if isinstance(view, str):
            return self.service.get_feature_view(view)
        found = view_of(view)
        if found is None:
            raise InvalidArgument(f"expected a feature view or its name, not {type(view).__name__}")
        return found


def _groups_of(view: FeatureView) -> dict[tuple[str, int], list[str]]:

    groups: dict[tuple[str, int], list[str]] = {}
    for ref in view.features:
        name, version, feature = parse_ref(ref)
        groups.setdefault((name, version or 0), []).append(feature)
    return groups


def _column(values: list[Any], name: str, type_: pa.DataType, view: FeatureView) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InvalidArgument(
            f"value {name!r} for feature view {view.ref} is not {type_}: {e}"
        ) from e
