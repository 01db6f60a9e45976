"""Model URIs: ``models:/churn/3``, ``models:/churn@champion``, ``@production``, ``@latest``;
and ``runs:/RUN_ID/PATH`` for a package logged under a run's artifacts (not registered)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plinth.errors import InvalidArgument

# Aliases that name a stage or the newest version rather than a stored alias.
VIRTUAL_ALIASES = {"latest", "production", "staging", "shadow", "development", "archived"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,99}$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"model name {name!r} is not valid: use 1-200 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidArgument(
            f"alias {alias!r} is not valid: use letters, digits, '_' or '-', starting with a letter"
        )
    if alias.lower() in VIRTUAL_ALIASES:
        raise InvalidArgument(
            f"alias {alias!r} is reserved: @{alias.lower()} always resolves by stage"
        )
    return alias


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    if not isinstance(uri, str) or not uri.startswith("models:/"):
        raise InvalidArgument(
            f"model URI {uri!r} must look like models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    body = uri[len("models:/") :]
    if "@" in body:
        name, alias = body.split("@", 1)
        if not alias:
            raise InvalidArgument(f"model URI {uri!r} has an empty alias after '@'")
        return ModelRef(check_model_name(name), alias=alias)
    name, _, version = body.partition("/")
    if not version.isdigit() or int(version) < 1:
        raise InvalidArgument(
            f"model URI {uri!r} needs a version number >= 1 (models:/{name}/3) or an alias"
        )
    return ModelRef(check_model_name(name), version=int(version))


def parse_runs_uri(uri: str) -> tuple[str, str]:
    """``runs:/RUN_ID/PATH``: the run and the artifact path its model package was logged at."""
    body = uri[len("runs:/") :] if uri.startswith("runs:/") else ""
    run_id, _, path = body.partition("/")
    if not run_id or not path.strip("/"):
        raise InvalidArgument(
            f"model URI {uri!r} must look like runs:/RUN_ID/PATH, the artifact path the model "
            f"was logged at (runs:/{run_id or 'RUN_ID'}/model)"
        )
    return run_id, path.strip("/")


def which_version(name: str) -> str:
    """What to say when a bare model name is given where a version is needed."""
    return (
        f"{name!r} does not say which version: give a model URI such as "
        f"models:/{name}@production (or @staging, @latest, @ALIAS) or models:/{name}/3, "
        "or runs:/RUN_ID/PATH for a model logged in a run"
    )
