"""Statements of the registry's read path, built once (resolving a URI is a hot path)."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from plinth.store.schema import model_aliases, model_versions, registered_models

model_row = select(registered_models).where(registered_models.c.name == bindparam("name"))
version_row = select(model_versions).where(
    model_versions.c.model_name == bindparam("name"),
    model_versions.c.version == bindparam("version"),
)
aliases_of_version = select(model_aliases.c.alias).where(
    model_aliases.c.model_name == bindparam("name"),
    model_aliases.c.version == bindparam("version"),
)
alias_target = select(model_aliases.c.version).where(
    model_aliases.c.model_name == bindparam("name"), model_aliases.c.alias == bindparam("alias")
)
latest_version = (
    select(model_versions.c.version)
    .where(model_versions.c.model_name == bindparam("name"))
    .order_by(model_versions.c.version.desc())
    .limit(1)
)
newest_in_stage = (
    select(model_versions.c.version)
    .where(
        model_versions.c.model_name == bindparam("name"),
        model_versions.c.stage == bindparam("stage"),
    )
    .order_by(model_versions.c.version.desc())
    .limit(1)
)
