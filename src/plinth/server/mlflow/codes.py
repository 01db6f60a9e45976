"""The MLflow API's prefixes and MLflow's error codes (light: the error handlers use it)."""

from __future__ import annotations

from plinth.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlinthError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

PREFIX = "/api/2.0/mlflow"
ARTIFACTS_PREFIX = "/api/2.0/mlflow-artifacts"
# the artifact URIs Plinth hands MLflow clients: their files go through the proxy above
ARTIFACTS_SCHEME = "mlflow-artifacts:"


def is_mlflow_path(path: str) -> bool:
    return path.startswith((f"{PREFIX}/", f"{ARTIFACTS_PREFIX}/"))


# Plinth's error classes, most specific first, and the MLflow code and status each maps to
# (MLflow answers RESOURCE_ALREADY_EXISTS and INVALID_PARAMETER_VALUE with 400).
_CODES: tuple[tuple[type[PlinthError], str, int], ...] = (
    (PayloadTooLarge, "INVALID_PARAMETER_VALUE", 400),
    (NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
    (AlreadyExists, "RESOURCE_ALREADY_EXISTS", 400),
    (Conflict, "INVALID_STATE", 400),
    (InvalidArgument, "INVALID_PARAMETER_VALUE", 400),
    (Unauthenticated, "UNAUTHENTICATED", 401),
    (PermissionDenied, "PERMISSION_DENIED", 403),
    (RateLimited, "REQUEST_LIMIT_EXCEEDED", 429),
    (Unavailable, "TEMPORARILY_UNAVAILABLE", 503),
)


def mlflow_code(error: PlinthError) -> tuple[str, int]:
    """MLflow's ``error_code`` and HTTP status for a Plinth error."""
    for cls, code, status in _CODES:
        if isinstance(error, cls):
            return code, status
    return "INTERNAL_ERROR", 500
