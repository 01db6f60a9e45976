"""The exposure log: which unit saw which arm of which experiment, when, through which
request and model version. The router records an exposure per routed request; a background
thread appends them, grouped by experiment, to one Delta table per experiment::

    {root}/abtests/{experiment}/exposures
        at_ms int64 (ms since the epoch, UTC), unit string, arm string,
        request_id string, model_version string (null when the arm did not say),
        latency_ms float64 (the assigned arm's call, from sending to its answer or failure;
        null in rows written before the column existed),
        outcome string ("ok", or "fallback:timeout" | "fallback:unreachable" |
        "fallback:server_error" | "fallback:client_error" when the assigned arm failed
        and control answered)

An exposure records the assigned arm (intent to treat) whatever answered. Appends merge the
schema, so a table written before a column was added takes new rows (old rows read null).

``record`` never blocks: at ``capacity`` queued exposures it drops and counts
(``dropped``). A store that fails costs the batch it was writing (``failed``), never the
caller; an exposure that cannot be a row (a unit that is not text) costs only itself
(``failed``, its reason logged). ``close`` counts what a hanging store kept from being
written (queued: ``dropped``; in flight: ``failed``) and logs it. The same writer pattern
as the prediction log (``plinth.serving.predlog``).

Where a batch goes is the log's ``sink``: by default the Delta table under ``root_uri``;
a remote client's router writes to its server's artifact store directly when every party
can reach it, else through the server (``plinth.abtests.exposures_remote``), which checks
a batch whole (``check_batch``) and appends it in one commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from plinth.abtests.buckets import MAX_UNIT_CHARS
from plinth.errors import Conflict, InvalidArgument, Unavailable
from plinth.features.offline import s3_storage_options

if TYPE_CHECKING:
    from plinth.abtests.types import Experiment

log = logging.getLogger("plinth.abtests")

# a log row (an exposure, an event) dated later than this ahead of the clock is refused
MAX_FUTURE_MS = 5 * 60 * 1000


def storage_options(uri: str) -> dict[str, str]:
    """The credentials of the object store holding the log at ``uri`` (none for a folder)."""
    return s3_storage_options({}) if uri.startswith(("s3://", "s3a://")) else {}


SCHEMA = pa.schema(
    [
        pa.field("at_ms", pa.int64()),
        pa.field("unit", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("outcome", pa.string()),
    ]
)


@dataclass(frozen=True)
class Exposure:
    experiment: str
    arm: str
    unit: str
    request_id: str
    model_version: str | None
    at_ms: int
    latency_ms: float | None = None
    outcome: str = "ok"


def exposures_uri(root_uri: str, experiment: str) -> str:
    """Where ``experiment``'s exposures are (a local path or an object-store URI)."""
    if "://" in root_uri and not root_uri.startswith("file://"):
        return f"{root_uri.rstrip('/')}/abtests/{experiment}/exposures"
    local = os.path.abspath(os.path.expanduser(root_uri.removeprefix("file://")))
    return os.path.join(local, "abtests", experiment, "exposures")


ExposureSink = Callable[[str, pa.Table], None]
"""Writes one experiment's batch of exposures (a table of ``SCHEMA``), or raises."""


class DeltaExposures:
    """The sink writing straight to the Delta tables under ``root_uri``."""

    def __init__(self, root_uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.root_uri = root_uri
        remote = "://" in root_uri and not root_uri.startswith("file://")
        explicit = dict(storage_options or {})
        self.storage_options = s3_storage_options(explicit) if remote else explicit or None

    def __call__(self, experiment: str, table: pa.Table) -> None:
        uri = exposures_uri(self.root_uri, experiment)
        append(uri, table, self.storage_options, "the exposure log", merge_schema=True)


class ExposureLog:
    """Exposures queued by ``record`` and written in batches, one per experiment, by
    ``sink`` (default: the Delta tables under ``root_uri``)."""

    def __init__(
        self,
        root_uri: str | None = None,
        capacity: int = 100_000,
        flush_seconds: float = 1.0,
        storage_options: dict[str, str] | None = None,
        batch_rows: int = 50_000,
        *,
        sink: ExposureSink | None = None,
    ) -> None:
        if sink is None:
            if root_uri is None:
                raise InvalidArgument("an exposure log needs a root_uri or a sink")
            sink = DeltaExposures(root_uri, storage_options)
        self.sink = sink
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.written = 0
        self.dropped = 0  # not kept: the log was full
        self.failed = 0  # kept, but their write failed
        self._queue: deque[Exposure] = deque()
        self._writing = False
        self._pending = 0  # rows of the batch being written, not yet counted
        self._abandoned = False  # closed while a write hung: it counts no more
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plinth-exposures", daemon=True)
        self._thread.start()

    def record(self, exposure: Exposure) -> bool:
        """Queue ``exposure``; False when the log is full (dropped and counted)."""
        with self._lock:
            if len(self._queue) >= self.capacity or self._stop.is_set():
                self.dropped += 1
                return False
            self._queue.append(exposure)
            if len(self._queue) >= self.batch_rows:
                self._wake.set()
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued now (waits up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._writing:
                    return
            self._wake.set()
            time.sleep(0.005)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop, within about ``timeout`` seconds. Whatever a
        hanging sink kept from being written by then is counted and logged: the rows
        still queued as ``dropped``, those of the write in flight as ``failed`` (should
        that write end later, it is not counted again)."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
            stuck = self._pending if self._thread.is_alive() else 0
            if stuck:
                self.failed += stuck
                self._abandoned = True
        if left or stuck:
            log.warning(
                "exposure log: closed with %d exposures unwritten (%d queued, dropped; "
                "%d in a write that did not end, failed)",
                left + stuck,
                left,
                stuck,
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Write what is queued, in batches; past the first batch only while full batches
        wait. Rows that arrive during a write wait for the next tick (or a flush): under
        steady traffic one commit a tick, not one every write's length of small files."""
        while True:
            with self._lock:
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self.batch_rows))
                ]
                self._writing = bool(batch)
                self._pending = len(batch)
            if not batch:
                return
            self._write(batch)
            with self._lock:
                self._writing = False
                if len(self._queue) < self.batch_rows:
                    return

    def _write(self, batch: list[Exposure]) -> None:
        groups: dict[str, list[Exposure]] = {}
        for exposure in batch:
            groups.setdefault(exposure.experiment, []).append(exposure)
        for experiment, rows in groups.items():
            table = _table_of_good(rows, experiment)
            self._count(0, len(rows) - table.num_rows)  # the bad rows, logged one by one
            if table.num_rows == 0:
                continue
            try:
                self.sink(experiment, table)
                self._count(table.num_rows, 0)
            except Exception as e:  # the log must never take the router down
                self._count(0, table.num_rows)
                log.warning(
                    "exposure log: could not write %d rows of %s: %s",
                    table.num_rows,
                    experiment,
                    e,
                )

    def _count(self, written: int, failed: int) -> None:
        with self._lock:
            self._pending -= written + failed
            if not self._abandoned:  # else close counted them already
                self.written += written
                self.failed += failed


COMMIT_ATTEMPTS = 8


def append(
    uri: str,
    table: pa.Table,
    options: dict[str, str] | None,
    what: str,
    *,
    merge_schema: bool = False,
) -> None:
    """Append ``table`` to the Delta table at ``uri`` in one commit, made again when another
    writer committed first (several router workers, or event batches, creating a new
    experiment's table at once race for its first commit); Conflict when that keeps
    happening, Unavailable when the store fails. ``merge_schema``: columns of ``table`` the
    Delta table lacks are added to it (its older rows read null)."""
    schema_mode: Literal["merge"] | None = "merge" if merge_schema else None
    import random

    for attempt in range(COMMIT_ATTEMPTS):
        try:
            write_deltalake(
                uri, table, mode="append", schema_mode=schema_mode, storage_options=options
            )
            return
        except CommitFailedError as e:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise Conflict(f"{what}: other writers kept committing first; retry: {e}") from e
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        except (DeltaError, OSError) as e:
            raise Unavailable(f"{what} could not be written: {e}", what) from e


def _table_of_good(rows: list[Exposure], experiment: str) -> pa.Table:
    """``rows`` as a table; when one cannot be (a unit that is not text, say), the table
    of the rows that can, each bad one logged: one row must not cost the others."""
    try:
        return _table(rows)
    except Exception:  # find the bad rows one by one below
        pass
    good = []
    for row in rows:
        try:
            good.append(_table([row]))
        except Exception as e:
            log.warning(
                "exposure log: an exposure of %s could not be written (%.200r): %s",
                experiment,
                row,
                e,
            )
    return pa.concat_tables(good) if good else _table([])


def _table(rows: list[Exposure]) -> pa.Table:
    return pa.table(
        {
            "at_ms": [r.at_ms for r in rows],
            "unit": [r.unit for r in rows],
            "arm": [r.arm for r in rows],
            "request_id": [r.request_id for r in rows],
            "model_version": [r.model_version for r in rows],
            "latency_ms": [r.latency_ms for r in rows],
            "outcome": [r.outcome for r in rows],
        },
        schema=SCHEMA,
    )


# -- batches from elsewhere (a remote router's, through the server) ----------------------

OUTCOMES = (
    "ok",
    "fallback:timeout",
    "fallback:unreachable",
    "fallback:server_error",
    "fallback:client_error",
)
MAX_VERSION_CHARS = 100  # a model version's name
MAX_BATCH_ROWS = 100_000  # a router sends at most its batch_rows (50,000) at once
_REQUIRED = ("at_ms", "unit", "arm", "request_id")


def check_batch(exp: Experiment, table: pa.Table, *, now_ms: int | None = None) -> pa.Table:
    """A batch of ``exp``'s exposures checked whole, as ``SCHEMA`` (a missing optional
    column is null, a missing outcome "ok"); InvalidArgument names the first fault as
    ``exposures.column`` or ``exposures[i].column``."""

    if table.num_rows == 0:
        raise InvalidArgument("exposures: the batch is empty")
    if table.num_rows > MAX_BATCH_ROWS:
        raise InvalidArgument(
            f"exposures: at most {MAX_BATCH_ROWS:,} rows per batch, got {table.num_rows:,}"
        )
    names = table.schema.names
    for name in names:
        if SCHEMA.get_field_index(name) < 0:
            raise InvalidArgument(
                f"exposures.{name}: not a column of the exposure log "
                f"(its columns are {', '.join(SCHEMA.names)})"
            )
    if len(set(names)) < len(names):
        raise InvalidArgument("exposures: a column is given twice")
    for name in _REQUIRED:
        if name not in names:
            raise InvalidArgument(f"exposures.{name}: missing (the column is required)")
    columns: dict[str, pa.ChunkedArray] = {}
    for field in SCHEMA:
        if field.name not in names:
            n = table.num_rows
            filled = pa.array(["ok"] * n) if field.name == "outcome" else pa.nulls(n, field.type)
            columns[field.name] = pa.chunked_array([filled], field.type)
            continue
        column = table.column(field.name)
        if column.type != field.type:
            raise InvalidArgument(
                f"exposures.{field.name}: must be {field.type}, got {column.type}"
            )
        if field.name in (*_REQUIRED, "outcome"):
            _first(pc.is_null(column), f"{field.name}", "missing (null)")
        columns[field.name] = column
    now = int(time.time() * 1000) if now_ms is None else now_ms
    at = columns["at_ms"]
    _first(pc.less(at, 0), "at_ms", "before 1970")
    _first(
        pc.greater(at, now + MAX_FUTURE_MS),
        "at_ms",
        f"in the future (at most {MAX_FUTURE_MS // 1000} s ahead is accepted)",
    )
    for name in ("unit", "request_id"):  # buckets.check_unit_id's rule
        lengths = pc.utf8_length(columns[name])
        _first(pc.equal(lengths, 0), name, "must not be empty")
        _first(pc.greater(lengths, MAX_UNIT_CHARS), name, f"at most {MAX_UNIT_CHARS} characters")
    long_version = pc.greater(pc.utf8_length(columns["model_version"]), MAX_VERSION_CHARS)
    _first(
        pc.fill_null(long_version, False),
        "model_version",
        f"at most {MAX_VERSION_CHARS} characters",
    )
    arms = [arm.name for arm in exp.arms]
    _first(
        pc.invert(pc.is_in(columns["arm"], value_set=pa.array(arms, pa.string()))),
        "arm",
        f"not an arm of {exp.name!r} (its arms are {', '.join(arms)})",
        columns["arm"],
    )
    latency = columns["latency_ms"]
    bad_latency = pc.or_(pc.less(latency, 0), pc.invert(pc.is_finite(latency)))
    _first(pc.fill_null(bad_latency, False), "latency_ms", "must be finite and at least 0")
    _first(
        pc.invert(pc.is_in(columns["outcome"], value_set=pa.array(OUTCOMES, pa.string()))),
        "outcome",
        f"must be one of {', '.join(OUTCOMES)}",
        columns["outcome"],
    )
    return pa.table(columns, schema=SCHEMA)


def _first(
    bad: pa.ChunkedArray | pa.Array,
    column: str,
    fault: str,
    values: pa.ChunkedArray | None = None,
) -> None:
    """InvalidArgument naming the first row where ``bad`` holds (and its value)."""
    at = pc.index(bad, True).as_py()
    if at < 0:
        return
    shown = "" if values is None else f"{values[at].as_py()!r}: "
    raise InvalidArgument(f"exposures[{at}].{column}: {shown}{fault}")


def write_batch(root_uri: str, experiment: str, table: pa.Table) -> None:
    """Append a checked batch to ``experiment``'s exposures under ``root_uri``: one commit."""

    uri = exposures_uri(root_uri, experiment)
    append(uri, table, storage_options(uri), f"the exposures of {experiment}", merge_schema=True)
