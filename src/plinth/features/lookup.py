"""The answer of an online lookup, kept column by column, and the column helpers of a lookup.

A lookup of many entities builds no dict per entity: the entity rows become one column per
entity column, each feature group's read gives one column per feature and one tuple of
statuses shared by the group's features. Per-row dicts are made only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import pyarrow as pa

from plinth.errors import InvalidArgument

PRESENT, NOT_FOUND, OUTSIDE_TTL = "PRESENT", "NOT_FOUND", "OUTSIDE_TTL"


class OnlineResponse:
    """Values per requested entity row, with a status per feature: PRESENT, NOT_FOUND or
    OUTSIDE_TTL (a value older than the group's TTL, returned as null).

    Kept as columns: ``columns`` maps each entity column, then each feature, to its values
    in request order; ``status_columns`` maps each feature to its statuses (features of one
    group share one tuple). ``to_dict()``, ``to_arrow()`` and ``to_pandas()`` read the
    columns; ``rows`` and ``statuses`` (one dict per entity row) are built on first use.
    """

    __slots__ = ("_rows", "_statuses", "columns", "size", "status_columns")

    def __init__(
        self,
        columns: dict[str, list[Any]],
        status_columns: dict[str, Sequence[str]],
        size: int,
    ) -> None:
        self.columns = columns
        self.status_columns = status_columns
        self.size = size
        self._rows: list[dict[str, Any]] | None = None
        self._statuses: list[dict[str, str]] | None = None

    @classmethod
    def from_rows(
        cls, rows: list[dict[str, Any]], statuses: list[dict[str, str]]
    ) -> OnlineResponse:
        """A response from one dict of values and one of statuses per entity row."""
        columns = {name: [row.get(name) for row in rows] for name in _names(rows)}
        status_columns: dict[str, Sequence[str]] = {
            name: tuple(s.get(name, PRESENT) for s in statuses) for name in _names(statuses)
        }
        return cls(columns, status_columns, len(rows))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per entity row: its entity values, then the features' values."""
        if self._rows is None:
            self._rows = _dicts(self.columns, self.size)
        return self._rows

    @property
    def statuses(self) -> list[dict[str, str]]:
        """One dict per entity row: each feature's status."""
        if self._statuses is None:
            self._statuses = _dicts(self.status_columns, self.size)
        return self._statuses

    def to_dict(self) -> dict[str, list[Any]]:
        """The values as columns: a name -> a list of values, one per entity row."""
        return {name: list(values) for name, values in self.columns.items()}

    def to_arrow(self) -> pa.Table:
        """The values as an Arrow table (types inferred from the values)."""
        return pa.table(self.columns) if self.columns else pa.table({})

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnlineResponse):
            return NotImplemented
        return (self.size, self.to_dict(), self.statuses) == (
            other.size,
            other.to_dict(),
            other.statuses,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OnlineResponse(rows={self.size}, columns={list(self.columns)})"


def _names(dicts: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(chain.from_iterable(dicts)))


def _dicts(columns: Mapping[str, Sequence[Any]], size: int) -> list[dict[str, Any]]:
    if not columns:
        return [{} for _ in range(size)]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def entity_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The entity rows as columns; a column some rows lack holds None for them."""
    first = list(rows[0])
    if sum(map(len, rows)) == len(first) * len(rows):  # then all have the same keys, or
        try:  # some lack one of the first row's
            return {name: list(map(itemgetter(name), rows)) for name in first}
        except KeyError:
            pass
    return {name: [row.get(name) for row in rows] for name in _names(rows)}


def key_rows(rows: list[dict[str, Any]], keys: list[str], what: str) -> list[tuple[Any, ...]]:
    """The ``keys`` of each entity row, as tuples."""
    try:
        if len(keys) == 1:
            return list(zip(map(itemgetter(keys[0]), rows)))
        return list(map(itemgetter(*keys), rows))
    except KeyError as e:
        raise InvalidArgument(
            f"entity rows need {keys} to look up {what}; one lacks {e.args[0]!r}"
        ) from None


def statuses_of(micros: Sequence[int | None], not_before: int | None) -> tuple[str, ...]:
    """Per key: NOT_FOUND without an event time, OUTSIDE_TTL before ``not_before``."""
    if None not in micros and (
        not_before is None or min(cast("Sequence[int]", micros)) >= not_before
    ):
        return (PRESENT,) * len(micros)
    return tuple(
        NOT_FOUND
        if m is None
        else OUTSIDE_TTL
        if not_before is not None and m < not_before
        else PRESENT
        for m in micros
    )


def first_problem(columns: list[Sequence[str]], size: int) -> Sequence[str]:
    """Per row, the first status other than PRESENT among ``columns`` (PRESENT if none):
    the status of a value computed from those columns."""
    troubled = [column for column in columns if set(column) != {PRESENT}]
    if not troubled:
        return (PRESENT,) * size
    if len(troubled) == 1:
        return troubled[0]
    return tuple(
        next((s for s in statuses if s != PRESENT), PRESENT)
        for statuses in zip(*troubled, strict=True)
    )
