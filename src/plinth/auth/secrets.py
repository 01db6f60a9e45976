"""API token secrets and password hashes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: every Plinth token starts so: tells it from an OpenID Connect JWT and from a password
TOKEN_PREFIX = "plt_"
_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults


def bearer_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header among raw ASGI headers."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    return None


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(secret: str) -> str:
    """Tokens carry 256 random bits: one SHA-256 is as safe at rest as a slow hash, and
    keeps checking a token on every request cheap."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    if not stored:
        # spend the same time as a real check, so a missing user is not told apart
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
