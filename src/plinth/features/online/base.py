"""The online store contract: the latest feature values per entity key, read in one round trip."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class OnlineRow:
    """One entity's stored values (None where the entity is unknown) and their event time,
    kept as microseconds since the epoch (``micros``) and made a datetime only when asked."""

    __slots__ = ("micros", "values")

    def __init__(
        self,
        values: dict[str, Any] | None,
        event_time: datetime | None = None,
        *,
        micros: int | None = None,
    ) -> None:
        self.values = values
        if event_time is not None:
            micros = (event_time - _EPOCH) // _MICROSECOND
        self.micros = micros

    @property
    def event_time(self) -> datetime | None:
        return None if self.micros is None else _EPOCH + timedelta(0, 0, self.micros)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnlineRow):
            return NotImplemented
        return (self.values, self.micros) == (other.values, other.micros)

    def __hash__(self) -> int:
        return hash(self.micros)

    def __repr__(self) -> str:
        return f"OnlineRow({self.values!r}, {self.event_time!r})"


class OnlineStore(ABC):
    """One table per feature group version, keyed by the group's join keys."""

    @abstractmethod
    def write(self, table: str, keys: list[str], rows: pa.Table, event_time: str) -> int:
        """Upsert ``rows`` (key columns, features, the event time column): a key's stored
        row is replaced only by a row with a newer or equal event time (within one call too:
        the newest row per key wins, the later one on a tie). Every other column is a
        feature: bool, integer, float, string, timestamp or date. Keys are integers or
        strings, never null; the event time is a timestamp (one without a time zone is taken
        as UTC). Bad input raises ``InvalidArgument`` before anything is written. Returns
        the rows stored (inserted or replaced), not counting the older rows skipped."""

    @abstractmethod
    def read(
        self, table: str, key_rows: list[tuple[Any, ...]], features: list[str]
    ) -> list[OnlineRow]:
        """The stored rows for ``key_rows`` (values in key order), in request order, in one
        round trip; an unknown key gives ``OnlineRow(None, None)``, a feature the stored row
        lacks gives None. Values come back as the offline store gives them (floats stay
        floats, timestamps are UTC-aware datetimes), event times as UTC-aware datetimes."""

    @abstractmethod
    def drop(self, table: str) -> None:
        """Remove a table (no error when it does not exist)."""

    def close(self) -> None:  # noqa: B027 - optional for stores that hold connections
        """Release connections."""
