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

Two OPTIMIZE runs over the same files must never overlap: deltalake does not see the
conflict, both commit, and every row of the files both rewrote is then in the table twice.
The controller's own lease is not enough (one OPTIMIZE of a large table on S3 can outlast
it), so each compaction holds a lease of its own on its table in the central store
(``plinth.store.lease``), renewed in the background while it runs; a table whose lease
another holds is skipped this time. After its commit, a compaction checks the table's
history: another OPTIMIZE committed between the version it read and its own (its lease
lost to a stalled process) is logged as an error and raised (``Conflict``), never passed
over in silence.

VACUUM runs in full mode: files no version references (an append or an OPTIMIZE killed
before its commit) are removed too, but only once older than ``keep_hours``, so a write in
progress is never touched.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import TableNotFoundError

from plinth.abtests.events import events_uri
from plinth.abtests.traffic import exposures_uri, storage_options
from plinth.errors import Conflict
from plinth.store import lease
from plinth.store.engine import Store

log = logging.getLogger("plinth.abtests")

MIN_FILES = 200
KEEP_HOURS = 1
TARGET_BYTES = 128 * 1024 * 1024
LEASE_SECONDS = 300.0  # renewed every third of it while a compaction runs
_MARK = "plinth.compaction"  # the holder, in the commit's metadata: which OPTIMIZE is ours


@dataclass(frozen=True)
class Compacted:
    uri: str
    files_before: int
    files_after: int
    deleted: int  # files of earlier compactions removed from storage


def lease_name(uri: str) -> str:
    """The name of the lease one compaction of the table at ``uri`` holds."""
    return "abtests-compaction:" + hashlib.sha256(uri.encode()).hexdigest()


def compact(
    uri: str,
    store: Store,
    *,
    min_files: int = MIN_FILES,
    keep_hours: int = KEEP_HOURS,
    lease_seconds: float = LEASE_SECONDS,
) -> Compacted | None:
    """Compact the Delta table at ``uri`` when it has ``min_files`` files or more; None when
    it has fewer, does not exist yet, or another compaction of it holds its lease in
    ``store``. Conflict when another OPTIMIZE committed during this one (see the module's
    docstring)."""
    options = storage_options(uri)
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None
    if len(table.file_uris()) < min_files:
        return None
    name, holder = lease_name(uri), lease.new_holder()
    if not lease.acquire(store, name, holder, lease_seconds):
        log.info("compaction of %s skipped: another compaction holds its lease", uri)
        return None
    keeper = _Renewal(store, name, holder, lease_seconds)
    try:
        # read after the lease is ours: a compaction that ended just before is included
        table = DeltaTable(uri, storage_options=options)
        read = table.version()
        before = len(table.file_uris())
        if before < min_files:
            return None
        table.optimize.compact(
            target_size=TARGET_BYTES,
            commit_properties=CommitProperties(custom_metadata={_MARK: holder}),
        )
        _check_alone(table, read, holder, keeper.lost)
        deleted = table.vacuum(
            retention_hours=keep_hours, enforce_retention_duration=False, dry_run=False, full=True
        )
    finally:
        keeper.stop()
        lease.release(store, name, holder)
    after = len(DeltaTable(uri, storage_options=options).file_uris())
    log.info("compacted %s: %d files into %d", uri, before, after)
    return Compacted(uri, before, after, len(deleted))


def _check_alone(table: DeltaTable, read: int, holder: str, lost: bool) -> None:
    """Conflict when an OPTIMIZE other than ours (``holder``'s) committed after version
    ``read``, up to ours: both may have rewritten the same files, doubling their rows."""
    ours = None
    others = []
    latest = DeltaTable(table.table_uri, storage_options=storage_options(table.table_uri))
    for entry in latest.history(limit=max(1, latest.version() - read + 1)):
        version = entry.get("version")
        if not isinstance(version, int) or version <= read:
            continue
        if entry.get("operation") != "OPTIMIZE":
            continue
        if entry.get(_MARK) == holder:
            ours = version
        else:
            others.append(version)
    clashing = [v for v in others if ours is None or v < ours]
    if clashing:
        said = (
            f"compaction of {table.table_uri}: another OPTIMIZE committed at version(s) "
            f"{', '.join(map(str, clashing))} while this one ran from version {read}"
            f"{' (this compaction lost its lease)' if lost else ''}: rows may be doubled"
        )
        log.error(said)
        raise Conflict(said)


class _Renewal:
    """Renews a lease every third of its length until stopped; ``lost`` when a renewal
    failed (another holder may compact the table meanwhile)."""

    def __init__(self, store: Store, name: str, holder: str, seconds: float) -> None:
        self.lost = False
        self._args = (store, name, holder, seconds)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plinth-compaction", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        store, name, holder, seconds = self._args
        while not self._done.wait(seconds / 3):
            try:
                held = lease.renew(store, name, holder, seconds)
            except Exception:  # the store away: the lease still runs until it expires
                log.warning("compaction: could not renew the lease %s", name, exc_info=True)
                continue
            if not held:
                self.lost = True
                log.error("compaction: lost the lease %s while compacting", name)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def compact_logs(
    root: str, experiment: str, store: Store, *, min_files: int = MIN_FILES
) -> list[Compacted]:
    """Compact ``experiment``'s exposures and events tables, each if it needs it."""
    done = []
    for uri in (exposures_uri(root, experiment), events_uri(root, experiment)):
        found = compact(uri, store, min_files=min_files)
        if found is not None:
            done.append(found)
    return done
