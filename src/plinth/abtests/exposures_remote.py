"""Where a router's or a ``Predictor``'s exposures go: the exposure log of the store the
client works against, never a folder on a remote client's own disk (the server's results
would never read it).

A local client writes under its own artifact root. A remote client asks its server where
the artifact store is (``GET /stores``): one every party can reach (``s3://``) it writes
directly, with its own credentials; otherwise it sends each batch to the server
(``POST /abtests/{name}/exposures``, an Arrow IPC stream), which checks it and commits it.
The choice is made on the first batch and again after a failed look-up, so a router that
starts while its server is down still routes, and counts the batches it could not write.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa

from plinth.abtests.traffic import MAX_BATCH_ROWS, DeltaExposures, ExposureLog, ExposureSink

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.config import Settings
    from plinth.remote import Transport


def exposure_log_for(client: Client, **options: Any) -> ExposureLog:
    """The exposure log a router or ``Predictor`` of ``client``'s experiments writes to
    (``options``: ``ExposureLog``'s capacity, flush_seconds, batch_rows)."""
    if not client.remote:
        return ExposureLog(client.settings.resolved_artifact_uri, **options)
    transport = client.tracking.transport  # type: ignore[attr-defined]
    return ExposureLog(sink=ServerExposures(transport, client.settings), **options)


class ServerExposures:
    """The sink of a remote client: the server's artifact store directly when reachable,
    else through the server."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        self.transport = transport
        self.settings = settings
        self._lock = threading.Lock()
        self._direct: ExposureSink | None = None
        self._decided = False

    @property
    def direct(self) -> ExposureSink | None:
        """The store's own sink when the client may write to it directly; None: through
        the server. Raises while the server cannot say where its store is."""
        with self._lock:
            if not self._decided:
                self._direct = self._choose()
                self._decided = True
            return self._direct

    def _choose(self) -> ExposureSink | None:
        from plinth.remote_data import _with_credentials, store_locations
        from plinth.store.locations import reachable

        where = store_locations(self.transport)
        if not reachable(where.artifacts, where.artifacts_shared, self.transport.base_url):
            return None
        return DeltaExposures(_with_credentials(where.artifacts, self.settings.artifact_uri))

    def __call__(self, experiment: str, table: pa.Table) -> None:
        direct = self.direct
        if direct is not None:
            direct(experiment, table)
            return
        for start in range(0, table.num_rows, MAX_BATCH_ROWS):
            self._send(experiment, table.slice(start, MAX_BATCH_ROWS))

    def _send(self, experiment: str, table: pa.Table) -> None:
        from plinth.features.ipc import MEDIA_TYPE, ipc_chunks

        body = b"".join(ipc_chunks(table.schema, [table]))
        self.transport.request(
            "POST",
            f"/abtests/{quote(experiment, safe='')}/exposures",
            content=body,
            headers={"content-type": MEDIA_TYPE},
        )
