"""Hot routes answered ahead of the framework: the feature server's online lookup.

A lookup of one entity takes tens of microseconds; going through FastAPI's middleware
stack, routing and request objects took several times that. A ``FastPosts`` layer sits
outside that stack and answers ``POST`` to its paths from the raw body. Everything else,
bodies over the size limit included, goes on to the app. An exception from a handler is
answered by the app's own exception handlers, so errors look as they do on every route.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Handler = Callable[[bytes], Awaitable[bytes]]
ErrorHandler = Callable[[Request, Exception], Any]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPosts:
    """Answers ``POST`` to each path of ``routes`` with ``routes[path](body)`` (JSON bytes,
    status 200) before ``app``; bodies over ``max_bytes`` go to ``app``, which refuses them.
    ``error_handlers`` are the app's exception handlers (by class), looked up at the error."""

    def __init__(
        self,
        app: ASGIApp,
        routes: dict[str, Handler],
        max_bytes: int,
        error_handlers: dict[Any, ErrorHandler],
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_bytes = max_bytes
        self.error_handlers = error_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handle = (
            self.routes.get(_route_path(scope))
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handle is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > self.max_bytes:  # the app refuses it as it refuses any large body
                await self.app(scope, _replay(b"".join(chunks), more, receive), send)
                return
            if not more:
                break
        try:
            answer = await handle(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception as exc:
            await self._error(scope, receive, send, exc)
            return
        headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handler = next(
            (self.error_handlers[k] for k in type(exc).__mro__ if k in self.error_handlers), None
        )
        if handler is None:
            raise exc
        response = handler(Request(scope, receive), exc)
        if inspect.isawaitable(response):
            response = await response
        await response(scope, receive, send)


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then what ``receive`` gives."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return replay


def _route_path(scope: Scope) -> str:
    """The path the app routes by: without the root path a proxy mounts it under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
