"""A/B exposures through the server, for a remote ``plinth router`` or ``Predictor`` whose
client cannot reach the server's artifact store (a folder on the server's disk): an Arrow
IPC stream of one experiment's exposures (``traffic.SCHEMA``), checked whole and appended
in one commit by ``AbTestService.log_exposures``.

The server's body limit (``BodySizeLimit``) receives the body first and refuses one over
its size (a batch is at most ``traffic.MAX_BATCH_ROWS`` rows, a few MB); then the caller's
WRITE on the experiment is checked before the body is decoded or judged, so a caller who
may not add exposures learns nothing from how its batch would have been judged. The body
must be a plain Arrow IPC stream (``read_plain_ipc``: no compressed batch, as a router
never sends), so its decoded size is at most its own: a few KB of zstd cannot decode to GB
in the server's memory.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from plinth.abtests.service import AbTestService
from plinth.api import API_PREFIX
from plinth.auth.access import access_for
from plinth.auth.types import Action, Kind
from plinth.features.ipc import MEDIA_TYPE, read_plain_ipc

EXPOSURES = f"{API_PREFIX}/abtests/{{name}}/exposures"


def mount_abtest_data(app: FastAPI, abtests: AbTestService) -> None:
    @app.post(
        EXPOSURES,
        tags=["abtests"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def log_exposures(name: str, request: Request) -> dict[str, int]:
        """Record a batch of exposures (an Arrow IPC stream of at_ms int64, unit, arm,
        request_id strings; optional model_version, latency_ms float64, outcome) in one
        commit, or refuse it whole naming ``exposures[i].column``. WRITE on the
        experiment. Returns ``{"written": rows}``."""
        await run_in_threadpool(_may_write, abtests, name)
        body = await request.body()
        table = await run_in_threadpool(read_plain_ipc, body, "exposures")
        written = await run_in_threadpool(abtests.log_exposures, name, table)
        return {"written": written}


def _may_write(abtests: AbTestService, name: str) -> None:
    access_for(abtests.store).require(Action.WRITE, Kind.ABTEST, name, repr(name))
