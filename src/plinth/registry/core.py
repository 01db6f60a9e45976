"""The registry's core: registered models, immutable versions, aliases, history.

Stage transitions, gates and rollback build on it in ``service.py``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from plinth.features.views import training_datasets_of
from plinth.registry import statements as sql
from plinth.registry.files import PackageFiles
from plinth.registry.gates import Gate, check_gate
from plinth.registry.rules import may_register, model_exists, model_of_uri
from plinth.registry.types import (
    HistoryEntry,
    Manifest,
    ModelVersion,
    RegisteredModel,
    Stage,
)
from plinth.registry.uris import VIRTUAL_ALIASES, check_alias, check_model_name, parse_model_uri
from plinth.store.artifacts import ArtifactStore, safe_relpath
from plinth.store.engine import Store
from plinth.store.schema import (
    model_aliases,
    model_history,
    model_version_datasets,
    model_versions,
    registered_models,
)
from plinth.store.sql import now_ms, to_datetime
from plinth.tracking.service import TrackingService
from plinth.tracking.types import Page

_manifest = TypeAdapter(Manifest)
_gates = TypeAdapter(list[Gate])


class RegistryCore(PackageFiles):
    def __init__(self, store: Store, artifacts: ArtifactStore, tracking: TrackingService) -> None:
        self.store = store
        self.artifacts = artifacts
        self.tracking = tracking

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- registered models -------------------------------------------------------------

    @endpoint("POST", "/models")
    @guarded(role=Role.EDITOR)
    def create_registered_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        """A new registered model, owned by its creator."""
        check_model_name(name)
        with self.store.write() as conn:
            if self._model_row(conn, name, missing_ok=True) is not None:
                raise AlreadyExists(f"registered model {name!r} already exists")
            self._insert_model(conn, name, description, tags or {})
        return self._registered_model(name)

    @endpoint("GET", "/models/{name}")
    @guarded(Action.READ, Kind.MODEL, "name")
    def get_registered_model(self, name: str) -> RegisteredModel:
        return self._registered_model(name)

    def _registered_model(self, name: str) -> RegisteredModel:
        with self.store.read() as conn:
            row = self._model_row(conn, name)
            aliases = dict(
                conn.execute(
                    select(model_aliases.c.alias, model_aliases.c.version).where(
                        model_aliases.c.model_name == name
                    )
                ).all()
            )
            versions = conn.execute(
                select(model_versions.c.version, model_versions.c.stage).where(
                    model_versions.c.model_name == name
                )
            ).all()
        production = [v for v, stage in versions if stage == Stage.PRODUCTION]
        return RegisteredModel(
            name=row.name,
            description=row.description,
            owner=row.owner,
            created_at=to_datetime(row.created_at),
            updated_at=to_datetime(row.updated_at),
            tags=json.loads(row.tags),
            aliases=aliases,
            latest_version=max((v for v, _ in versions), default=None),
            production_version=production[0] if production else None,
        )

    @endpoint("GET", "/models")
    @guarded()
    def list_registered_models(
        self, name_like: str | None = None, max_results: int = 100, page_token: str | None = None
    ) -> Page[RegisteredModel]:
        """The registered models the caller may see, by name."""
        from plinth.store.sql import check_max_results, decode_page_token, encode_page_token

        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        query = select(registered_models.c.name).order_by(registered_models.c.name)
        if name_like:
            query = query.where(registered_models.c.name.like(name_like))
        visible = self.access.visible(Kind.MODEL)
        if visible is not None:
            query = query.where(registered_models.c.name.in_(visible))
        with self.store.read() as conn:
            names = list(conn.execute(query.offset(offset).limit(limit + 1)).scalars())
        items = [self._registered_model(n) for n in names[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(names) > limit else None)

    @endpoint("POST", "/models/{name}")
    @guarded(Action.WRITE, Kind.MODEL, "name")
    def update_registered_model(
        self, name: str, description: str | None = None, tags: dict[str, str] | None = None
    ) -> RegisteredModel:
        """Change a model's description (Markdown) or merge tags into its tags."""
        with self.store.write() as conn:
            self._lock(conn, name)
            row = self._model_row(conn, name)
            values: dict[str, Any] = {"updated_at": now_ms()}
            if description is not None:
                values["description"] = description
                self._history(conn, name, None, "description", row.description, description)
            if tags is not None:
                merged = {**json.loads(row.tags), **{k: str(v) for k, v in tags.items()}}
                values["tags"] = json.dumps(merged, sort_keys=True)
                self._history(conn, name, None, "tags", row.tags, values["tags"])
            conn.execute(
                update(registered_models).where(registered_models.c.name == name).values(values)
            )
        return self._registered_model(name)

    @endpoint("DELETE", "/models/{name}/tags")
    @guarded(Action.WRITE, Kind.MODEL, "name")
    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Remove one tag of a model (NotFound when it has no such tag)."""
        with self.store.write() as conn:
            self._lock(conn, name)
            before = self._model_row(conn, name).tags
            after = _without(json.loads(before), key, f"model {name!r}")
            conn.execute(
                update(registered_models)
                .where(registered_models.c.name == name)
                .values(tags=after, updated_at=now_ms())
            )
            self._history(conn, name, None, "tags", before, after)

    @endpoint("POST", "/models/{name}/gates")
    @guarded(Action.MANAGE, Kind.MODEL, "name")
    def set_gates(self, name: str, gates: list[Gate]) -> list[Gate]:
        """Replace the promotion gates checked before a version enters STAGING or PRODUCTION."""
        checked = [check_gate(g) for g in gates]
        encoded = _gates.dump_json(checked).decode()
        with self.store.write() as conn:
            row = self._model_row(conn, name)
            conn.execute(
                update(registered_models)
                .where(registered_models.c.name == name)
                .values(gates=encoded, updated_at=now_ms())
            )
            self._history(conn, name, None, "gates", row.gates, encoded)
            self.access.record("model_gates_changed", f"model:{name}", detail=encoded, conn=conn)
        return checked

    @endpoint("GET", "/models/{name}/gates")
    @guarded(Action.READ, Kind.MODEL, "name")
    def get_gates(self, name: str) -> list[Gate]:
        return self._gates_of(name)

    def _gates_of(self, name: str) -> list[Gate]:
        with self.store.read() as conn:
            return _gates.validate_json(self._model_row(conn, name).gates)

    # -- versions ----------------------------------------------------------------------

    @endpoint("POST", "/models/{name}/versions")
    @guarded(check=may_register)
    def create_model_version(
        self,
        name: str,
        package_uri: str,
        run_id: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        training_dataset: int | None = None,
    ) -> ModelVersion:
        """Register the model package stored at ``package_uri`` (a folder under the artifact
        root) as the next version, creating the registered model if needed. Every file is
        checked against the package's sha256 list first: a partial upload never registers.
        The version is linked to ``training_dataset`` and to any training dataset its run
        logged as an input."""
        check_model_name(name)
        package_uri = safe_relpath(package_uri)
        parts = package_uri.split("/")
        own_area = parts[:3] == ["models", name, "packages"] and len(parts) == 4
        run_area = (
            len(parts) >= 4
            and parts[2] == "artifacts"
            and run_id is not None
            and parts[1] == run_id
        )
        if not (own_area or run_area):
            raise InvalidArgument(
                f"package {package_uri!r} must be under models/{name}/packages/ID or the artifacts of run_id"
            )
        if own_area and self._package_in_use(package_uri):
            raise Conflict(f"package {package_uri!r} is already registered")
        manifest, manifest_sha256 = self._verified_manifest(package_uri)
        lineage: dict[str, Any] = (
            self._lineage(run_id, manifest) if run_id else {"requirements": manifest.requirements}
        )
        actor = self.access.actor()
        # The rule's check read the model earlier: decide here, on one reading, whether the
        # caller needs editor on an existing model or creates a new one (the editor role).
        existed = model_exists(self.store, name)
        if existed:
            self.access.require(Action.WRITE, Kind.MODEL, name, repr(name))
        with self.store.write() as conn:
            uris = [d["uri"] for d in lineage.get("datasets", [])]
            datasets = training_datasets_of(conn, training_dataset, uris)
            if datasets:
                lineage["training_datasets"] = datasets
            # Insert-if-missing: concurrent first registrations must not collide.
            if self._insert_model_if_missing(conn, name, actor):
                self.access.on_created(conn, Kind.MODEL, name)
            elif not existed and not self.access.principal().is_admin:
                # someone else created it since: their model, whose editors may register
                raise Conflict(f"registered model {name!r} was created meanwhile; try again")
            version = (
                conn.execute(
                    update(registered_models)
                    .where(registered_models.c.name == name)
                    .values(next_version=registered_models.c.next_version + 1, updated_at=now_ms())
                    .returning(registered_models.c.next_version)
                ).scalar_one()
                - 1
            )
            conn.execute(
                insert(model_versions).values(
                    model_name=name,
                    version=version,
                    stage=Stage.DEVELOPMENT.value,
                    description=description,
                    owner=actor,
                    created_at=now_ms(),
                    run_id=run_id,
                    package_uri=package_uri,
                    flavor=manifest.flavor,
                    manifest=_manifest.dump_json(manifest).decode(),
                    manifest_sha256=manifest_sha256,
                    lineage=json.dumps(lineage, sort_keys=True, default=str),
                    tags=json.dumps(tags or {}, sort_keys=True),
                )
            )
            if datasets:
                links = [
                    {"model_name": name, "model_version": version, "training_dataset": d}
                    for d in datasets
                ]
                conn.execute(insert(model_version_datasets), links)
            self._history(
                conn,
                name,
                version,
                "register",
                None,
                Stage.DEVELOPMENT.value,
                f"from {'run ' + run_id if run_id else package_uri}",
            )
        return self._version(name, version)

    @endpoint("GET", "/models/{name}/versions/{version}")
    @guarded(Action.READ, Kind.MODEL, "name")
    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._version(name, version)

    def _version(self, name: str, version: int) -> ModelVersion:
        with self.store.read() as conn:
            return self._load_version(conn, name, version)

    @endpoint("GET", "/model-versions/resolve")
    @guarded(Action.READ, Kind.MODEL, "uri", resolve=model_of_uri)
    def resolve(self, uri: str) -> ModelVersion:
        """The version a model URI names: ``models:/churn/3``, ``models:/churn@champion``,
        ``models:/churn@production`` (by stage) or ``models:/churn@latest``."""
        ref = parse_model_uri(uri)
        with self.store.read() as conn:
            if ref.version is not None:
                return self._load_version(conn, ref.name, ref.version)
            assert ref.alias is not None
            version = self._alias_target(conn, ref.name, ref.alias)
            if version is None:
                self._model_row(conn, ref.name)
                raise NotFound(f"{uri}: model {ref.name!r} has no version at @{ref.alias}")
            return self._load_version(conn, ref.name, version)

    @endpoint("GET", "/model-versions")
    @guarded()
    def search_model_versions(
        self,
        name: str | None = None,
        stage: Stage | None = None,
        tag: str | None = None,
        max_results: int = 100,
        run_id: str | None = None,
    ) -> list[ModelVersion]:
        """Versions by model name (SQL LIKE pattern), stage, tag (``key`` or ``key=value``)
        and the run they were made from, of the models the caller may see."""
        from plinth.store.sql import check_max_results

        query = select(model_versions.c.model_name, model_versions.c.version).order_by(
            model_versions.c.model_name, model_versions.c.version.desc()
        )
        if name:
            query = query.where(model_versions.c.model_name.like(name))
        if stage is not None:
            query = query.where(model_versions.c.stage == Stage(stage).value)
        if run_id is not None:
            query = query.where(model_versions.c.run_id == run_id)
        visible = self.access.visible(Kind.MODEL)
        if visible is not None:
            query = query.where(model_versions.c.model_name.in_(visible))
        with self.store.read() as conn:
            keys = conn.execute(query).all()
            found = [self._load_version(conn, n, v) for n, v in keys]
        if tag:
            key, _, value = tag.partition("=")
            found = [v for v in found if key in v.tags and (not value or v.tags[key] == value)]
        return found[: check_max_results(max_results)]

    @endpoint("POST", "/models/{name}/versions/{version}")
    @guarded(Action.WRITE, Kind.MODEL, "name")
    def update_model_version(
        self,
        name: str,
        version: int,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Only a version's description and tags change; its package and lineage never do."""
        with self.store.write() as conn:
            self._lock(conn, name)
            current = self._load_version(conn, name, version)
            values: dict[str, Any] = {}
            if description is not None:
                values["description"] = description
                self._history(conn, name, version, "description", current.description, description)
            if tags is not None:
                merged = json.dumps(
                    {**current.tags, **{k: str(v) for k, v in tags.items()}}, sort_keys=True
                )
                values["tags"] = merged
                self._history(conn, name, version, "tags", json.dumps(current.tags), merged)
            if values:
                conn.execute(
                    update(model_versions).where(*_version_is(name, version)).values(values)
                )
        return self._version(name, version)

    @endpoint("DELETE", "/models/{name}/versions/{version}/tags")
    @guarded(Action.WRITE, Kind.MODEL, "name")
    def delete_model_version_tag(self, name: str, version: int, key: str) -> None:
        """Remove one tag of a version (NotFound when it has no such tag)."""
        with self.store.write() as conn:
            self._lock(conn, name)
            before = json.dumps(self._load_version(conn, name, version).tags, sort_keys=True)
            after = _without(json.loads(before), key, f"models:/{name}/{version}")
            conn.execute(
                update(model_versions).where(*_version_is(name, version)).values(tags=after)
            )
            self._history(conn, name, version, "tags", before, after)

    @endpoint("DELETE", "/models/{name}/versions/{version}")
    @guarded(Action.MANAGE, Kind.MODEL, "name")
    def delete_model_version(self, name: str, version: int, reason: str = "") -> None:
        """Delete a version and its package; refused while it is PRODUCTION or has an alias."""
        with self.store.write() as conn:
            current = self._load_version(conn, name, version)
            if current.stage is Stage.PRODUCTION:
                raise Conflict(
                    f"{current.uri} is in PRODUCTION: promote another version or roll back first"
                )
            if current.aliases:
                raise Conflict(
                    f"{current.uri} has aliases {current.aliases}: move or delete them first"
                )
            conn.execute(delete(model_versions).where(*_version_is(name, version)))
            self._history(conn, name, version, "delete", current.stage.value, None, reason)
            self.access.record(
                "model_version_deleted",
                f"model:{name}",
                detail=f"v{version} ({current.stage.value}) {reason}".strip(),
                conn=conn,
            )
        if current.package_uri.startswith("models/"):  # packages logged in runs stay with the run
            self.artifacts.delete(current.package_uri)

    @endpoint("DELETE", "/models/{name}")
    @guarded(Action.MANAGE, Kind.MODEL, "name")
    def delete_registered_model(self, name: str) -> None:
        """Delete a model with its versions (and their packages), aliases and grants;
        refused while a version is PRODUCTION. Its history stays, ending with the delete."""
        with self.store.write() as conn:
            self._lock(conn, name)
            self._model_row(conn, name)
            versions = conn.execute(
                select(
                    model_versions.c.version, model_versions.c.stage, model_versions.c.package_uri
                )
                .where(model_versions.c.model_name == name)
                .order_by(model_versions.c.version)
            ).all()
            production = [v.version for v in versions if v.stage == Stage.PRODUCTION]
            if production:
                raise Conflict(
                    f"models:/{name}/{production[0]} is in PRODUCTION: archive it or roll "
                    "back first"
                )
            for v in versions:
                self._history(conn, name, v.version, "delete", v.stage, None, "model deleted")
            self._history(conn, name, None, "delete", None, None, f"{len(versions)} version(s)")
            conn.execute(delete(model_aliases).where(model_aliases.c.model_name == name))
            conn.execute(delete(model_versions).where(model_versions.c.model_name == name))
            conn.execute(delete(registered_models).where(registered_models.c.name == name))
            self.access.on_deleted(conn, Kind.MODEL, name)
            self.access.record(
                "model_deleted", f"model:{name}", detail=f"{len(versions)} version(s)", conn=conn
            )
        for v in versions:
            if v.package_uri.startswith("models/"):  # packages logged in runs stay with the run
                self.artifacts.delete(v.package_uri)

    # -- aliases -----------------------------------------------------------------------

    @endpoint("POST", "/models/{name}/aliases/{alias}")
    @guarded(Action.PROMOTE, Kind.MODEL, "name")
    def set_alias(self, name: str, alias: str, version: int, reason: str = "") -> ModelVersion:
        """Point an alias at a version (deployments resolve aliases: promoter)."""
        check_alias(alias)
        with self.store.write() as conn:
            self._load_version(conn, name, version)
            previous = self._alias_target(conn, name, alias)
            if previous is None:
                conn.execute(
                    insert(model_aliases).values(model_name=name, alias=alias, version=version)
                )
            else:
                conn.execute(
                    update(model_aliases)
                    .where(model_aliases.c.model_name == name, model_aliases.c.alias == alias)
                    .values(version=version)
                )
            self._history(
                conn,
                name,
                version,
                "alias",
                _opt(previous),
                str(version),
                reason,
                {"alias": alias},
            )
            self.access.record(
                "model_alias_set",
                f"model:{name}",
                detail=f"@{alias}: {_opt(previous) or '-'} -> {version}",
                conn=conn,
            )
        return self._version(name, version)

    @endpoint("DELETE", "/models/{name}/aliases/{alias}")
    @guarded(Action.PROMOTE, Kind.MODEL, "name")
    def delete_alias(self, name: str, alias: str) -> None:
        with self.store.write() as conn:
            previous = (
                self._alias_target(conn, name, alias) if alias not in VIRTUAL_ALIASES else None
            )
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            conn.execute(
                delete(model_aliases).where(
                    model_aliases.c.model_name == name, model_aliases.c.alias == alias
                )
            )
            self._history(
                conn, name, previous, "unalias", str(previous), None, "", {"alias": alias}
            )
            self.access.record(
                "model_alias_deleted",
                f"model:{name}",
                detail=f"@{alias} (was {previous})",
                conn=conn,
            )

    # -- history -----------------------------------------------------------------------

    @endpoint("GET", "/models/{name}/history")
    @guarded(Action.READ, Kind.MODEL, "name")
    def model_history(self, name: str) -> list[HistoryEntry]:
        """Every change to the model, oldest first."""
        with self.store.read() as conn:
            self._model_row(conn, name)
            rows = conn.execute(
                select(model_history)
                .where(model_history.c.model_name == name)
                .order_by(model_history.c.id)
            ).all()
        return [
            HistoryEntry(
                r.id,
                r.model_name,
                r.version,
                r.action,
                r.actor,
                to_datetime(r.at),
                r.from_value,
                r.to_value,
                r.reason,
                json.loads(r.details),
            )
            for r in rows
        ]

    # -- helpers -----------------------------------------------------------------------

    def _lineage(self, run_id: str, manifest: Manifest) -> dict[str, Any]:
        run = self.tracking.get_run(run_id)
        return {
            "run_id": run.id,
            "run_name": run.name,
            "experiment": run.experiment_name,
            "code": {k: v for k, v in asdict(run.lineage).items() if v is not None},
            "datasets": [
                {k: v for k, v in asdict(i).items() if k != "logged_at"} for i in run.inputs
            ],
            "params": run.params,
            "metrics": {k: s.last for k, s in run.metrics.items()},
            "requirements": manifest.requirements,
        }

    def _insert_model(
        self, conn: Connection, name: str, description: str, tags: dict[str, str]
    ) -> None:
        now = now_ms()
        try:
            conn.execute(
                insert(registered_models).values(
                    name=name,
                    description=description,
                    owner=self.access.actor(),
                    tags=json.dumps(tags, sort_keys=True),
                    gates="[]",
                    created_at=now,
                    updated_at=now,
                    next_version=1,
                )
            )
        except IntegrityError:
            raise Conflict(
                f"registered model {name!r} was created concurrently; try again"
            ) from None
        self.access.on_created(conn, Kind.MODEL, name)

    def _insert_model_if_missing(self, conn: Connection, name: str, owner: str) -> bool:
        """Create the model unless it exists (concurrent first registrations must not
        collide); True when this call created it."""
        now = now_ms()
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        inserted = conn.execute(
            dialect.insert(registered_models)
            .values(
                name=name,
                description="",
                owner=owner,
                tags="{}",
                gates="[]",
                created_at=now,
                updated_at=now,
                next_version=1,
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(registered_models.c.name)  # psycopg reports no rowcount for this
        )
        return inserted.first() is not None

    def _lock(self, conn: Connection, name: str) -> None:
        # Read-modify-write of a model's tags takes turns (PostgreSQL row lock; SQLite's
        # writers already queue), so two concurrent tag merges both survive.
        conn.execute(
            select(registered_models.c.name)
            .where(registered_models.c.name == name)
            .with_for_update()
        )

    def _model_row(self, conn: Connection, name: str, missing_ok: bool = False) -> Any:
        row = conn.execute(sql.model_row, {"name": name}).first()
        if row is None and not missing_ok:
            raise NotFound(f"registered model {name!r} does not exist")
        return row

    def _alias_target(self, conn: Connection, name: str, alias: str) -> int | None:
        lowered = alias.lower()
        if lowered == "latest":
            found = conn.execute(sql.latest_version, {"name": name}).scalar()
        elif lowered in VIRTUAL_ALIASES:
            found = conn.execute(
                sql.newest_in_stage, {"name": name, "stage": lowered.upper()}
            ).scalar()
        else:
            found = conn.execute(sql.alias_target, {"name": name, "alias": alias}).scalar()
        return None if found is None else int(found)

    def _load_version(self, conn: Connection, name: str, version: int) -> ModelVersion:
        key = {"name": name, "version": version}
        row = conn.execute(sql.version_row, key).first()
        if row is None:
            self._model_row(conn, name)
            raise NotFound(f"model {name!r} has no version {version}")
        aliases = sorted(conn.execute(sql.aliases_of_version, key).scalars())
        return ModelVersion(
            model_name=row.model_name,
            version=row.version,
            stage=Stage(row.stage),
            description=row.description,
            owner=row.owner,
            created_at=to_datetime(row.created_at),
            package_uri=row.package_uri,
            manifest=_manifest.validate_json(row.manifest),
            run_id=row.run_id,
            aliases=aliases,
            tags=json.loads(row.tags),
            lineage=json.loads(row.lineage),
            manifest_sha256=row.manifest_sha256,
        )

    def _history(
        self,
        conn: Connection,
        name: str,
        version: int | None,
        action: str,
        from_value: str | None,
        to_value: str | None,
        reason: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            insert(model_history).values(
                model_name=name,
                version=version,
                action=action,
                actor=self.access.actor(),  # always the caller's own name, never the request's
                at=now_ms(),
                from_value=from_value,
                to_value=to_value,
                reason=reason,
                details=json.dumps(details or {}, sort_keys=True, default=str),
            )
        )


def _version_is(name: str, version: int) -> tuple[Any, Any]:
    return model_versions.c.model_name == name, model_versions.c.version == version


def _without(tags: dict[str, str], key: str, owner: str) -> str:
    """``tags`` without ``key``, as stored; NotFound when they have no such key."""
    if key not in tags:
        raise NotFound(f"{owner} has no tag {key!r}")
    return json.dumps({k: v for k, v in tags.items() if k != key}, sort_keys=True)


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)
