"""A model as serving sees it: the resolved version, its predictor, and the feature view it
was trained from (when its training data came from the feature store), with the enrichment
that turns entity keys into the model's input exactly as training did."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import Client
    from plinth.features.store import FeatureStore
    from plinth.features.types import FeatureView
    from plinth.registry.predictor import Predictor
    from plinth.registry.types import ModelVersion


@dataclass(frozen=True)
class ServedModel:
    uri: str  # as asked for: models:/churn@production
    version: ModelVersion
    predictor: Predictor
    view: FeatureView | None

    @property
    def name(self) -> str:
        return self.version.model_name

    @property
    def input_names(self) -> list[str]:
        signature = self.predictor.signature
        return [] if signature is None else signature.input_names

    @cached_property
    def numeric_block(self) -> tuple[str, ...] | None:
        """The input names when every input has one numeric dtype (a signature-enforced
        input is then a single numpy block); else None."""
        signature = self.predictor.signature
        if signature is None or not signature.inputs:
            return None
        dtypes = {spec.dtype for spec in signature.inputs}
        numeric = dtypes <= {"float64", "float32", "int64", "int32", "bool"}
        return tuple(self.input_names) if numeric and len(dtypes) == 1 else None

    def needs_enrichment(self, columns: Collection[str]) -> bool:
        """Whether rows with ``columns`` lack model inputs the view can provide."""
        if self.view is None:
            return False
        provided = set(self.view.output_names)
        return any(n not in columns and n in provided for n in self.input_names)


def load_served(client: Client, uri: str, *, trust_pickle: bool = False) -> ServedModel:
    """Resolve ``uri``, load and verify its package, and find its feature view. A pickled
    package is refused unless ``trust_pickle`` or the store's policy allows it."""
    version = client.get_model_version(uri)
    predictor = client.load_model(
        f"models:/{version.model_name}/{version.version}", trust_pickle=trust_pickle
    )
    return ServedModel(uri, version, predictor, view_of_version(client, version))


def view_of_version(client: Client, version: ModelVersion) -> FeatureView | None:
    """The feature view of the (first) training dataset a model version was trained on."""
    datasets = version.lineage.get("training_datasets") or []
    if not datasets:
        return None
    dataset = client.features.get_training_dataset(int(datasets[0]))
    return client.features.get_feature_view(dataset.view, dataset.view_version)


def enrich_online(
    store: FeatureStore, view: FeatureView, rows: list[dict[str, Any]], needed: list[str]
) -> list[dict[str, Any]]:
    """Request rows (entity keys + request values) with the view's features from the online
    store and its transformations applied. A ``needed`` value the store has no fresh value
    for (NOT_FOUND, OUTSIDE_TTL) is refused, naming the entity; an unreachable store raises
    ``Unavailable``: a prediction is never made from features that were not there."""
    missing = [k for k in view.keys if any(k not in row for row in rows)]
    if missing:
        raise InvalidArgument(
            f"each row needs the entity key {missing[0]!r} (the model reads feature view {view.ref})"
        )
    found = store.get_online_features(view, rows)
    for i, status in enumerate(found.statuses):
        stale = next(
            ((n, status[n]) for n in needed if status.get(n, "PRESENT") != "PRESENT"), None
        )
        if stale is not None:
            entity = ", ".join(f"{k}={rows[i][k]!r}" for k in view.keys)
            raise InvalidArgument(
                f"row {i} ({entity}): feature {stale[0]!r} is {stale[1]} in the online store, "
                "so the model cannot score it; materialize fresh values or send the features"
            )
    return found.rows


def enrich_offline(
    store: FeatureStore, view: FeatureView, entity: pa.Table, timestamp_column: str
) -> pa.Table:
    """Entity rows (keys, a timestamp, request values) with the view's features as they
    were at each row's timestamp, transformations applied."""
    return store.get_historical_features(entity, view, timestamp_column=timestamp_column).to_arrow()


def model_frame(served: ServedModel, rows: Mapping[str, Any] | pd.DataFrame) -> pd.DataFrame:
    """The model's input columns from enriched columns (a name → a list of values) or a
    DataFrame, in signature order and dtypes."""
    from plinth.registry.signature import as_frame, enforce

    signature = served.predictor.signature
    return as_frame(rows) if signature is None else enforce(signature, rows)
