"""The feature data plane of a remote client.

The server publishes its stores (``GET /stores``). One every party can reach (``s3://``,
``redis://``) the client uses directly; one on the server's own disk (a folder, a SQLite
file) it uses through the server, as Arrow IPC bodies (``plinth.server.feature_data``).
The client's own settings never choose where shared data goes: a path on its disk is
never recorded as the location of a feature table or a training dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.dataset as ds

from plinth.errors import InvalidArgument
from plinth.features.ipc import MEDIA_TYPE, ipc_chunks, read_ipc
from plinth.features.offline import OfflineTables
from plinth.features.online.base import OnlineColumns, OnlineStore
from plinth.features.store import Materializer
from plinth.features.types import FeatureGroup
from plinth.store.locations import StoreLocations, public, reachable

if TYPE_CHECKING:
    from plinth.config import Settings
    from plinth.remote import Transport

_DATA = "/feature-data"
_MICROS = "plinth:micros"  # plinth.server.feature_data.MICROS
_ARROW = {"content-type": MEDIA_TYPE}


def store_locations(transport: Transport) -> StoreLocations:
    from pydantic import TypeAdapter

    response = transport.request("GET", "/stores")
    return TypeAdapter(StoreLocations).validate_json(response.content)


def remote_feature_stores(
    transport: Transport, settings: Settings
) -> tuple[OfflineTables, OnlineStore, Materializer | None]:
    """The offline and online stores a remote client uses: the server's, directly when
    every party can reach them, else through the server; and, when the online store is
    the server's own, the server's materialisation (the rows stay there)."""
    from plinth.features.offline import OfflineStore
    from plinth.features.online import online_store_for

    where = store_locations(transport)
    offline_direct = reachable(where.offline, where.offline_shared, transport.base_url)
    online_direct = reachable(where.online, where.online_shared, transport.base_url)
    offline: OfflineTables = (
        OfflineStore(where.offline) if offline_direct else ServerOffline(transport, where)
    )
    online: OnlineStore = (
        online_store_for(
            _with_credentials(where.online, settings.online_uri), timeout=settings.online_timeout
        )
        if online_direct
        else ServerOnline(transport)
    )
    return offline, online, None if online_direct else ServerMaterializer(transport)


def _with_credentials(published: str, own: str | None) -> str:
    """The client's own URI for the published store when it names the same one (it may
    carry the password the server leaves out), else the published one."""
    return own if own is not None and public(own) == published else published


class _Upload:
    """Tables to send as one Arrow stream; an error raised by the caller's iterator is
    kept, so it is raised as itself rather than as the transport's failure."""

    def __init__(self, tables: Iterable[pa.Table]) -> None:
        self.rest = iter(tables)
        self.first = next(self.rest, None)
        self.error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        assert self.first is not None
        try:
            yield from ipc_chunks(self.first.schema, self._all())
        except BaseException as e:
            self.error = e
            raise

    def _all(self) -> Iterator[pa.Table]:
        assert self.first is not None
        yield self.first
        yield from self.rest


# A bulk write or a materialisation answers when the server has committed it, however long
# that takes: a client that gave up would leave a commit it does not know of (and retry it).
BULK_TIMEOUT = httpx.Timeout(60.0, read=None)


def _send(
    transport: Transport, method: str, path: str, tables: Iterable[pa.Table], **kw: Any
) -> Any:
    upload = _Upload(tables)
    if upload.first is None:
        raise InvalidArgument("nothing to send: no rows")
    try:
        response = transport.request(
            method, path, content=upload.body(), headers=_ARROW, timeout=BULK_TIMEOUT, **kw
        )
    except BaseException:
        if upload.error is not None:
            raise upload.error from None
        raise
    return response.json() if response.content else None


class ServerOffline(OfflineTables):
    """The server's offline store, through the server."""

    def __init__(self, transport: Transport, where: StoreLocations) -> None:
        self.transport = transport
        self.root = where.offline.rstrip("/")

    def _group_path(self, name: str, version: int) -> str:
        return f"{_DATA}/groups/{quote(name, safe='')}/{version}"

    def write(self, group: FeatureGroup, table: pa.Table) -> int:
        return self.write_many(group, [table])

    def write_many(self, group: FeatureGroup, chunks: Iterable[pa.Table]) -> int:
        path = f"{self._group_path(group.name, group.version)}/rows"
        return int(_send(self.transport, "PUT", path, chunks)["commit_version"])

    def version(self, group: FeatureGroup) -> int | None:
        path = f"{self._group_path(group.name, group.version)}/version"
        found = self.transport.request("GET", path).json()
        return None if found is None else int(found)

    def read(
        self,
        group: FeatureGroup,
        as_of: int | datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        if as_of is not None and (isinstance(as_of, bool) or not isinstance(as_of, int | datetime)):
            raise InvalidArgument(
                f"as_of must be a Delta version (int) or a datetime, not {type(as_of).__name__}"
            )
        if isinstance(as_of, datetime) and as_of.tzinfo is None:
            raise InvalidArgument(
                f"as_of {as_of.isoformat()} has no timezone; give an aware time, e.g. "
                "datetime(..., tzinfo=UTC)"
            )
        params: dict[str, Any] = {}
        if as_of is not None:
            params["as_of"] = str(as_of) if isinstance(as_of, int) else as_of.isoformat()
        if columns is not None:
            params["columns"] = columns
        path = f"{self._group_path(group.name, group.version)}/rows"
        return read_ipc(self.transport.request("GET", path, params=params).content)

    def history(self, group: FeatureGroup) -> list[dict[str, Any]]:
        path = f"{self._group_path(group.name, group.version)}/history"
        commits: list[dict[str, Any]] = self.transport.request("GET", path).json()
        for commit in commits:
            at = commit.get("timestamp")
            commit["timestamp"] = None if at is None else datetime.fromisoformat(at)
        return commits

    def dataset(self, group: FeatureGroup, as_of: int | datetime | None = None) -> ds.Dataset:
        return ds.dataset(self.read(group, as_of))

    def write_snapshot(self, uri: str, table: pa.Table) -> None:
        _send(self.transport, "PUT", f"{_DATA}/snapshots", [table], params={"uri": uri})

    def read_snapshot(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        response = self.transport.request("GET", f"{_DATA}/snapshots", params={"uri": uri})
        table = read_ipc(response.content)
        return table if columns is None else table.select(columns)

    def delete_snapshot(self, uri: str) -> None:
        self.transport.request("DELETE", f"{_DATA}/snapshots", params={"uri": uri})

    def delete_table(self, group: FeatureGroup) -> None:
        self.transport.request("DELETE", self._group_path(group.name, group.version))


class ServerMaterializer(Materializer):
    """Materialisation run by the server, next to its own offline and online stores."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def materialize(self, group: FeatureGroup, start: datetime | None, end: datetime | None) -> int:
        return self._call(group, {"start": _iso(start), "end": _iso(end)})

    def materialize_incremental(self, group: FeatureGroup) -> int:
        return self._call(group, {"incremental": True})

    def _call(self, group: FeatureGroup, body: dict[str, Any]) -> int:
        path = f"{_DATA}/groups/{quote(group.name, safe='')}/{group.version}/materialize"
        return int(self.transport.request("POST", path, json=body, timeout=BULK_TIMEOUT).json())


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


class ServerOnline(OnlineStore):
    """The server's online store, through the server."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _path(self, table: str) -> str:
        return f"{_DATA}/online/{quote(table, safe='')}"

    def write(self, table: str, keys: list[str], rows: pa.Table, event_time: str) -> int:
        if rows.num_rows == 0:
            return 0
        params = {"keys": keys, "event_time": event_time}
        return int(_send(self.transport, "PUT", f"{self._path(table)}/rows", [rows], params=params))

    def read_columns(
        self,
        table: str,
        key_rows: Sequence[tuple[Any, ...]],
        features: list[str],
        *,
        not_before: int | None = None,
    ) -> OnlineColumns:
        try:
            body = json.dumps(
                {"keys": [list(k) for k in key_rows], "features": features}, default=_plain
            )
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"entity keys for {table}: {e}") from None
        response = self.transport.request(
            "POST",
            f"{self._path(table)}/read",
            content=body,
            headers={"content-type": "application/json"},
        )
        found = read_ipc(response.content)
        micros = found[_MICROS].to_pylist()
        columns = {f: found[f].to_pylist() for f in features}
        if not_before is not None:  # rows older than the bound keep their time, not values
            old = [i for i, at in enumerate(micros) if at is not None and at < not_before]
            for values in columns.values():
                for i in old:
                    values[i] = None
        return OnlineColumns(micros, columns)

    def drop(self, table: str) -> None:
        self.transport.request("DELETE", self._path(table))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"an entity key must be an integer or a string, not {type(value).__name__}")
