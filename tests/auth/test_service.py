"""AuthService on a real store (SQLite; PostgreSQL as an integration test): users, groups,
tokens, password sign-in, grants and the security events each of them records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from plinth.auth.access import access_for
from plinth.auth.context import acting_as
from plinth.auth.identity import Authenticator
from plinth.auth.service import MIN_PASSWORD, AuthService
from plinth.auth.types import ANONYMOUS, Kind, Principal, Role
from plinth.config import local_user
from plinth.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store, open_store
from plinth.store.schema import api_tokens, feature_views, registered_models, users
from plinth.store.sql import now_ms
from plinth.tracking.service import TrackingService
from tests.backends import empty_tables

PASSWORD = "correct horse battery"
ME = local_user() or "local"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'plinth.db'}")
    found = open_store(request.getfixturevalue("postgres_uri"))
    empty_tables(found)
    return found


@pytest.fixture
def auth(store: Store) -> AuthService:
    return AuthService(store)


def as_(name: str, role: Role = Role.EDITOR, groups: tuple[str, ...] = ()) -> Any:
    return acting_as(Principal(name, role, groups, via="token"))


def events(auth: AuthService, **filters: Any) -> list[tuple[str, str, str, str]]:
    """(actor, event, target, outcome), oldest first."""
    found = auth.list_security_events(**filters)
    return [(e.actor, e.event, e.target, e.outcome) for e in reversed(found)]


def authenticate(store: Store, secret: str) -> Principal:
    return Authenticator(access_for(store)).authenticate(secret)


# -- users --------------------------------------------------------------------------------


def test_create_user_and_service_account(auth: AuthService) -> None:
    alice = auth.create_user("alice", Role.EDITOR, email="alice@example.com")
    assert (alice.name, alice.kind, alice.role, alice.email) == (
        "alice",
        "user",
        Role.EDITOR,
        "alice@example.com",
    )
    assert (alice.disabled, alice.has_password, alice.created_by, alice.groups) == (
        False,
        False,
        ME,
        [],
    )
    bot = auth.create_user("ci-bot", kind="service")
    assert (bot.kind, bot.role) == ("service", Role.VIEWER)
    assert [u.name for u in auth.list_users()] == ["alice", "ci-bot"]
    assert auth.get_user("alice") == alice
    assert events(auth) == [
        (ME, "user_created", "user:alice", "ok"),
        (ME, "user_created", "user:ci-bot", "ok"),
    ]


def test_a_duplicate_user_or_group_already_exists(auth: AuthService) -> None:
    auth.create_user("alice")
    with pytest.raises(AlreadyExists, match="user 'alice' already exists"):
        auth.create_user("alice", Role.ADMIN)
    assert auth.get_user("alice").role is Role.VIEWER
    auth.create_group("risk")
    with pytest.raises(AlreadyExists, match="group 'risk' already exists"):
        auth.create_group("risk")


@pytest.mark.parametrize("name", ["", "bad name", "-dash", ".dot", "x/y", "a" * 201, "é"])
def test_bad_names_are_refused(auth: AuthService, name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"user name .* is not valid"):
        auth.create_user(name)
    with pytest.raises(InvalidArgument, match=r"group name .* is not valid"):
        auth.create_group(name)
    assert auth.list_users() == []


def test_bad_kind_and_role_are_invalid_arguments(auth: AuthService) -> None:
    with pytest.raises(InvalidArgument, match="kind must be 'user' or 'service'"):
        auth.create_user("alice", kind="robot")
    with pytest.raises(InvalidArgument, match="unknown role 'boss'; choose one of: admin"):
        auth.create_user("alice", "boss")  # type: ignore[arg-type]
    auth.create_user("alice", "editor")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="unknown role 'boss'"):
        auth.update_user("alice", role="boss")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="nothing to change for user 'alice'"):
        auth.update_user("alice")


def test_only_admins_manage_users(auth: AuthService) -> None:
    auth.create_user("alice", Role.EDITOR)
    with as_("alice"):
        with pytest.raises(PermissionDenied, match="needs the admin role"):
            auth.create_user("mallory", Role.ADMIN)
        with pytest.raises(PermissionDenied):
            auth.list_users()
        with pytest.raises(PermissionDenied):
            auth.update_user("alice", role=Role.ADMIN)
        with pytest.raises(PermissionDenied):
            auth.create_group("admins")
        assert auth.get_user("alice").name == "alice"  # themself
    auth.create_user("bob")
    with as_("alice"), pytest.raises(PermissionDenied, match="'alice' may not see user 'bob'"):
        auth.get_user("bob")
    with acting_as(ANONYMOUS), pytest.raises(Unauthenticated, match="sign in first"):
        auth.whoami()
    assert [u.name for u in auth.list_users()] == ["alice", "bob"]


def test_update_user_changes_role_and_status_and_records_it(auth: AuthService) -> None:
    auth.create_user("alice")
    assert auth.update_user("alice", role=Role.ADMIN).role is Role.ADMIN
    assert auth.update_user("alice", disabled=True).disabled is True
    assert auth.update_user("alice", email="a@example.com").email == "a@example.com"
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        auth.update_user("ghost", disabled=True)
    changes = auth.list_security_events(event="user_changed")
    assert [e.detail for e in reversed(changes)] == ["role=admin", "disabled=True", ""]


def test_whoami_says_who_the_caller_is(auth: AuthService) -> None:
    assert auth.whoami().name == ME and auth.whoami().via == "local"
    with as_("alice", Role.VIEWER, ("risk",)):
        me = auth.whoami()
    assert (me.name, me.role, me.groups, me.via) == ("alice", Role.VIEWER, ["risk"], "token")


# -- passwords ---------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id_hashes_and_exchanged_for_tokens(
    auth: AuthService, store: Store
) -> None:
    auth.create_user("alice", password=PASSWORD)
    with store.read() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "alice")).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    new = auth.login("alice", PASSWORD, label="laptop", expires_in_days=1)
    assert (new.token.user, new.token.label) == ("alice", "laptop")
    assert authenticate(store, new.secret).name == "alice"
    assert events(auth, event="sign_in") == [("alice", "sign_in", "user:alice", "ok")]


def test_a_wrong_password_an_unknown_user_or_no_password_is_refused(auth: AuthService) -> None:
    auth.create_user("alice", password=PASSWORD)
    auth.create_user("bot", kind="service")
    for user, password in (("alice", "not the password"), ("ghost", PASSWORD), ("bot", "")):
        with pytest.raises(Unauthenticated, match=r"^wrong user name or password$"):
            auth.login(user, password)
    assert [e[3] for e in events(auth, event="sign_in")] == ["refused"] * 3
    assert auth.list_tokens() == []


def test_short_passwords_are_refused(auth: AuthService) -> None:
    short = "x" * (MIN_PASSWORD - 1)
    with pytest.raises(InvalidArgument, match=f"at least {MIN_PASSWORD} characters"):
        auth.create_user("alice", password=short)
    auth.create_user("alice")
    with pytest.raises(InvalidArgument, match=f"at least {MIN_PASSWORD} characters"):
        auth.set_password("alice", short)
    assert auth.get_user("alice").has_password is False


def test_set_password_themself_needs_the_current_one(auth: AuthService) -> None:
    auth.create_user("alice", password=PASSWORD)
    auth.create_user("bob", password=PASSWORD)
    new = "a new long passphrase"
    with as_("alice"):
        with pytest.raises(PermissionDenied, match="current password given is wrong"):
            auth.set_password("alice", new, "guess")
        with pytest.raises(PermissionDenied, match="'alice' may not set the password of 'bob'"):
            auth.set_password("bob", new, PASSWORD)
        auth.set_password("alice", new, PASSWORD)
    assert auth.login("alice", new).token.user == "alice"
    auth.set_password("bob", new)  # an admin needs no current password
    assert auth.login("bob", new).token.user == "bob"
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        auth.set_password("ghost", new)
    assert [e[2] for e in events(auth, event="password_set")] == ["user:alice", "user:bob"]


def test_a_disabled_user_can_neither_sign_in_nor_use_a_token(
    auth: AuthService, store: Store
) -> None:
    auth.create_user("alice", password=PASSWORD)
    secret = auth.create_token(user="alice").secret
    auth.update_user("alice", disabled=True)
    with pytest.raises(Unauthenticated, match="wrong user name or password"):
        auth.login("alice", PASSWORD)
    with pytest.raises(Unauthenticated, match="user 'alice' is disabled"):
        authenticate(store, secret)
    auth.update_user("alice", disabled=False)
    assert authenticate(store, secret).name == "alice"


# -- tokens -------------------------------------------------------------------------------


def test_tokens_are_hashed_at_rest(auth: AuthService, store: Store) -> None:
    auth.create_user("alice")
    new = auth.create_token("ci", user="alice")
    assert new.secret.startswith("plt_") and len(new.secret) > 40
    with store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(api_tokens))]
    assert len(rows) == 1
    assert new.secret not in repr(rows) and new.secret[4:] not in repr(rows)
    assert rows[0]["secret_hash"] == hashlib.sha256(new.secret.encode()).hexdigest()
    listed = auth.list_tokens("alice")
    assert listed == [new.token] and not hasattr(listed[0], "secret")
    assert new.secret not in repr(auth.list_security_events())


def test_a_token_expires_after_its_days(auth: AuthService, store: Store) -> None:
    auth.create_user("alice")
    new = auth.create_token(user="alice", expires_in_days=2)
    assert new.token.expires_at is not None
    assert (new.token.expires_at - new.token.created_at).total_seconds() == 2 * 86_400
    assert authenticate(store, new.secret).name == "alice"
    with store.write() as conn:
        conn.execute(update(api_tokens).values(expires_at=now_ms() - 1))
    with pytest.raises(Unauthenticated, match=f"API token {new.token.id} has expired"):
        authenticate(store, new.secret)


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_a_token_lifetime_out_of_bounds_is_refused(auth: AuthService, days: float) -> None:
    auth.create_user("alice")
    with pytest.raises(InvalidArgument, match="expires_in_days must be more than 0"):
        auth.create_token(user="alice", expires_in_days=days)


def test_a_revoked_token_is_refused_at_once(auth: AuthService, store: Store) -> None:
    auth.create_user("alice")
    new = auth.create_token(user="alice")
    assert authenticate(store, new.secret).token_id == new.token.id
    revoked = auth.revoke_token(new.token.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated, match="was revoked"):
        authenticate(store, new.secret)
    assert auth.revoke_token(new.token.id).revoked_at == revoked.revoked_at  # kept
    with pytest.raises(NotFound, match="token 'nope' not found"):
        auth.revoke_token("nope")


def test_last_use_is_recorded(auth: AuthService, store: Store) -> None:
    auth.create_user("alice")
    new = auth.create_token(user="alice")
    assert auth.list_tokens("alice")[0].last_used_at is None
    authenticate(store, new.secret)
    assert auth.list_tokens("alice")[0].last_used_at is not None
    assert events(auth, event="token_used") == [
        ("alice", "token_used", f"token:{new.token.id}", "ok")
    ]


def test_tokens_of_others_only_by_an_admin(auth: AuthService) -> None:
    auth.create_user("alice")
    auth.create_user("bob")
    bobs = auth.create_token(user="bob")
    with as_("alice"):
        own = auth.create_token("mine")
        assert own.token.user == "alice"
        with pytest.raises(PermissionDenied, match="'alice' may not create a token for 'bob'"):
            auth.create_token(user="bob")
        assert auth.list_tokens() == [own.token]  # their own, without asking
        with pytest.raises(PermissionDenied, match="may not list the tokens of 'bob'"):
            auth.list_tokens("bob")
        # told exactly what a token that does not exist would tell: nothing about bob's
        with pytest.raises(NotFound, match=f"^token '{bobs.token.id}' not found$"):
            auth.revoke_token(bobs.token.id)
        auth.revoke_token(own.token.id)
    assert {t.user for t in auth.list_tokens()} == {"alice", "bob"}
    assert auth.list_tokens("bob")[0].revoked_at is None
    created = events(auth, event="token_created")
    assert [(actor, target) for actor, _, target, _ in created] == [
        (ME, f"token:{bobs.token.id}"),
        ("alice", f"token:{own.token.id}"),
    ]


# -- groups -------------------------------------------------------------------------------


def test_groups_and_members(auth: AuthService) -> None:
    auth.create_user("alice")
    auth.create_user("bob")
    risk = auth.create_group("risk", "the risk team")
    assert (risk.name, risk.description, risk.members) == ("risk", "the risk team", [])
    auth.add_group_member("risk", "bob")
    assert auth.add_group_member("risk", "alice").members == ["alice", "bob"]
    assert auth.add_group_member("risk", "alice").members == ["alice", "bob"]  # once
    assert auth.get_user("alice").groups == ["risk"]
    assert auth.remove_group_member("risk", "alice").members == ["bob"]
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        auth.add_group_member("risk", "ghost")
    with pytest.raises(NotFound, match="group 'nope' not found"):
        auth.add_group_member("nope", "bob")
    with as_("bob"):
        assert [g.name for g in auth.list_groups()] == ["risk"]
        with pytest.raises(PermissionDenied):
            auth.add_group_member("risk", "bob")
    assert [(e[1], e[2]) for e in events(auth) if e[1].startswith("group")] == [
        ("group_created", "group:risk"),
        ("group_member_added", "group:risk"),
        ("group_member_added", "group:risk"),
        ("group_member_removed", "group:risk"),
    ]


# -- grants -------------------------------------------------------------------------------


def named(store: Store) -> None:
    """The model "churn" and the view "churn_features", as their services store them."""
    with store.write() as conn:
        conn.execute(
            registered_models.insert(),
            [{"name": "churn", "created_at": 1, "updated_at": 1}],
        )
        conn.execute(
            feature_views.insert(),
            [{"name": "churn_features", "version": 1, "features": "[]", "keys": "[]",
              "created_at": 1}],
        )  # fmt: skip


@pytest.fixture(autouse=True)
def _resources(request: pytest.FixtureRequest) -> None:
    if "auth" in request.fixturenames:
        named(request.getfixturevalue("store"))


def test_grants_name_a_resource_that_exists(auth: AuthService) -> None:
    with pytest.raises(NotFound, match="registered model 'chrun' does not exist"):
        auth.grant(Kind.MODEL, "chrun", "everyone", "*", "viewer")
    with pytest.raises(NotFound, match="feature group 'nope' does not exist"):
        auth.list_grants(Kind.FEATURE_GROUP, "nope")


def test_grants_need_the_owner_of_the_resource(auth: AuthService) -> None:
    for name in ("owner", "editor", "stranger"):
        auth.create_user(name, Role.EDITOR)
    auth.create_user("reader", Role.VIEWER)
    auth.grant(Kind.MODEL, "churn", "user", "owner", "owner")
    auth.grant(Kind.MODEL, "churn", "user", "reader", "owner")  # capped by the viewer role
    auth.grant(Kind.MODEL, "churn", "user", "editor", "editor")
    with as_("stranger"), pytest.raises(NotFound, match="registered model 'churn' does not exist"):
        auth.grant(Kind.MODEL, "churn", "user", "stranger", "owner")
    with as_("editor"), pytest.raises(PermissionDenied, match="needs the owner permission"):
        auth.grant(Kind.MODEL, "churn", "user", "editor", "owner")
    with as_("reader", Role.VIEWER), pytest.raises(PermissionDenied, match="needs the owner"):
        auth.list_grants(Kind.MODEL, "churn")
    with as_("owner"):
        after = auth.grant(Kind.MODEL, "churn", "user", "stranger", "viewer")
        assert ("stranger", "viewer") in {(g.grantee, g.level) for g in after}
        auth.revoke_grant(Kind.MODEL, "churn", "user", "editor")
    shown = {(g.grantee, g.level, g.granted_by) for g in auth.list_grants(Kind.MODEL, "churn")}
    assert shown == {
        ("owner", "owner", ME),
        ("reader", "owner", ME),
        ("stranger", "viewer", "owner"),
    }
    denied = auth.list_security_events(event="permission_denied")
    assert [(e.actor, e.target, e.outcome) for e in denied] == [
        ("reader", "model:churn", "refused"),
        ("editor", "model:churn", "refused"),
    ]
    assert events(auth, event="permission_revoked") == [
        ("owner", "permission_revoked", "model:churn", "ok")
    ]


def test_a_grant_replaces_the_grantees_level(auth: AuthService) -> None:
    auth.create_group("risk")
    auth.grant(Kind.FEATURE_VIEW, "churn_features", "group", "risk", "viewer")
    found = auth.grant(Kind.FEATURE_VIEW, "churn_features", "group", "risk", "EDITOR")
    assert [(g.kind, g.grantee_type, g.grantee, g.level) for g in found] == [
        (Kind.FEATURE_VIEW, "group", "risk", "editor")
    ]
    granted = auth.list_security_events(event="permission_granted")
    assert [e.detail for e in reversed(granted)] == ["group:risk=viewer", "group:risk=editor"]


def test_grants_check_their_grantee_level_and_kind(auth: AuthService) -> None:
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        auth.grant(Kind.MODEL, "churn", "user", "ghost", "viewer")
    with pytest.raises(NotFound, match="group 'ghosts' not found"):
        auth.grant(Kind.MODEL, "churn", "group", "ghosts", "viewer")
    with pytest.raises(InvalidArgument, match='"everyone" takes the grantee "\\*"'):
        auth.grant(Kind.MODEL, "churn", "everyone", "all", "viewer")
    with pytest.raises(InvalidArgument, match="grantee_type must be 'user', 'group' or"):
        auth.grant(Kind.MODEL, "churn", "team", "x", "viewer")
    with pytest.raises(InvalidArgument, match="grantee_type must be"):
        auth.revoke_grant(Kind.MODEL, "churn", "team", "x")
    with pytest.raises(InvalidArgument, match="unknown permission 'none'"):
        auth.grant(Kind.MODEL, "churn", "everyone", "*", "none")
    with pytest.raises(InvalidArgument, match="unknown resource kind 'dataset'"):
        auth.list_grants("dataset", "x")  # type: ignore[arg-type]
    # a kind given as its name, as a Python caller may
    assert auth.grant("model", "churn", "everyone", "*", "viewer")[0].kind is Kind.MODEL  # type: ignore[arg-type]
    assert auth.list_grants(Kind.MODEL, "churn")[0].grantee == "*"


def test_experiment_grants_follow_its_id_and_show_its_name(
    auth: AuthService, store: Store, tmp_path: Path
) -> None:
    tracking = TrackingService(store, ArtifactStore(str(tmp_path / "artifacts")))
    experiment = tracking.create_experiment("churn")
    auth.create_user("alice")
    found = auth.grant(Kind.EXPERIMENT, "churn", "user", "alice", "editor")
    assert {(g.resource, g.grantee, g.level) for g in found} == {
        ("churn", ME, "owner"),
        ("churn", "*", "viewer"),
        ("churn", "alice", "editor"),
    }
    by_id = auth.list_grants(Kind.EXPERIMENT, experiment.id)  # the same grants
    assert {(g.resource, g.grantee) for g in by_id} == {(experiment.id, g.grantee) for g in found}
    with pytest.raises(NotFound, match="experiment 'nope' does not exist"):
        auth.list_grants(Kind.EXPERIMENT, "nope")


def test_a_refused_write_to_a_run_names_the_run_and_its_experiment(
    auth: AuthService, store: Store, tmp_path: Path
) -> None:
    tracking = TrackingService(store, ArtifactStore(str(tmp_path / "artifacts")))
    experiment = tracking.create_experiment("churn")
    run = tracking.create_run("churn", "r1")
    auth.create_user("alice")  # everyone may read the experiment; alice may not change it
    said = f"'alice' may not write run '{run.id}' of experiment 'churn': that needs the editor"
    with as_("alice"):
        with pytest.raises(PermissionDenied, match=f"^{said} permission on its experiment "):
            tracking.set_tags(run.id, {"k": "v"})
        with pytest.raises(PermissionDenied, match=f"^{said}"):
            tracking.log_params(run.id, {"lr": 0.1})  # as MLflow's log-parameter does
    denied = auth.list_security_events(event="permission_denied")
    assert [(e.actor, e.target) for e in denied] == [("alice", f"experiment:{experiment.id}")] * 2


# -- the security log ------------------------------------------------------------------------


def test_security_events_filter_and_need_an_admin(auth: AuthService) -> None:
    auth.create_user("alice")
    auth.create_group("risk")
    start = now_ms() + 1
    while now_ms() < start:  # the next millisecond: since_ms takes events at or after it
        pass
    auth.create_token(user="alice")
    assert [e.event for e in auth.list_security_events(since_ms=start)] == ["token_created"]
    assert [e.event for e in auth.list_security_events(max_results=1)] == ["token_created"]
    assert auth.list_security_events(actor="alice") == []
    with pytest.raises(InvalidArgument):
        auth.list_security_events(max_results=0)
    with as_("alice"), pytest.raises(PermissionDenied, match="needs the admin role"):
        auth.list_security_events()
