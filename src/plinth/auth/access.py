"""Who may do what, checked in the service layer for every operation.

Each service method that is an operation carries a rule (``@guarded``) under its
``@endpoint``: the level it needs on which resource, named by which argument. The rule
runs wherever the method runs (in-process or behind the server), for the principal of
the request (``plinth.auth.context``) or the process's own. A caller without even read
access to a resource is told it does not exist (404), so private names do not leak.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select

from plinth.auth.context import current_principal
from plinth.auth.types import Action, Kind, Level, Principal, Role
from plinth.errors import NotFound, PermissionDenied, Unauthenticated
from plinth.store.engine import Store
from plinth.store.schema import experiments, grants, runs, security_events
from plinth.store.sql import now_ms

F = TypeVar("F", bound=Callable[..., Any])

_LABELS = {
    Kind.EXPERIMENT: "experiment",
    Kind.MODEL: "registered model",
    Kind.FEATURE_GROUP: "feature group",
    Kind.FEATURE_VIEW: "feature view",
    Kind.ABTEST: "A/B experiment",
    Kind.MONITOR: "monitor",
    Kind.PIPELINE: "pipeline",
}


class Access:
    """The permission checks of one central store, for the principal of the current call."""

    def __init__(
        self, store: Store, default: Principal, *, private_by_default: bool = False
    ) -> None:
        self.store = store
        self.default = default
        self.private_by_default = private_by_default
        # A server keeps each decision (a caller's level on a resource) this many seconds:
        # a grant changed through it applies at once, one changed elsewhere (another
        # replica, the CLI on the store) within that time. 0: decide every time.
        self.decision_seconds = 0.0
        self._decisions: dict[tuple[Any, ...], tuple[float, Any]] = {}

    def _remembered(self, key: tuple[Any, ...], decide: Callable[[], Any]) -> Any:
        if self.decision_seconds <= 0:
            return decide()
        now = time.monotonic()
        decisions = self._decisions
        found = decisions.get(key)
        if found is not None and found[0] > now:
            return found[1]
        value = decide()
        if value is None:  # "no such run" is not kept: it may be created in a moment
            return value
        # Kept in the dict the reading began with: if grants changed meanwhile, that dict
        # was replaced and the answer, perhaps read before the change, goes with it.
        if len(decisions) >= _MAX_DECISIONS:
            decisions.clear()
        decisions[key] = (now + self.decision_seconds, value)
        return value

    def forget_decisions(self) -> None:
        """Grants changed: decide again."""
        self._decisions = {}

    # -- who ------------------------------------------------------------------------------

    def principal(self) -> Principal:
        return current_principal() or self.default

    def actor(self) -> str:
        """The name recorded as the author of a change: always the caller's own."""
        return self.principal().name

    # -- checks ---------------------------------------------------------------------------

    def level(self, principal: Principal, kind: Kind, resource: str) -> Level:
        if principal.is_admin:
            return Level.OWNER
        if not principal.authenticated:
            return Level.NONE

        def decide() -> int | None:
            with self.store.read() as conn:
                found: int | None = conn.execute(
                    _LEVEL, {"kind": kind.value, "resource": resource, **_who(principal)}
                ).scalar()
            return found

        key = ("level", principal.name, principal.groups, kind, resource)
        return _capped(principal, self._remembered(key, decide))

    def run_level(self, principal: Principal, run_id: str) -> tuple[str, str, Level] | None:
        """A run's experiment (id and name) and the caller's level on it, in one statement;
        None when the run does not exist."""

        def decide() -> tuple[str, str, int | None] | None:
            with self.store.read() as conn:
                row = conn.execute(_RUN_LEVEL, {"run_id": run_id, **_who(principal)}).first()
            return None if row is None else (row.experiment_id, row.name, row.level)

        found = self._remembered(("run", principal.name, principal.groups, run_id), decide)
        return None if found is None else (found[0], found[1], _capped(principal, found[2]))

    def require(
        self, action: Action, kind: Kind, resource: str, shown: str = "", *, log: bool = True
    ) -> Principal:
        """Raise unless the caller holds ``action``'s level on the resource: NotFound when it
        may not even see it, PermissionDenied when it may see but not do this (added to the
        security log unless ``log`` is False: inside a write transaction on SQLite, the
        log's own write would wait for that transaction's lock)."""
        principal = self.principal()
        if principal.is_admin:
            return principal
        self.require_signed_in(principal)
        level = self.level(principal, kind, resource)
        return self._judge(principal, action, kind, resource, level, shown, log)

    def experiment_level(self, principal: Principal, ref: str) -> tuple[str, Level] | None:
        """An experiment's id (by name or id) and the caller's level on it, in one
        statement; None when there is no such experiment."""

        def decide() -> tuple[str, int | None] | None:
            with self.store.read() as conn:
                row = conn.execute(_EXPERIMENT_LEVEL, {"ref": ref, **_who(principal)}).first()
            return None if row is None else (row.id, row.level)

        key = ("experiment", principal.name, principal.groups, ref)
        found = self._remembered(key, decide)
        return None if found is None else (found[0], _capped(principal, found[1]))

    def require_experiment(self, action: Action, ref: str) -> bool:
        """``require`` on an experiment named by name or id; False when there is none."""
        principal = self.principal()
        if principal.is_admin:
            return True
        self.require_signed_in(principal)
        found = self.experiment_level(principal, ref)
        if found is None:
            return False
        self._judge(principal, action, Kind.EXPERIMENT, found[0], found[1], repr(ref))
        return True

    def require_run(self, action: Action, run_id: str) -> None:
        """``require`` on the experiment of a run (nothing, if there is no such run: the
        operation says so)."""
        principal = self.principal()
        if principal.is_admin:
            return
        self.require_signed_in(principal)
        found = self.run_level(principal, run_id)
        if found is None:
            return
        experiment_id, experiment, level = found
        if level is Level.NONE:  # as get_run says of a run that is not there
            raise NotFound(f"run {run_id!r} does not exist")
        label = f"run {run_id!r} of experiment {experiment!r}"
        self._judge(principal, action, Kind.EXPERIMENT, experiment_id, level, label=label)

    def _judge(
        self,
        principal: Principal,
        action: Action,
        kind: Kind,
        resource: str,
        level: Level,
        shown: str = "",
        log: bool = True,
        *,
        label: str = "",
    ) -> Principal:
        """``label`` names what the caller acted on when that is inside the resource (a run
        of an experiment); the permission is still the resource's."""
        if level >= action.value:
            return principal
        holder = f"its {_LABELS[kind]}" if label else "it"
        label = label or f"{_LABELS[kind]} {shown or repr(resource)}"
        if level is Level.NONE:  # the words the operation uses for one that is not there
            raise NotFound(f"{label} does not exist")
        if log:
            self.record("permission_denied", f"{kind.value}:{resource}", "refused", action.name)
        raise PermissionDenied(
            f"{principal.name!r} may not {action.name.lower()} {label}: that needs the "
            f"{action.value.name.lower()} permission on {holder} (ask its owner or an admin)"
        )

    def require_role(self, role: Role, doing: str) -> Principal:
        """Raise unless the caller's role is ``role`` or above (creating a resource needs
        editor, managing users needs admin)."""
        principal = self.principal()
        self.require_signed_in(principal)
        if _ROLE_RANK[principal.role] < _ROLE_RANK[role]:
            raise PermissionDenied(
                f"{principal.name!r} may not {doing}: that needs the {role.value} role "
                f"(theirs is {principal.role.value})"
            )
        return principal

    def require_signed_in(self, principal: Principal | None = None) -> Principal:
        principal = principal or self.principal()
        if not principal.authenticated:
            raise Unauthenticated("sign in first: send a token (PLINTH_TOKEN or plinth login)")
        return principal

    def visible(self, kind: Kind) -> set[str] | None:
        """The resources of ``kind`` the caller may read; None when it may read them all."""
        principal = self.principal()
        if principal.is_admin:
            return None
        self.require_signed_in(principal)
        with self.store.read() as conn:
            rows = conn.execute(_VISIBLE, {"kind": kind.value, **_who(principal)})
            return {row.resource for row in rows}

    # -- resources ------------------------------------------------------------------------

    def on_created(self, conn: Connection, kind: Kind, resource: str) -> None:
        """A new resource's grants, in the transaction that creates it: its creator owns it;
        everyone may read it, or only the creator's groups (as editors) when the server
        keeps new resources private to their team."""
        self.forget_decisions()
        principal = self.principal()
        at = now_ms()
        rows = [(("user", principal.name), Level.OWNER)] if principal.name else []
        if self.private_by_default:
            rows += [(("group", group), Level.EDITOR) for group in principal.groups]
        else:
            rows.append((("everyone", "*"), Level.VIEWER))
        if rows:
            conn.execute(
                insert(grants),
                [
                    {
                        "kind": kind.value,
                        "resource": resource,
                        "grantee_type": grantee_type,
                        "grantee": grantee,
                        "level": int(level),
                        "granted_by": principal.name,
                        "granted_at": at,
                    }
                    for (grantee_type, grantee), level in rows
                ],
            )

    def on_deleted(self, conn: Connection, kind: Kind, resource: str) -> None:
        self.forget_decisions()
        conn.execute(
            delete(grants).where(grants.c.kind == kind.value, grants.c.resource == resource)
        )

    # -- audit ----------------------------------------------------------------------------

    def record(
        self,
        event: str,
        target: str,
        outcome: str = "ok",
        detail: str = "",
        conn: Connection | None = None,
        actor: str | None = None,
    ) -> None:
        """Add a security event (sign-in, token use or refusal, a permission change, a
        promotion, a delete) to the audit log."""
        row = {
            "at": now_ms(),
            "actor": self.actor() if actor is None else actor,
            "event": event,
            "target": target[:2000],
            "outcome": outcome,
            "client": client_address(),
            "detail": detail[:2000],
        }
        if conn is not None:
            conn.execute(insert(security_events), [row])
            return
        with self.store.write() as own:
            own.execute(insert(security_events), [row])

    # -- resolving arguments to resources ----------------------------------------------------

    def experiment_key(self, name_or_id: str) -> str | None:
        with self.store.read() as conn:
            return _experiment_key(conn, name_or_id)

    def run_experiment(self, run_id: str) -> str | None:
        with self.store.read() as conn:
            return conn.execute(select(runs.c.experiment_id).where(runs.c.id == run_id)).scalar()


_MAX_DECISIONS = 10_000
_ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


# The statements of every check, built once (building one costs about what running it
# does); the caller's name and groups are bound on each call.
_GRANTEE = or_(
    grants.c.grantee_type == "everyone",
    and_(grants.c.grantee_type == "user", grants.c.grantee == bindparam("name")),
    and_(
        grants.c.grantee_type == "group",
        grants.c.grantee.in_(bindparam("groups", expanding=True)),
    ),
)
_LEVEL = select(func.max(grants.c.level)).where(
    grants.c.kind == bindparam("kind"), grants.c.resource == bindparam("resource"), _GRANTEE
)


def _level_on_experiment(experiment_id: Any) -> Any:
    """The caller's level on the experiment whose id is ``experiment_id`` (a column)."""
    return (
        select(func.max(grants.c.level))
        .where(
            grants.c.kind == Kind.EXPERIMENT.value,
            grants.c.resource == experiment_id,
            _GRANTEE,
        )
        .scalar_subquery()
        .label("level")
    )


_RUN_LEVEL = (
    select(runs.c.experiment_id, experiments.c.name, _level_on_experiment(runs.c.experiment_id))
    .join_from(runs, experiments, experiments.c.id == runs.c.experiment_id)
    .where(runs.c.id == bindparam("run_id"))
)
_VISIBLE = select(grants.c.resource).where(grants.c.kind == bindparam("kind"), _GRANTEE).distinct()
# an experiment by name or id, a name before an id (an id matches only what no name does)
_BY_REF = or_(experiments.c.name == bindparam("ref"), experiments.c.id == bindparam("ref"))
_NAME_FIRST = (experiments.c.name == bindparam("ref")).desc()
_EXPERIMENT_LEVEL = (
    select(experiments.c.id, _level_on_experiment(experiments.c.id))
    .where(_BY_REF)
    .order_by(_NAME_FIRST)
)
_EXPERIMENT = select(experiments.c.id).where(_BY_REF).order_by(_NAME_FIRST)


def _who(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "groups": list(principal.groups)}


def _capped(principal: Principal, found: int | None) -> Level:
    level = Level(found or 0)
    return min(level, Level.VIEWER) if principal.role is Role.VIEWER else level


def _experiment_key(conn: Connection, name_or_id: str) -> str | None:
    found: str | None = conn.execute(_EXPERIMENT, {"ref": name_or_id}).scalar()
    return found


# -- the client's address, for the audit log --------------------------------------------------

from contextvars import ContextVar  # noqa: E402

_client: ContextVar[str] = ContextVar("plinth_client", default="")


def client_address() -> str:
    return _client.get()


def set_client_address(address: str) -> None:
    _client.set(address)


# -- one Access per store ----------------------------------------------------------------------

_ACCESS: weakref.WeakKeyDictionary[Store, Access] = weakref.WeakKeyDictionary()


def access_for(store: Store) -> Access:
    """The store's access checks: as configured (``configure_access``), else the embedded
    default's: everything runs as the local user, an admin."""
    found = _ACCESS.get(store)
    if found is None:
        from plinth.config import local_user

        found = _ACCESS.setdefault(store, Access(store, local_principal(local_user())))
    return found


def configure_access(
    store: Store,
    default: Principal | None = None,
    *,
    private_by_default: bool = False,
    decision_seconds: float = 0.0,
) -> Access:
    """Set the store's policy, and the principal of calls made outside any request (the
    local user, an admin, unless ``default`` says otherwise). A server sets the principal
    of each request itself."""
    access = access_for(store)
    if default is not None:
        access.default = default
    access.private_by_default = private_by_default
    access.decision_seconds = decision_seconds
    access.forget_decisions()
    return access


def local_principal(name: str) -> Principal:
    return Principal(name or "local", Role.ADMIN, via="local")


# -- the rule on each operation -------------------------------------------------------------

Resolver = Callable[[Access, Any], "str | None"]
Check = Callable[[Access, dict[str, Any]], None]


@dataclass(frozen=True)
class Rule:
    """What an operation needs, for the docs and for the test that every one has one."""

    action: Action | None
    kind: Kind | None
    argument: str | None
    role: Role | None
    summary: str


def guarded(
    action: Action | None = None,
    kind: Kind | None = None,
    argument: str | None = None,
    *,
    resolve: Resolver | None = None,
    role: Role | None = None,
    check: Check | None = None,
) -> Callable[[F], F]:
    """The access rule of a service method:

    - ``guarded(Action.WRITE, Kind.MODEL, "name")``: the level on the resource the argument
      names (``resolve`` turns the argument into the resource's key, e.g. a run id into its
      experiment's id; an argument that names nothing lets the method say "not found");
    - ``guarded(role=Role.EDITOR)``: a role (creating resources);
    - ``guarded()``: any signed-in caller (listings filter what they return themselves);
    - ``check``: a function of the access object and the call's arguments, for the rest.
    """

    def wrap(method: F) -> F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def guarded_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            access = access_for(self.store)
            principal = access.principal()
            if not principal.is_admin:
                access.require_signed_in(principal)
                if role is not None:
                    access.require_role(role, method.__name__.replace("_", " "))
                if action is not None or check is not None:
                    bound = signature.bind(self, *args, **kwargs)
                    bound.apply_defaults()
                    arguments = bound.arguments
                    if action is not None and kind is not None and argument is not None:
                        value = arguments[argument]
                        # the resource and the caller's grants on it in one statement
                        if resolve is by_run:
                            access.require_run(action, str(value))
                        elif resolve is by_experiment:
                            access.require_experiment(action, str(value))
                        else:
                            key = resolve(access, value) if resolve else str(value)
                            if key is not None:
                                access.require(action, kind, key, repr(value))
                    if check is not None:
                        check(access, arguments)
            return method(self, *args, **kwargs)

        guarded_method.__plinth_access__ = Rule(  # type: ignore[attr-defined]
            action, kind, argument, role, _summary(action, kind, argument, role, check)
        )
        return guarded_method  # type: ignore[return-value]

    return wrap


def _summary(
    action: Action | None,
    kind: Kind | None,
    argument: str | None,
    role: Role | None,
    check: Check | None,
) -> str:
    parts = []
    if role is not None:
        parts.append(f"the {role.value} role")
    if action is not None and kind is not None:
        parts.append(f"{action.value.name.lower()} on the {_LABELS[kind]} named by {argument}")
    if check is not None:
        parts.append((check.__doc__ or "a check of its own").strip())
    return "; ".join(parts) or "a signed-in caller"


def by_experiment(access: Access, value: Any) -> str | None:
    return access.experiment_key(str(value))


def by_run(access: Access, value: Any) -> str | None:
    return access.run_experiment(str(value))


def readable(access: Access, kind: Kind, keys: Iterable[str]) -> None:
    """Require read access on each of ``keys``."""
    for key in keys:
        access.require(Action.READ, kind, key)
