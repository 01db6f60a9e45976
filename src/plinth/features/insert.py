"""One insert into a feature group: prepare, validate, ONE Delta commit, statistics, record.

An input of at most ``chunk_rows`` rows is judged and written whole. A larger one streams:
chunks are prepared one at a time and flow into a single Delta commit, while only the
columns the expectations and statistics need (the features and any column an expectation
names) are kept; the expectations are judged on those before the commit is made, so a
strict refusal, a bad chunk or a failing source leaves no commit at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument
from plinth.faults import crash_point
from plinth.features.recording import record
from plinth.features.types import CommitInfo, ExpectationResult, FeatureGroup, ValidationReport

if TYPE_CHECKING:
    from plinth.features.offline import OfflineTables
    from plinth.features.service import FeatureService

logger = logging.getLogger(__name__)

CHUNK_ROWS = 500_000
Progress = Callable[[int], None]  # called with the rows prepared so far


class _Refused(Exception):
    """Raised inside the stream so deltalake aborts the commit."""


def insert(
    service: FeatureService,
    offline: OfflineTables,
    group: FeatureGroup,
    data: Any,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> tuple[CommitInfo, pa.Table | None]:
    """Insert ``data``; returns the commit and, for an input small enough to be written
    whole, the prepared table (None when it streamed)."""
    from plinth.features.ingest import iter_chunks

    chunks = iter_chunks(data, group, chunk_rows)
    first = next(chunks)
    second = next(chunks, None)
    if second is None and first.num_rows == 0:
        # a commit of nothing would be recorded under whatever version the table has
        # (another writer's), and a remote client has nothing to send: refused alike
        raise InvalidArgument(f"nothing to insert into {group.ref}: the data has no rows")
    if second is None:
        if progress is not None:
            progress(first.num_rows)
        results = _judge(service, group, first)
        version = offline.write(group, first)
        crash_point("feature-commit")
        _record_earlier(service, offline, group, version)
        return record(service, group, version, first, results), first

    judged: list[pa.Table] = []
    outcome: list[tuple[pa.Table, list[ExpectationResult]]] = []
    wanted = _judged_columns(group)

    def stream() -> Iterator[pa.Table]:
        done = 0
        for chunk in chain([first, second], chunks):
            judged.append(chunk.select(wanted))
            done += chunk.num_rows
            if progress is not None:
                progress(done)
            yield chunk
        whole = pa.concat_tables(judged)
        judged.clear()
        try:
            outcome.append((whole, _judge(service, group, whole)))
        except InvalidArgument as e:
            raise _Refused(e) from None

    try:
        version = offline.write_many(group, stream())
    except _Refused as refused:
        raise refused.args[0] from None
    crash_point("feature-commit")
    _record_earlier(service, offline, group, version)
    whole, results = outcome[0]
    return record(service, group, version, whole, results), None


def _record_earlier(
    service: FeatureService, offline: OfflineTables, group: FeatureGroup, version: int
) -> None:
    """Record every commit before ``version`` that has no record yet, so that the commit
    ``version`` is judged against is Delta version ``version - 1``: one whose writer was
    killed before recording it, or one a concurrent writer has not recorded yet (recorded
    here from the table, as ``repair`` does; its writer then finds it recorded)."""
    from plinth.features.repair import repair

    if version > 0:
        repair(service, offline, group, sweep=False, latest=version - 1)


def _judged_columns(group: FeatureGroup) -> list[str]:
    named = {c for e in group.expectations for c in [e.column, *e.columns] if c}
    stored = [*group.keys, group.event_time, *(f.name for f in group.features)]
    return [c for c in stored if c in named or c in {f.name for f in group.features}]


def _judge(
    service: FeatureService, group: FeatureGroup, table: pa.Table
) -> list[ExpectationResult]:
    """The expectation results; a strict refusal is recorded and raised."""
    from plinth.features.validation import validate

    results = validate(table, group.expectations) if group.expectations else []
    if group.validation_mode == "strict" and not all(r.passed for r in results):
        service.record_report(
            group.name,
            ValidationReport(group.name, group.version, "strict", False, table.num_rows, results),
        )
        failed = "; ".join(
            f"{r.expectation.kind} {r.expectation.column or r.expectation.columns}: {r.detail}"
            for r in results
            if not r.passed
        )
        raise InvalidArgument(f"insert into {group.ref} refused (strict validation): {failed}")
    return results
