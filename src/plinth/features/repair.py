"""Reconciling the offline tables with the central store's record of their commits.

An insert is one Delta commit, then its record (statistics, validation report) in the
central store: a process killed between the two leaves readable rows that no record
describes. ``repair`` finds every commit of a group's table without a record and records
it as the insert would have: the rows it wrote (the table at that version less the table
before it), their statistics and, when the group has expectations, a validation report.
It runs in each insert before the insert's own record, for the commits before it (reading
the log only when one of them has no record), and from
``plinth features repair``, which also removes the Parquet files of writes that never
committed (``OfflineStore.sweep``; a write that fails removes its own). Recording is idempotent:
a commit recorded by both its writer and a repair is recorded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from plinth.features.offline import OfflineStore, OfflineTables
from plinth.features.recording import record
from plinth.features.types import CommitInfo, FeatureGroup

if TYPE_CHECKING:
    from plinth.features.service import FeatureService


@dataclass(frozen=True)
class Repaired:
    group: str
    version: int
    recorded: list[CommitInfo]  # commits found without a record, now recorded
    removed_files: list[str]  # data files no commit refers to, now deleted


def repair(
    service: FeatureService,
    offline: OfflineTables,
    group: FeatureGroup,
    sweep: bool = True,
    latest: int | None = None,
) -> Repaired:
    """Record the group's unrecorded commits up to ``latest`` (default: the table's latest
    version); with ``sweep``, also delete orphan files (of a table this process writes
    itself: a server that holds the table sweeps its own)."""
    removed = offline.sweep(group) if sweep and isinstance(offline, OfflineStore) else []
    latest = offline.version(group) if latest is None else latest
    if latest is None:
        return Repaired(group.name, group.version, [], removed)
    recorded = set(service.list_commit_versions(group.name, group.version))
    if recorded.issuperset(range(latest + 1)):  # Delta numbers commits 0, 1, 2, ...
        return Repaired(group.name, group.version, [], removed)
    found = []
    for commit in sorted(offline.history(group), key=lambda c: int(c["version"])):
        version = int(commit["version"])
        if version in recorded or version > latest:
            continue
        rows = _rows_of(offline, group, version)
        results = []
        if group.expectations:
            from plinth.features.validation import validate

            results = validate(rows, group.expectations)
        found.append(
            record(
                service,
                group,
                version,
                rows,
                results,
                commit["timestamp"],
            )
        )
    return Repaired(group.name, group.version, found, removed)


def _rows_of(offline: OfflineTables, group: FeatureGroup, version: int) -> pa.Table:
    """The rows commit ``version`` wrote: added or changed since the version before."""
    table = offline.read(group, as_of=version)
    if version == 0:
        return table
    from plinth.features import duck

    with duck.cursor() as connection:
        connection.register("now_rows", table)
        connection.register("before_rows", offline.read(group, as_of=version - 1))
        return connection.sql(
            "SELECT * FROM now_rows EXCEPT SELECT * FROM before_rows"
        ).to_arrow_table()
