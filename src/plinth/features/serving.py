"""The feature server: online lookups over HTTP for applications that are not in Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter

from plinth.api import endpoint
from plinth.auth.access import guarded
from plinth.errors import InvalidArgument
from plinth.features.lookup import OnlineResponse
from plinth.features.refs import by_group
from plinth.features.store import FeatureStore

MAX_ENTITY_ROWS = 10_000


@dataclass(frozen=True)
class OnlineFeatures:
    """One row of values and one of statuses (PRESENT, NOT_FOUND, OUTSIDE_TTL) per entity."""

    __pydantic_config__ = {"ser_json_inf_nan": "strings"}  # noqa: RUF012

    rows: list[dict[str, Any]]
    statuses: list[dict[str, str]]


_ONLINE: TypeAdapter[OnlineFeatures] = TypeAdapter(OnlineFeatures)


def online_json(response: OnlineResponse) -> bytes:
    """The JSON of ``OnlineFeatures`` for ``response``, as the endpoint's result type gives it
    (timestamps ISO 8601 with ``Z``, NaN and infinities null), encoded by orjson; values
    orjson cannot encode (integers beyond 64 bits) go through pydantic."""
    try:
        return orjson.dumps(
            {"rows": response.rows, "statuses": response.statuses}, option=orjson.OPT_UTC_Z
        )
    except orjson.JSONEncodeError:
        return _ONLINE.dump_json(OnlineFeatures(response.rows, response.statuses))


class OnlineFeatureService:
    """Online lookups of an in-process feature store: a group the caller may not read is
    not found (the store checks every lookup, see ``FeatureStore.get_online_features``)."""

    def __init__(self, features: FeatureStore) -> None:
        self.features = features
        self.store = features.service.store  # the central store, whose grants apply

    @endpoint("POST", "/features/online")
    @guarded()
    def get_online_features(
        self, features: list[str], entity_rows: list[dict[str, Any]]
    ) -> OnlineFeatures:
        """Latest feature values for a batch of entities, e.g. ``{"features":
        ["customer_stats:orders_30d"], "entity_rows": [{"customer_id": 1001}]}``; refused
        (not found) for a feature group the caller may not read."""
        response = self.lookup(features, entity_rows)
        return OnlineFeatures(response.rows, response.statuses)

    def lookup(self, features: list[str], entity_rows: list[dict[str, Any]]) -> OnlineResponse:
        """``get_online_features`` as columns (the feature server's hot path)."""
        if not features:
            raise InvalidArgument("name at least one feature, e.g. 'customer_stats:orders_30d'")
        if len(entity_rows) > MAX_ENTITY_ROWS:
            raise InvalidArgument(
                f"at most {MAX_ENTITY_ROWS} entity rows a call, got {len(entity_rows)}"
            )
        return self.features.get_online_features(features, entity_rows)

    def keys_from_query(self, features: list[str], query: dict[str, str]) -> dict[str, Any]:
        """Entity keys given as query parameters, typed like their entity's keys."""

        name, version = next(iter(by_group(features)))
        group = self.features.service.get_feature_group(name, version)
        entity = self.features.service.get_entity(group.entity)
        keys: dict[str, Any] = {}
        for key in group.keys:
            if key not in query:
                raise InvalidArgument(f"pass the entity key {key!r} as a query parameter")
            keys[key] = _typed(query[key], entity.value_type, key)
        return keys


def _typed(text: str, value_type: str, key: str) -> Any:
    if value_type.startswith("int"):
        try:
            return int(text)
        except ValueError:
            raise InvalidArgument(f"key {key!r} is an integer, got {text!r}") from None
    return text
