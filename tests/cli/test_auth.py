"""``plinth users | groups | tokens | grants | login | logout | whoami | audit`` against the
local store (whose own user is an admin), one real server with authentication on, and
``plinth server``'s refusal to serve other machines without it."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import plinth.client
from plinth import cli
from plinth.auth.access import access_for
from plinth.auth.identity import Authenticator
from plinth.auth.service import AuthService
from plinth.cli import main
from plinth.cli.auth import exposure_warning, is_loopback
from plinth.client import connect, default_client, set_default_client
from plinth.config import Settings, local_user
from plinth.errors import InvalidArgument, Unauthenticated
from plinth.store import engine as store_engine
from tests.backends import running_server

runner = CliRunner(env={"COLUMNS": "200"})
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Saved tokens go to a folder of this test's own; no token from the environment."""
    monkeypatch.setattr(cli.out, "width", 200)  # no table cell folded
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("PLINTH_TOKEN", "PLINTH_AUTH", "PLINTH_HOST"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "config"


def fresh_client() -> None:
    """The next command makes its client from the environment as it is now."""
    if plinth.client._default is not None:
        plinth.client._default.close()
    set_default_client(None)


def run(monkeypatch: pytest.MonkeyPatch, *args: str, input: str | None = None) -> Any:
    """``plinth`` as the console script runs it (a refused command prints its error and
    exits 1), with ``input`` typed at its prompts."""
    monkeypatch.setattr(sys, "argv", ["plinth", *args])
    with runner.isolation(input=input) as (stdout, stderr, _):
        try:
            main()
            code = 0
        except SystemExit as exited:
            code = int(exited.code or 0)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def ok(monkeypatch: pytest.MonkeyPatch, *args: str, input: str | None = None) -> tuple[str, str]:
    code, out, err = run(monkeypatch, *args, input=input)
    assert code == 0, out + err
    return out, err


def ok_json(monkeypatch: pytest.MonkeyPatch, *args: str, input: str | None = None) -> Any:
    return json.loads(ok(monkeypatch, *args, "--json", input=input)[0])


def fails(monkeypatch: pytest.MonkeyPatch, *args: str, input: str | None = None) -> str:
    """The error of a refused command: exit 1, the message on stderr, nothing on stdout."""
    code, out, err = run(monkeypatch, *args, input=input)
    assert code == 1, out + err
    assert all(line.endswith(": ") for line in out.splitlines())  # only the prompts
    assert "error: " in err
    return " ".join(err.split())


def local_auth() -> AuthService:
    service: AuthService = default_client().auth
    return service


def authenticate(secret: str) -> Any:
    return Authenticator(access_for(default_client().tracking.store)).authenticate(secret)


# -- the local store: bootstrap, users, groups ---------------------------------------------


def test_whoami_on_the_local_store_is_its_own_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    me = ok_json(monkeypatch, "whoami")
    assert me == {"name": local_user() or "local", "role": "admin", "kind": "user"} | {
        "groups": [],
        "via": "local",
    }
    shown, _ = ok(monkeypatch, "whoami")
    assert "(admin user, via local)" in shown and "the local store sqlite:" in shown


def test_the_first_admin_and_token_are_made_on_the_local_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown, _ = ok(monkeypatch, "users", "create", "alice", "--role", "admin")
    assert shown == "created user alice with the admin role\n"
    secret, notes = ok(monkeypatch, "tokens", "create", "--user", "alice", "--label", "laptop")
    # alone on stdout, for `export PLINTH_TOKEN=$(plinth tokens create)`
    assert secret.startswith("plt_") and secret.count("\n") == 1
    assert "will not be shown again" in notes and "for alice (laptop)" in notes
    principal = authenticate(secret.strip())
    assert (principal.name, principal.role.value, principal.via) == ("alice", "admin", "token")


def test_a_token_is_shown_once_then_listed_without_its_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok(monkeypatch, "users", "create", "ci", "--service")
    new = ok_json(monkeypatch, "tokens", "create", "--user", "ci", "--expires-in-days", "7")
    secret, token = new["secret"], new["token"]
    assert secret.startswith("plt_") and token["user"] == "ci"
    listed = ok_json(monkeypatch, "tokens", "list", "--user", "ci")
    assert [t["id"] for t in listed] == [token["id"]]
    assert "secret" not in listed[0]
    table, _ = ok(monkeypatch, "tokens", "list")
    assert token["id"] in table and "active" in table
    for output in (json.dumps(listed), table, ok(monkeypatch, "audit", "--json")[0]):
        assert secret not in output and secret[4:] not in output


def test_a_revoked_token_is_refused_and_listed_as_revoked(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "ci", "--service")
    new = ok_json(monkeypatch, "tokens", "create", "--user", "ci")
    assert authenticate(new["secret"]).name == "ci"
    shown, _ = ok(monkeypatch, "tokens", "revoke", new["token"]["id"])
    assert shown == f"revoked token {new['token']['id']} of ci\n"
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(new["secret"])
    assert "revoked" in ok(monkeypatch, "tokens", "list")[0]
    message = fails(monkeypatch, "tokens", "revoke", "nope")
    assert "token 'nope' not found" in message


def test_token_create_refuses_a_bad_lifetime_and_an_unknown_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = fails(monkeypatch, "tokens", "create", "--expires-in-days", "0")
    assert "expires_in_days must be more than 0" in message
    assert "user 'ghost' not found" in fails(monkeypatch, "tokens", "create", "--user", "ghost")


def test_users_create_asks_for_the_password_hidden_and_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, _ = ok(
        monkeypatch, "users", "create", "bob", "--email", "bob@example.com", "--password",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert PASSWORD not in out  # not echoed (the test runner shows the prompts on stdout)
    assert local_auth().login("bob", PASSWORD).token.user == "bob"
    user = ok_json(monkeypatch, "users", "show", "bob")
    assert (user["has_password"], user["email"], user["role"]) == (
        True,
        "bob@example.com",
        "viewer",
    )


def test_a_short_password_is_refused_with_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    message = fails(monkeypatch, "users", "create", "bob", "--password", input="short\nshort\n")
    assert "a password needs at least 12 characters" in message
    assert "user 'bob' not found" in fails(monkeypatch, "users", "show", "bob")


def test_users_create_refuses_a_bad_name_a_bad_role_and_a_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "user name 'bad name' is not valid" in fails(monkeypatch, "users", "create", "bad name")
    ok(monkeypatch, "users", "create", "alice")
    assert "user 'alice' already exists" in fails(monkeypatch, "users", "create", "alice")
    code, _, err = run(monkeypatch, "users", "create", "carol", "--role", "boss")
    assert code == 2 and "boss" in err  # typer's usage error names the choices


def test_users_list_show_set_role_disable_enable(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice", "--role", "editor")
    ok(monkeypatch, "users", "create", "ci", "--service")
    listed = ok_json(monkeypatch, "users", "list")
    assert [(u["name"], u["kind"], u["role"]) for u in listed] == [
        ("alice", "user", "editor"),
        ("ci", "service", "viewer"),
    ]
    table, _ = ok(monkeypatch, "users", "list")
    assert "alice" in table and "service" in table
    assert ok_json(monkeypatch, "users", "set-role", "alice", "ADMIN")["role"] == "admin"
    secret = ok_json(monkeypatch, "tokens", "create", "--user", "alice")["secret"]
    assert ok(monkeypatch, "users", "disable", "alice")[0] == "disabled alice\n"
    assert ok_json(monkeypatch, "users", "show", "alice")["disabled"] is True
    with pytest.raises(Unauthenticated, match="disabled"):
        authenticate(secret)
    ok(monkeypatch, "users", "enable", "alice")
    assert authenticate(secret).name == "alice"
    shown, _ = ok(monkeypatch, "users", "show", "alice")
    assert "alice  user  role admin  active" in shown
    assert "user 'ghost' not found" in fails(monkeypatch, "users", "disable", "ghost")


def test_set_password_of_a_user_by_the_local_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice")
    new = "another long passphrase"
    shown, _ = ok(monkeypatch, "users", "set-password", "alice", input=f"{new}\n{new}\n")
    assert shown.endswith("Repeat for confirmation: \nset the password of alice\n")
    assert local_auth().login("alice", new).token.user == "alice"
    with pytest.raises(Unauthenticated):
        local_auth().login("alice", PASSWORD)


def test_groups_create_list_add_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice")
    ok(monkeypatch, "users", "create", "bob")
    ok(monkeypatch, "groups", "create", "risk", "--description", "the risk team")
    assert ok_json(monkeypatch, "groups", "add", "risk", "alice")["members"] == ["alice"]
    shown, _ = ok(monkeypatch, "groups", "add", "risk", "bob")
    assert shown == "bob is in risk: alice, bob\n"
    assert ok_json(monkeypatch, "users", "show", "bob")["groups"] == ["risk"]
    listed = ok_json(monkeypatch, "groups", "list")
    assert [(g["name"], g["members"], g["description"]) for g in listed] == [
        ("risk", ["alice", "bob"], "the risk team")
    ]
    ok(monkeypatch, "groups", "remove", "risk", "alice")
    assert "alice" not in ok(monkeypatch, "groups", "list")[0]
    assert "group 'risk' already exists" in fails(monkeypatch, "groups", "create", "risk")
    assert "user 'ghost' not found" in fails(monkeypatch, "groups", "add", "risk", "ghost")
    assert "group 'nope' not found" in fails(monkeypatch, "groups", "add", "nope", "bob")


# -- grants and the audit log ------------------------------------------------------------


def test_grants_list_set_revoke_on_an_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    default_client().create_experiment("churn")
    ok(monkeypatch, "users", "create", "alice")
    ok(monkeypatch, "groups", "create", "risk")
    me = local_user() or "local"
    initial = ok_json(monkeypatch, "grants", "list", "experiment", "churn")
    assert {(g["grantee_type"], g["grantee"], g["level"]) for g in initial} == {
        ("user", me, "owner"),
        ("everyone", "*", "viewer"),
    }
    ok(monkeypatch, "grants", "set", "experiment", "churn", "--user", "alice", "editor")
    after = ok_json(
        monkeypatch, "grants", "set", "experiment", "churn", "promoter", "--group", "risk"
    )
    assert {(g["grantee"], g["level"]) for g in after} >= {
        ("alice", "editor"),
        ("risk", "promoter"),
    }
    table, _ = ok(monkeypatch, "grants", "list", "experiment", "churn")
    assert "permissions on experiment churn" in table and "promoter" in table
    revoked = ok_json(monkeypatch, "grants", "revoke", "experiment", "churn", "--user", "alice")
    assert "alice" not in {g["grantee"] for g in revoked}
    ok(monkeypatch, "grants", "revoke", "experiment", "churn", "--everyone")
    left = ok_json(monkeypatch, "grants", "list", "experiment", "churn")
    assert {g["grantee"] for g in left} == {me, "risk"}


def test_grants_refuse_a_bad_grantee_level_or_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice")
    typo = fails(monkeypatch, "grants", "set", "model", "churn", "viewer", "--user", "alice")
    assert "model 'churn' does not exist" in typo  # a grant names a resource that exists
    plinth.connect().registry.create_registered_model("churn")
    one = "name exactly one grantee"
    assert one in fails(monkeypatch, "grants", "set", "model", "churn", "viewer")
    both = ("grants", "set", "model", "churn", "viewer", "--user", "alice", "--everyone")
    assert one in fails(monkeypatch, *both)
    assert one in fails(monkeypatch, "grants", "revoke", "model", "churn")
    level = fails(monkeypatch, "grants", "set", "model", "churn", "boss", "--user", "alice")
    assert "unknown permission 'boss'; choose one of: viewer, editor, promoter, owner" in level
    ghost = fails(monkeypatch, "grants", "set", "model", "churn", "viewer", "--user", "ghost")
    assert "user 'ghost' not found" in ghost
    missing = fails(monkeypatch, "grants", "list", "experiment", "nope")
    assert "experiment 'nope' does not exist" in missing
    code, _, err = run(monkeypatch, "grants", "list", "dataset", "x")
    assert code == 2 and "dataset" in err


def test_grants_on_a_feature_group_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice")
    fs = plinth.connect().feature_store()
    fs.create_entity("customer", ["customer_id"])
    fs.create_feature_group("customer_stats", "customer", "event_time", {"orders": "int64"})
    set_ = ok_json(
        monkeypatch, "grants", "set", "feature_group", "customer_stats", "owner", "--user", "alice"
    )
    assert ("feature_group", "customer_stats", "alice", "owner") in {
        (g["kind"], g["resource"], g["grantee"], g["level"]) for g in set_
    }


def test_audit_lists_security_events_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    ok(monkeypatch, "users", "create", "alice")
    ok(monkeypatch, "groups", "create", "risk")
    token = ok_json(monkeypatch, "tokens", "create", "--user", "alice")["token"]
    ok(monkeypatch, "tokens", "revoke", token["id"])
    events = ok_json(monkeypatch, "audit")
    assert [e["event"] for e in events] == [
        "token_revoked",
        "token_created",
        "group_created",
        "user_created",
    ]
    assert events[3]["target"] == "user:alice"
    only = ok_json(monkeypatch, "audit", "--event", "token_created")
    assert [(e["target"], e["detail"]) for e in only] == [(f"token:{token['id']}", "alice")]
    assert len(ok_json(monkeypatch, "audit", "--limit", "1")) == 1
    assert ok_json(monkeypatch, "audit", "--actor", "nobody") == []
    table, _ = ok(monkeypatch, "audit")
    assert "security events" in table and "token_revoked" in table
    assert "max_results" in fails(monkeypatch, "audit", "--limit", "0")


# -- signing in ----------------------------------------------------------------------------


def test_login_needs_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "plinth login signs in to a Plinth server" in fails(monkeypatch, "login", "--token", "x")
    bad = fails(monkeypatch, "login", "--uri", "ftp://host", "--token", "x")
    assert "'ftp://host' is not a server address" in bad
    both = ("login", "--uri", "http://127.0.0.1:9", "--token", "t", "--user", "u")
    assert "give --token or --user, not both" in fails(monkeypatch, *both)
    assert (
        "no token was saved for http://h:1" in ok(monkeypatch, "logout", "--uri", "http://h:1")[0]
    )


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A real server with authentication on, and its home (whose store the CLI can use
    directly: how an operator makes the first admin)."""
    home = tmp_path / "server-home"
    with running_server(home, auth=True) as url:
        yield url, home
    fresh_client()


def bootstrap(monkeypatch: pytest.MonkeyPatch, home: Path) -> str:
    """On the server's own store (no server involved): the first admin, a password, a token."""
    monkeypatch.setenv("PLINTH_HOME", str(home))
    fresh_client()
    ok(monkeypatch, "users", "create", "alice", "--role", "admin", "--password",
       input=f"{PASSWORD}\n{PASSWORD}\n")  # fmt: skip
    secret = ok(monkeypatch, "tokens", "create", "--user", "alice")[0].strip()
    monkeypatch.setenv("PLINTH_HOME", str(home.parent / "client-home"))
    fresh_client()
    return secret


def test_login_with_a_token_then_whoami_against_a_server(
    server: tuple[str, Path], config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, home = server
    secret = bootstrap(monkeypatch, home)
    signed_in, notes = ok(monkeypatch, "login", "--uri", url, "--token", secret)
    assert signed_in == f"signed in to {url} as alice (admin user, via token)\n"
    credentials = config_home / "plinth" / "credentials.json"
    assert notes == f"token saved in {credentials}\n"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    assert json.loads(credentials.read_text()) == {url: secret}

    monkeypatch.setenv("PLINTH_URI", url)
    fresh_client()
    me = ok_json(monkeypatch, "whoami")
    assert (me["name"], me["role"], me["via"]) == ("alice", "admin", "token")
    assert ok(monkeypatch, "whoami")[0] == f"alice (admin user, via token) on {url}\n"
    with connect(url) as remote:  # the Python client picks the saved token up too
        assert remote.auth.whoami().name == "alice"
    # the server's admin manages users through it
    ok(monkeypatch, "users", "create", "bob", "--role", "editor")
    assert [u["name"] for u in ok_json(monkeypatch, "users", "list")] == ["alice", "bob"]

    assert ok_json(monkeypatch, "logout") == {"server": url, "forgotten": True}
    assert json.loads(credentials.read_text()) == {}
    fresh_client()
    assert "this server needs a token" in fails(monkeypatch, "whoami")


def test_login_with_a_password_asks_for_it_and_saves_a_new_token(
    server: tuple[str, Path], config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, home = server
    bootstrap(monkeypatch, home)
    shown, _ = ok(monkeypatch, "login", "--uri", url, "--user", "alice", input=f"{PASSWORD}\n")
    assert shown == f"Password: \nsigned in to {url} as alice (admin user, via token)\n"
    saved = json.loads((config_home / "plinth" / "credentials.json").read_text())[url]
    with connect(url, token=saved) as remote:
        tokens = remote.auth.list_tokens("alice")
    assert len(tokens) == 2 and tokens[-1].label.startswith("plinth login on ")
    # and for scripts, from standard input
    again = ok_json(monkeypatch, "login", "--uri", url, "--user", "alice", "--password-stdin",
                    input=f"{PASSWORD}\n")  # fmt: skip
    assert (again["server"], again["user"]["name"]) == (url, "alice")
    assert again["credentials"] == str(config_home / "plinth" / "credentials.json")


def test_login_with_a_wrong_password_or_token_is_refused_and_saves_nothing(
    server: tuple[str, Path], config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, home = server
    bootstrap(monkeypatch, home)
    wrong = fails(monkeypatch, "login", "--uri", url, "--user", "alice", input="not the one!!\n")
    assert "wrong user name or password" in wrong
    ghost = ("login", "--uri", url, "--user", "ghost", "--password-stdin")
    assert "wrong user name or password" in fails(monkeypatch, *ghost, input=f"{PASSWORD}\n")
    token = fails(monkeypatch, "login", "--uri", url, input="plt_made-up\n")
    assert "unknown API token" in token
    assert not (config_home / "plinth" / "credentials.json").exists()
    empty = fails(monkeypatch, "login", "--uri", url, "--user", "alice", "--password-stdin")
    assert "--password-stdin read no password" in empty


def test_a_token_revoked_through_the_server_stops_working(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, home = server
    secret = bootstrap(monkeypatch, home)
    monkeypatch.setenv("PLINTH_URI", url)
    monkeypatch.setenv("PLINTH_TOKEN", secret)
    fresh_client()
    other = ok_json(monkeypatch, "tokens", "create", "--label", "spare")
    ok(monkeypatch, "tokens", "revoke", other["token"]["id"])
    monkeypatch.setenv("PLINTH_TOKEN", other["secret"])
    fresh_client()
    assert f"API token {other['token']['id']} was revoked" in fails(monkeypatch, "whoami")


# -- plinth server: no open server by accident ------------------------------------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """What ``plinth server`` would have served (nothing starts in these tests)."""
    calls: list[Settings] = []
    monkeypatch.setattr("plinth.server.app.serve", calls.append)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "plinth.example.com"])
def test_server_refuses_a_non_loopback_address_without_auth(
    host: str, started: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    message = fails(monkeypatch, "server", "--host", host)
    assert f"refusing to serve {host!r} without authentication" in message
    assert "--auth" in message and "--insecure" in message
    assert started == []


def test_server_insecure_starts_with_a_loud_warning(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, err = ok(monkeypatch, "server", "--host", "0.0.0.0", "--insecure")
    assert "WARNING: serving 0.0.0.0 WITHOUT AUTHENTICATION" in " ".join(err.split())
    assert [(s.host, s.auth) for s in started] == [("0.0.0.0", False)]


def test_server_auth_goes_into_the_settings(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, err = ok(monkeypatch, "server", "--host", "0.0.0.0", "--auth", "--port", "6000")
    assert err.strip() == "dashboard: http://0.0.0.0:6000/  API: /api/v1 (docs at /docs)"
    monkeypatch.setenv("PLINTH_AUTH", "true")  # the default comes from the settings
    ok(monkeypatch, "server", "--host", "0.0.0.0")
    expected = [("0.0.0.0", 6000, True), ("0.0.0.0", 5151, True)]
    assert [(s.host, s.port, s.auth) for s in started] == expected
    assert "refusing to serve" in fails(monkeypatch, "server", "--host", "0.0.0.0", "--no-auth")
    ok(monkeypatch, "server", "--no-auth")  # the default host is loopback
    assert (started[-1].host, started[-1].auth) == ("127.0.0.1", False)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_loopback_addresses_need_no_auth(host: str) -> None:
    assert is_loopback(host)
    assert exposure_warning(host, auth=False, insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.0.0.1", "::ffff:10.0.0.1", "myhost"])
def test_other_addresses_need_auth_or_insecure(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(InvalidArgument, match="without authentication"):
        exposure_warning(host, auth=False, insecure=False)
    assert exposure_warning(host, auth=True, insecure=False) is None
    assert "WITHOUT AUTHENTICATION" in (exposure_warning(host, auth=False, insecure=True) or "")


@pytest.mark.integration
def test_whoami_never_shows_the_stores_password(
    postgres_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test database trusts local connections: any password is accepted
    with_password = postgres_uri.replace("postgres@", "postgres:s3cret@", 1)
    assert with_password != postgres_uri
    monkeypatch.setenv("PLINTH_STORE_URI", with_password)
    fresh_client()
    try:
        shown, _ = ok(monkeypatch, "whoami")
    finally:
        fresh_client()
        store_engine._stores.pop(with_password).dispose()  # before the database is dropped
    assert "s3cret" not in shown and "the local store postgresql+psycopg://postgres:***@" in shown
