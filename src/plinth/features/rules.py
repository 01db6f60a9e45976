"""Who may do what in the feature store: the checks the service's ``@guarded`` rules use.

A feature group's or view's grants are keyed by its name: every version of it shares them.
Entities are shared definitions without grants of their own. Checks of many resources at
once (the groups a view or a lookup reads) cost one grants query, not one per resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from plinth.auth.access import Access
from plinth.auth.types import Action, Kind, Level
from plinth.errors import InvalidArgument, NotFound
from plinth.features.refs import parse_ref
from plinth.store.schema import feature_groups, feature_views, training_datasets


def require_readable(access: Access, kind: Kind, names: Iterable[str]) -> None:
    """Raise NotFound for the first of ``names`` the caller may not read (one query, none
    for an admin)."""
    wanted = list(dict.fromkeys(names))
    visible = access.visible(kind)
    if visible is None:
        return
    hidden = [name for name in wanted if name not in visible]
    if hidden:
        raise NotFound(f"{_LABELS[kind]} {hidden[0]!r} does not exist")


def require_in_transaction(access: Access, action: Action, kind: Kind, name: str) -> None:
    """``access.require`` inside a write transaction: the grants are read on a connection
    of their own (SQLite lets readers in beside a writer), and a refusal is not added to
    the security log, whose write would wait for this transaction's own lock."""
    access.require(action, kind, name, log=False)


def group_exists(access: Access, name: str) -> bool:
    with access.store.read() as conn:
        found = conn.execute(
            select(feature_groups.c.name).where(feature_groups.c.name == name).limit(1)
        ).first()
    return found is not None


def view_exists(access: Access, name: str) -> bool:
    with access.store.read() as conn:
        found = conn.execute(
            select(feature_views.c.name).where(feature_views.c.name == name).limit(1)
        ).first()
    return found is not None


def may_define_group(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the group for a new version of it (the editor role alone for a new one)"""
    name = str(arguments["name"])
    if group_exists(access, name):
        access.require(Action.WRITE, Kind.FEATURE_GROUP, name)


def may_define_view(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the view for a new version of it; read on every feature group it reads"""
    name = str(arguments["name"])
    if view_exists(access, name):
        access.require(Action.WRITE, Kind.FEATURE_VIEW, name)
    features = arguments["features"]
    if isinstance(features, list):
        # a malformed reference is the method's InvalidArgument, named in its own words
        groups = [parse_ref(ref)[0] for ref in features if _is_ref(ref)]
        require_readable(access, Kind.FEATURE_GROUP, groups)


def may_list_datasets(access: Access, arguments: dict[str, Any]) -> None:
    """read on the view, when one is named (the list holds only readable views' datasets)"""
    view = arguments["view"]
    if view is not None:
        access.require(Action.READ, Kind.FEATURE_VIEW, str(view))


def may_read_dataset(access: Access, arguments: dict[str, Any]) -> None:
    """read on the training dataset's view"""
    view = dataset_view(access, arguments["id"])
    if view is not None and access.level(access.principal(), Kind.FEATURE_VIEW, view) is Level.NONE:
        # as for a dataset that is not there: neither it nor its view's name may show
        raise NotFound(f"training dataset {arguments['id']} does not exist")


def dataset_view(access: Access, value: Any) -> str | None:
    """The view of training dataset ``value`` (None: no such dataset)."""
    try:
        dataset_id = int(value)
    except (TypeError, ValueError):
        return None
    with access.store.read() as conn:
        found: str | None = conn.execute(
            select(training_datasets.c.view_name).where(training_datasets.c.id == dataset_id)
        ).scalar()
    return found


_LABELS = {Kind.FEATURE_GROUP: "feature group", Kind.FEATURE_VIEW: "feature view"}


def _is_ref(ref: Any) -> bool:
    try:
        parse_ref(ref)
    except InvalidArgument:
        return False
    return True
