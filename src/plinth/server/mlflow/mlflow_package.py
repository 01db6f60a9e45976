"""MLflow model versions as Plinth packages.

An MLflow client registers a model by its ``source``: a folder under the artifact root
(``mlflow-artifacts:/EXP/RUN/artifacts/PATH``, ``runs:/RUN/PATH``, a logged model's
``models:/m-ID``, or another version's ``models:/NAME/VERSION``). Its files are copied,
each hashed on the way, into a new package ``models/NAME/packages/ID`` whose manifest has
the flavor ``mlflow``; the registry then registers that package as usual, so the version
is an ordinary Plinth version whose files no later write to the run can change.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]
from pydantic import TypeAdapter

from plinth.errors import InvalidArgument, NotFound
from plinth.registry.package import MANIFEST, MODEL_FOLDER, _plinth_version
from plinth.registry.types import ColumnSpec, Manifest, ModelVersion, Signature
from plinth.registry.uris import check_model_name
from plinth.server.mlflow.common import Services
from plinth.store.artifacts import safe_relpath
from plinth.tracking.logged_models import LoggedModelService

FLAVOR = "mlflow"
#: a version made here keeps the source it was registered from in these tags
SOURCE_TAG, MODEL_ID_TAG = "mlflow.source", "mlflow.model_id"
MAX_FILES = 10_000
_BLOCK = 1024 * 1024
# files read while copying to describe the package (small; a larger one is not parsed)
_DESCRIBING = {"MLmodel", "requirements.txt"}
_manifest = TypeAdapter(Manifest)
# MLflow's column types and the pandas dtypes Plinth's signatures name
_MLFLOW_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
    "datetime": "datetime64[ns]",
}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-\[\],]*)\s*(.*)$")

_Lister = Callable[[str], list[tuple[str, bool]]]
_Opener = Callable[[str], IO[bytes]]


@dataclass(frozen=True)
class Source:
    """A folder of model files: ``root`` within an area that ``list`` and ``open`` read
    (the caller's right to read it was checked when the source was resolved)."""

    uri: str
    root: str
    list: _Lister
    open: _Opener
    run_id: str | None = None
    model_id: str | None = None


def resolve_source(services: Services, uri: str) -> Source:
    """Where an MLflow ``source`` lies under the artifact root; InvalidArgument for any
    other place, NotFound for a run, logged model or version that is not there."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidArgument("source is required: the URI of the model's folder")
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
        if not run_id:
            raise InvalidArgument(f"source {uri!r} must look like runs:/RUN_ID/PATH")
        return _run_source(services, uri, run_id, path)
    if uri.startswith("models:/"):
        body = uri[len("models:/") :]
        if body.startswith("m-") and "/" not in body:
            return _logged_model_source(services, uri, body, "")
        return _version_source(services, uri, services.registry.resolve(uri))
    if uri.startswith("mlflow-artifacts:"):
        parts = safe_relpath(urlsplit(uri).path.lstrip("/")).split("/")
        if len(parts) >= 3 and parts[2] == "artifacts":
            return _run_source(services, uri, parts[1], "/".join(parts[3:]), parts[0])
        if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
            return _logged_model_source(services, uri, parts[2], "/".join(parts[4:]), parts[0])
        if len(parts) >= 4 and parts[0] == "registered-models" and parts[2] == "versions":
            version = services.registry.resolve(f"models:/{parts[1]}/{parts[3]}")
            return _version_source(services, uri, version, "/".join(parts[4:]))
    raise InvalidArgument(
        f"source {uri!r} is not a place under this server's artifact root: give "
        "runs:/RUN_ID/PATH, models:/m-MODEL_ID, models:/NAME/VERSION or an mlflow-artifacts:/ "
        "URI under a run's artifact_uri"
    )


def _run_source(
    services: Services, uri: str, run_id: str, path: str, experiment_id: str | None = None
) -> Source:
    tracking = services.tracking
    root = safe_relpath(path, allow_root=True)

    def listing(folder: str) -> list[tuple[str, bool]]:
        return [(e.path, e.is_dir) for e in tracking.list_artifacts(run_id, folder)]

    def opening(file: str) -> IO[bytes]:
        return tracking.open_artifact_reader(run_id, file)

    run = tracking.get_run(run_id)  # read access on its experiment; NotFound for no such run
    if experiment_id is not None and run.experiment_id != experiment_id:
        raise NotFound(f"source {uri!r}: experiment {experiment_id} has no run {run_id}")
    return Source(uri, root, listing, opening, run_id=run_id)


def _logged_model_source(
    services: Services, uri: str, model_id: str, path: str, experiment_id: str | None = None
) -> Source:
    # read on its experiment; NotFound for a model that is not there (or deleted)
    model = LoggedModelService(services.store, services.artifacts).get(model_id)
    if experiment_id is not None and model.experiment_id != experiment_id:
        raise NotFound(f"source {uri!r}: experiment {experiment_id} has no model {model_id}")
    folder = model.artifact_path
    root = safe_relpath(f"{folder}/{path}" if path else folder)
    return Source(
        uri,
        root,
        _store_lister(services),
        services.artifacts.open_read,
        model.source_run_id,
        model_id,
    )


def _version_source(services: Services, uri: str, version: ModelVersion, path: str = "") -> Source:
    # resolve() checked read access on the model
    root = safe_relpath(f"{version.package_uri}/{path or MODEL_FOLDER}")
    return Source(uri, root, _store_lister(services), services.artifacts.open_read)


def _store_lister(services: Services) -> _Lister:
    def listing(folder: str) -> list[tuple[str, bool]]:
        return [(i.path, i.is_dir) for i in services.artifacts.list(folder)]

    return listing


def files_of(source: Source) -> list[str]:
    """Every file under the source's folder, relative to it; NotFound when it holds none."""
    found: list[str] = []
    pending = [source.root]
    while pending:
        for path, is_dir in source.list(pending.pop()):
            if is_dir:
                pending.append(path)
            else:
                found.append(path[len(source.root) + 1 :] if source.root else path)
            if len(found) > MAX_FILES:
                raise InvalidArgument(
                    f"source {source.uri!r} holds more than {MAX_FILES} files: not a model folder"
                )
    if not found:
        raise NotFound(f"source {source.uri!r} holds no files: is it the model's folder?")
    if "MLmodel" not in found:
        raise InvalidArgument(
            f"source {source.uri!r} is not an MLflow model: its folder has no MLmodel file"
        )
    return sorted(found)


def copy_to_package(services: Services, source: Source, name: str) -> str:
    """Copy the source's files into a new package for model ``name`` (hashing each as it
    is written) with a manifest of flavor ``mlflow``; the package's path. A copy that
    fails leaves no package behind."""
    check_model_name(name)
    files = files_of(source)
    package = f"models/{name}/packages/{uuid.uuid4().hex}"
    hashes: dict[str, str] = {}
    described: dict[str, bytes] = {}
    try:
        for rel in files:
            target = f"{MODEL_FOLDER}/{rel}"
            digest, head = _copy(services, source, rel, f"{package}/{target}")
            hashes[target] = digest
            if rel in _DESCRIBING:
                described[rel] = head
        mlmodel = read_mlmodel(described.get("MLmodel", b""))
        pyfunc = mlmodel.get("flavors", {}).get("python_function", {})
        manifest = Manifest(
            flavor=FLAVOR,
            plinth_version=_plinth_version(),
            python_version=str(pyfunc.get("python_version") or platform.python_version()),
            requirements=parse_requirements(described.get("requirements.txt", b"")),
            created_at=datetime.now(UTC),
            files=hashes,
            signature=mlmodel_signature(mlmodel),
            model_class=str(pyfunc.get("loader_module") or ""),
            pickled=True,  # MLflow's flavors mostly unpickle: never assume otherwise
        )
        with services.registry.open_staging_writer(f"{package}/{MANIFEST}") as out:
            out.write(_manifest.dump_json(manifest, indent=2))
    except BaseException:
        services.artifacts.delete(package)
        raise
    return package


def _copy(services: Services, source: Source, rel: str, dest: str) -> tuple[str, bytes]:
    """Copy one file; its sha256 and (for the describing files) its first block."""
    digest = hashlib.sha256()
    head = b""
    from_path = f"{source.root}/{rel}" if source.root else rel
    with source.open(from_path) as reader, services.registry.open_staging_writer(dest) as out:
        for block in iter(lambda: reader.read(_BLOCK), b""):
            if not head:
                head = block
            digest.update(block)
            out.write(block)
    return digest.hexdigest(), head


def parse_requirements(text: bytes) -> dict[str, str]:
    """``requirements.txt`` as the manifest keeps it: name -> pinned version (``==`` left
    out), another specifier as written, or "" for none; options and comments skipped."""
    found: dict[str, str] = {}
    for raw in text.decode("utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        spec = match.group(2).split(";", 1)[0].strip()
        found[match.group(1)] = spec[2:].strip() if spec.startswith("==") else spec
    return found


def read_mlmodel(text: bytes) -> dict[str, Any]:
    """An MLmodel file's fields ({} when it is not a YAML mapping: it only describes)."""
    try:
        found = yaml.safe_load(text.decode("utf-8", "replace")) if text else None
    except yaml.YAMLError:
        return {}
    return found if isinstance(found, dict) else {}


def mlmodel_signature(mlmodel: dict[str, Any]) -> Signature | None:
    """MLflow's column-based signature as Plinth's (dtypes by pandas name); None when
    there is none, or it is tensor-based or unreadable."""
    signature = mlmodel.get("signature")
    if not isinstance(signature, dict):
        return None
    try:
        inputs = _columns(signature.get("inputs"), "input")
        outputs = _columns(signature.get("outputs"), "prediction")
    except (ValueError, TypeError, KeyError):
        return None
    return Signature(inputs, outputs) if inputs else None


def _columns(encoded: Any, unnamed: str) -> list[ColumnSpec]:
    if not encoded:
        return []
    specs = []
    for i, column in enumerate(json.loads(encoded)):
        dtype = _MLFLOW_DTYPES[column["type"]]  # KeyError: tensors and the like
        name = column.get("name") or (unnamed if i == 0 else f"{unnamed}_{i}")
        specs.append(ColumnSpec(str(name), dtype))
    return specs


def source_tags(source: Source) -> dict[str, str]:
    """The tags a version made from ``source`` keeps its MLflow source in."""
    tags = {SOURCE_TAG: source.uri}
    if source.model_id:
        tags[MODEL_ID_TAG] = source.model_id
    return tags
