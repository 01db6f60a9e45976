"""Where a server keeps its bulk data, as it tells its remote clients (``GET /stores``).

A remote client writes feature rows, training datasets and scores either straight to a
store every party can reach (object storage, Redis, PostgreSQL) or through the server;
a path on its own disk is never recorded as shared. ``shared`` says which URIs qualify.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from plinth.api import endpoint

# Schemes of stores that other machines reach by the same URI. A plain path, file:// and
# sqlite:// name a file on one machine's disk.
SHARED_SCHEMES = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "redis", "rediss", "postgresql"}
)


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower().split("+", 1)[0] if "://" in uri else ""


def shared(uri: str) -> bool:
    """True for a URI every party can reach (``s3://``, ``redis://``, ``postgresql://``)."""
    return scheme_of(uri) in SHARED_SCHEMES


def on_loopback(uri: str) -> bool:
    """Whether ``uri`` names a host by a loopback address (only its own machine reaches it)."""
    host = (urlsplit(uri).hostname or "") if "://" in uri else ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def reachable(uri: str, published_shared: bool, server_url: str) -> bool:
    """Whether a client that reaches the server at ``server_url`` may use a store the
    server published directly: it must be shared, and a store on the server's loopback
    (``redis://127.0.0.1``) is reachable only from the server's own machine, that is by
    a client that reaches the server on loopback too."""
    return published_shared and (not on_loopback(uri) or on_loopback(server_url))


def public(uri: str) -> str:
    """``uri`` without a user name or password: what a server may tell any client."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class StoreLocations:
    """The server's stores: ``offline`` (feature Delta tables and training datasets),
    ``online`` (online feature values) and ``artifacts``, without credentials; each
    ``*_shared`` says whether a client may use it directly."""

    offline: str
    online: str
    artifacts: str
    offline_shared: bool
    online_shared: bool
    artifacts_shared: bool


class LocationService:
    def __init__(self, offline: str, online: str, artifacts: str) -> None:
        self.locations = StoreLocations(
            public(offline),
            public(online),
            public(artifacts),
            shared(offline),
            shared(online),
            shared(artifacts),
        )

    @endpoint("GET", "/stores")
    def get_store_locations(self) -> StoreLocations:
        """Where this server keeps feature data and artifacts (credentials left out)."""
        return self.locations
