"""Compaction of an experiment's exposure and event logs.

The router appends its exposures about once a second per worker, and every events request
is a commit of its own: a running experiment's tables gain tens of thousands of small
Parquet files a day, and reading results slows with every file. ``compact`` rewrites a
table's small files into few large ones (Delta's OPTIMIZE: one commit that removes the old
files and adds the new, so readers see the same rows before and after, and appends that
commit meanwhile are kept), then deletes files that left the table more than
``keep_hours`` ago (VACUUM), long after any read that listed them has finished.

The A/B controller compacts the logs of each running experiment once they hold
``min_files`` files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from plinth.abtests.events import events_uri
from plinth.abtests.traffic import exposures_uri, storage_options

log = logging.getLogger("plinth.abtests")

MIN_FILES = 200
KEEP_HOURS = 1
TARGET_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Compacted:
    uri: str
    files_before: int
    files_after: int
    deleted: int  # files of earlier compactions removed from storage


def compact(
    uri: str, *, min_files: int = MIN_FILES, keep_hours: int = KEEP_HOURS
) -> Compacted | None:
    """Compact the Delta table at ``uri`` when it has ``min_files`` files or more; None when
    it has fewer, or does not exist yet."""
    options = storage_options(uri)
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None
    before = len(table.file_uris())
    if before < min_files:
        return None
    table.optimize.compact(target_size=TARGET_BYTES)
    deleted = table.vacuum(
        retention_hours=keep_hours, enforce_retention_duration=False, dry_run=False
    )
    after = len(DeltaTable(uri, storage_options=options).file_uris())
    log.info("compacted %s: %d files into %d", uri, before, after)
    return Compacted(uri, before, after, len(deleted))


def compact_logs(root: str, experiment: str, *, min_files: int = MIN_FILES) -> list[Compacted]:
    """Compact ``experiment``'s exposures and events tables, each if it needs it."""
    done = []
    for uri in (exposures_uri(root, experiment), events_uri(root, experiment)):
        found = compact(uri, min_files=min_files)
        if found is not None:
            done.append(found)
    return done
