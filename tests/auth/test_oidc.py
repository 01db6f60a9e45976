from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from plinth.auth.oidc import (
    MAX_KEY_AGE,
    REFETCH_INTERVAL,
    OidcConfig,
    OidcIdentity,
    OidcVerifier,
    looks_like_jwt,
)
from plinth.errors import InvalidArgument, Unauthenticated, Unavailable

ISSUER = "https://idp.example.test/realms/plinth"
AUDIENCE = "plinth"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = json.loads(codec.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _rsa(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return _rsa("rsa-1")


@pytest.fixture(scope="module")
def rotated_key() -> SigningKey:
    return _rsa("rsa-2")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(**changes: Any) -> dict[str, Any]:
    """Claims of a valid token at NOW; a change to None drops the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-123",
        "preferred_username": "alice",
        "email": "alice@example.test",
        "groups": ["data-science", "ops"],
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def write_jwks(path: Path, *keys: SigningKey) -> Path:
    path.write_text(json.dumps({"keys": [key.jwk() for key in keys]}))
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: SigningKey, ec_key: SigningKey) -> Path:
    return write_jwks(tmp_path / "jwks.json", rsa_key, ec_key)


def make_verifier(jwks: str | Path, clock: Clock, **settings: Any) -> OidcVerifier:
    config = OidcConfig(jwks=str(jwks), issuer=ISSUER, audience=AUDIENCE, **settings)
    return OidcVerifier(config, clock=clock)


@pytest.fixture
def verifier(jwks_file: Path, clock: Clock) -> OidcVerifier:
    return make_verifier(jwks_file, clock)


def refused(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    message = caught.value.message
    assert len(token) < 20 or token not in message  # never the whole token
    return message


class JwksServer:
    """A JWKS endpoint on loopback that counts the requests it answers."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self.body = json.dumps({"keys": [key.jwk() for key in keys]}).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


# --- valid tokens and the claims mapping ---


def test_a_valid_token_gives_the_identity_its_claims_name(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    identity = verifier.verify(rsa_key.sign(claims()))
    assert identity == OidcIdentity(
        subject="u-123",
        username="alice",
        groups=("data-science", "ops"),
        email="alice@example.test",
        expires_at=datetime.fromtimestamp(NOW + 300, UTC),
    )


def test_an_ec_signed_token_is_verified_with_the_ec_key(
    verifier: OidcVerifier, ec_key: SigningKey
) -> None:
    assert verifier.verify(ec_key.sign(claims(preferred_username="bob"))).username == "bob"


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["a", "b", "a"], ("a", "b")),
        ("a b  c", ("a", "b", "c")),
        ("Data Science, ops,", ("Data Science", "ops")),
        ([], ()),
        (None, ()),  # no groups claim at all
    ],
)
def test_groups_come_as_a_list_or_a_separated_string(
    verifier: OidcVerifier, rsa_key: SigningKey, groups: Any, expected: tuple[str, ...]
) -> None:
    assert verifier.verify(rsa_key.sign(claims(groups=groups))).groups == expected


@pytest.mark.parametrize("groups", [{"a": 1}, ["ok", 3], ["ok", "bad\x00name"], 7])
def test_a_groups_claim_of_another_shape_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey, groups: Any
) -> None:
    assert "'groups'" in refused(verifier, rsa_key.sign(claims(groups=groups)))


def test_claims_are_taken_from_the_configured_names_and_dotted_paths(
    jwks_file: Path, clock: Clock, rsa_key: SigningKey
) -> None:
    verifier = make_verifier(
        jwks_file, clock, username_claim="email", groups_claim="realm_access.roles"
    )
    token = rsa_key.sign(claims(realm_access={"roles": ["admin"]}))
    identity = verifier.verify(token)
    assert (identity.username, identity.groups) == ("alice@example.test", ("admin",))


def test_the_user_name_has_no_fallback_to_other_claims(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    message = refused(verifier, rsa_key.sign(claims(preferred_username=None)))
    assert "'preferred_username'" in message


@pytest.mark.parametrize("username", ["", "alice\nadmin", "al ice", "x" * 255, "ali\u202ece", 42])
def test_an_unusable_user_name_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey, username: Any
) -> None:
    assert "user name" in refused(verifier, rsa_key.sign(claims(preferred_username=username)))


def test_an_email_the_provider_has_not_verified_is_left_out(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    assert verifier.verify(rsa_key.sign(claims(email_verified=False))).email is None
    assert verifier.verify(rsa_key.sign(claims(email_verified=True))).email == "alice@example.test"
    assert verifier.verify(rsa_key.sign(claims(email="alice\x00@example.test"))).email is None


def test_a_token_without_kid_uses_the_only_key(
    tmp_path: Path, clock: Clock, rsa_key: SigningKey
) -> None:
    verifier = make_verifier(write_jwks(tmp_path / "one.json", rsa_key), clock)
    token = jwt.encode(claims(), rsa_key.private, algorithm="RS256")
    assert verifier.verify(token).username == "alice"


def test_a_token_without_kid_is_refused_when_the_jwks_has_several_keys(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    token = jwt.encode(claims(), rsa_key.private, algorithm="RS256")
    assert "no key id" in refused(verifier, token)


# --- times ---


def test_an_expired_token_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey, clock: Clock
) -> None:
    token = rsa_key.sign(claims())
    assert verifier.verify(token).username == "alice"
    clock.now = NOW + 300 + 31  # past exp and the 30 s leeway
    assert "expired" in refused(verifier, token)


def test_an_expiry_within_the_leeway_is_accepted(
    verifier: OidcVerifier, rsa_key: SigningKey, clock: Clock
) -> None:
    clock.now = NOW + 300 + 29
    assert verifier.verify(rsa_key.sign(claims())).username == "alice"


def test_a_token_not_valid_yet_is_refused(verifier: OidcVerifier, rsa_key: SigningKey) -> None:
    assert "not valid yet" in refused(verifier, rsa_key.sign(claims(nbf=int(NOW) + 60)))
    assert verifier.verify(rsa_key.sign(claims(nbf=int(NOW) + 20))).username == "alice"


def test_a_token_issued_in_the_future_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    assert "issued in the future" in refused(verifier, rsa_key.sign(claims(iat=int(NOW) + 60)))


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
def test_a_token_without_a_required_claim_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey, claim: str
) -> None:
    assert f"no '{claim}' claim" in refused(verifier, rsa_key.sign(claims(**{claim: None})))


@pytest.mark.parametrize("exp", ["soon", True, 1e300])
def test_an_exp_that_is_no_time_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey, exp: Any
) -> None:
    assert "'exp'" in refused(verifier, rsa_key.sign(claims(exp=exp)))


# --- issuer, audience, signature, algorithm ---


def test_a_token_of_another_issuer_is_refused(verifier: OidcVerifier, rsa_key: SigningKey) -> None:
    message = refused(verifier, rsa_key.sign(claims(iss="https://evil.example.test")))
    assert "wrong issuer" in message
    assert ISSUER in message
    assert "evil.example.test" in message


def test_a_token_for_another_audience_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    message = refused(verifier, rsa_key.sign(claims(aud="grafana")))
    assert "wrong audience: expected 'plinth'" in message
    assert verifier.verify(rsa_key.sign(claims(aud=["grafana", "plinth"]))).username == "alice"


def test_a_token_signed_by_another_key_is_refused(
    verifier: OidcVerifier, rotated_key: SigningKey
) -> None:
    impostor = SigningKey("rsa-1", "RS256", rotated_key.private)  # claims the provider's kid
    assert "bad signature" in refused(verifier, impostor.sign(claims()))


def test_a_token_whose_algorithm_does_not_fit_its_key_is_refused(
    verifier: OidcVerifier, ec_key: SigningKey
) -> None:
    token = ec_key.sign(claims(), kid="rsa-1")  # an ES256 signature naming the RSA key
    assert "needs an EC key" in refused(verifier, token)


def test_an_unsigned_token_is_refused(verifier: OidcVerifier) -> None:
    token = hand_made_token({"alg": "none", "kid": "rsa-1"}, claims(), lambda _: b"")
    assert looks_like_jwt(token)
    assert "'none' is not accepted" in refused(verifier, token)


def test_an_hs256_token_keyed_with_the_public_key_is_refused(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    secret = rsa_key.public_pem()
    token = hand_made_token(
        {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"},
        claims(),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    assert "'HS256' is not accepted" in refused(verifier, token)


@pytest.mark.parametrize("algorithms", [("HS256",), ("RS256", "none"), ()])
def test_symmetric_and_missing_algorithms_cannot_be_configured(
    jwks_file: Path, clock: Clock, algorithms: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidArgument):
        make_verifier(jwks_file, clock, algorithms=algorithms)


def test_an_algorithm_left_out_of_the_configuration_is_refused(
    jwks_file: Path, clock: Clock, ec_key: SigningKey
) -> None:
    verifier = make_verifier(jwks_file, clock, algorithms=("RS256",))
    assert "'ES256' is not accepted" in refused(verifier, ec_key.sign(claims()))


# --- malformed tokens ---


@pytest.mark.parametrize(
    "token",
    [
        "",
        "plt_abcdef0123456789",
        "a.b",
        "eyJa.eyJb.c.d",
        "eyJ!.eyJ.sig",
        "eyJhbGciOi.eyJzdWIiOiJ4In0.c2ln",  # header is cut-off JSON
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        "eyJ" + "A" * 20_000 + ".eyJ.sig",
    ],
)
def test_malformed_tokens_are_refused(verifier: OidcVerifier, token: str) -> None:
    refused(verifier, token)


def test_a_token_whose_header_is_not_an_object_is_refused(verifier: OidcVerifier) -> None:
    assert "header" in refused(verifier, f"eyJ{_b64(b'1')}.eyJ.c2ln")


def test_looks_like_jwt_tells_jwts_from_plinth_tokens(rsa_key: SigningKey) -> None:
    assert looks_like_jwt(rsa_key.sign(claims()))
    assert not looks_like_jwt("plt_3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6")
    assert not looks_like_jwt("plt_a.b.c")
    assert not looks_like_jwt("")
    assert not looks_like_jwt("eyJa.eyJb")
    assert not looks_like_jwt("eyJa..sig")


# --- a JWKS file ---


def test_an_unknown_key_id_is_refused(verifier: OidcVerifier, rotated_key: SigningKey) -> None:
    assert "unknown key id 'rsa-2'" in refused(verifier, rotated_key.sign(claims()))


def test_a_jwks_file_is_read_again_when_it_changes(
    verifier: OidcVerifier, jwks_file: Path, rsa_key: SigningKey, rotated_key: SigningKey
) -> None:
    new_token = rotated_key.sign(claims())
    assert verifier.verify(rsa_key.sign(claims())).username == "alice"
    refused(verifier, new_token)
    mtime = jwks_file.stat().st_mtime_ns
    write_jwks(jwks_file, rotated_key)
    os.utime(jwks_file, ns=(mtime + 10**9, mtime + 10**9))
    assert verifier.verify(new_token).username == "alice"
    assert "unknown key id 'rsa-1'" in refused(verifier, rsa_key.sign(claims()))


def test_a_broken_rewrite_keeps_the_keys_read_before(
    verifier: OidcVerifier, jwks_file: Path, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(claims())
    verifier.verify(token)
    jwks_file.write_text('{"keys": [')  # a writer caught half way
    assert verifier.verify(token).username == "alice"


def test_a_missing_or_broken_jwks_file_makes_the_keys_unavailable(
    tmp_path: Path, clock: Clock, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(claims())
    with pytest.raises(Unavailable, match="could not be read"):
        make_verifier(tmp_path / "absent.json", clock).verify(token)
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    with pytest.raises(Unavailable, match="no usable signing key"):
        make_verifier(tmp_path / "bad.json", clock).verify(token)


def test_a_file_url_names_a_jwks_file(jwks_file: Path, clock: Clock, rsa_key: SigningKey) -> None:
    verifier = make_verifier(jwks_file.as_uri(), clock)
    assert verifier.verify(rsa_key.sign(claims())).username == "alice"


@pytest.mark.parametrize(
    "jwks", ["http://idp.example.test/jwks", "ftp://idp.example.test/jwks", "file://host/x.json"]
)
def test_unsafe_or_unknown_jwks_locations_cannot_be_configured(jwks: str, clock: Clock) -> None:
    with pytest.raises(InvalidArgument):
        make_verifier(jwks, clock)


# --- a JWKS URL ---


def test_a_jwks_url_is_fetched_once_for_known_keys(
    jwks_server: JwksServer, clock: Clock, rsa_key: SigningKey
) -> None:
    jwks_server.publish(rsa_key)
    verifier = make_verifier(jwks_server.url, clock)
    for _ in range(3):
        assert verifier.verify(rsa_key.sign(claims())).username == "alice"
    assert jwks_server.requests == 1


def test_an_unknown_key_id_refetches_the_url_at_most_once_a_minute(
    jwks_server: JwksServer, clock: Clock, rsa_key: SigningKey, rotated_key: SigningKey
) -> None:
    jwks_server.publish(rsa_key)
    verifier = make_verifier(jwks_server.url, clock)
    later = claims(exp=int(NOW) + 3000)
    verifier.verify(rsa_key.sign(later))
    clock.now += REFETCH_INTERVAL + 1
    jwks_server.publish(rsa_key, rotated_key)  # the provider rotates its keys

    assert verifier.verify(rotated_key.sign(later)).username == "alice"
    assert jwks_server.requests == 2

    random_kid = SigningKey("random-1", "RS256", rotated_key.private)
    assert "not refetched" in refused(verifier, random_kid.sign(later))
    assert jwks_server.requests == 2

    clock.now += REFETCH_INTERVAL + 1
    random_kid = SigningKey("random-2", "RS256", rotated_key.private)
    assert "even after refetching" in refused(verifier, random_kid.sign(later))
    assert jwks_server.requests == 3


def test_keys_the_provider_removed_stop_working_after_max_key_age(
    jwks_server: JwksServer, clock: Clock, rsa_key: SigningKey, rotated_key: SigningKey
) -> None:
    jwks_server.publish(rsa_key)
    verifier = make_verifier(jwks_server.url, clock)
    token = rsa_key.sign(claims(exp=int(NOW + MAX_KEY_AGE) + 600))
    verifier.verify(token)
    jwks_server.publish(rotated_key)  # rsa-1 revoked
    clock.now += MAX_KEY_AGE - 1
    assert verifier.verify(token).username == "alice"
    clock.now += 2
    assert "unknown key id 'rsa-1'" in refused(verifier, token)
    assert jwks_server.requests == 2


def test_a_failing_refetch_keeps_the_keys_fetched_before(
    jwks_server: JwksServer, clock: Clock, rsa_key: SigningKey
) -> None:
    jwks_server.publish(rsa_key)
    verifier = make_verifier(jwks_server.url, clock)
    token = rsa_key.sign(claims(exp=int(NOW + MAX_KEY_AGE) + 600))
    verifier.verify(token)
    jwks_server.status = 500
    clock.now += MAX_KEY_AGE + 1
    assert verifier.verify(token).username == "alice"
    assert jwks_server.requests == 2


def test_a_jwks_url_answering_an_error_makes_the_keys_unavailable(
    jwks_server: JwksServer, clock: Clock, rsa_key: SigningKey
) -> None:
    jwks_server.status = 503
    verifier = make_verifier(jwks_server.url, clock)
    with pytest.raises(Unavailable, match="HTTP 503"):
        verifier.verify(rsa_key.sign(claims()))
    # Every request would otherwise wait for the provider: retried only after a pause.
    jwks_server.status = 200
    jwks_server.publish(rsa_key)
    with pytest.raises(Unavailable, match="next attempt"):
        verifier.verify(rsa_key.sign(claims()))
    assert jwks_server.requests == 1
    clock.now += 11
    assert verifier.verify(rsa_key.sign(claims())).username == "alice"


def test_a_jwks_url_that_never_answers_fails_within_the_timeout(
    clock: Clock, rsa_key: SigningKey
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        port = silent.getsockname()[1]
        verifier = make_verifier(f"http://127.0.0.1:{port}/jwks.json", clock, timeout=0.3)
        with pytest.raises(Unavailable, match=r"did not answer within 0\.3 s"):
            verifier.verify(rsa_key.sign(claims()))


def test_values_from_a_token_are_escaped_and_cut_in_messages(
    verifier: OidcVerifier, rsa_key: SigningKey
) -> None:
    message = refused(verifier, rsa_key.sign(claims(iss="https://evil\n" + "x" * 500)))
    assert "\n" not in message
    assert "x" * 100 not in message
