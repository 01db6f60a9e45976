"""The offline store: one Delta Lake table per feature group version.

Every write is ONE Delta commit, so a reader sees all of an insert or none of it, and every
commit stays readable by version or time (time travel). A write upserts on (keys, event
time): the first one creates the table, later ones MERGE (a row with the same keys and event
time replaces the stored one; other rows are appended).

Large inputs: ``write_many`` takes chunks (``ingest.iter_chunks``) and streams them to Delta
as one Arrow stream, so the whole input is still one commit: a new table is written from the
stream, an existing one is merged from it. An error in any chunk, including duplicates
across chunks or a failure of the caller's iterator, aborts the write before the commit:
files already written are never referenced by the log, so no partial data is visible.

Versions: every commit carries a fresh token in its commit metadata (``plinth.commit``), and
the version a write reports is the one the table's history gives that token: under
concurrent writers Delta may retry a commit at a later version than the one the writer
read (a racing first write is committed as version 1, 2, ...), so no version is guessed.
Writers of a local table queue on a lock file inside it (``_plinth.lock``), so they never
lose a race there; a write that fails anyway (or a process killed mid-write) leaves Parquet
files no commit refers to, which the next failed write or ``sweep`` removes while it holds
the lock.

Storage: a local folder, ``file://`` or ``s3://`` (any URI deltalake knows, with
``storage_options``). For S3, credentials, region and endpoint come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, ``PLINTH_S3_ENDPOINT_URL``), read once at construction; explicit
``storage_options`` win. deltalake >= 1.0 makes commits safe on S3 with conditional writes,
so no locking provider or "unsafe rename" option is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import (
    CommitFailedError,
    DeltaError,
    SchemaMismatchError,
    TableNotFoundError,
)

from plinth.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    PlinthError,
    Unavailable,
)
from plinth.features.ingest import check_unique, columns_of, declared_types
from plinth.features.types import FeatureGroup

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_S3_SCHEMES = ("s3", "s3a")
_ENV_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
TOKEN = "plinth.commit"  # in each commit's metadata: which write made it
WRITER = "plinth.written_by"
_LOCK = "_plinth.lock"
_CHANGES = ("num_target_files_added", "num_target_files_removed")
_HISTORY_TRIES = 50


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def s3_storage_options(explicit: dict[str, str]) -> dict[str, str]:
    """deltalake's S3 options from the environment; ``explicit`` options win."""
    env = os.environ
    options = {name: env[name] for name in _ENV_OPTIONS if env.get(name)}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    endpoint = env.get("PLINTH_S3_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    given = {name.upper() for name in explicit}  # deltalake reads keys in either case
    return {**{k: v for k, v in options.items() if k not in given}, **explicit}


def _local_root(root_uri: str) -> str | None:
    if _scheme(root_uri) in ("", "file"):
        path = root_uri.removeprefix("file://")
        return os.path.abspath(os.path.expanduser(path))
    return None


class OfflineTables(ABC):
    """What the feature store does with offline data: the Delta tables of feature groups
    and the training dataset snapshots. ``OfflineStore`` does it on the storage itself; a
    client of a server whose store it cannot reach does it through the server."""

    root: str

    @abstractmethod
    def write(self, group: FeatureGroup, table: pa.Table) -> int:
        """Upsert one prepared table in ONE commit; the Delta version written."""

    @abstractmethod
    def write_many(self, group: FeatureGroup, chunks: Iterable[pa.Table]) -> int:
        """Upsert every prepared chunk in ONE commit; the Delta version written."""

    @abstractmethod
    def version(self, group: FeatureGroup) -> int | None:
        """The latest Delta version, or None when nothing was written yet."""

    @abstractmethod
    def read(
        self,
        group: FeatureGroup,
        as_of: int | datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """The rows at the latest version or at ``as_of`` (a Delta version or a time)."""

    @abstractmethod
    def dataset(self, group: FeatureGroup, as_of: int | datetime | None = None) -> ds.Dataset:
        """The rows as an Arrow dataset (lazy where the storage allows)."""

    @abstractmethod
    def history(self, group: FeatureGroup) -> list[dict[str, Any]]:
        """The table's commits, newest first (see ``OfflineStore.history``)."""

    def snapshot_uri(self, *parts: str) -> str:
        return "/".join([self.root, "training-datasets", *parts])

    @abstractmethod
    def write_snapshot(self, uri: str, table: pa.Table) -> None:
        """Write ``table`` as a new Delta table at ``uri`` (refused if one is there)."""

    @abstractmethod
    def read_snapshot(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        """A training dataset's rows (or entity rows), only ``columns`` when given."""

    @abstractmethod
    def delete_snapshot(self, uri: str) -> None: ...

    @abstractmethod
    def delete_table(self, group: FeatureGroup) -> None:
        """Remove the group's table (nothing happens when there is none)."""


class OfflineStore(OfflineTables):
    """Delta tables under ``{root}/features/{name}/v{version}``."""

    def __init__(self, root_uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.root = (_local_root(root_uri) or root_uri).rstrip("/")
        self._explicit = dict(storage_options or {})
        self._s3 = s3_storage_options(self._explicit)

    def table_uri(self, name: str, version: int) -> str:
        if not _NAME.match(name) or ".." in name:
            raise InvalidArgument(
                f"feature group name {name!r} cannot name a folder; use letters, digits, "
                "'_', '-' and '.'"
            )
        return f"{self.root}/features/{name}/v{version}"

    # -- writing -----------------------------------------------------------------------

    def write(self, group: FeatureGroup, table: pa.Table) -> int:
        """Upsert ``table`` (as ``ingest.prepare`` returns it) in ONE commit; returns the
        Delta version written. An empty table into an existing table commits nothing and
        returns the current version."""
        return self._commit(group, [table], streamed=False)

    def write_many(self, group: FeatureGroup, chunks: Iterable[pa.Table]) -> int:
        """Upsert every chunk in ONE commit, streaming them (see the module docstring).
        Keys and event times of all chunks are held to check duplicates across chunks."""
        return self._commit(group, chunks, streamed=True)

    def _commit(self, group: FeatureGroup, chunks: Iterable[pa.Table], *, streamed: bool) -> int:
        uri = self._uri(group)
        rest = iter(chunks)
        first = next(rest, None)  # outside the storage error mapping: the caller's own errors
        if first is None:
            raise InvalidArgument(f"nothing to write into {group.ref}: no chunks")
        source: _Source | None = None
        token = uuid.uuid4().hex
        commit = CommitProperties(custom_metadata={TOKEN: token, WRITER: _user()})
        with _locked(_local_root(uri)) as local:
            try:
                with self._errors(group.ref, uri, "writing"):
                    existing = self._open(uri)
                    target = None if existing is None else pa.schema(existing.schema().to_arrow())
                    source = _Source(group, first, rest, target)
                    if existing is None:
                        self._create(group, uri, source, commit)
                        existing = DeltaTable(uri, storage_options=self._options(uri))
                    else:
                        pair = [*group.keys, group.event_time]
                        predicate = " AND ".join(f"t.{_quote(c)} = s.{_quote(c)}" for c in pair)
                        merge = existing.merge(
                            source.reader(),
                            predicate,
                            source_alias="s",
                            target_alias="t",
                            streamed_exec=streamed,  # in memory, source statistics prune the scan
                            commit_properties=commit,
                        )
                        done = merge.when_matched_update_all().when_not_matched_insert_all()
                        metrics = done.execute()
                        if not any(metrics.get(m) for m in _CHANGES):  # no commit made
                            return existing.version()
                    return self._version_of(group, existing, token)
            except Exception:
                if local is not None:  # a lost race or an aborted stream: drop its files
                    _sweep_local(local)
                if source is not None and source.error is not None:
                    raise source.error from None  # the real cause, not deltalake's wrapping
                raise

    def _create(
        self, group: FeatureGroup, uri: str, source: _Source, commit: CommitProperties
    ) -> None:
        try:
            write_deltalake(
                uri,
                source.reader(),
                mode="error",
                storage_options=self._options(uri),
                commit_properties=commit,
            )
        except DeltaError:
            if source.error is None and self._open(uri) is not None:
                raise Conflict(
                    f"another writer created the table of {group.ref} at the same time; retry"
                ) from None
            raise

    def _version_of(self, group: FeatureGroup, table: DeltaTable, token: str) -> int:
        """The version Delta gave the commit carrying ``token`` (``table``: brought up to
        date here, without reading its log from the start again)."""
        for limit in (1, 20, None):  # most often the latest commit
            for commit in stable_history(table, limit):
                if commit.get(TOKEN) == token:
                    return int(commit["version"])
        raise Unavailable(f"the commit just written to {group.ref} is missing from its log")

    def sweep(self, group: FeatureGroup) -> list[str]:
        """Remove the Parquet files of a local table that no commit refers to (left by a
        write that failed or was killed); returns their names. Other stores: nothing."""
        with _locked(_local_root(self._uri(group))) as local:
            return [] if local is None else _sweep_local(local)

    # -- reading -----------------------------------------------------------------------

    def version(self, group: FeatureGroup) -> int | None:
        """The latest Delta version, or None when nothing was written yet."""
        uri = self._uri(group)
        with self._errors(group.ref, uri, "reading"):
            table = self._open(uri)
            return None if table is None else table.version()

    def read(
        self,
        group: FeatureGroup,
        as_of: int | datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """The table at its latest version, at Delta version ``as_of``, or as it was at time
        ``as_of`` (timezone-aware): the last commit whose timestamp in ``history`` is at or
        before it."""
        dataset = self.dataset(group, as_of)
        if columns is not None:
            unknown = [c for c in columns if c not in dataset.schema.names]
            if unknown:
                raise InvalidArgument(
                    f"{group.ref} has no column {unknown[0]!r}; it has {dataset.schema.names}"
                )
        uri = self._uri(group)
        with self._errors(group.ref, uri, "reading"):
            return dataset.to_table(columns=columns)

    def dataset(self, group: FeatureGroup, as_of: int | datetime | None = None) -> ds.Dataset:
        """A lazy Arrow dataset of the table's files at ``as_of``: DuckDB and Arrow scans push
        column selection and filters down to the Parquet files."""
        uri = self._uri(group)
        with self._errors(group.ref, uri, "reading"):
            table = DeltaTable(uri, storage_options=self._options(uri))
            if as_of is not None:
                self._travel(table, group, as_of)
            return table.to_pyarrow_dataset()

    def history(self, group: FeatureGroup) -> list[dict[str, Any]]:
        """The table's commits, newest first: version, timestamp (UTC), operation,
        rows_written (= rows_inserted + rows_updated; None where Delta did not count)."""
        uri = self._uri(group)
        with self._errors(group.ref, uri, "reading"):
            commits = stable_history(DeltaTable(uri, storage_options=self._options(uri)))
        return [_summary(commit) for commit in commits]

    # -- snapshots (training datasets) -------------------------------------------------

    def write_snapshot(self, uri: str, table: pa.Table) -> None:
        """Write ``table`` as a new Delta table at ``uri`` (refused if one is there)."""
        with self._errors(f"snapshot {uri}", uri, "writing"):
            write_deltalake(uri, table, mode="error", storage_options=self._options(uri))

    def read_snapshot(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        with self._errors(f"snapshot {uri}", uri, "reading"):
            table = DeltaTable(uri, storage_options=self._options(uri))
            return table.to_pyarrow_table(columns=columns)

    def delete_snapshot(self, uri: str) -> None:
        with self._errors(f"snapshot {uri}", uri, "deleting"):
            _remove(uri, self._options(uri))

    # -- removing ----------------------------------------------------------------------

    def delete_table(self, group: FeatureGroup) -> None:
        """Remove the group's table and every version of it; nothing happens when it does
        not exist. The log goes first: a delete cut short leaves unreferenced files, never
        a table whose log points at missing files."""
        uri = self._uri(group)
        with self._errors(group.ref, uri, "deleting"):
            _remove(uri, self._options(uri))

    # -- helpers -----------------------------------------------------------------------

    def _uri(self, group: FeatureGroup) -> str:
        # the catalog's record wins: the table stays where it was made if the root moves
        return group.table_uri.rstrip("/") or self.table_uri(group.name, group.version)

    def _options(self, uri: str) -> dict[str, str]:
        return self._s3 if _scheme(uri) in _S3_SCHEMES else self._explicit

    def _open(self, uri: str) -> DeltaTable | None:
        try:
            return DeltaTable(uri, storage_options=self._options(uri))
        except TableNotFoundError:
            return None

    def _travel(self, table: DeltaTable, group: FeatureGroup, as_of: int | datetime) -> None:
        if isinstance(as_of, bool) or not isinstance(as_of, int | datetime):
            raise InvalidArgument(
                f"as_of must be a Delta version (int) or a datetime, not {type(as_of).__name__}"
            )
        if isinstance(as_of, int):
            latest = table.version()
            if not 0 <= as_of <= latest:
                raise NotFound(f"{group.ref} has no version {as_of}; its versions run 0..{latest}")
            table.load_as_version(as_of)
            return
        if as_of.tzinfo is None:
            raise InvalidArgument(
                f"as_of {as_of.isoformat()} has no timezone; give an aware time, e.g. "
                "datetime(..., tzinfo=UTC)"
            )
        # By the commit times history() shows. deltalake's own travel by time goes by the log
        # files' modification times, which S3 keeps to the second only (commits in the same
        # second become one), and answers a time before the first commit with the first one.
        at = as_of.timestamp() * 1000
        for commit in stable_history(table):  # newest first
            if commit.get("timestamp", at + 1) <= at:
                table.load_as_version(int(commit["version"]))
                return
        raise NotFound(f"{group.ref} had no data yet at {as_of.isoformat()}")

    @contextmanager
    def _errors(self, what: str, uri: str, doing: str) -> Iterator[None]:
        try:
            yield
        except PlinthError:
            raise
        except TableNotFoundError as e:
            if "File name too long" in str(e):  # the caller's name, not a storage failure
                raise InvalidArgument(
                    f"a name in the location of {what} is too long for the store"
                ) from e
            if doing != "reading":  # e.g. the folder cannot be created
                raise Unavailable(
                    f"offline store failed {doing} {what} at {uri}: {e}",
                    "the offline feature store",
                ) from e
            raise NotFound(f"{what} has no offline data yet (no Delta table at {uri})") from e
        except CommitFailedError as e:
            raise Conflict(
                f"another writer committed to {what} at the same time; retry: {e}"
            ) from e
        except SchemaMismatchError as e:
            raise InvalidArgument(f"the data does not match the table of {what}: {e}") from e
        except (DeltaError, OSError) as e:
            if "table already exists" in str(e).lower():
                raise AlreadyExists(f"{what} exists already") from e
            raise Unavailable(
                f"offline store failed {doing} {what} at {uri}: {e}", "the offline feature store"
            ) from e


class _Source:
    """The chunks of one write as one Arrow stream. An error raised while deltalake pulls
    from it is kept, so the caller sees the error itself rather than deltalake's text."""

    def __init__(
        self,
        group: FeatureGroup,
        first: pa.Table,
        rest: Iterator[pa.Table],
        target: pa.Schema | None,
    ) -> None:
        self.group = group
        self.error: BaseException | None = None
        self._first = _conform(first, group, target)
        self._rest = rest
        self.schema: pa.Schema = self._first.schema

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        pair = [*self.group.keys, self.group.event_time]
        seen: list[pa.Table] = []
        try:
            for chunk in chain([self._first], self._rest):
                chunk = _conform(chunk, self.group, self.schema)
                seen.append(chunk.select(pair))
                yield from chunk.to_batches()
            if len(seen) > 1:  # each chunk was checked by ingest.prepare
                check_unique(pa.concat_tables(seen), self.group)
        except BaseException as e:
            self.error = e
            raise


def _conform(chunk: pa.Table, group: FeatureGroup, target: pa.Schema | None) -> pa.Table:
    """Check a chunk's layout and cast its keys to the stored key types."""
    if not isinstance(chunk, pa.Table):
        raise InvalidArgument(f"a chunk must be a pyarrow Table, not {type(chunk).__name__}")
    expected = columns_of(group)
    if chunk.column_names != expected:
        raise InvalidArgument(
            f"the data for {group.ref} has columns {chunk.column_names}, not {expected}; "
            "pass it through plinth.features.ingest.prepare first"
        )
    for name, kind in declared_types(group).items():
        if chunk.schema.field(name).type != kind:
            raise InvalidArgument(
                f"column {name!r} for {group.ref} is {chunk.schema.field(name).type}, not "
                f"{kind}; pass the data through plinth.features.ingest.prepare first"
            )
    chunk = chunk.replace_schema_metadata(None)
    if target is None or chunk.schema.equals(target):
        return chunk
    try:  # e.g. int32 keys into a table that stores int64 keys
        return chunk.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        raise InvalidArgument(
            f"the data for {group.ref} ({chunk.schema.types}) does not fit the stored "
            f"table ({target.types}): {e}"
        ) from e


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def stable_history(table: DeltaTable, limit: int | None = None) -> list[dict[str, Any]]:
    """``table.history(limit)`` with the right version numbers. deltalake numbers the
    commits it lists down from the version the table object holds, so a commit landing
    between loading the table and listing its log shifts every number by one: the listing
    is repeated until the table's latest version holds still around it."""
    for _ in range(_HISTORY_TRIES):
        table.update_incremental()
        version = table.version()
        commits = table.history(limit)
        table.update_incremental()
        if table.version() == version:
            return commits
    raise Conflict(f"the log of the Delta table at {table.table_uri} keeps moving; retry")


def _user() -> str:
    from plinth.config import local_user as owner

    return owner()


@contextmanager
def _locked(local: str | None) -> Iterator[str | None]:
    """Hold the write lock of a local table (None: not local, no lock)."""
    if local is None:
        yield None
        return
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): Delta's own conflict checks only
        yield local
        return
    try:
        os.makedirs(local, exist_ok=True)
        handle = open(os.path.join(local, _LOCK), "a+b")  # noqa: SIM115 - closed below
    except OSError as e:
        raise Unavailable(f"offline store failed writing at {local}: {e}") from e
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield local
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep_local(local: str) -> list[str]:
    """Delete the data files under ``local`` that no version of its log refers to. Called
    with the table's lock held, so no writer is between writing files and committing."""
    log = os.path.join(local, "_delta_log")
    if not os.path.isdir(log):
        known: set[str] = set()
    else:
        known = _referenced(log)
    removed = []
    for folder, subfolders, files in os.walk(local):
        subfolders[:] = [d for d in subfolders if not d.startswith(("_", "."))]
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), local).replace(os.sep, "/")
            if name.endswith(".parquet") and path not in known:
                os.remove(os.path.join(folder, name))
                removed.append(path)
    return removed


def _referenced(log: str) -> set[str]:
    """Every data file an add or remove action of the log names (removed files stay for
    time travel), including those in checkpoints."""
    from urllib.parse import unquote

    import pyarrow.parquet as pq

    paths: set[str] = set()
    for name in os.listdir(log):
        full = os.path.join(log, name)
        if name.endswith(".json"):
            with open(full, encoding="utf-8") as lines:
                for line in lines:
                    action = json.loads(line) if line.strip() else {}
                    for kind in ("add", "remove"):
                        if kind in action:
                            paths.add(unquote(action[kind]["path"]))
        elif ".checkpoint" in name and name.endswith(".parquet"):
            checkpoint = pq.read_table(full, columns=["add", "remove"])
            for kind in ("add", "remove"):
                for entry in checkpoint[kind].to_pylist():
                    if entry is not None:
                        paths.add(unquote(entry["path"]))
    return paths


def _summary(commit: dict[str, Any]) -> dict[str, Any]:
    metrics = commit.get("operationMetrics") or {}
    at = commit.get("timestamp")
    inserted = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows"))
    updated = metrics.get("num_target_rows_updated", 0 if inserted is not None else None)
    return {
        "version": commit["version"],
        "timestamp": None if at is None else datetime.fromtimestamp(at / 1000, UTC),
        "operation": commit.get("operation"),
        "rows_written": None if inserted is None else inserted + (updated or 0),
        "rows_inserted": inserted,
        "rows_updated": updated,
        "written_by": commit.get(WRITER),
    }


def _remove(uri: str, options: dict[str, str]) -> None:
    local = _local_root(uri)
    if local is not None:
        if os.path.isdir(local):
            shutil.rmtree(os.path.join(local, "_delta_log"), ignore_errors=True)
            shutil.rmtree(local)
        return
    try:
        DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return
    _delete_remote(uri, options)


def _delete_remote(uri: str, options: dict[str, str]) -> None:
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    handler = DeltaStorageHandler(uri, options)
    handler.delete_dir("_delta_log")
    files = handler.get_file_info_selector(pafs.FileSelector("", recursive=True))
    for info in files:  # object stores have no folders to remove, only keys
        if info.type == pafs.FileType.File:
            handler.delete_file(info.path)
