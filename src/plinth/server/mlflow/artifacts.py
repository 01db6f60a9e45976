"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts``): the files behind
the ``mlflow-artifacts:/`` URIs Plinth hands out, streamed both ways.

A path is relative to the artifact root, in the layout the files have there:

- ``{experiment_id}/{run_id}/artifacts/{path}``: a run's artifacts (the tracking
  service's rules: write on the experiment, registered files read-only);
- ``{experiment_id}/models/{model_id}/artifacts/{path}``: a logged model's files;
- ``registered-models/{name}/versions/{version}/{path}``: a model version's package,
  read-only (read on the model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from plinth.auth.context import current_principal
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.server.mlflow.codes import ARTIFACTS_PREFIX
from plinth.server.mlflow.common import Services
from plinth.store.artifacts import safe_relpath
from plinth.tracking.logged_models import (
    MODEL_ID,
    LoggedModelService,
    model_experiment,
)
from plinth.tracking.types import ArtifactEntry

ROUTE = f"{ARTIFACTS_PREFIX}/artifacts"
_CHUNK = 1024 * 1024


def checked_path(path: str, *, allow_root: bool = False) -> str:
    """A proxy path as given, refused unless every part is a plain name."""
    if allow_root and path in ("", "/"):
        return ""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(
            f"artifact path {path[:200]!r} is not allowed: give a relative path of plain "
            "names such as '<experiment>/<run>/artifacts/model/model.pkl' (no '..', no "
            "empty parts, not absolute)"
        )
    safe_relpath(path)  # backslashes, control characters, lengths
    return path


@dataclass(frozen=True)
class Target:
    """Where a proxy path points: ``kind`` is "run", "model" or "version"; ``owner`` the
    run id, logged model id or (name, version); ``path`` the rest, inside it."""

    kind: str
    owner: Any
    path: str


def target_of(services: Services, path: str) -> Target:
    current_principal()  # a bad credential is refused before anything is looked up
    parts = path.split("/")
    if parts[0] == "registered-models":
        if len(parts) < 4 or parts[2] != "versions" or not parts[3].isdigit():
            raise NotFound(f"no artifact at {path!r}: use registered-models/NAME/versions/N/...")
        return Target("version", (parts[1], int(parts[3])), "/".join(parts[4:]))
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        model_id = parts[2]
        if (
            not MODEL_ID.fullmatch(model_id)
            or model_experiment(services.store, model_id) != parts[0]
        ):
            raise NotFound(f"logged model {model_id!r} does not exist in experiment {parts[0]!r}")
        return Target("model", model_id, "/".join(parts[4:]))
    if len(parts) >= 3 and parts[2] == "artifacts":
        run_id = parts[1]
        if services.tracking.access.run_experiment(run_id) != parts[0]:
            raise NotFound(f"run {run_id!r} does not exist in experiment {parts[0]!r}")
        return Target("run", run_id, "/".join(parts[3:]))
    raise NotFound(
        f"no artifact at {path!r}: paths are EXPERIMENT/RUN/artifacts/..., "
        "EXPERIMENT/models/MODEL/artifacts/... or registered-models/NAME/versions/N/..."
    )


def _read_only(path: str) -> Conflict:
    return Conflict(
        f"{path!r} is a registered model version's file: a registered version's files are read-only"
    )


class Proxy:
    """The proxy's four operations on a path (blocking: run them off the event loop)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.models = LoggedModelService(services.store, services.artifacts)

    def open_writer(self, path: str) -> IO[bytes]:
        target = target_of(self.services, checked_path(path))
        if target.kind == "version":
            raise _read_only(path)
        if not target.path:
            raise InvalidArgument(f"artifact path {path!r} names a folder, not a file")
        if target.kind == "model":
            return self.models.open_writer(target.owner, target.path)
        return self.services.tracking.open_artifact_writer(target.owner, target.path)

    def open_reader(self, path: str) -> IO[bytes]:
        target = target_of(self.services, checked_path(path))
        if not target.path:
            raise NotFound(f"no artifact file {path!r}: it names a folder")
        if target.kind == "version":
            name, version = target.owner
            return self.services.registry.open_package_file(name, version, target.path)
        if target.kind == "model":
            return self.models.open_reader(target.owner, target.path)
        return self.services.tracking.open_artifact_reader(target.owner, target.path)

    def delete(self, path: str) -> None:
        target = target_of(self.services, checked_path(path))
        if target.kind == "version":
            raise _read_only(path)
        if not target.path:
            raise InvalidArgument(
                f"artifact path {path!r} is a whole run's or model's files: delete inside it"
            )
        if target.kind == "model":
            self.models.delete_files(target.owner, target.path)
        else:
            self.services.tracking.delete_artifacts(target.owner, target.path)

    def list(self, path: str) -> list[ArtifactEntry]:
        """The entries of one folder, named relative to it."""
        target = target_of(self.services, checked_path(path))
        if target.kind == "version":
            name, version = target.owner
            package = self.services.registry.get_model_version(name, version).package_uri
            folder = f"{package}/{safe_relpath(target.path, allow_root=True)}".rstrip("/")
            entries = [
                ArtifactEntry(info.path[len(package) + 1 :], info.is_dir, info.size)
                for info in self.services.artifacts.list(folder)
            ]
        elif target.kind == "model":
            entries = self.models.list_files(target.owner, target.path)
        else:
            entries = self.services.tracking.list_artifacts(target.owner, target.path)
        return [ArtifactEntry(e.path.rsplit("/", 1)[-1], e.is_dir, e.size) for e in entries]


def files_json(entries: list[ArtifactEntry]) -> list[dict[str, Any]]:
    files = []
    for entry in entries:
        item: dict[str, Any] = {"path": entry.path, "is_dir": entry.is_dir}
        if not entry.is_dir and entry.size is not None:  # MLflow leaves it out for folders
            item["file_size"] = entry.size
        files.append(item)
    return files


def routes(services: Services) -> APIRouter:
    router = APIRouter()
    proxy = Proxy(services)

    @router.get(ROUTE)
    def list_artifacts(path: Annotated[str, Query()] = "") -> dict[str, Any]:
        if not path:
            raise InvalidArgument("give path: the folder to list, e.g. EXPERIMENT/RUN/artifacts")
        return {"files": files_json(proxy.list(path))}

    @router.get(f"{ROUTE}/{{path:path}}")
    def download_artifact(path: str) -> StreamingResponse:
        return _send(proxy.open_reader(path))

    @router.put(f"{ROUTE}/{{path:path}}")
    async def upload_artifact(path: str, request: Request) -> Response:
        return await _receive(request, proxy.open_writer, path)

    @router.delete(f"{ROUTE}/{{path:path}}")
    def delete_artifact(path: str) -> dict[str, Any]:
        proxy.delete(path)
        return {}

    return router


async def _receive(
    request: Request, open_writer: Callable[[str], IO[bytes]], path: str
) -> Response:
    # the body goes to the store's (blocking) writer block by block, from worker threads;
    # a body that breaks off is discarded: the file keeps its previous content or stays absent
    writer = await run_in_threadpool(open_writer, path)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(writer.write, chunk)
    except BaseException:
        await run_in_threadpool(_discard, writer)
        raise
    await run_in_threadpool(writer.close)
    return Response(content=b"{}", media_type="application/json")


def _discard(writer: IO[bytes]) -> None:
    discard = getattr(writer, "discard", None)
    if discard is not None:
        discard()
    else:
        writer.close()


def _send(reader: IO[bytes]) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        with reader:
            while block := reader.read(_CHUNK):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream")
