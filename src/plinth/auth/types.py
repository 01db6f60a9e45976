"""Who is calling (``Principal``) and what they may do (roles, levels, actions)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Role(enum.StrEnum):
    """A user's role on the whole server: admins may do anything, editors create resources
    and change what they are granted, viewers only read (whatever their grants say)."""

    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


class Level(enum.IntEnum):
    """A permission on one resource; each level includes the ones below it."""

    NONE = 0
    VIEWER = 1  # read it (and, for a model, predict with it)
    EDITOR = 2  # change it: log runs, register versions, insert features
    PROMOTER = 3  # a model's PRODUCTION stage, aliases and rollbacks
    OWNER = 4  # gates, deletes and the resource's permissions

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            level = cls[name.upper()]
        except KeyError:
            level = cls.NONE
        if level is cls.NONE:
            choices = ", ".join(lv.name.lower() for lv in list(cls)[1:])
            raise ValueError(f"unknown permission {name!r}; choose one of: {choices}")
        return level


class Kind(enum.StrEnum):
    """The kinds of resource that carry their own permissions."""

    EXPERIMENT = "experiment"
    MODEL = "model"
    FEATURE_GROUP = "feature_group"
    FEATURE_VIEW = "feature_view"
    ABTEST = "abtest"
    MONITOR = "monitor"
    PIPELINE = "pipeline"


class Action(enum.Enum):
    READ = Level.VIEWER
    WRITE = Level.EDITOR
    PROMOTE = Level.PROMOTER
    MANAGE = Level.OWNER


@dataclass(frozen=True)
class Principal:
    """The caller an operation runs for. ``via`` says how it was established: ``local``
    (the embedded default's own user), ``token``, ``oidc``, ``system`` or ``anonymous``."""

    name: str
    role: Role
    groups: tuple[str, ...] = ()
    kind: str = "user"
    via: str = "local"
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def authenticated(self) -> bool:
        return self.via != "anonymous"


ANONYMOUS = Principal("", Role.VIEWER, via="anonymous")


@dataclass(frozen=True)
class User:
    name: str
    kind: str
    role: Role
    email: str | None
    disabled: bool
    has_password: bool
    created_at: datetime
    created_by: str
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    created_at: datetime
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Token:
    """An API token as listed: never its secret, which is shown once when it is created."""

    id: str
    user: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    token: Token
    secret: str


@dataclass(frozen=True)
class Grant:
    kind: Kind
    resource: str
    grantee_type: str  # user | group | everyone
    grantee: str
    level: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True)
class WhoAmI:
    name: str
    role: Role
    kind: str
    groups: list[str]
    via: str


@dataclass(frozen=True)
class SecurityEvent:
    id: int
    at: datetime
    actor: str
    event: str
    target: str
    outcome: str
    client: str
    detail: str
