"""``plinth users | groups | tokens | grants``, ``plinth login | logout | whoami`` and
``plinth audit``: the same AuthService operations against the local store (whose own user
is an admin: this is how a server's first admin and first token are made) or a server."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from plinth.auth.types import Kind, Role
from plinth.cli.common import JsonOption, _client, _fmt, _print_json, _say, _table, err, out
from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    from plinth.auth.service import AuthService
    from plinth.auth.types import Grant, Token, User, WhoAmI

users_app = typer.Typer(no_args_is_help=True, help="Users and service accounts.")
groups_app = typer.Typer(no_args_is_help=True, help="Groups (teams): grants reach every member.")
tokens_app = typer.Typer(
    no_args_is_help=True, help="API tokens: shown once, stored hashed, expiring, revocable."
)
grants_app = typer.Typer(
    no_args_is_help=True, help="Who holds which permission on an experiment, model or feature."
)

KindArgument = Annotated[
    Kind,
    typer.Argument(
        case_sensitive=False,
        help="experiment, model, feature_group, feature_view, abtest, monitor, pipeline",
    ),
]
LevelArgument = Annotated[str, typer.Argument(help="viewer, editor, promoter or owner")]
UserOption = Annotated[str | None, typer.Option("--user", help="a user or service account")]
GroupOption = Annotated[str | None, typer.Option("--group", help="a group")]
EveryoneOption = Annotated[bool, typer.Option("--everyone", help="every signed-in user")]
UriOption = Annotated[
    str | None, typer.Option("--uri", help="the Plinth server (default: PLINTH_URI)")
]


def _auth() -> AuthService:
    service: AuthService = _client().auth
    return service


def _password(prompt: str = "Password") -> str:
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    return value


# -- users ------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[Role, typer.Option(case_sensitive=False, help="on the whole server")] = (
        Role.VIEWER
    ),
    service: Annotated[
        bool, typer.Option("--service", help="a service account: a program's identity")
    ] = False,
    email: Annotated[str | None, typer.Option("--email")] = None,
    password: Annotated[
        bool, typer.Option("--password", help="give the user a password (asked for, hidden)")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Add a user (or with --service a service account, which signs in by token)."""
    secret = _password() if password else None
    kind = "service" if service else "user"
    user = _auth().create_user(name, role, kind, email, secret)
    _say(json_, user, f"created {user.kind} {user.name} with the {user.role.value} role")


@users_app.command("list")
def users_list(json_: JsonOption = False) -> None:
    """List users and service accounts (admins only)."""
    found = _auth().list_users()
    if json_:
        return _print_json(found)
    columns = ("name", "kind", "role", "groups", "email", "status", "password", "created", "by")
    out.print(_table("users", columns, [_user_row(u) for u in found]))


def _user_row(u: User) -> tuple[Any, ...]:
    status = "disabled" if u.disabled else "active"
    groups = ", ".join(u.groups) or "-"
    password = "yes" if u.has_password else "no"
    return (u.name, u.kind, u.role, groups, u.email, status, password, u.created_at, u.created_by)


@users_app.command("show")
def users_show(name: str, json_: JsonOption = False) -> None:
    """Show one user: kind, role, groups, status."""
    user = _auth().get_user(name)
    if json_:
        return _print_json(user)
    status = "disabled" if user.disabled else "active"
    lines = [
        f"{user.name}  {user.kind}  role {user.role.value}  {status}",
        f"email {user.email or '-'}  password {'set' if user.has_password else 'none'}",
        f"groups {', '.join(user.groups) or '-'}",
        f"created {_fmt(user.created_at)} by {user.created_by or '-'}",
    ]
    for line in lines:
        out.print(escape(line), highlight=False)


@users_app.command("set-role")
def users_set_role(
    name: str,
    role: Annotated[Role, typer.Argument(case_sensitive=False)],
    json_: JsonOption = False,
) -> None:
    """Change a user's role: admin, editor or viewer."""
    user = _auth().update_user(name, role=role)
    _say(json_, user, f"{user.name} now has the {user.role.value} role")


@users_app.command("disable")
def users_disable(name: str, json_: JsonOption = False) -> None:
    """Disable a user: their tokens and password stop working at once."""
    user = _auth().update_user(name, disabled=True)
    _say(json_, user, f"disabled {user.name}")


@users_app.command("enable")
def users_enable(name: str, json_: JsonOption = False) -> None:
    """Enable a disabled user again."""
    user = _auth().update_user(name, disabled=False)
    _say(json_, user, f"enabled {user.name}")


@users_app.command("set-password")
def users_set_password(
    name: Annotated[str | None, typer.Argument(help="default: yourself")] = None,
    json_: JsonOption = False,
) -> None:
    """Set a password (asked for, hidden): your own, or anyone's as an admin."""
    auth = _auth()
    me = auth.whoami()
    target = name or me.name
    current = ""
    if Role(me.role) is not Role.ADMIN:
        current = typer.prompt(
            "Current password (empty if none)", hide_input=True, default="", show_default=False
        )
    auth.set_password(target, _password("New password"), current)
    _say(json_, {"user": target, "password_set": True}, f"set the password of {target}")


# -- groups -----------------------------------------------------------------------------


@groups_app.command("create")
def groups_create(
    name: str,
    description: Annotated[str, typer.Option("--description")] = "",
    json_: JsonOption = False,
) -> None:
    """Add a group."""
    group = _auth().create_group(name, description)
    _say(json_, group, f"created group {group.name}")


@groups_app.command("list")
def groups_list(json_: JsonOption = False) -> None:
    """List groups and their members."""
    found = _auth().list_groups()
    if json_:
        return _print_json(found)
    rows = [(g.name, ", ".join(g.members) or "-", g.description, g.created_at) for g in found]
    out.print(_table("groups", ("name", "members", "description", "created"), rows))


@groups_app.command("add")
def groups_add(group: str, user: str, json_: JsonOption = False) -> None:
    """Add a user to a group."""
    found = _auth().add_group_member(group, user)
    _say(json_, found, f"{user} is in {found.name}: {', '.join(found.members)}")


@groups_app.command("remove")
def groups_remove(group: str, user: str, json_: JsonOption = False) -> None:
    """Take a user out of a group."""
    found = _auth().remove_group_member(group, user)
    _say(json_, found, f"{user} is not in {found.name}: {', '.join(found.members) or 'no members'}")


# -- tokens -----------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    label: Annotated[str, typer.Option("--label", help="what the token is for")] = "",
    user: Annotated[
        str | None, typer.Option("--user", help="whose (an admin: anyone's; default: yours)")
    ] = None,
    expires_in_days: Annotated[float, typer.Option("--expires-in-days")] = 90,
    json_: JsonOption = False,
) -> None:
    """Create an API token. Its secret is printed once, alone on standard output, and
    never again: the store keeps only its hash."""
    new = _auth().create_token(label, user, expires_in_days)
    if json_:
        return _print_json(new)
    t = new.token
    err.print(
        escape(
            f"token {t.id} for {t.user} ({t.label or 'no label'}), expires {_fmt(t.expires_at)}"
        ),
        highlight=False,
    )
    sys.stdout.write(new.secret + "\n")
    sys.stdout.flush()
    err.print(
        "[bold yellow]This secret will not be shown again:[/bold yellow] store it now "
        "(e.g. as PLINTH_TOKEN, or with plinth login --token)."
    )
    return None


@tokens_app.command("list")
def tokens_list(user: UserOption = None, json_: JsonOption = False) -> None:
    """List tokens (yours; an admin's: everyone's, or --user's), never their secrets."""
    found = _auth().list_tokens(user)
    if json_:
        return _print_json(found)
    columns = ("id", "user", "label", "status", "created", "expires", "last used")
    out.print(_table("API tokens", columns, [_token_row(t) for t in found]))


def _token_row(t: Token) -> tuple[Any, ...]:
    return (t.id, t.user, t.label, _status(t), t.created_at, t.expires_at, t.last_used_at)


def _status(t: Token) -> str:
    if t.revoked_at is not None:
        return "revoked"
    if t.expires_at is not None and t.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, json_: JsonOption = False) -> None:
    """Revoke a token: it is refused from the next request on."""
    token = _auth().revoke_token(token_id)
    _say(json_, token, f"revoked token {token.id} of {token.user}")


# -- grants -----------------------------------------------------------------------------


def _grantee(user: str | None, group: str | None, everyone: bool) -> tuple[str, str]:
    given = [(t, g) for t, g in (("user", user), ("group", group)) if g is not None]
    if everyone:
        given.append(("everyone", "*"))
    if len(given) != 1:
        raise InvalidArgument("name exactly one grantee: --user NAME, --group NAME or --everyone")
    return given[0]


def _grants_table(kind: Kind, resource: str, found: list[Grant]) -> None:
    rows = [(g.grantee_type, g.grantee, g.level, g.granted_by, g.granted_at) for g in found]
    columns = ("grantee type", "grantee", "level", "granted by", "at")
    out.print(_table(f"permissions on {kind.value} {resource}", columns, rows))


@grants_app.command("list")
def grants_list(kind: KindArgument, resource: str, json_: JsonOption = False) -> None:
    """Who holds which permission on a resource (its owners and admins may look)."""
    found = _auth().list_grants(kind, resource)
    return _print_json(found) if json_ else _grants_table(kind, resource, found)


@grants_app.command("set")
def grants_set(
    kind: KindArgument,
    resource: str,
    level: LevelArgument,
    user: UserOption = None,
    group: GroupOption = None,
    everyone: EveryoneOption = False,
    json_: JsonOption = False,
) -> None:
    """Give a user, a group or everyone a permission on a resource (replacing theirs)."""
    grantee_type, grantee = _grantee(user, group, everyone)
    found = _auth().grant(kind, resource, grantee_type, grantee, level)
    return _print_json(found) if json_ else _grants_table(kind, resource, found)


@grants_app.command("revoke")
def grants_revoke(
    kind: KindArgument,
    resource: str,
    user: UserOption = None,
    group: GroupOption = None,
    everyone: EveryoneOption = False,
    json_: JsonOption = False,
) -> None:
    """Take a user's, a group's or everyone's permission on a resource away."""
    grantee_type, grantee = _grantee(user, group, everyone)
    found = _auth().revoke_grant(kind, resource, grantee_type, grantee)
    return _print_json(found) if json_ else _grants_table(kind, resource, found)


# -- signing in -------------------------------------------------------------------------


def _server(uri: str | None) -> str:
    from plinth.config import load_settings

    server = uri or load_settings().uri
    if not server:
        raise InvalidArgument(
            "plinth login signs in to a Plinth server: give --uri http://HOST:PORT or set "
            "PLINTH_URI (the local store needs no sign-in)"
        )
    if not server.startswith(("http://", "https://")):
        raise InvalidArgument(f"{server!r} is not a server address: give http(s)://HOST:PORT")
    return server.rstrip("/")


@contextlib.contextmanager
def _remote_auth(server: str, token: str | None = None) -> Iterator[AuthService]:
    """The server's auth operations with exactly this token (or none), whatever is saved."""
    from plinth.remote import RemoteAuth, Transport

    transport = Transport(server, token=token)
    auth: Any = RemoteAuth(transport)  # AuthService's endpoints, over HTTP
    try:
        yield auth
    finally:
        transport.http.close()


def login(
    uri: UriOption = None,
    token: Annotated[
        str | None, typer.Option("--token", help="an API token (else asked for, hidden)")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="sign in with this user's password instead")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read --user's password from stdin")
    ] = False,
    expires_in_days: Annotated[
        float, typer.Option("--expires-in-days", help="of the token --user gets")
    ] = 30,
    json_: JsonOption = False,
) -> None:
    """Sign in to a server: check the token (or exchange --user's password for a new one)
    and save it for this server in your config folder, readable by you alone."""
    from plinth.auth.credentials import save_token
    from plinth.config import load_settings

    server = _server(uri)
    if token is not None and user is not None:
        raise InvalidArgument("give --token or --user, not both")
    if password_stdin and user is None:
        raise InvalidArgument("--password-stdin reads the password of --user: give --user too")
    if user is not None:
        password = _stdin_line() if password_stdin else _ask("Password", hide=True)
        with _remote_auth(server) as auth:
            label = f"plinth login on {socket.gethostname()}"
            token = auth.login(user, password, label[:200], expires_in_days).secret
    elif token is None:
        token = _ask("API token", hide=True)
    with _remote_auth(server, token.strip()) as auth:
        me = auth.whoami()
    path = save_token(server, token.strip())
    signed_in = {"server": server, "user": me, "credentials": str(path)}
    _say(json_, signed_in, f"signed in to {server} as {_who(me)}")
    err.print(escape(f"token saved in {path}"), highlight=False, soft_wrap=True)
    if me.via not in ("token", "oidc"):
        err.print(
            f"[yellow]warning:[/yellow] {escape(server)} does not check tokens (its "
            "authentication is off): every caller acts as its own user"
        )
    if load_settings().token:
        err.print("[yellow]note:[/yellow] PLINTH_TOKEN is set: it is sent instead of this token")


def _ask(prompt: str, hide: bool) -> str:
    value: str = typer.prompt(prompt, hide_input=hide)
    return value


def _stdin_line() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidArgument("--password-stdin read no password from standard input")
    return line


def logout(uri: UriOption = None, json_: JsonOption = False) -> None:
    """Forget the token saved for a server (it stays valid until it expires or is revoked:
    `plinth tokens revoke ID` ends it at once)."""
    from plinth.auth.credentials import forget_token

    server = _server(uri)
    forgotten = forget_token(server)
    line = (
        f"forgot the token saved for {server}" if forgotten else f"no token was saved for {server}"
    )
    _say(json_, {"server": server, "forgotten": forgotten}, line)


def whoami(json_: JsonOption = False) -> None:
    """Who the server (or the local store) takes you for."""
    client = _client()
    me = client.auth.whoami()
    if json_:
        return _print_json(me)
    if client.remote:
        where = client.target
    else:  # never a password from the store's URL
        shown = client.tracking.store.engine.url.render_as_string(hide_password=True)
        where = f"the local store {shown}"
    out.print(escape(f"{_who(me)} on {where}"), highlight=False)
    return None


def _who(me: WhoAmI) -> str:
    groups = f"; groups {', '.join(me.groups)}" if me.groups else ""
    return f"{me.name} ({Role(me.role).value} {me.kind}, via {me.via}){groups}"


def audit(
    actor: Annotated[str | None, typer.Option("--actor")] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="e.g. sign_in, token_refused, user_created")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="the newest this many")] = 100,
    json_: JsonOption = False,
) -> None:
    """The security log, newest first: sign-ins, token use and refusals, changes of users,
    tokens and permissions (admins only)."""
    found = _auth().list_security_events(actor, event, None, limit)
    if json_:
        return _print_json(found)
    rows = [(e.at, e.actor, e.event, e.target, e.outcome, e.client, e.detail) for e in found]
    columns = ("at", "actor", "event", "target", "outcome", "client", "detail")
    out.print(_table("security events", columns, rows))
    return None


# -- plinth server ----------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` reaches this machine alone (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another host name may resolve anywhere: not known to be loopback
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def exposure_warning(host: str, auth: bool, insecure: bool) -> str | None:
    """Refuse (InvalidArgument) to serve a non-loopback address without authentication
    unless told ``--insecure``; then return the warning to print."""
    if auth or is_loopback(host):
        return None
    if not insecure:
        raise InvalidArgument(
            f"refusing to serve {host!r} without authentication: anyone who reaches it could "
            "read and change everything as an admin. Start it with --auth (clients then send "
            "a token), bind a loopback address (--host 127.0.0.1), or say --insecure"
        )
    return (
        f"WARNING: serving {host} WITHOUT AUTHENTICATION (--insecure): anyone who can reach "
        "this address may read, change and delete everything, as an admin"
    )
