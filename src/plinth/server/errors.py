"""How the server answers errors: always ``{"error_code", "message"}`` with a code listed in
the README, and never a detail of its own set-up (store URIs, file paths): those go to
its log, under an incident id the answer names."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from plinth.errors import InvalidArgument, PlinthError, Unavailable, error_for_status
from plinth.server.mlflow.codes import is_mlflow_path, mlflow_code

log = logging.getLogger("plinth.server")


class Redactor:
    """Replaces the server's own locations in a message with the name of what they are."""

    def __init__(self, places: Iterable[tuple[str, str]]) -> None:
        # longest first: a file under the artifact root is named as that, not as the home
        self._places = sorted({(p, n) for p, n in places if p}, key=lambda pn: -len(pn[0]))

    def __call__(self, message: str) -> str:
        for place, name in self._places:
            message = message.replace(place, name)
        return message


def install_error_handlers(app: FastAPI, redact: Redactor) -> None:
    @app.exception_handler(PlinthError)
    async def plinth_error(request: Request, exc: PlinthError) -> JSONResponse:
        return answer(request, exc, redact)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:10]
        )
        error = InvalidArgument(f"invalid request: {problems}")
        return answer(request, error, redact)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not parse the body
            message = "the request body is not valid JSON"
            if isinstance(exc.__cause__, RecursionError):
                message += ": it nests arrays or objects too deeply"
            elif isinstance(exc.__cause__, UnicodeDecodeError):
                message += ": it is not UTF-8 text"
        error = error_for_status(exc.status_code, message)
        return answer(request, error, redact, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):  # a body nested too deeply for some parser
            error = InvalidArgument("the request nests arrays or objects too deeply")
            return JSONResponse(error.to_dict(), status_code=error.http_status)
        # The details (SQL, values) stay in the server log; the client gets a reference.
        incident = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", incident, request.method, request.url.path)
        message = f"internal error {incident}: see the server log"
        return JSONResponse({"error_code": "INTERNAL_ERROR", "message": message}, status_code=500)


def answer(
    request: Request,
    exc: PlinthError,
    redact: Redactor,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The response for ``exc``; a failing dependency is named, its address is logged."""
    if isinstance(exc, Unavailable) or exc.http_status >= 500:
        incident = uuid.uuid4().hex[:12]
        log.error(
            "%s %s answered %d (incident %s): %s",
            request.method,
            request.url.path,
            exc.http_status,
            incident,
            exc.message,
        )
        what = (
            f"{exc.dependency} is unavailable"
            if isinstance(exc, Unavailable)
            else "the server failed"
        )
        message = f"{what}; see the server log (incident {incident})"
        body = {"error_code": exc.error_code, "message": message}
    else:
        body = {"error_code": exc.error_code, "message": redact(exc.message)}
    status = exc.http_status
    if is_mlflow_path(request.url.path):  # the MLflow REST API speaks MLflow's codes
        body["error_code"], status = mlflow_code(exc)
    return JSONResponse(body, status_code=status, headers=headers)
