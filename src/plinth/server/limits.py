"""Refuses request bodies over a size limit with 413, before they reach a route."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plinth.errors import PayloadTooLarge


class BodySizeLimit:
    """Reads the whole body (up to the limit) before the route runs, then replays it.

    Counting inside the route's own ``receive`` is not enough: FastAPI turns any error
    raised while it reads the body into "400 There was an error parsing the body", so a
    chunked body over the limit would never be answered with 413. Routes whose path ends
    matching ``exempt`` (the raw file uploads) stream their bodies and are not limited.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: re.Pattern[str] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt is not None and self.exempt.fullmatch(scope["path"]) is not None
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only http.disconnect is left
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body is larger than the server's limit of {self.max_bytes} bytes"
        )
        body = json.dumps(error.to_dict()).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # the rest of the body is left unread: the connection cannot be reused
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
