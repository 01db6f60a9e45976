"""Online stores, picked by URI: ``sqlite:///path`` (or a plain path) and ``redis://``."""

from __future__ import annotations

from collections.abc import Callable

from plinth.errors import InvalidArgument
from plinth.features.online.base import OnlineRow, OnlineStore

__all__ = ["OnlineRow", "OnlineStore", "online_store_for"]


def _sqlite(uri: str, timeout: float) -> OnlineStore:  # a local file: no network to wait on
    from plinth.features.online.sqlite import SqliteOnlineStore

    if "://" not in uri:
        return SqliteOnlineStore(uri)
    # as in SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db
    if not uri.lower().startswith("sqlite:///"):
        raise InvalidArgument(f"SQLite online store URIs are sqlite:///PATH, not {uri!r}")
    return SqliteOnlineStore(uri[len("sqlite:///") :])


def _redis(uri: str, timeout: float) -> OnlineStore:
    try:
        from plinth.features.online.redis import RedisOnlineStore
    except ImportError as exc:
        if exc.name != "redis":
            raise
        raise InvalidArgument(
            "the Redis online store needs the redis package: pip install 'plinth[redis]'"
        ) from exc
    return RedisOnlineStore(uri, socket_timeout=timeout, socket_connect_timeout=timeout)


# factories take the URI and the seconds a network call may wait
ONLINE_STORES: dict[str, Callable[[str, float], OnlineStore]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def online_store_for(uri: str, *, timeout: float = 2.0) -> OnlineStore:
    """The online store at ``uri``: ``sqlite:///PATH`` or a file path for SQLite,
    ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://`` for TLS) for Redis.
    A network call waits at most ``timeout`` seconds (connecting, then each answer)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "sqlite"
    factory = ONLINE_STORES.get(scheme)
    if factory is None:
        supported = ", ".join(f"{name}://" for name in ONLINE_STORES)
        raise InvalidArgument(
            f"online store URI scheme {scheme!r} is not supported: "
            f"use a file path or one of {supported}"
        )
    return factory(uri, timeout)
