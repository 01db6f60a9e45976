"""The registry's package files: staging a package's files before it is registered,
reading a registered version's files, and checking a package against its sha256 list."""

from __future__ import annotations

import hashlib
from typing import IO

from pydantic import TypeAdapter
from sqlalchemy import select

from plinth.auth.access import guarded
from plinth.auth.types import Action, Kind
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.registry import statements as sql
from plinth.registry.rules import may_stage_package
from plinth.registry.types import MANIFEST_FILE, Manifest
from plinth.registry.uris import check_model_name
from plinth.store.artifacts import ArtifactStore, safe_relpath
from plinth.store.engine import Store
from plinth.store.schema import model_versions

_manifest = TypeAdapter(Manifest)


class PackageFiles:
    store: Store
    artifacts: ArtifactStore

    # -- packages ----------------------------------------------------------------------

    @guarded(Action.READ, Kind.MODEL, "name")
    def open_package_file(self, name: str, version: int, path: str) -> IO[bytes]:
        with self.store.read() as conn:
            row = conn.execute(sql.version_row, {"name": name, "version": version}).first()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return self.artifacts.open_read(f"{row.package_uri}/{safe_relpath(path)}")

    @guarded(check=may_stage_package)
    def open_staging_writer(self, path: str) -> IO[bytes]:
        """Where a client uploads a package before registering it: ``models/NAME/packages/ID/...``."""
        parts = safe_relpath(path).split("/")
        if len(parts) < 5 or parts[0] != "models" or parts[2] != "packages":
            raise InvalidArgument(f"package files go under models/NAME/packages/ID/, not {path!r}")
        check_model_name(parts[1])
        package = "/".join(parts[:4])

        def check() -> None:
            owner = self._version_of_package(package)
            if owner is not None:
                raise Conflict(
                    f"package {package!r} belongs to model version {owner}: "
                    "a registered version's files are read-only"
                )

        check()
        if self.artifacts.exists("/".join(parts)):
            raise Conflict(f"{path!r} was uploaded already: a staged package is written once")
        return self.artifacts.open_write("/".join(parts), check)

    def _package_in_use(self, package_uri: str) -> bool:
        return self._version_of_package(package_uri) is not None

    def _version_of_package(self, package_uri: str) -> str | None:
        with self.store.read() as conn:
            row = conn.execute(
                select(model_versions.c.model_name, model_versions.c.version)
                .where(model_versions.c.package_uri == package_uri)
                .limit(1)
            ).first()
        return None if row is None else f"models:/{row.model_name}/{row.version}"

    def _verified_manifest(self, package_uri: str) -> tuple[Manifest, str]:
        """The package's manifest, every file checked against it, and the sha256 of the
        manifest file itself: recorded with the version, so a manifest replaced later (with
        files to match) is refused at load."""
        try:
            raw = self.artifacts.read_bytes(f"{package_uri}/{MANIFEST_FILE}")
            manifest = _manifest.validate_json(raw)
        except NotFound:
            raise NotFound(
                f"no model package at {package_uri!r} (its {MANIFEST_FILE} is missing)"
            ) from None
        except ValueError as exc:
            raise InvalidArgument(f"the manifest of {package_uri!r} is not valid: {exc}") from None
        for file, expected in manifest.files.items():
            digest = hashlib.sha256()
            try:
                with self.artifacts.open_read(f"{package_uri}/{safe_relpath(file)}") as source:
                    for block in iter(lambda: source.read(1024 * 1024), b""):
                        digest.update(block)
            except NotFound:
                raise InvalidArgument(
                    f"model package {package_uri!r} is incomplete: {file} is missing"
                ) from None
            if digest.hexdigest() != expected:
                raise InvalidArgument(
                    f"model package {package_uri!r} is corrupt: {file} does not match its sha256"
                )
        return manifest, hashlib.sha256(raw).hexdigest()
