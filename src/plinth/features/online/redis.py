"""The Redis online store: one string per entity, ``<namespace>:<table>:<key>``.

The value is ``<event time in microseconds>|<msgpack feature values>``: a lookup of any
number of entities is one MGET, and a write compares event times on the server in a Lua
script run over pipelined batches. Redis Cluster is not supported (a script's keys span
slots).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from plinth.errors import InvalidArgument, PermissionDenied, PlinthError, Unavailable
from plinth.features.online.base import OnlineColumns, OnlineStore
from plinth.features.online.codec import (
    check_table,
    empty_columns,
    encode_key_rows,
    encode_rows,
    fresh_only,
    reader_for,
)

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # no glob characters: drop() SCANs by pattern

# KEYS: entity keys; ARGV: their new values. A value replaces the stored one when its event
# time is newer or equal. Event times compare as Lua numbers (doubles), exact up to 2^53
# microseconds (the year 2255). A stored value in another format is overwritten.
_WRITE_NEWER = """
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[i]
  local old = redis.call('GET', key)
  local old_time = old and tonumber(string.match(old, '^(-?%d+)|'))
  if not old_time or tonumber(string.match(new, '^(-?%d+)|')) >= old_time then
    redis.call('SET', key, new)
    written = written + 1
  end
end
return written
"""


class RedisOnlineStore(OnlineStore):
    """Online tables in the Redis database at ``url`` (``redis://``, ``rediss://``), under
    ``namespace``. Options (``socket_timeout``, ...) go to ``redis.Redis.from_url``; the URL's
    query string overrides them. Nothing connects until the first call."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "plinth",
        batch_size: int = 500,
        **options: Any,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise InvalidArgument(
                f"Redis namespace {namespace!r} is not valid: use 1-64 letters, digits, "
                "'_', '.' or '-'"
            )
        self.url = url
        self.namespace = namespace
        self._shown = _redacted(url)
        self._batch_size = batch_size
        options = {
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
            # once more on a dropped connection; never again after a timeout, which would
            # multiply the wait on a server that has stopped answering
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            **options,
        }
        try:
            self._client = redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise InvalidArgument(f"{self._shown} is not a Redis URL: {exc}") from exc
        if self._client.get_connection_kwargs().get("decode_responses"):
            raise InvalidArgument(
                f"{self._shown}: the online store reads bytes; drop decode_responses"
            )
        self._write_newer = self._client.register_script(_WRITE_NEWER)

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self._shown!r}, namespace={self.namespace!r})"

    def write(self, table: str, keys: list[str], rows: pa.Table, event_time: str) -> int:
        prefix = self._prefix(table)
        size = self._batch_size
        written = 0
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for batch in encode_rows(rows, keys, event_time):
                    names = [prefix + key for key in batch.keys]
                    values = [
                        b"%d|%b" % pair
                        for pair in zip(batch.event_times, batch.values, strict=True)
                    ]
                    for start in range(0, len(names), size):
                        self._write_newer(
                            keys=names[start : start + size],
                            args=values[start : start + size],
                            client=pipe,
                        )
                    written += sum(pipe.execute())  # one round trip per encoded batch
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        return written

    def read_columns(
        self,
        table: str,
        key_rows: Sequence[tuple[Any, ...]],
        features: list[str],
        *,
        not_before: int | None = None,
    ) -> OnlineColumns:
        prefix = self._prefix(table)
        if not key_rows:
            return OnlineColumns([], empty_columns(features, 0))
        names = list(map(prefix.__add__, encode_key_rows(key_rows)))
        try:
            # bytes, never str: the client is built without decode_responses
            stored = cast("list[bytes | None]", self._client.mget(names))
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        # each value is b"<event time>|<packed row>"
        cut = [None if value is None else value.partition(b"|") for value in stored]
        micros = [None if c is None else int(c[0]) for c in cut]
        packed = fresh_only(micros, [None if c is None else c[2] for c in cut], not_before)
        columns = reader_for(features).columns(packed)
        return OnlineColumns(micros, dict(zip(features, columns, strict=True)))

    def drop(self, table: str) -> None:
        pattern = self._prefix(table) + "*"
        try:
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self._client.unlink(*batch)
                    batch = []
            if batch:
                self._client.unlink(*batch)
        except redis.RedisError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._client.close()

    def _prefix(self, table: str) -> str:
        return f"{self.namespace}:{check_table(table)}:"

    def _error(self, exc: redis.RedisError) -> PlinthError:
        if isinstance(exc, redis.AuthenticationError):
            return PermissionDenied(
                f"the Redis online store at {self._shown} refused the credentials: {exc}"
            )
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return Unavailable(
                f"the Redis online store at {self._shown} is unavailable: {exc}",
                "the online feature store (Redis)",
            )
        return PlinthError(f"the Redis online store at {self._shown} failed: {exc}")


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
