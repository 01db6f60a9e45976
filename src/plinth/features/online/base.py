"""The online store contract: the latest feature values per entity key, read in one round trip."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
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


class OnlineColumns:
    """A batch read, column by column: per requested key, its event time in microseconds
    since the epoch (``micros``, None for an unknown key) and per requested feature a list
    of values in request order (``columns``). A value is None where the key is unknown, the
    stored row lacks the feature, or the row is older than the read's ``not_before``."""

    __slots__ = ("columns", "micros")

    def __init__(self, micros: Sequence[int | None], columns: dict[str, list[Any]]) -> None:
        self.micros = micros
        self.columns = columns

    def rows(self) -> list[OnlineRow]:
        """The same read as one ``OnlineRow`` per key."""
        names = list(self.columns)
        values = zip(*self.columns.values(), strict=True) if names else repeat(())
        return [
            _MISSING if m is None else OnlineRow(dict(zip(names, v, strict=True)), micros=m)
            for m, v in zip(self.micros, values)  # noqa: B905 - values may be repeat(())
        ]


_MISSING = OnlineRow(None, None)


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
    def read_columns(
        self,
        table: str,
        key_rows: Sequence[tuple[Any, ...]],
        features: list[str],
        *,
        not_before: int | None = None,
    ) -> OnlineColumns:
        """The stored values for ``key_rows`` (values in key order), one column per feature
        in request order, in one round trip. An unknown key (or table) gives a None event
        time and None values; a feature the stored row lacks gives None; a row whose event
        time (in microseconds since the epoch) is before ``not_before`` keeps its event time
        but gives None values (the caller reports it as outside its TTL). Values come back as
        the offline store gives them (floats stay floats, timestamps are UTC-aware
        datetimes). Keys of other types than integers and strings raise InvalidArgument."""

    def read(
        self, table: str, key_rows: list[tuple[Any, ...]], features: list[str]
    ) -> list[OnlineRow]:
        """``read_columns`` as one row per key: an unknown key gives ``OnlineRow(None,
        None)``, a feature the stored row lacks gives None, event times are UTC-aware."""
        return self.read_columns(table, key_rows, features).rows()

    @abstractmethod
    def drop(self, table: str) -> None:
        """Remove a table (no error when it does not exist)."""

    def close(self) -> None:  # noqa: B027 - optional for stores that hold connections
        """Release connections."""
