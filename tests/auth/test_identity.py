"""Authenticator: a credential (a Plinth API token, an OpenID Connect JWT) becomes a
Principal, checked against the store on every call; last use is written at most once a
minute per token (the clock is driven by the tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, update

from plinth.auth import identity
from plinth.auth.access import Access, access_for
from plinth.auth.identity import LAST_USE_EVERY_MS, Authenticator
from plinth.auth.oidc import OidcIdentity
from plinth.auth.service import AuthService
from plinth.auth.types import Role
from plinth.errors import Unauthenticated
from plinth.store.engine import Store, open_store
from plinth.store.schema import api_tokens
from plinth.store.sql import now_ms

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


class Clock:
    """Starts at the real time: the tokens it checks were stamped by the store's clock."""

    def __init__(self) -> None:
        self.start = self.ms = now_ms()

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(identity, "now_ms", clock)
    monkeypatch.setattr(identity, "time", SimpleNamespace(time=lambda: clock.ms / 1000))
    return clock


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'plinth.db'}")


@pytest.fixture
def access(store: Store) -> Access:
    return access_for(store)


@pytest.fixture
def auth(store: Store) -> AuthService:
    return AuthService(store)


def token_for(auth: AuthService, user: str, **options: Any) -> str:
    return auth.create_token(user=user, **options).secret


def used(auth: AuthService) -> int:
    return len(auth.list_security_events(event="token_used"))


# -- API tokens ------------------------------------------------------------------------------


def test_a_token_becomes_its_users_principal(auth: AuthService, access: Access) -> None:
    auth.create_user("ci", Role.EDITOR, kind="service")
    auth.create_group("risk")
    auth.create_group("batch")
    auth.add_group_member("risk", "ci")
    auth.add_group_member("batch", "ci")
    new = auth.create_token(user="ci")
    principal = Authenticator(access).authenticate(new.secret)
    assert principal.name == "ci" and principal.role is Role.EDITOR
    assert (principal.groups, principal.kind, principal.via) == (
        ("batch", "risk"),
        "service",
        "token",
    )
    assert principal.token_id == new.token.id and principal.authenticated


def test_role_and_groups_are_read_at_every_call(auth: AuthService, access: Access) -> None:
    auth.create_user("alice")
    auth.create_group("risk")
    secret = token_for(auth, "alice")
    authenticator = Authenticator(access)
    assert authenticator.authenticate(secret).role is Role.VIEWER
    auth.update_user("alice", role=Role.ADMIN)
    auth.add_group_member("risk", "alice")
    principal = authenticator.authenticate(secret)
    assert (principal.role, principal.groups) == (Role.ADMIN, ("risk",))


@pytest.mark.parametrize("credential", ["", "secret", "Bearer plt_x", JWT, "a.b.c"])
def test_a_credential_that_is_no_plinth_token_is_refused(access: Access, credential: str) -> None:
    with pytest.raises(Unauthenticated, match=r"not a Plinth API token \(plt_\.\.\.\)"):
        Authenticator(access).authenticate(credential)


def test_an_unknown_token_or_its_hash_is_refused(auth: AuthService, store: Store) -> None:
    auth.create_user("alice")
    secret = token_for(auth, "alice")
    with store.read() as conn:
        stored = conn.execute(select(api_tokens.c.secret_hash)).scalar_one()
    authenticator = Authenticator(access_for(store))
    for credential in ("plt_made-up", "plt_" + stored, secret + "x", secret[:-1]):
        with pytest.raises(Unauthenticated, match=r"^unknown API token$"):
            authenticator.authenticate(credential)


def test_a_token_works_until_the_millisecond_it_expires(
    auth: AuthService, access: Access, store: Store, clock: Clock
) -> None:
    auth.create_user("alice")
    new = auth.create_token(user="alice")
    with store.write() as conn:
        conn.execute(update(api_tokens).values(expires_at=clock.start + 10))
    authenticator = Authenticator(access)
    clock.ms = clock.start + 9
    assert authenticator.authenticate(new.secret).name == "alice"
    clock.ms = clock.start + 10
    with pytest.raises(Unauthenticated, match=f"^API token {new.token.id} has expired$"):
        authenticator.authenticate(new.secret)


def test_revoked_and_disabled_are_refused_at_the_next_call(
    auth: AuthService, access: Access
) -> None:
    auth.create_user("alice")
    auth.create_user("bob")
    alices, bobs = auth.create_token(user="alice"), auth.create_token(user="bob")
    authenticator = Authenticator(access)
    assert authenticator.authenticate(alices.secret).name == "alice"
    assert authenticator.authenticate(bobs.secret).name == "bob"
    auth.revoke_token(alices.token.id)
    auth.update_user("bob", disabled=True)
    with pytest.raises(Unauthenticated, match=f"API token {alices.token.id} was revoked"):
        authenticator.authenticate(alices.secret)
    with pytest.raises(Unauthenticated, match="user 'bob' is disabled"):
        authenticator.authenticate(bobs.secret)


def test_last_use_is_written_at_most_once_a_minute(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    auth.create_user("alice")
    new = auth.create_token(user="alice")
    authenticator = Authenticator(access)
    authenticator.authenticate(new.secret)
    first = datetime.fromtimestamp(clock.start / 1000, UTC)
    assert auth.list_tokens("alice")[0].last_used_at == first
    clock.ms = clock.start + LAST_USE_EVERY_MS - 1
    authenticator.authenticate(new.secret)
    assert used(auth) == 1
    clock.ms = clock.start + LAST_USE_EVERY_MS
    authenticator.authenticate(new.secret)
    assert used(auth) == 2
    last = auth.list_tokens("alice")[0].last_used_at
    assert last == datetime.fromtimestamp(clock.ms / 1000, UTC)


def test_user_principal_of_a_stored_user(auth: AuthService, access: Access) -> None:
    auth.create_user("alice", Role.EDITOR)
    auth.create_group("risk")
    auth.add_group_member("risk", "alice")
    principal = Authenticator(access).user_principal("alice", "password")
    assert (principal.name, principal.role, principal.groups, principal.via) == (
        "alice",
        Role.EDITOR,
        ("risk",),
        "password",
    )
    auth.update_user("alice", disabled=True)
    for name in ("alice", "ghost"):
        with pytest.raises(Unauthenticated, match=f"no active user '{name}'"):
            Authenticator(access).user_principal(name, "password")


# -- OpenID Connect -------------------------------------------------------------------------


class FakeVerifier:
    """Stands for OidcVerifier (tested on its own): every JWT proves ``identity``."""

    def __init__(self, username: str, groups: tuple[str, ...] = ()) -> None:
        self.identity = OidcIdentity(
            "subject-1", username, groups, f"{username}@example.com", datetime.now(UTC)
        )

    def verify(self, token: str) -> OidcIdentity:
        return self.identity


def oidc(access: Access, verifier: FakeVerifier) -> Authenticator:
    roles = {"ml-admins": Role.ADMIN, "ml-team": Role.EDITOR}
    return Authenticator(access, verifier, roles)  # type: ignore[arg-type]


def test_a_first_oidc_sign_in_adds_the_user_with_the_highest_role_of_its_groups(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    principal = oidc(access, FakeVerifier("dana", ("ml-team", "ml-admins", "x"))).authenticate(JWT)
    assert (principal.name, principal.role, principal.via) == ("dana", Role.ADMIN, "oidc")
    assert principal.groups == ("ml-admins", "ml-team", "x")
    stored = auth.get_user("dana")
    assert (stored.role, stored.email, stored.created_by) == (
        Role.ADMIN,
        "dana@example.com",
        "oidc:subject-1",
    )
    shown = [(e.event, e.detail) for e in reversed(auth.list_security_events())]
    assert shown == [("user_created", "first OIDC sign-in"), ("sign_in", "oidc")]


def test_a_known_oidc_user_keeps_its_stored_role_and_groups(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    oidc(access, FakeVerifier("erin")).authenticate(JWT)  # the first sign-in adds erin
    auth.create_group("risk")
    auth.add_group_member("risk", "erin")
    principal = oidc(access, FakeVerifier("erin", ("ml-admins",))).authenticate(JWT)
    assert principal.role is Role.VIEWER  # the claims give a role only at the first sign-in
    assert principal.groups == ("ml-admins", "risk")
    auth.update_user("erin", disabled=True)
    with pytest.raises(Unauthenticated, match="user 'erin' is disabled"):
        oidc(access, FakeVerifier("erin")).authenticate(JWT)


def test_an_oidc_identity_never_becomes_a_local_account_of_the_same_name(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    auth.create_user("root-ops", Role.ADMIN, kind="service")
    with pytest.raises(Unauthenticated, match="belongs to another account"):
        oidc(access, FakeVerifier("root-ops")).authenticate(JWT)
    assert auth.get_user("root-ops").created_by != "oidc:subject-1"


def test_no_group_claim_gives_the_default_role_and_sign_ins_are_logged_once_a_minute(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    authenticator = oidc(access, FakeVerifier("finn"))
    assert authenticator.authenticate(JWT).role is Role.VIEWER
    clock.ms += LAST_USE_EVERY_MS - 1
    authenticator.authenticate(JWT)
    assert len(auth.list_security_events(event="sign_in")) == 1
    clock.ms += 1
    authenticator.authenticate(JWT)
    assert len(auth.list_security_events(event="sign_in")) == 2


def test_two_first_oidc_sign_ins_at_once_both_get_in(
    auth: AuthService, access: Access, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.errors import WriteConflict

    authenticator = oidc(access, FakeVerifier("gina", ("ml-team",)))
    real = authenticator._add_oidc_user

    def other_process_first(identity: Any, role: Role) -> None:
        real(identity, role)  # the other sign-in's insert lands first ...
        raise WriteConflict("users", "UNIQUE constraint failed: users.name")  # ... ours fails

    monkeypatch.setattr(authenticator, "_add_oidc_user", other_process_first)
    principal = authenticator.authenticate(JWT)
    assert (principal.name, principal.role) == ("gina", Role.EDITOR)
    assert [u.name for u in auth.list_users()] == ["gina"]


def test_a_name_holding_grants_from_before_is_not_given_to_an_oidc_identity(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    from sqlalchemy import insert

    from plinth.store.schema import grants

    with access.store.write() as conn:  # an owner recorded before users existed
        conn.execute(
            insert(grants),
            [{"kind": "model", "resource": "churn", "grantee_type": "user", "grantee": "hal",
              "level": 4, "granted_by": "migration 0009", "granted_at": 1}],
        )  # fmt: skip
    with pytest.raises(Unauthenticated, match="holds permissions from before"):
        oidc(access, FakeVerifier("hal")).authenticate(JWT)
    assert [u.name for u in auth.list_users()] == []


def test_a_user_of_the_identity_provider_takes_no_password(
    auth: AuthService, access: Access, clock: Clock
) -> None:
    from plinth.errors import InvalidArgument

    oidc(access, FakeVerifier("ida")).authenticate(JWT)
    with pytest.raises(InvalidArgument, match="signs in through the identity provider"):
        auth.set_password("ida", "correct horse battery")
    assert auth.get_user("ida").has_password is False
