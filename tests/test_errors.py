from __future__ import annotations

import pytest

import plinth
from plinth.errors import (
    ERRORS_BY_CODE,
    AlreadyExists,
    Conflict,
    GateFailed,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlinthError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    error_from_dict,
)

# The wire contract: clients in other languages and older versions rely on these.
STABLE = [
    (PlinthError, "INTERNAL_ERROR", 500),
    (NotFound, "NOT_FOUND", 404),
    (AlreadyExists, "ALREADY_EXISTS", 409),
    (Conflict, "CONFLICT", 409),
    (GateFailed, "GATE_FAILED", 409),
    (InvalidArgument, "INVALID_ARGUMENT", 422),
    (PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
    (MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
    (Unauthenticated, "UNAUTHENTICATED", 401),
    (PermissionDenied, "PERMISSION_DENIED", 403),
    (RateLimited, "RATE_LIMITED", 429),
    (Unavailable, "UNAVAILABLE", 503),
]


@pytest.mark.parametrize(("cls", "code", "status"), STABLE, ids=[c.__name__ for c, _, _ in STABLE])
def test_each_error_has_a_stable_code_and_status(
    cls: type[PlinthError], code: str, status: int
) -> None:
    assert cls.error_code == code
    assert cls.http_status == status
    assert ERRORS_BY_CODE[code] is cls


def test_the_registry_holds_every_error_class_once() -> None:
    assert set(ERRORS_BY_CODE.values()) == {cls for cls, _, _ in STABLE}
    assert len({cls.error_code for cls, _, _ in STABLE}) == len(STABLE)


def test_the_public_api_exports_every_error_class() -> None:
    for cls, _, _ in STABLE:
        assert getattr(plinth, cls.__name__) is cls


def test_every_error_is_a_plinth_error_and_payload_too_large_is_an_invalid_argument() -> None:
    for cls, _, _ in STABLE:
        assert issubclass(cls, PlinthError)
    assert issubclass(PayloadTooLarge, InvalidArgument)
    assert issubclass(MethodNotAllowed, InvalidArgument)


def test_to_dict_is_the_wire_shape() -> None:
    error = NotFound("run 'abc' does not exist")
    assert error.to_dict() == {"error_code": "NOT_FOUND", "message": "run 'abc' does not exist"}
    assert error.message == str(error) == "run 'abc' does not exist"


@pytest.mark.parametrize(("cls", "code", "status"), STABLE, ids=[c.__name__ for c, _, _ in STABLE])
def test_error_from_dict_rebuilds_the_same_class(
    cls: type[PlinthError], code: str, status: int
) -> None:
    payload: dict[str, object] = dict(cls("the message").to_dict())
    rebuilt = error_from_dict(payload, status)
    assert type(rebuilt) is cls
    assert rebuilt.message == "the message"


def test_the_code_wins_over_the_status() -> None:
    # a proxy may change the status; the code the server chose is the truth
    assert type(error_from_dict({"error_code": "NOT_FOUND", "message": "m"}, 500)) is NotFound
    assert type(error_from_dict({"error_code": "CONFLICT", "message": "m"}, 400)) is Conflict


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_unknown_code_with_a_server_status_is_unavailable(status: int) -> None:
    error = error_from_dict({"error_code": "SOMETHING_NEW", "message": "try later"}, status)
    assert type(error) is Unavailable
    assert error.message == "try later"


@pytest.mark.parametrize("status", [400, 418, 422])
def test_an_unknown_code_with_a_client_status_is_an_invalid_argument(status: int) -> None:
    error = error_from_dict({"error_code": f"HTTP_{status}", "message": "no"}, status)
    assert type(error) is InvalidArgument
    assert error.message == "no"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, Unauthenticated),
        (403, PermissionDenied),
        (404, NotFound),
        (405, MethodNotAllowed),
        (409, Conflict),
        (413, PayloadTooLarge),
        (429, RateLimited),
    ],
)
def test_an_unknown_code_follows_its_status(status: int, cls: type[PlinthError]) -> None:
    assert type(error_from_dict({"error_code": "NEWER_SERVER", "message": "m"}, status)) is cls


def test_a_payload_without_code_or_message_names_the_status() -> None:
    error = error_from_dict({}, 502)
    assert type(error) is Unavailable
    assert "502" in error.message
