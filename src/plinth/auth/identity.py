"""Turn a credential (a Plinth API token or an OpenID Connect JWT) into a Principal.

Every request is checked against the central store, with no cache: a token that expires
or is revoked stops working at the next request, on every replica.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, insert, select, update

from plinth.auth.access import Access
from plinth.auth.secrets import TOKEN_PREFIX, token_hash
from plinth.auth.types import Principal, Role
from plinth.errors import Unauthenticated, WriteConflict
from plinth.store.schema import api_tokens, grants, group_members, users
from plinth.store.sql import now_ms

if TYPE_CHECKING:
    from plinth.auth.oidc import OidcIdentity, OidcVerifier

#: how often a token's last use is written (and logged as a security event), at most
LAST_USE_EVERY_MS = 60_000


class Authenticator:
    def __init__(
        self,
        access: Access,
        oidc: OidcVerifier | None = None,
        oidc_roles: dict[str, Role] | None = None,
        oidc_default_role: Role = Role.VIEWER,
    ) -> None:
        self.access = access
        self.store = access.store
        self.oidc = oidc
        # group claim -> role given to a user the identity provider signs in the first time
        self.oidc_roles = oidc_roles or {}
        self.oidc_default_role = oidc_default_role
        self._last_use: dict[str, int] = {}
        self._lock = threading.Lock()

    def authenticate(self, credential: str) -> Principal:
        if credential.startswith(TOKEN_PREFIX):
            return self._api_token(credential)
        if self.oidc is not None:
            from plinth.auth.oidc import looks_like_jwt

            if looks_like_jwt(credential):
                return self._oidc(credential)
        raise Unauthenticated("the bearer token is not a Plinth API token (plt_...)")

    def _api_token(self, secret: str) -> Principal:
        with self.store.read() as conn:
            rows = conn.execute(_TOKEN, {"hash": token_hash(secret)}).all()
        row = rows[0] if rows else None
        groups = tuple(sorted(r.group_name for r in rows if r.group_name is not None))
        now = now_ms()
        if row is None:
            raise Unauthenticated("unknown API token")
        if row.revoked_at is not None:
            raise Unauthenticated(f"API token {row.id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(f"API token {row.id} has expired")
        if row.disabled:
            raise Unauthenticated(f"user {row.name!r} is disabled")
        principal = Principal(row.name, Role(row.role), groups, row.kind, "token", row.id)
        self._note_use(row.id, principal, now)
        return principal

    def _note_use(self, token_id: str, principal: Principal, now: int) -> None:
        with self._lock:
            if now - self._last_use.get(token_id, 0) < LAST_USE_EVERY_MS:
                return
            self._last_use[token_id] = now
        with self.store.write() as conn:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now)
            )
            self.access.record("token_used", f"token:{token_id}", conn=conn, actor=principal.name)

    def _oidc(self, jwt: str) -> Principal:
        assert self.oidc is not None
        identity = self.oidc.verify(jwt)
        with self.store.read() as conn:
            row = conn.execute(select(users).where(users.c.name == identity.username)).first()
            stored_groups = () if row is None else _groups(conn, identity.username)
        if row is None:
            self._refuse_inherited(identity.username)
            role = self._role_from_claims(identity.groups)
            try:
                self._add_oidc_user(identity, role)
            except WriteConflict:  # a second first sign-in at the same moment: theirs won
                return self._oidc(jwt)
        elif row.created_by != _oidc_owner(identity.subject):
            # a local account, or another identity the provider once gave this name
            raise Unauthenticated(
                f"user name {identity.username!r} belongs to another account than this "
                "identity provider's subject: an admin must rename or remove it"
            )
        elif row.disabled:
            raise Unauthenticated(f"user {identity.username!r} is disabled")
        else:
            role = Role(row.role)
        groups = tuple(sorted(set(stored_groups) | set(identity.groups)))
        principal = Principal(identity.username, role, groups, "user", "oidc")
        key = f"oidc:{identity.subject}"
        with self._lock:
            fresh = time.time() * 1000 - self._last_use.get(key, 0) >= LAST_USE_EVERY_MS
            if fresh:
                self._last_use[key] = now_ms()
        if fresh:
            self.access.record(
                "sign_in", f"user:{identity.username}", detail="oidc", actor=principal.name
            )
        return principal

    def _refuse_inherited(self, name: str) -> None:
        """A name that holds grants but is no user (an owner recorded before users existed,
        a local user of the store) is not handed to whoever the identity provider names so."""
        with self.store.read() as conn:
            held = conn.execute(
                select(grants.c.kind)
                .where(grants.c.grantee_type == "user", grants.c.grantee == name)
                .limit(1)
            ).first()
        if held is not None:
            raise Unauthenticated(
                f"user name {name!r} holds permissions from before it was a user: an admin "
                "must revoke them (plinth grants revoke) before its first sign-in"
            )

    def _add_oidc_user(self, identity: OidcIdentity, role: Role) -> None:
        with self.store.write() as conn:
            conn.execute(
                insert(users),
                [
                    {
                        "name": identity.username,
                        "kind": "user",
                        "role": role.value,
                        "email": identity.email,
                        "password_hash": None,
                        "disabled": False,
                        "created_at": now_ms(),
                        # the identity it belongs to: the name alone may be reused
                        "created_by": _oidc_owner(identity.subject),
                    }
                ],
            )
            self.access.record(
                "user_created",
                f"user:{identity.username}",
                detail="first OIDC sign-in",
                conn=conn,
                actor=identity.username,
            )

    def _role_from_claims(self, groups: tuple[str, ...]) -> Role:
        rank = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}
        roles = [self.oidc_roles[g] for g in groups if g in self.oidc_roles]
        return max(roles, key=rank.__getitem__, default=self.oidc_default_role)

    def user_principal(self, name: str, via: str) -> Principal:
        """The principal of a stored user (a password sign-in, a local token check)."""
        with self.store.read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None or row.disabled:
                raise Unauthenticated(f"no active user {name!r}")
            return Principal(row.name, Role(row.role), _groups(conn, name), row.kind, via)


# A token, its user and the user's groups: one statement, one row per group.
_TOKEN = (
    select(
        api_tokens.c.id,
        api_tokens.c.expires_at,
        api_tokens.c.revoked_at,
        users.c.name,
        users.c.kind,
        users.c.role,
        users.c.disabled,
        group_members.c.group_name,
    )
    .join(users, users.c.name == api_tokens.c.user_name)
    .outerjoin(group_members, group_members.c.user_name == users.c.name)
    .where(api_tokens.c.secret_hash == bindparam("hash"))
)


def _oidc_owner(subject: str) -> str:
    return f"oidc:{subject}"[:500]


def _groups(conn: object, user: str) -> tuple[str, ...]:
    from sqlalchemy import Connection

    assert isinstance(conn, Connection)
    rows = conn.execute(select(group_members.c.group_name).where(group_members.c.user_name == user))
    return tuple(sorted(r.group_name for r in rows))
