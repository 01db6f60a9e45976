"""One exception family for every interface: Python, HTTP and CLI.

Each class carries a stable ``error_code`` and the HTTP status it maps to; the server
serialises ``{"error_code", "message"}`` and the remote client rebuilds the same class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class PlinthError(Exception):
    error_code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class NotFound(PlinthError):
    error_code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(PlinthError):
    error_code = "ALREADY_EXISTS"
    http_status = 409


class Conflict(PlinthError):
    error_code = "CONFLICT"
    http_status = 409


class WriteConflict(Conflict):
    """The database refused a write because of a record written concurrently (or before):
    a unique or foreign key constraint. ``detail`` is the database's own message."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class GateFailed(Conflict):
    """A promotion refused by its gates; nothing changed. ``results`` holds every gate's
    result (passed ones too) where the refusal was made in-process; a remote client gets
    the message only."""

    error_code = "GATE_FAILED"

    def __init__(self, message: str, results: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class InvalidArgument(PlinthError):
    error_code = "INVALID_ARGUMENT"
    http_status = 422


class PayloadTooLarge(InvalidArgument):
    error_code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class MethodNotAllowed(InvalidArgument):
    """A route called with a method it does not take (``DELETE /health``)."""

    error_code = "METHOD_NOT_ALLOWED"
    http_status = 405


class Unauthenticated(PlinthError):
    """No credentials, or credentials that are not (or no longer) valid."""

    error_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(PlinthError):
    error_code = "PERMISSION_DENIED"
    http_status = 403


class RateLimited(PlinthError):
    """Too many failed attempts from one client: try again after ``retry_after`` seconds."""

    error_code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(PlinthError):
    """A dependency did not answer (in time). ``dependency`` names it ("the metadata store");
    a server sends only that name to its clients and keeps the message, which may hold a
    URI or a path, in its log."""

    error_code = "UNAVAILABLE"
    http_status = 503

    def __init__(self, message: str, dependency: str = "a service the server uses") -> None:
        super().__init__(message)
        self.dependency = dependency


ERRORS_BY_CODE: dict[str, type[PlinthError]] = {
    cls.error_code: cls
    for cls in (
        PlinthError,
        NotFound,
        AlreadyExists,
        Conflict,
        GateFailed,
        InvalidArgument,
        PayloadTooLarge,
        MethodNotAllowed,
        Unauthenticated,
        PermissionDenied,
        RateLimited,
        Unavailable,
    )
}


_ERRORS_BY_STATUS: dict[int, type[PlinthError]] = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_from_dict(payload: Mapping[str, object], status: int) -> PlinthError:
    """Rebuild the exception a server answered with; an unknown code follows the status."""
    code = str(payload.get("error_code", ""))
    message = str(payload.get("message", f"server answered HTTP {status}"))
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        cls = Unavailable if status >= 500 else _ERRORS_BY_STATUS.get(status, InvalidArgument)
    return cls(message)


def error_for_status(status: int, message: str) -> PlinthError:
    """The error to answer for an HTTP status a web framework chose (404 for an unknown
    route, 405 for a wrong method, 400 for a body it could not parse): a stable code."""
    cls = _ERRORS_BY_STATUS.get(status) or (PlinthError if status >= 500 else InvalidArgument)
    return cls(message)
