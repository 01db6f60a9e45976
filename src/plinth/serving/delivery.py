"""The score history Delta table: one append commit per job, found by its job key, fed
chunk by chunk from a writer thread."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import Conflict, InvalidArgument, Unavailable

if TYPE_CHECKING:
    from deltalake import DeltaTable

from plinth.serving.sources import _storage_options

KEY = "plinth.job_key"  # in the commit metadata


class Concurrent(Exception):
    """Another run of the same job committed first."""


# -- output ----------------------------------------------------------------------------


class ScoreTable:
    """The score history Delta table: one append commit per job, found by its job key."""

    def __init__(self, uri: str) -> None:
        remote = "://" in uri and not uri.startswith("file://")
        self.uri = (
            uri if remote else os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
        )
        self.options = _storage_options(uri)

    def columns(self) -> list[str] | None:
        """The table's column names; None when there is no table yet."""
        table = self._open()
        return None if table is None else pa.schema(table.schema().to_arrow()).names

    def delivered(self, job_key: str) -> tuple[int | None, int | None] | None:
        """(Delta version, rows) of the commit of ``job_key``; None when not delivered."""
        table = self._open()
        if table is None or table.transaction_version(_app_id(job_key)) is None:
            return None
        return _find(table, job_key)

    def append(
        self, chunks: Iterator[pa.Table], job_key: str, metadata: dict[str, Any]
    ) -> int | None:
        """Commit every chunk as ONE append carrying ``job_key``; the Delta version written
        (None: no rows, nothing written). ``chunks`` is pulled here, on the caller's thread,
        while a writer thread streams them into Delta: an error raised by ``chunks`` aborts
        the commit and is raised as itself. Raises ``Concurrent`` when another run of the
        job committed first."""
        from deltalake import CommitProperties, Transaction

        first = next(chunks, None)
        if first is None:
            return None
        # Delta detects a commit with this job's transaction made after the snapshot the
        # write reads, but not while it creates a table: so the table is made first (an
        # empty commit, once per table) and the key checked in the snapshot written to.
        table = self._open() or self._create(first.schema)
        if table.transaction_version(_app_id(job_key)) is not None:
            raise Concurrent()
        table = self._reshaped(table, first.schema)
        schema = pa.schema(table.schema().to_arrow())
        commit = CommitProperties(
            custom_metadata=metadata, app_transactions=[Transaction(_app_id(job_key), 1)]
        )
        pipe = _Pipe(schema)
        writer = threading.Thread(target=pipe.write, args=(table, self.options, commit))
        writer.start()
        try:
            for chunk in chain([first], chunks):
                pipe.put(_conform(chunk, schema, self.uri))
            pipe.put(None)
        except _WriterStopped:
            pass  # its failure is reported below
        except BaseException:
            pipe.aborted = True
            writer.join()
            raise
        writer.join()
        if pipe.failure is not None:
            raise self._failure(pipe.failure, job_key)
        version = _find(self._open() or table, job_key)[0]
        if version is None:
            raise Unavailable(f"the commit of job {job_key} is missing from {self.uri}")
        return version

    def _create(self, schema: pa.Schema) -> DeltaTable:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            DeltaTable.create(self.uri, schema, mode="ignore", storage_options=self.options)
        except (DeltaError, OSError) as e:
            if self._open() is None:  # not a rival creating it at the same time
                raise Unavailable(f"cannot create the score table at {self.uri}: {e}") from e
        table = self._open()
        if table is None:
            raise Unavailable(f"the score table at {self.uri} vanished as it was created")
        return table

    def _reshaped(self, table: DeltaTable, schema: pa.Schema) -> DeltaTable:
        """A table that holds no rows yet takes the columns of the scores: the empty table
        a failed or blocked first job created must not hold the next job to its layout."""
        if pa.schema(table.schema().to_arrow()).names == schema.names or table.file_uris():
            return table
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            DeltaTable.create(self.uri, schema, mode="overwrite", storage_options=self.options)
        except (DeltaError, OSError) as e:
            raise Unavailable(f"cannot lay out the empty score table at {self.uri}: {e}") from e
        return self._open() or table

    def _failure(self, e: BaseException, job_key: str) -> BaseException:
        from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError

        if not isinstance(e, DeltaError | OSError):
            return e
        if isinstance(e, SchemaMismatchError):
            return InvalidArgument(f"the scores do not fit the table at {self.uri}: {e}")
        if self.delivered(job_key) is not None:
            return Concurrent()
        if isinstance(e, CommitFailedError):
            return Conflict(f"another writer committed to {self.uri} at the same time; retry: {e}")
        return Unavailable(f"writing the scores to {self.uri} failed: {e}")

    def _open(self) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, storage_options=self.options)
        except TableNotFoundError:
            return None
        except OSError as e:
            raise Unavailable(f"cannot read the score table at {self.uri}: {e}") from e


class _WriterStopped(Exception):
    pass


class _Pipe:
    """Chunks handed from the scoring thread to the thread writing them into Delta. Scoring
    may read Delta tables itself (enrichment), which it cannot do from inside deltalake's
    pull of the stream; and it keeps the caller's thread, where signals arrive."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=2)
        self.aborted = False
        self.failure: BaseException | None = None
        self.finished = threading.Event()

    def write(self, target: Any, options: dict[str, str], commit: Any) -> None:
        from deltalake import write_deltalake

        reader = pa.RecordBatchReader.from_batches(self.schema, self._batches())
        try:
            write_deltalake(
                target, reader, mode="append", storage_options=options, commit_properties=commit
            )
        except BaseException as e:
            self.failure = e
        finally:
            self.finished.set()

    def put(self, chunk: pa.Table | None) -> None:
        while not self.finished.is_set():
            try:
                self.queue.put(chunk, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _WriterStopped()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while not self.aborted:
            try:
                chunk = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if chunk is None:
                return
            yield from chunk.to_batches()
        raise InvalidArgument("scoring stopped: the commit is abandoned")


def as_micros(values: pa.ChunkedArray | pa.Array) -> Any:
    # Delta keeps microseconds: nanosecond input times are cut there, as Delta would
    kind = values.type
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        return values.cast(pa.timestamp("us", kind.tz), safe=False)
    return values


def constant_columns(values: dict[str, Any], rows: int) -> dict[str, pa.Array]:
    return {name: pa.repeat(pa.scalar(value), rows) for name, value in values.items()}


def _conform(chunk: pa.Table, schema: pa.Schema, uri: str) -> pa.Table:
    if chunk.schema.equals(schema):
        return chunk
    if chunk.column_names != schema.names:
        raise InvalidArgument(
            f"the scores have columns {chunk.column_names}, but the table at {uri} has "
            f"{schema.names}; write them to another table"
        )
    try:
        return chunk.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidArgument(
            f"the scores ({chunk.schema.types}) do not fit the table at {uri} ({schema.types}): {e}"
        ) from e


def _app_id(job_key: str) -> str:
    return f"plinth.score.{job_key}"


def _find(table: DeltaTable, job_key: str) -> tuple[int | None, int | None]:
    from plinth.features.offline import stable_history

    # a job's commit is most often among the latest: look there before reading the whole log
    for limit in (20, None):
        for commit in stable_history(table, limit):  # newest first
            if commit.get(KEY) == job_key:
                rows = (commit.get("operationMetrics") or {}).get("num_added_rows")
                return int(commit["version"]), None if rows is None else int(rows)
    return None, None  # delivered, but its commit info was cleaned from the log
