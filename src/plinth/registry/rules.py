"""Who may do what in the registry: the checks its operations' access rules name.

A model's permissions are keyed by its name. Reading it takes viewer; registering versions,
descriptions, tags, stages short of PRODUCTION and decisions take editor; anything that
changes what a deployment resolves (PRODUCTION in or out, aliases, rollback) takes
promoter; gates and deletes take owner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from plinth.auth.access import Access
from plinth.auth.types import Action, Kind, Role
from plinth.registry.types import Stage
from plinth.registry.uris import parse_model_uri
from plinth.store.artifacts import safe_relpath
from plinth.store.engine import Store
from plinth.store.schema import model_versions, registered_models


def model_of_uri(access: Access, uri: Any) -> str | None:
    return parse_model_uri(str(uri)).name


def model_exists(store: Store, name: str) -> bool:
    with store.read() as conn:
        found = conn.execute(
            select(registered_models.c.name).where(registered_models.c.name == name)
        ).first()
    return found is not None


def stage_action(target: Stage, current: Stage) -> Action:
    """Entering or leaving PRODUCTION changes what deployments serve: promoter; the rest
    of a version's stages are the editors'."""
    return Action.PROMOTE if Stage.PRODUCTION in (target, current) else Action.WRITE


def may_register(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the model (the editor role, if this creates it); editor on run_id's
    experiment (registering makes the run's model files read-only)"""
    name = str(arguments["name"])
    if model_exists(access.store, name):
        access.require(Action.WRITE, Kind.MODEL, name, repr(name))
    else:
        access.require_role(Role.EDITOR, f"create registered model {name!r}")
    run_id = arguments.get("run_id")
    if run_id is not None:
        key = access.run_experiment(str(run_id))
        if key is not None:
            access.require(Action.WRITE, Kind.EXPERIMENT, key, f"of run {run_id!r}")


def may_set_stage(access: Access, arguments: dict[str, Any]) -> None:
    """promoter on the model to move a version into or out of PRODUCTION, else editor"""
    name = str(arguments["name"])
    with access.store.read() as conn:
        current = conn.execute(
            select(model_versions.c.stage).where(
                model_versions.c.model_name == name,
                model_versions.c.version == arguments["version"],
            )
        ).scalar()
    if current is None:  # no such version: a reader is told so by the method
        access.require(Action.READ, Kind.MODEL, name, repr(name))
        return
    action = stage_action(Stage.parse(arguments["stage"]), Stage(current))
    access.require(action, Kind.MODEL, name, repr(name))


def may_stage_package(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the model the package is staged for (the editor role, for a new model)"""
    parts = safe_relpath(arguments["path"]).split("/")
    if len(parts) < 2 or parts[0] != "models":
        return  # not a package path: the method says what one looks like
    name = parts[1]
    if model_exists(access.store, name):
        access.require(Action.WRITE, Kind.MODEL, name, repr(name))
    else:
        access.require_role(Role.EDITOR, f"stage a package for new model {name!r}")
