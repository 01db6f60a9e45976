"""Feature data through the server, for remote clients that cannot reach its stores (a
local folder, a SQLite online store): Arrow IPC bodies in and out, written to and read from
the server's own offline and online stores. Only data operations run here; validation,
statistics, point-in-time joins and on-demand transformations (user code) stay with the
client, which records commits through the metadata endpoints as a local client does.

Uploads stream to a temporary file first (so they are not held by the JSON body limit) and
are written only once the whole Arrow stream has arrived: a client that stops half way
leaves nothing. An insert of many chunks is still ONE Delta commit.

Every route checks its caller as the metadata endpoints do: reading a group's rows needs
read on the group, writing them (or its online rows) editor on it; a training dataset's
rows are the view's (the first folder of their location), read with read on the view and
written by an editor who may read it; a deleted group's data is removed by an editor.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from itertools import chain
from typing import IO, Annotated, Any, TypeVar

import pyarrow as pa
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from plinth.api import API_PREFIX
from plinth.auth.access import Access, access_for
from plinth.auth.types import Action, Kind, Role
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.features.ipc import MEDIA_TYPE, ipc_chunks, open_ipc, read_ipc, tables_of
from plinth.features.offline import OfflineStore
from plinth.features.store import FeatureStore
from plinth.features.types import FeatureGroup

PREFIX = f"{API_PREFIX}/feature-data"
# The routes whose bodies are Arrow streams (not held by the JSON body limit).
UPLOADS = rf"{PREFIX}/(groups/[^/]+/[0-9]+/rows|snapshots|online/[^/]+/rows)"
_SPOOL_BYTES = 16 * 1024 * 1024  # bigger uploads go to a temporary file on disk
_BATCH_ROWS = 64 * 1024
T = TypeVar("T")


def mount_feature_data(app: FastAPI, store: FeatureStore) -> None:
    offline, online, service = store.offline, store.online, store.service
    if not isinstance(offline, OfflineStore):
        raise TypeError("the server's feature data lives in its own OfflineStore")
    group_path = f"{PREFIX}/groups/{{name}}/{{version}}"

    @app.get(f"{group_path}/version", tags=["feature data"])
    def offline_version(name: str, version: int) -> int | None:
        """The latest Delta version of a group's table (null: nothing written yet)."""
        return offline.version(service.get_feature_group(name, version))

    @app.get(f"{group_path}/history", tags=["feature data"])
    def offline_history(name: str, version: int) -> list[dict[str, Any]]:
        """The commits of a group's table, newest first."""
        return offline.history(service.get_feature_group(name, version))

    @app.get(f"{group_path}/rows", tags=["feature data"], response_class=StreamingResponse)
    def read_rows(
        name: str,
        version: int,
        as_of: str | None = None,
        columns: Annotated[list[str] | None, Query()] = None,
    ) -> StreamingResponse:
        """A group's offline rows (at a Delta version or ISO time ``as_of``), as Arrow IPC."""
        group = service.get_feature_group(name, version)
        return _arrow(offline.read(group, _as_of(as_of), columns))

    @app.put(f"{group_path}/rows", tags=["feature data"])
    async def write_rows(name: str, version: int, request: Request) -> dict[str, int]:
        """Upsert an Arrow IPC stream of prepared rows as ONE commit; the Delta version."""
        group = await run_in_threadpool(service.get_feature_group_to_write, name, version)

        def write(body: IO[bytes]) -> int:
            chunks = tables_of(open_ipc(body))
            first, second = next(chunks, None), next(chunks, None)
            if first is None:
                raise InvalidArgument(f"nothing to write into {group.ref}: the stream is empty")
            if second is None:  # as a local insert of one chunk: merged in memory
                return offline.write(group, first)
            return offline.write_many(group, chain([first, second], chunks))

        return {"commit_version": await _with_body(request, write)}

    @app.post(f"{group_path}/materialize", tags=["feature data"])
    def materialize(
        name: str,
        version: int,
        start: Annotated[datetime | None, Body()] = None,
        end: Annotated[datetime | None, Body()] = None,
        incremental: Annotated[bool, Body()] = False,
    ) -> int:
        """Copy a group's latest values per key to the online store, here: all of them (with
        event time in [start, end)) or, ``incremental``, those written since the last time."""
        ref = f"{name}:v{version}"  # the store checks that the caller may write it
        if incremental:
            return store.materialize_incremental(ref)
        return store.materialize(ref, start, end)

    @app.delete(group_path, tags=["feature data"], status_code=204)
    def delete_table(name: str, version: int) -> Response:
        """Remove the table of a group version already deleted from the catalog."""
        _check_deleted(store, name, version)
        offline.delete_table(_deleted_group(offline.table_uri(name, version), name, version))
        return Response(status_code=204)

    snapshots = f"{PREFIX}/snapshots"

    @app.get(snapshots, tags=["feature data"], response_class=StreamingResponse)
    def read_snapshot(uri: str) -> StreamingResponse:
        return _arrow(offline.read_snapshot(_snapshot(store, uri, write=False)))

    @app.put(snapshots, tags=["feature data"], status_code=204)
    async def write_snapshot(uri: str, request: Request) -> Response:
        checked = await run_in_threadpool(_snapshot, store, uri, True)
        await _with_body(request, lambda body: offline.write_snapshot(checked, read_ipc(body)))
        return Response(status_code=204)

    @app.delete(snapshots, tags=["feature data"], status_code=204)
    def delete_snapshot(uri: str) -> Response:
        """Remove rows a client wrote for a training dataset it then failed to record."""
        checked = _snapshot(store, uri, write=True)
        dataset = service.dataset_at(checked)  # any dataset's, whoever may see it
        if dataset is not None:
            raise Conflict(f"training dataset {dataset} keeps its rows at {uri!r}")
        offline.delete_snapshot(checked)
        return Response(status_code=204)

    tables = f"{PREFIX}/online/{{table}}"

    @app.post(f"{tables}/read", tags=["feature data"], response_class=StreamingResponse)
    def read_online(
        table: str,
        keys: Annotated[list[list[Any]], Body()],
        features: Annotated[list[str], Body()],
    ) -> StreamingResponse:
        """Stored values of a group's online table for ``keys``, in order, as Arrow IPC:
        a column per feature, ``plinth:micros`` (the event time; null: not found)."""
        _online_group(store, table)
        found = online.read_columns(table, [tuple(k) for k in keys], features)
        columns = {f: pa.array(found.columns[f]) for f in features}
        columns[MICROS] = pa.array(found.micros, pa.int64())
        return _arrow(pa.table(columns))

    @app.put(f"{tables}/rows", tags=["feature data"])
    async def write_online(
        table: str,
        request: Request,
        keys: Annotated[list[str], Query()],
        event_time: str,
    ) -> int:
        """Upsert an Arrow IPC stream of rows into a group's online table; rows stored."""
        await run_in_threadpool(_online_group, store, table, True)
        return await _with_body(
            request, lambda body: online.write(table, keys, read_ipc(body), event_time)
        )

    @app.delete(tables, tags=["feature data"], status_code=204)
    def drop_online(table: str) -> Response:
        _check_deleted(store, *_table_name(table))
        online.drop(table)
        return Response(status_code=204)


MICROS = "plinth:micros"  # not a feature name: those are identifiers


def _arrow(table: pa.Table) -> StreamingResponse:
    batches = table.to_batches(max_chunksize=_BATCH_ROWS)
    tables = (pa.Table.from_batches([b], schema=table.schema) for b in batches)
    return StreamingResponse(ipc_chunks(table.schema, tables), media_type=MEDIA_TYPE)


async def _with_body(request: Request, use: Callable[[IO[bytes]], T]) -> T:
    """Spool the whole body, then hand it to ``use`` on a worker thread."""
    with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
        async for chunk in request.stream():  # a client gone half way raises here
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        return await run_in_threadpool(use, spool)


def _as_of(text: str | None) -> int | datetime | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"as_of {text!r} is not a Delta version nor an ISO time") from None


# where a training dataset keeps its rows: VIEW/vN/ID/rows or VIEW/vN/ID/entities, nothing
# above or beside it (a folder higher up holds other datasets)
_TRAINING = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)/v[0-9]+/[0-9a-f]{32}/(rows|entities)")


def _snapshot(store: FeatureStore, uri: str, write: bool) -> str:
    """A training dataset location under this server's offline root, or InvalidArgument;
    NotFound unless the caller may read the view it belongs to (the location's first
    folder), PermissionDenied for a ``write`` by a caller without the editor role."""
    prefix = store.offline.snapshot_uri("")
    rest = uri.removeprefix(prefix)
    found = _TRAINING.fullmatch(rest) if rest != uri else None
    if found is None:
        raise InvalidArgument(
            f"{uri!r} is not a training dataset location of this server "
            "(VIEW/vN/ID/rows or VIEW/vN/ID/entities under its training-datasets folder)"
        )
    access = _access(store)
    if write:
        access.require_role(Role.EDITOR, "write training dataset rows")
    access.require(Action.READ, Kind.FEATURE_VIEW, found.group(1))
    return uri


_ONLINE_TABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)__v([0-9]+)")


def _table_name(table: str) -> tuple[str, int]:
    found = _ONLINE_TABLE.fullmatch(table)
    if found is None:
        raise NotFound(f"online table {table!r} is not a feature group's (NAME__vN)")
    return found.group(1), int(found.group(2))


def _online_group(store: FeatureStore, table: str, write: bool = False) -> FeatureGroup:
    name, version = _table_name(table)
    if write:
        return store.service.get_feature_group_to_write(name, version)
    return store.service.get_feature_group(name, version)


def _check_deleted(store: FeatureStore, name: str, version: int) -> None:
    """A deleted group's data may go (by an editor); an existing group's may not: its owner
    is told to delete it first, who may not see it that it is not there."""
    access = _access(store)
    defined = store.service.group_named(name, version)  # in any letter case, as tables are
    if defined is None:
        access.require_role(Role.EDITOR, f"remove the data of feature group {name}:v{version}")
        return
    access.require(Action.MANAGE, Kind.FEATURE_GROUP, defined, repr(name))
    raise Conflict(
        f"feature group {name}:v{version} still exists; delete it (delete_feature_group) "
        "to remove its data"
    )


def _access(store: FeatureStore) -> Access:
    return access_for(store.service.store)


def _deleted_group(table_uri: str, name: str, version: int) -> FeatureGroup:
    from datetime import UTC

    return FeatureGroup(
        name=name,
        version=version,
        entity="",
        keys=[],
        event_time="",
        features=[],
        table_uri=table_uri,
        created_at=datetime.now(UTC),
    )
