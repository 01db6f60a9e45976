"""OpenID Connect bearer tokens: JWTs verified against the identity provider's published keys.

A team with an identity provider (Keycloak, Entra ID, Okta, Dex...) sends its users' tokens as
``Authorization: Bearer <jwt>``. :class:`OidcVerifier` checks the signature with a key of the
provider's JWKS (a file, or a URL fetched with a timeout), the algorithm, ``iss``, ``aud``,
``exp``, ``nbf`` and ``iat``, and maps the claims to an :class:`OidcIdentity`.

User name: taken from ``username_claim`` only, with no fallback to other claims. A fallback
(``preferred_username``, else ``email``, else ``sub``) would give one person different names
depending on the scopes of the token they happen to hold, and would let the name of one user
(an ``email``) collide with the ``preferred_username`` of another. A provider that does not
send the configured claim gets a clear refusal naming it; set ``username_claim`` to a claim the
provider always sends (``email``, or ``sub``, which is stable and unique per issuer).

Claim names may be dotted paths into nested objects (``realm_access.roles`` for Keycloak
roles) when no top-level claim has the dotted name itself.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import jwt

from plinth.errors import InvalidArgument, Unauthenticated, Unavailable

log = logging.getLogger("plinth.auth")

# An unknown key id refetches a URL JWKS at most this often, so that tokens with random key
# ids cannot make the server hammer the identity provider.
REFETCH_INTERVAL = 60.0
# Without any keys yet, a failed fetch is retried sooner: every sign-in depends on it.
RETRY_AFTER_FAILURE = 10.0
# Keys fetched from a URL are refetched after this long, so a key the provider removed (revoked)
# stops being accepted; if that refetch fails, the keys already held stay in use.
MAX_KEY_AGE = 3600.0
MAX_TOKEN_LENGTH = 16_384
MAX_JWKS_BYTES = 1 << 20

# Asymmetric algorithms only: HS* with a public key as the secret is the classic forgery, and
# "none" is no signature at all.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPE_BY_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

# The user names an OIDC identity may map to: what the rest of Plinth can show and store safely.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._@+-]{1,254}")
_MAX_NAME_LENGTH = 256  # subjects and group names
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_DEPENDENCY = "the identity provider's keys (JWKS)"


@dataclass(frozen=True)
class OidcConfig:
    """How to verify one identity provider's tokens.

    ``jwks`` is a file path, a ``file://`` URL or an ``https://`` URL (``http://`` only on
    loopback: keys fetched in clear text could be replaced by anyone on the path).
    ``groups_claim`` holds a list of strings or one string of names separated by commas (or,
    without commas, by spaces); a token without it has no groups.
    """

    jwks: str
    issuer: str
    audience: str
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway: float = 30.0
    timeout: float = 5.0


@dataclass(frozen=True)
class OidcIdentity:
    """Who a verified token speaks for. ``email`` is None when absent or when the provider says
    it is not verified (``email_verified: false``)."""

    subject: str
    username: str
    groups: tuple[str, ...]
    email: str | None
    expires_at: datetime


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a JWT (three base64url segments, a JSON header): cheap,
    verifies nothing. Tells OIDC tokens from Plinth's own (``plt_...``)."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return False
    header, payload, signature = token.split(".")
    return (
        header.startswith("eyJ")  # base64url of '{"'
        and bool(payload)
        and all(_SEGMENT.fullmatch(part) for part in (header, payload, signature))
    )


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    alg: str | None
    key: Any  # a cryptography public key object


_Keys = dict[str | None, _Key]


class OidcVerifier:
    """Verifies bearer tokens of one identity provider. Thread-safe; keep one per provider.

    ``clock`` (seconds since the epoch) drives both the token time checks and the JWKS refetch
    limits, so tests can move time explicitly.
    """

    def __init__(self, config: OidcConfig, clock: Callable[[], float] = time.time) -> None:
        _check_config(config)
        self._config = config
        self._clock = clock
        self._keys = _key_source(config, clock)

    def verify(self, token: str) -> OidcIdentity:
        """The identity ``token`` proves; Unauthenticated saying why when it proves none, and
        Unavailable when the provider's keys cannot be had."""
        alg, kid = self._header(token)
        key = self._key(alg, kid)
        claims = self._decode(token, key, alg)
        expires = self._check_times(claims)
        return self._identity(claims, expires)

    def _header(self, token: str) -> tuple[str, str | None]:
        if not token:
            raise Unauthenticated("the bearer token is empty")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(
                f"the bearer token is {len(token)} characters long; at most {MAX_TOKEN_LENGTH} are accepted"
            )
        if not looks_like_jwt(token):
            raise Unauthenticated(
                "the bearer token is not a JWT: expected three base64url segments separated by dots"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer token's JWT header is not valid: {exc}") from None
        alg = header.get("alg")
        if alg not in self._config.algorithms:
            raise Unauthenticated(
                f"the token's algorithm {_show(alg)} is not accepted; expected one of {', '.join(self._config.algorithms)}"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated(f"the token's key id ('kid') must be a string, not {_show(kid)}")
        return str(alg), kid

    def _key(self, alg: str, kid: str | None) -> _Key:
        keys = self._keys.current()
        key = _pick(keys, kid)
        refetched = False
        if key is None:
            newer = self._keys.refetch(kid)
            if newer is not None:
                keys, refetched = newer, True
                key = _pick(keys, kid)
        if key is None:
            if kid is None:
                raise Unauthenticated(
                    f"the token names no key id ('kid') and the provider's JWKS holds {len(keys)} keys, so none can be chosen"
                )
            why = "even after refetching it" if refetched else self._keys.why_not_refetched()
            raise Unauthenticated(
                f"unknown key id {_show(kid)}: not in the provider's JWKS ({why})"
            )
        wanted = _KEY_TYPE_BY_ALG_PREFIX[alg[:2]]
        if key.kty != wanted:
            raise Unauthenticated(
                f"the token's algorithm {alg} needs an {wanted} key, but key {_show(key.kid)} is {key.kty}"
            )
        if key.alg is not None and key.alg != alg:
            raise Unauthenticated(
                f"the token's algorithm {alg} is not the algorithm {key.alg} the JWKS gives key {_show(key.kid)}"
            )
        return key

    def _decode(self, token: str, key: _Key, alg: str) -> dict[str, Any]:
        config = self._config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                # Times are checked by _check_times against the injectable clock.
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                f"bad signature: the token was not signed by key {_show(key.kid)} of the provider's JWKS"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim; it is required") from None
        except jwt.InvalidAudienceError:
            got = _show(_unverified_claim(token, "aud"))
            raise Unauthenticated(
                f"wrong audience: expected {config.audience!r} in the token's 'aud' claim, got {got}"
            ) from None
        except jwt.InvalidIssuerError:
            got = _show(_unverified_claim(token, "iss"))
            raise Unauthenticated(f"wrong issuer: expected {config.issuer!r}, got {got}") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # ValueError/TypeError: a crafted token must be refused, never crash the request.
            raise Unauthenticated(f"the token was refused: {exc}") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> datetime:
        now, leeway = self._clock(), self._config.leeway
        exp = _time_claim(claims, "exp")
        assert exp is not None  # required by _decode
        if exp <= now - leeway:
            raise Unauthenticated(
                f"the token expired at {_iso(exp)}, {now - exp:.0f} s ago (clock skew allowed: {leeway:g} s)"
            )
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise Unauthenticated(
                f"the token is not valid yet: not before {_iso(nbf)}, {nbf - now:.0f} s from now"
            )
        iat = _time_claim(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise Unauthenticated(
                f"the token was issued in the future ({_iso(iat)}); the provider's clock or ours is wrong"
            )
        return datetime.fromtimestamp(exp, UTC)

    def _identity(self, claims: Mapping[str, Any], expires: datetime) -> OidcIdentity:
        config = self._config
        subject = claims["sub"]
        if not isinstance(subject, str) or not _is_clean_name(subject):
            raise Unauthenticated(
                f"the token's 'sub' claim is not a usable subject: {_show(subject)}"
            )
        username = _claim(claims, config.username_claim)
        if username is None:
            raise Unauthenticated(
                f"the token has no {config.username_claim!r} claim, the configured user name claim; set the username claim to one the provider sends (such as 'email' or 'sub')"
            )
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise Unauthenticated(
                f"the token's {config.username_claim!r} claim is not a usable user name: {_show(username)}; expected 1 to 254 letters, digits or . _ @ + -"
            )
        email = claims.get("email")
        if (
            not isinstance(email, str)
            or not _is_clean_name(email)
            or claims.get("email_verified") is False
        ):
            email = None
        groups = _groups(_claim(claims, config.groups_claim), config.groups_claim)
        return OidcIdentity(subject, username, groups, email, expires)


class _FileKeys:
    """A JWKS file, re-read whenever it changes (mtime, size or inode)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: _Keys | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def current(self) -> _Keys:
        with self._lock:
            try:
                stat = self._path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                if self._keys is None or stamp != self._stamp:
                    # Stamp before reading: a write after it changes the stamp again.
                    self._keys, self._stamp = (
                        _parse_jwks(self._path.read_bytes(), str(self._path)),
                        stamp,
                    )
            except (OSError, Unavailable) as exc:
                problem = exc if isinstance(exc, Unavailable) else _file_problem(self._path, exc)
                if self._keys is None:
                    raise problem from None
                # A file being rewritten in place: keep the last good keys, read it again next time.
                log.warning("%s; keeping the keys read before", problem.message)
            return self._keys

    def refetch(self, kid: str | None) -> _Keys | None:
        return None  # current() already rereads a changed file

    def why_not_refetched(self) -> str:
        return f"the JWKS file {self._path} holds no such key"


class _UrlKeys:
    """A JWKS URL, fetched on first use, again for an unknown key id (at most once per
    REFETCH_INTERVAL) and after MAX_KEY_AGE."""

    def __init__(self, url: str, timeout: float, clock: Callable[[], float]) -> None:
        self._url = url
        self._timeout = timeout
        self._clock = clock
        self._keys: _Keys | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> _Keys:
        keys = self._keys
        if keys is None:
            with self._lock:
                if self._keys is not None:  # another request fetched them meanwhile
                    return self._keys
                if not self._may_fetch(RETRY_AFTER_FAILURE):
                    raise Unavailable(
                        f"the JWKS at {self._url} could not be fetched; next attempt within {RETRY_AFTER_FAILURE:g} s of the last",
                        _DEPENDENCY,
                    )
                return self._fetch()
        if _within(self._clock() - self._fetched_at, MAX_KEY_AGE):
            return keys
        # Old keys: one request refreshes them; the others go on with the old ones meanwhile
        # rather than wait for the provider.
        if not self._lock.acquire(blocking=False):
            return keys
        try:
            if self._may_fetch(REFETCH_INTERVAL):
                return self._fetch()
        except Unavailable as exc:
            log.warning("%s; keeping the keys fetched before", exc.message)
        finally:
            self._lock.release()
        return keys

    def refetch(self, kid: str | None) -> _Keys | None:
        with self._lock:
            if self._keys is not None and _pick(self._keys, kid) is not None:
                return self._keys  # another request fetched it meanwhile
            if not self._may_fetch(REFETCH_INTERVAL):
                return None
            return self._fetch()

    def why_not_refetched(self) -> str:
        return f"not refetched: {self._url} is fetched at most once per {REFETCH_INTERVAL:g} s"

    def _may_fetch(self, interval: float) -> bool:
        return self._attempted_at is None or not _within(
            self._clock() - self._attempted_at, interval
        )

    def _fetch(self) -> _Keys:
        self._attempted_at = now = self._clock()
        keys = _parse_jwks(_download(self._url, self._timeout), self._url)
        self._keys, self._fetched_at = keys, now
        return keys


def _within(elapsed: float, interval: float) -> bool:
    # A clock set backwards must not block fetching until it catches up again.
    return 0.0 <= elapsed < interval


def _download(url: str, timeout: float) -> bytes:
    # httpx's timeout bounds each connect and read; the deadline bounds a provider that
    # trickles bytes, each read in time, forever.
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise Unavailable(
                    f"the JWKS at {url} answered HTTP {response.status_code}, expected 200 (redirects are not followed: configure the final URL)",
                    _DEPENDENCY,
                )
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise Unavailable(
                        f"the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes", _DEPENDENCY
                    )
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline passed")
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise Unavailable(
            f"the JWKS at {url} did not answer within {timeout:g} s", _DEPENDENCY
        ) from None
    except httpx.HTTPError as exc:
        raise Unavailable(f"the JWKS at {url} could not be fetched: {exc}", _DEPENDENCY) from None
    return b"".join(chunks)


def _parse_jwks(data: bytes, where: str) -> _Keys:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise Unavailable(f"the JWKS at {where} is not JSON: {exc}", _DEPENDENCY) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise Unavailable(
            f"the JWKS at {where} is not a JSON object with a 'keys' list", _DEPENDENCY
        )
    keys: _Keys = {}
    for entry in entries:
        key = _parse_key(entry, where)
        if key is not None:
            keys[key.kid] = key
    if not keys:
        raise Unavailable(
            f"the JWKS at {where} holds no usable signing key (RSA, EC or OKP)", _DEPENDENCY
        )
    return keys


def _parse_key(entry: object, where: str) -> _Key | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None  # encryption keys are not for verifying tokens
    kty, kid, alg = entry.get("kty"), entry.get("kid"), entry.get("alg")
    if kty not in ("RSA", "EC", "OKP"):
        return None  # symmetric ("oct") keys never verify tokens here
    if (kid is not None and not isinstance(kid, str)) or (
        alg is not None and not isinstance(alg, str)
    ):
        return None
    try:
        parsed = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        log.warning("skipping key %r of the JWKS at %s: %s", kid, where, exc)
        return None
    return _Key(kid, kty, alg, parsed.key)


def _file_problem(path: Path, exc: OSError) -> Unavailable:
    return Unavailable(
        f"the JWKS file {path} could not be read: {exc.strerror or exc}", _DEPENDENCY
    )


def _pick(keys: _Keys, kid: str | None) -> _Key | None:
    if kid is None:
        # A provider with a single key may leave "kid" out of its tokens.
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)


def _key_source(config: OidcConfig, clock: Callable[[], float]) -> _FileKeys | _UrlKeys:
    jwks = config.jwks
    parts = urlsplit(jwks)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise InvalidArgument(
                f"the JWKS URL {jwks!r} uses plain http; use https (http is accepted on loopback only, since keys fetched in clear text can be replaced on the way)"
            )
        return _UrlKeys(jwks, config.timeout, clock)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"the JWKS URL {jwks!r} names a host; a file:// URL must be local"
            )
        return _FileKeys(Path(unquote(parts.path)))
    if scheme == "" or len(scheme) == 1:  # a path (a Windows path starts with a drive letter)
        return _FileKeys(Path(jwks))
    raise InvalidArgument(
        f"the JWKS {jwks!r} must be a file path, a file:// URL or an https:// URL"
    )


def _check_config(config: OidcConfig) -> None:
    for name in ("jwks", "issuer", "audience", "username_claim", "groups_claim"):
        if not getattr(config, name):
            raise InvalidArgument(f"the OpenID Connect setting {name!r} is empty; it is required")
    if not config.algorithms:
        raise InvalidArgument(
            "no OpenID Connect algorithm is accepted; name at least one, such as RS256"
        )
    for alg in config.algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            raise InvalidArgument(
                f"the algorithm {alg!r} is not accepted for OpenID Connect tokens; choose from {', '.join(sorted(SUPPORTED_ALGORITHMS))} (HS* and 'none' are never accepted: a public key must not serve as a shared secret)"
            )
    if not (math.isfinite(config.leeway) and config.leeway >= 0):
        raise InvalidArgument(
            f"the OpenID Connect leeway {config.leeway!r} must be 0 or more seconds"
        )
    if not (math.isfinite(config.timeout) and config.timeout > 0):
        raise InvalidArgument(f"the JWKS timeout {config.timeout!r} must be more than 0 seconds")


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims or "." not in name:
        return claims.get(name)
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",") if "," in value else value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise Unauthenticated(
            f"the token's {name!r} claim must be a list of strings or one string of names separated by commas or spaces, not {type(value).__name__}"
        )
    groups: dict[str, None] = {}  # ordered, without duplicates
    for item in items:
        if not isinstance(item, str):
            raise Unauthenticated(f"the token's {name!r} claim holds a non-string {_show(item)}")
        item = item.strip()
        if not item:
            continue
        if not _is_clean_name(item):
            raise Unauthenticated(
                f"the token's {name!r} claim holds an unusable group name {_show(item)}"
            )
        groups[item] = None
    return tuple(groups)


def _is_clean_name(text: str) -> bool:
    # Category C: control, format (bidi overrides, zero-width), surrogate, private, unassigned.
    return 0 < len(text) <= _MAX_NAME_LENGTH and not any(
        unicodedata.category(ch).startswith("C") for ch in text
    )


_LATEST_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z: datetime's range


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(
            f"the token's {name!r} claim must be a number of seconds, not {_show(value)}"
        )
    if not 0 <= value <= _LATEST_TIME:
        raise Unauthenticated(f"the token's {name!r} claim {value!r} is not a usable time")
    return float(value)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _unverified_claim(token: str, name: str) -> Any:
    # Only for messages, after the signature was verified (PyJWT checks claims after it).
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return payload.get(name)


def _show(value: object, limit: int = 80) -> str:
    """A value from a token, fit for a message: repr escapes control characters; long values
    are cut, since a message must never carry a whole token."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
