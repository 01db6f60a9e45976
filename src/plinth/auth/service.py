"""Users, groups, API tokens, grants and the security log, as operations of the API."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, by_experiment, guarded
from plinth.auth.secrets import hash_password, new_token_secret, password_matches, token_hash
from plinth.auth.types import (
    Action,
    Grant,
    Group,
    Kind,
    Level,
    NewToken,
    Role,
    SecurityEvent,
    Token,
    User,
    WhoAmI,
)
from plinth.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    WriteConflict,
)
from plinth.store.engine import Store
from plinth.store.schema import (
    abtests,
    api_tokens,
    feature_groups,
    feature_views,
    grants,
    group_members,
    monitors,
    pipelines,
    registered_models,
    security_events,
    user_groups,
    users,
)
from plinth.store.sql import check_max_results, now_ms, opt_datetime, to_datetime

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
_MAX_TOKEN_DAYS = 3650
#: the label of the tokens the dashboard issues at a password sign-in (revoked at sign-out)
SESSION_LABEL = "dashboard session"
MIN_PASSWORD = 12


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} is not valid: use 1-200 letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return value


class AuthService:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- who am I -------------------------------------------------------------------------

    @endpoint("GET", "/auth/whoami")
    @guarded()
    def whoami(self) -> WhoAmI:
        """The caller as the server sees it: name, role, groups and how it signed in."""
        p = self.access.principal()
        return WhoAmI(p.name, p.role, p.kind, list(p.groups), p.via)

    @endpoint("POST", "/auth/login")
    def login(
        self, user: str, password: str, label: str = "login", expires_in_days: float = 30
    ) -> NewToken:
        """Exchange a user's password for a new API token (the server rate-limits failures)."""
        with self.store.read() as conn:
            row = conn.execute(select(users).where(users.c.name == user)).first()
        stored = None if row is None else row.password_hash
        # the hash is checked first: a disabled user takes as long to refuse as a wrong password
        if not password_matches(stored, password) or row is None or row.disabled:
            self.access.record("sign_in", f"user:{user}", "refused", "password", actor=user)
            raise Unauthenticated("wrong user name or password")
        self.access.record("sign_in", f"user:{user}", detail="password", actor=user)
        return self._issue(user, label, expires_in_days, by=user)

    def end_session(self, secret: str) -> bool:
        """Revoke a dashboard session's token (one issued at a password sign-in, not a token
        the user pasted, which stays theirs); whether one was revoked."""
        with self.store.write() as conn:
            row = conn.execute(
                select(api_tokens.c.id, api_tokens.c.user_name).where(
                    api_tokens.c.secret_hash == token_hash(secret),
                    api_tokens.c.label == SESSION_LABEL,
                    api_tokens.c.revoked_at.is_(None),
                )
            ).first()
            if row is None:
                return False
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == row.id).values(revoked_at=now_ms())
            )
            self.access.record("sign_out", f"token:{row.id}", conn=conn, actor=row.user_name)
        return True

    # -- users ----------------------------------------------------------------------------

    @endpoint("POST", "/users")
    @guarded(role=Role.ADMIN)
    def create_user(
        self,
        name: str,
        role: Role = Role.VIEWER,
        kind: str = "user",
        email: str | None = None,
        password: str | None = None,
    ) -> User:
        """Add a user, or a service account (``kind="service"``: a program's identity)."""
        check_name(name, "user name")
        if kind not in ("user", "service"):
            raise InvalidArgument(f"kind must be 'user' or 'service', got {kind!r}")
        row = {
            "name": name,
            "kind": kind,
            "role": _role(role).value,
            "email": email,
            "password_hash": None if password is None else hash_password(_checked(password)),
            "disabled": False,
            "created_at": now_ms(),
            "created_by": self.access.actor(),
        }
        try:
            with self.store.write() as conn:
                conn.execute(insert(users), [row])
                self.access.record(
                    "user_created", f"user:{name}", detail=str(row["role"]), conn=conn
                )
        except WriteConflict:
            raise AlreadyExists(f"user {name!r} already exists") from None
        return self.get_user(name)

    @endpoint("GET", "/users/{name}")
    @guarded()
    def get_user(self, name: str) -> User:
        self._self_or_admin(name, "see user")
        with self.store.read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"user {name!r} not found")
            members = conn.execute(
                select(group_members.c.group_name).where(group_members.c.user_name == name)
            )
            return _user(row, sorted(m.group_name for m in members))

    @endpoint("GET", "/users")
    @guarded(role=Role.ADMIN)
    def list_users(self) -> list[User]:
        with self.store.read() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
            members: dict[str, list[str]] = {}
            for m in conn.execute(select(group_members).order_by(group_members.c.group_name)):
                members.setdefault(m.user_name, []).append(m.group_name)
        return [_user(row, members.get(row.name, [])) for row in rows]

    @endpoint("PATCH", "/users/{name}")
    @guarded(role=Role.ADMIN)
    def update_user(
        self,
        name: str,
        role: Role | None = None,
        disabled: bool | None = None,
        email: str | None = None,
    ) -> User:
        """Change a user's role, disable (or enable) them, or change their e-mail."""
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = _role(role).value
        if disabled is not None:
            values["disabled"] = disabled
        if email is not None:
            values["email"] = email
        if not values:
            raise InvalidArgument(
                f"nothing to change for user {name!r}: give role, disabled or email"
            )
        with self.store.write() as conn:
            changed = conn.execute(update(users).where(users.c.name == name).values(**values))
            if changed.rowcount == 0:
                raise NotFound(f"user {name!r} not found")
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if k != "email")
            self.access.record("user_changed", f"user:{name}", detail=shown, conn=conn)
        return self.get_user(name)

    @endpoint("POST", "/users/{name}/password")
    @guarded()
    def set_password(self, name: str, password: str, current_password: str = "") -> None:
        """Set a user's password: an admin for anyone, a user for themself (giving the
        current one, if they have one)."""
        caller = self.access.principal()
        self._self_or_admin(name, "set the password of")
        with self.store.read() as conn:
            row = conn.execute(
                select(users.c.password_hash, users.c.created_by).where(users.c.name == name)
            ).first()
        if row is not None and str(row.created_by).startswith("oidc:"):
            # its identity provider signs it in (and can disable it): a password would not
            raise InvalidArgument(
                f"user {name!r} signs in through the identity provider: it takes no password"
            )
        stored = None if row is None or caller.is_admin else row.password_hash
        if stored and not password_matches(stored, current_password):
            raise PermissionDenied("the current password given is wrong")
        with self.store.write() as conn:
            changed = conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(password_hash=hash_password(_checked(password)))
            )
            if changed.rowcount == 0:
                raise NotFound(f"user {name!r} not found")
            self.access.record("password_set", f"user:{name}", conn=conn)

    # -- groups ---------------------------------------------------------------------------

    @endpoint("POST", "/groups")
    @guarded(role=Role.ADMIN)
    def create_group(self, name: str, description: str = "") -> Group:
        """Add a group (a team): grants to it reach every member."""
        check_name(name, "group name")
        try:
            with self.store.write() as conn:
                conn.execute(
                    insert(user_groups),
                    [{"name": name, "description": description, "created_at": now_ms()}],
                )
                self.access.record("group_created", f"group:{name}", conn=conn)
        except WriteConflict:
            raise AlreadyExists(f"group {name!r} already exists") from None
        return self._group(name)

    @endpoint("GET", "/groups")
    @guarded()
    def list_groups(self) -> list[Group]:
        with self.store.read() as conn:
            names = [r.name for r in conn.execute(select(user_groups.c.name).order_by("name"))]
        return [self._group(n) for n in names]

    @endpoint("POST", "/groups/{name}/members")
    @guarded(role=Role.ADMIN)
    def add_group_member(self, name: str, user: str) -> Group:
        try:
            with self.store.write() as conn:
                _must_exist(conn, user_groups, name, "group")
                _must_exist(conn, users, user, "user")
                conn.execute(insert(group_members), [{"group_name": name, "user_name": user}])
                self.access.record("group_member_added", f"group:{name}", detail=user, conn=conn)
        except WriteConflict:
            pass  # already a member
        return self._group(name)

    @endpoint("DELETE", "/groups/{name}/members/{user}")
    @guarded(role=Role.ADMIN)
    def remove_group_member(self, name: str, user: str) -> Group:
        with self.store.write() as conn:
            _must_exist(conn, user_groups, name, "group")
            conn.execute(
                delete(group_members).where(
                    group_members.c.group_name == name, group_members.c.user_name == user
                )
            )
            self.access.record("group_member_removed", f"group:{name}", detail=user, conn=conn)
        return self._group(name)

    def _group(self, name: str) -> Group:
        with self.store.read() as conn:
            row = conn.execute(select(user_groups).where(user_groups.c.name == name)).first()
            if row is None:
                raise NotFound(f"group {name!r} not found")
            members = conn.execute(
                select(group_members.c.user_name)
                .where(group_members.c.group_name == name)
                .order_by(group_members.c.user_name)
            )
            return Group(
                row.name,
                row.description,
                to_datetime(row.created_at),
                [m.user_name for m in members],
            )

    # -- tokens ---------------------------------------------------------------------------

    @endpoint("POST", "/tokens")
    @guarded()
    def create_token(
        self, label: str = "", user: str | None = None, expires_in_days: float = 90
    ) -> NewToken:
        """A new API token for the caller (or, by an admin, for ``user``: a service
        account's). Its secret is in this answer only; the store keeps its hash."""
        caller = self.access.principal()
        owner = user or caller.name
        self._self_or_admin(owner, "create a token for")
        return self._issue(owner, label, expires_in_days, by=caller.name)

    def _issue(self, user: str, label: str, days: float, by: str) -> NewToken:
        if not 0 < days <= _MAX_TOKEN_DAYS:
            raise InvalidArgument(
                f"expires_in_days must be more than 0 and at most {_MAX_TOKEN_DAYS}, got {days}"
            )
        secret = new_token_secret()
        at = now_ms()
        row = {
            "id": uuid.uuid4().hex[:16],
            "user_name": user,
            "label": label,
            "secret_hash": token_hash(secret),
            "created_at": at,
            "expires_at": at + int(days * 86_400_000),
            "revoked_at": None,
            "last_used_at": None,
        }
        with self.store.write() as conn:
            _must_exist(conn, users, user, "user")
            conn.execute(insert(api_tokens), [row])
            self.access.record(
                "token_created", f"token:{row['id']}", detail=user, conn=conn, actor=by
            )
        return NewToken(_token(row), secret)

    @endpoint("GET", "/tokens")
    @guarded()
    def list_tokens(self, user: str | None = None) -> list[Token]:
        """The caller's tokens (an admin: anyone's, or everyone's without ``user``)."""
        caller = self.access.principal()
        if user is None and not caller.is_admin:
            user = caller.name
        if user is not None:
            self._self_or_admin(user, "list the tokens of")
        query = select(api_tokens).order_by(api_tokens.c.created_at)
        if user is not None:
            query = query.where(api_tokens.c.user_name == user)
        with self.store.read() as conn:
            return [_token(row._mapping) for row in conn.execute(query)]

    @endpoint("DELETE", "/tokens/{token_id}")
    @guarded()
    def revoke_token(self, token_id: str) -> Token:
        """Revoke a token at once (the caller's own, or any, for an admin)."""
        with self.store.write() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
            if row is None:
                raise NotFound(f"token {token_id!r} not found")
            self._self_or_admin(
                row.user_name, "revoke a token of", hidden=f"token {token_id!r} not found"
            )
            if row.revoked_at is None:
                conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.id == token_id)
                    .values(revoked_at=now_ms())
                )
            self.access.record("token_revoked", f"token:{token_id}", conn=conn)
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).one()
        return _token(row._mapping)

    # -- grants ---------------------------------------------------------------------------

    @endpoint("GET", "/grants/{kind}/{resource:path}")
    @guarded(check=lambda access, a: _manage(access, a))
    def list_grants(self, kind: Kind, resource: str) -> list[Grant]:
        """Who holds which permission on a resource (its owners and admins may look)."""
        kind = _kind(kind)
        key = _key(self.access, kind, resource)
        with self.store.read() as conn:
            rows = conn.execute(
                select(grants)
                .where(grants.c.kind == kind.value, grants.c.resource == key)
                .order_by(grants.c.grantee_type, grants.c.grantee)
            )
            return [_grant(row, resource) for row in rows]

    @endpoint("PUT", "/grants/{kind}/{resource:path}")
    @guarded(check=lambda access, a: _manage(access, a))
    def grant(
        self, kind: Kind, resource: str, grantee_type: str, grantee: str, level: str
    ) -> list[Grant]:
        """Give a user, a group or everyone (``grantee_type="everyone"``, grantee ``*``) a
        level on a resource: viewer, editor, promoter or owner (owners and admins may)."""
        kind = _kind(kind)
        try:
            parsed = Level.parse(level)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        key = _key(self.access, kind, resource)
        with self.store.write() as conn:
            _check_grantee(conn, grantee_type, grantee)
            _drop_grant(conn, kind, key, grantee_type, grantee)
            conn.execute(
                insert(grants),
                [
                    {
                        "kind": kind.value,
                        "resource": key,
                        "grantee_type": grantee_type,
                        "grantee": grantee,
                        "level": int(parsed),
                        "granted_by": self.access.actor(),
                        "granted_at": now_ms(),
                    }
                ],
            )
            self.access.record(
                "permission_granted",
                f"{kind.value}:{resource}",
                detail=f"{grantee_type}:{grantee}={parsed.name.lower()}",
                conn=conn,
            )
        self.access.forget_decisions()
        return self.list_grants(kind, resource)

    @endpoint("DELETE", "/grants/{kind}/{resource:path}")
    @guarded(check=lambda access, a: _manage(access, a))
    def revoke_grant(
        self, kind: Kind, resource: str, grantee_type: str, grantee: str
    ) -> list[Grant]:
        """Take a user's, a group's or everyone's permission on a resource away."""
        kind = _kind(kind)
        key = _key(self.access, kind, resource)
        _check_grantee_type(grantee_type)
        with self.store.write() as conn:
            _drop_grant(conn, kind, key, grantee_type, grantee)
            self.access.record(
                "permission_revoked",
                f"{kind.value}:{resource}",
                detail=f"{grantee_type}:{grantee}",
                conn=conn,
            )
        self.access.forget_decisions()
        return self.list_grants(kind, resource)

    # -- the security log -------------------------------------------------------------------

    @endpoint("GET", "/security-events")
    @guarded(role=Role.ADMIN)
    def list_security_events(
        self,
        actor: str | None = None,
        event: str | None = None,
        since_ms: int | None = None,
        max_results: int = 1000,
    ) -> list[SecurityEvent]:
        """Sign-ins, token use and refusals, permission changes, promotions and deletes,
        newest first."""
        check_max_results(max_results)
        query = select(security_events).order_by(security_events.c.id.desc()).limit(max_results)
        if actor is not None:
            query = query.where(security_events.c.actor == actor)
        if event is not None:
            query = query.where(security_events.c.event == event)
        if since_ms is not None:
            query = query.where(security_events.c.at >= since_ms)
        with self.store.read() as conn:
            return [
                SecurityEvent(
                    r.id,
                    to_datetime(r.at),
                    r.actor,
                    r.event,
                    r.target,
                    r.outcome,
                    r.client,
                    r.detail,
                )
                for r in conn.execute(query)
            ]

    def _self_or_admin(self, name: str, doing: str, hidden: str | None = None) -> None:
        caller = self.access.principal()
        if caller.is_admin or caller.name == name:
            return
        if hidden is not None:  # the same answer as for a thing that does not exist
            raise NotFound(hidden)
        raise PermissionDenied(
            f"{caller.name!r} may not {doing} {name!r}: only they or an admin may"
        )


def _manage(access: Access, arguments: dict[str, Any]) -> None:
    """owner of the resource (or admin)"""
    kind = _kind(arguments["kind"])
    key = _key(access, kind, arguments["resource"])
    access.require(Action.MANAGE, kind, key, repr(arguments["resource"]))


def _key(access: Access, kind: Kind, resource: str) -> str:
    """The key grants use: an experiment's id (names can change hands), else the name."""
    if kind is Kind.EXPERIMENT:
        found = by_experiment(access, resource)
        if found is None:
            raise NotFound(f"experiment {resource!r} does not exist")
        return found
    table = _RESOURCE_TABLES[kind]
    with access.store.read() as conn:
        exists = conn.execute(select(table.c.name).where(table.c.name == resource)).first()
    if exists is None:
        raise NotFound(f"{_SHOWN[kind]} {resource!r} does not exist")  # as a hidden one reads
    return resource


_SHOWN = {
    Kind.MODEL: "registered model",
    Kind.FEATURE_GROUP: "feature group",
    Kind.FEATURE_VIEW: "feature view",
    Kind.ABTEST: "A/B experiment",
    Kind.MONITOR: "monitor",
    Kind.PIPELINE: "pipeline",
}
_RESOURCE_TABLES = {
    Kind.MODEL: registered_models,
    Kind.FEATURE_GROUP: feature_groups,
    Kind.FEATURE_VIEW: feature_views,
    Kind.ABTEST: abtests,
    Kind.MONITOR: monitors,
    Kind.PIPELINE: pipelines,
}


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidArgument(f"unknown role {value!r}; choose one of: {choices}") from None


def _kind(value: Kind | str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        choices = ", ".join(k.value for k in Kind)
        raise InvalidArgument(
            f"unknown resource kind {value!r}; choose one of: {choices}"
        ) from None


def _checked(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _drop_grant(conn: Connection, kind: Kind, key: str, grantee_type: str, grantee: str) -> None:
    conn.execute(
        delete(grants).where(
            grants.c.kind == kind.value,
            grants.c.resource == key,
            grants.c.grantee_type == grantee_type,
            grants.c.grantee == grantee,
        )
    )


def _check_grantee(conn: Connection, grantee_type: str, grantee: str) -> None:
    if grantee_type == "everyone":
        if grantee != "*":
            raise InvalidArgument('grantee_type "everyone" takes the grantee "*"')
    elif grantee_type == "user":
        _must_exist(conn, users, grantee, "user")
    elif grantee_type == "group":
        _must_exist(conn, user_groups, grantee, "group")
    else:
        _check_grantee_type(grantee_type)


def _check_grantee_type(grantee_type: str) -> None:
    if grantee_type not in ("user", "group", "everyone"):
        raise InvalidArgument(
            f"grantee_type must be 'user', 'group' or 'everyone', got {grantee_type!r}"
        )


def _must_exist(conn: Connection, table: Any, name: str, what: str) -> None:
    if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
        raise NotFound(f"{what} {name!r} not found")


def _user(row: Any, groups: list[str]) -> User:
    return User(
        row.name,
        row.kind,
        Role(row.role),
        row.email,
        bool(row.disabled),
        row.password_hash is not None,
        to_datetime(row.created_at),
        row.created_by,
        groups,
    )


def _token(row: Any) -> Token:
    return Token(
        row["id"],
        row["user_name"],
        row["label"],
        to_datetime(row["created_at"]),
        opt_datetime(row["expires_at"]),
        opt_datetime(row["revoked_at"]),
        opt_datetime(row["last_used_at"]),
    )


def _grant(row: Any, shown: str) -> Grant:
    return Grant(
        Kind(row.kind),
        shown,
        row.grantee_type,
        row.grantee,
        Level(row.level).name.lower(),
        row.granted_by,
        to_datetime(row.granted_at),
    )
