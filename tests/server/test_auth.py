"""A server with authentication on: tokens, their expiry and revocation, the actor taken
from the token, private-by-default resources, the failure limit, OpenID Connect sign-in
and the security log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import update

from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.config import load_settings
from plinth.errors import NotFound, PermissionDenied, Unauthenticated
from plinth.server.app import create_app
from plinth.store.engine import open_store
from plinth.store.schema import api_tokens
from tests.backends import running_server

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


class Server:
    def __init__(self, home: Path, **settings: Any) -> None:
        from fastapi.testclient import TestClient

        self.settings = load_settings(home=home, auth=True, **settings)
        self.app = create_app(self.settings)
        self.store = open_store(self.settings.resolved_store_uri)
        self.auth = AuthService(self.store)  # as the local admin: the bootstrap path
        self.http = TestClient(self.app)

    def user(self, name: str, role: Role = Role.EDITOR) -> str:
        self.auth.create_user(name, role=role)
        return self.auth.create_token("test", user=name).secret

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, f"/api/v1{path}", headers=headers, **kw)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(tmp_path / "server")
    with made.http:
        yield made


def test_every_call_needs_a_token_but_health_and_the_description(server: Server) -> None:
    refused = server.call("GET", "/experiments")
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "UNAUTHENTICATED"
    assert refused.headers["www-authenticate"] == "Bearer"
    for path in ("/health", "/ready", "/api/v1/openapi.json"):
        assert server.http.get(path).status_code == 200, path
    token = server.user("bob")
    assert server.call("GET", "/auth/whoami", token).json()["name"] == "bob"


def test_revoked_and_expired_tokens_stop_working_at_once(server: Server) -> None:
    token = server.user("bob")
    assert server.call("GET", "/experiments", token).status_code == 200
    [listed] = server.auth.list_tokens(user="bob")
    server.auth.revoke_token(listed.id)
    answer = server.call("GET", "/experiments", token)
    assert answer.status_code == 401 and "revoked" in answer.json()["message"]
    fresh = server.auth.create_token("again", user="bob")
    assert server.call("GET", "/experiments", fresh.secret).status_code == 200
    with server.store.write() as conn:
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == fresh.token.id)
            .values(expires_at=int(time.time() * 1000) - 1)
        )
    answer = server.call("GET", "/experiments", fresh.secret)
    assert answer.status_code == 401 and "expired" in answer.json()["message"]


def test_a_disabled_user_is_refused(server: Server) -> None:
    token = server.user("bob")
    server.auth.update_user("bob", disabled=True)
    assert server.call("GET", "/experiments", token).status_code == 401


def test_the_actor_comes_from_the_token_never_from_the_body(server: Server) -> None:
    token = server.user("bob")
    made = server.call("POST", "/runs", token, json={"experiment": "churn"})
    assert made.status_code == 200, made.text
    assert made.json()["owner"] == "bob"
    assert server.call("GET", "/experiments/churn", token).json()["owner"] == "bob"
    spoofed = server.call("POST", "/runs", token, json={"experiment": "churn", "owner": "alice"})
    assert spoofed.status_code == 422  # there is no such field to fill in


def test_a_viewer_reads_but_cannot_create(server: Server) -> None:
    bob, carol = server.user("bob"), server.user("carol", Role.VIEWER)
    run = server.call("POST", "/runs", bob, json={"experiment": "churn"}).json()
    assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 200
    refused = server.call("POST", "/experiments", carol, json={"name": "mine"})
    assert refused.status_code == 403 and "editor role" in refused.json()["message"]
    write = server.call("POST", f"/runs/{run['id']}/tags", carol, json={"tags": {"a": "b"}})
    assert write.status_code == 403


def test_new_resources_can_be_private_to_their_team(tmp_path: Path) -> None:
    server = Server(tmp_path / "private", private_by_default=True)
    with server.http:
        bob, alice, carol = (server.user(n) for n in ("bob", "alice", "carol"))
        server.auth.create_group("fraud")
        server.auth.add_group_member("fraud", "bob")
        server.auth.add_group_member("fraud", "alice")
        run = server.call("POST", "/runs", bob, json={"experiment": "fraud-model"}).json()
        # a teammate may see and change it, an outsider does not even see it
        assert server.call("GET", f"/runs/{run['id']}", alice).status_code == 200
        tagged = server.call("POST", f"/runs/{run['id']}/tags", alice, json={"tags": {"k": "v"}})
        assert tagged.status_code == 200
        assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 404
        assert server.call("GET", "/experiments/fraud-model", carol).status_code == 404
        listed = server.call("GET", "/experiments", carol).json()["items"]
        assert "fraud-model" not in [e["name"] for e in listed]
        found = server.call("POST", "/runs/search", carol, json={}).json()["items"]
        assert found == []
        # the owner shares it; the grant shows in the security log
        shared = server.call(
            "PUT",
            "/grants/experiment/fraud-model",
            bob,
            json={"grantee_type": "user", "grantee": "carol", "level": "viewer"},
        )
        assert shared.status_code == 200, shared.text
        assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 200
        events = server.auth.list_security_events(event="permission_granted")
        assert events[0].actor == "bob" and events[0].detail == "user:carol=viewer"
        # a teammate who is no owner may not share it further
        again = server.call(
            "PUT",
            "/grants/experiment/fraud-model",
            alice,
            json={"grantee_type": "everyone", "grantee": "*", "level": "viewer"},
        )
        assert again.status_code == 403


def test_repeated_failures_are_rate_limited(server: Server) -> None:
    good = server.user("bob")
    for _ in range(20):
        assert server.call("GET", "/experiments", "plt_wrong").status_code == 401
    limited = server.call("GET", "/experiments", good)
    assert limited.status_code == 429
    assert limited.json()["error_code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) > 0
    refusals = server.auth.list_security_events(event="token_refused")
    assert len(refusals) == 20 and refusals[0].outcome == "refused"


def test_password_sign_in_gives_a_token_and_failures_count(server: Server) -> None:
    server.auth.create_user("dana", role=Role.EDITOR, password="correct horse battery")
    issued = server.call(
        "POST", "/auth/login", json={"user": "dana", "password": "correct horse battery"}
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["secret"]
    assert server.call("GET", "/auth/whoami", token).json()["name"] == "dana"
    wrong = server.call("POST", "/auth/login", json={"user": "dana", "password": "guess"})
    assert wrong.status_code == 401
    assert server.auth.list_security_events(event="sign_in")[0].outcome == "refused"


def test_the_remote_client_sends_its_token(tmp_path: Path) -> None:
    from plinth.client import connect

    home = tmp_path / "server"
    with running_server(home, auth=True) as url:
        auth = AuthService(open_store(f"sqlite:///{(home / 'plinth.db').resolve()}"))
        auth.create_user("bob", role=Role.EDITOR)
        auth.create_user("carol", role=Role.VIEWER)
        bob = connect(url, token=auth.create_token("t", user="bob").secret)
        carol = connect(url, token=auth.create_token("t", user="carol").secret)
        with bob.start_run("churn", capture_environment=False) as run:
            run.log_metric("loss", 0.5, step=0)
        assert bob.get_run(run.id).owner == "bob"
        assert carol.get_run(run.id).metrics["loss"].last == 0.5
        with pytest.raises(PermissionDenied):
            carol.tracking.set_tags(run.id, {"a": "b"})
        with connect(url) as anonymous, pytest.raises(Unauthenticated):
            anonymous.get_run(run.id)
        assert bob.auth.whoami().name == "bob"
        bob.auth.revoke_grant  # noqa: B018 - the remote proxy has every operation
        with pytest.raises(NotFound):
            carol.auth.list_grants("experiment", "nope")
        bob.close()
        carol.close()


def test_identity_provider_tokens_sign_users_in(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    server = Server(
        tmp_path / "oidc",
        oidc_jwks=str(jwks),
        oidc_issuer="https://idp.test",
        oidc_audience="plinth",
        oidc_editor_groups=["ml-team"],
    )

    def token(name: str, groups: list[str], **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": "https://idp.test",
            "aud": "plinth",
            "sub": f"id-{name}",
            "preferred_username": name,
            "groups": groups,
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})

    with server.http:
        who = server.call("GET", "/auth/whoami", token("erin", ["ml-team", "fraud"])).json()
        assert who == {
            "name": "erin",
            "role": "editor",
            "kind": "user",
            "groups": ["fraud", "ml-team"],
            "via": "oidc",
        }
        assert server.auth.get_user("erin").created_by == "oidc:id-erin"
        viewer = server.call("GET", "/auth/whoami", token("fred", [])).json()
        assert viewer["role"] == "viewer"
        expired = token("erin", [], exp=int(time.time()) - 3600)
        assert server.call("GET", "/auth/whoami", expired).status_code == 401
        assert [e.actor for e in server.auth.list_security_events(event="sign_in")][:2] == [
            "fred",
            "erin",
        ]


def test_a_server_keeps_decisions_a_second_but_forgets_them_when_grants_change(
    server: Server,
) -> None:
    from plinth.auth.access import access_for
    from plinth.store.schema import grants

    bob, carol = server.user("bob"), server.user("carol")
    run = server.call("POST", "/runs", bob, json={"experiment": "churn"}).json()
    server.auth.revoke_grant(Kind.EXPERIMENT, "churn", "everyone", "*")
    assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 404
    server.auth.grant(Kind.EXPERIMENT, "churn", "user", "carol", "viewer")  # applies at once
    assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 200
    # a change made elsewhere (another replica, SQL) applies once the decision expires
    with server.store.write() as conn:
        conn.execute(grants.delete().where(grants.c.grantee == "carol"))
    assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 200
    access = access_for(server.store)
    assert access.decision_seconds == 1.0
    access._decisions = {k: (0.0, v) for k, (_, v) in access._decisions.items()}  # expired
    assert server.call("GET", f"/runs/{run['id']}", carol).status_code == 404
