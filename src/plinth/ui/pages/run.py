"""A run: its params, metric charts and tags; its artifacts; its lineage.

Each tab is its own page (``/ui/runs/ID``, ``/ui/runs/ID/artifacts``, ``.../lineage``).
Artifacts are a run's users' own files, so none is ever served as a page of the dashboard:
text is previewed escaped, only raster images are shown as images (an SVG can carry
script), and every download is an attachment the browser must not sniff.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from plinth.errors import InvalidArgument, NotFound, PermissionDenied
from plinth.features.types import TrainingDataset
from plinth.store.artifacts import safe_relpath
from plinth.tracking.series import MAX_POINTS
from plinth.tracking.types import MetricSummary, Run, RunStatus
from plinth.ui.charts import chart, series
from plinth.ui.sections import Section
from plinth.ui.web import PREFIX, HtmlRoute, Services, format_number, is_htmx, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section("run", "Run", "/experiments", router, nav_as="tracking", order=11)

# A chart is at most a couple of thousand pixels wide: more points only cost time. A zoomed
# range gets the service's most, which for any range a user drags across is every point.
CHART_POINTS = 2000
ZOOM_POINTS = MAX_POINTS
PREVIEW_BYTES = 64 * 1024
_CHUNK = 256 * 1024
# Raster formats only: a browser runs the script an SVG may carry when it opens it.
IMAGES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
MODEL_VERSIONS_SHOWN = 100


# -- the overview ------------------------------------------------------------------------


@router.get("/runs/{run_id}")
def overview(request: Request, run_id: str) -> Response:
    run = services(request).tracking.get_run(run_id)
    context = {
        **_header(run, "overview"),
        "groups": _param_groups(run),
        "metrics": [_metric_view(run, run.metrics[k]) for k in sorted(run.metrics)],
    }
    return render(request, "run/overview.html", context)


@router.get("/runs/{run_id}/status")
def status(request: Request, run_id: str) -> Response:
    """The run's status and times, polled by its pages while it runs (the whole overview
    when opened as a page)."""
    if not is_htmx(request):
        return overview(request, run_id)
    run = services(request).tracking.get_run(run_id)
    return render(request, "run/_facts.html", _header(run, ""))


def _header(run: Run, tab: str) -> dict[str, Any]:
    return {
        "run": run,
        "tab": tab,
        "base": f"{PREFIX}/runs/{quote(run.id, safe='')}",
        "seconds": _seconds(run),
        "running": run.status == RunStatus.RUNNING,
    }


def _seconds(run: Run) -> float:
    end = run.end_time or datetime.now(UTC)
    return (end - run.start_time).total_seconds()


def _param_groups(run: Run) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (group, [(name, _shown(value)) for name, value in sorted(values.items())])
        for group, values in sorted(run.params.items())
    ]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class MetricView:
    key: str
    summary: MetricSummary
    url: str
    alt: str
    caption: str


def _metric_view(run: Run, summary: MetricSummary) -> MetricView:
    key, n = summary.key, format_number
    url = f"{PREFIX}/runs/{quote(run.id, safe='')}/metrics.json?key={quote(key, safe='')}"
    alt = (
        f"Line chart of {key} by step, {n(summary.count)} points: last {n(summary.last)} at "
        f"step {n(summary.last_step)}, lowest {n(summary.min)}, highest {n(summary.max)}"
    )
    if summary.best_step is not None:
        alt += f", best {n(summary.best)} at step {n(summary.best_step)} ({summary.goal})"
    if summary.count > CHART_POINTS:
        caption = (
            f"{n(CHART_POINTS)} of {n(summary.count)} points shown; zoom for detail (drag "
            "across the chart; double-click to zoom out)."
        )
    else:
        caption = f"All {n(summary.count)} points. Drag across the chart to zoom in."
    return MetricView(key, summary, url, alt, caption)


@router.get("/runs/{run_id}/metrics.json")
def metric_chart(
    request: Request,
    run_id: str,
    key: str,
    start: float | None = None,
    end: float | None = None,
) -> Response:
    """One metric as a chart: the line (downsampled on the server) and its is-best points;
    with ``start``/``end``, that range of steps in full detail (the chart's zoom)."""
    tracking = services(request).tracking
    zoomed = start is not None or end is not None
    points = ZOOM_POINTS if zoomed else CHART_POINTS
    found = tracking.get_metric_series(run_id, key, points, start, end)
    if found.count == 0 and key not in tracking.get_run(run_id).metrics:
        raise NotFound(f"run {run_id} has no metric {key!r}")  # an empty range asks this
    # both series always, even empty: a zoomed spec must have the shape of the first one
    drawn = [
        series(key, found.steps, found.values),
        series("best", found.best_steps, found.best_values, "points"),
    ]
    return chart(drawn, "step", key, empty=f"No points of {key} in this range of steps.")


# -- artifacts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    is_dir: bool
    size: int | None


@router.get("/runs/{run_id}/artifacts")
def artifacts(request: Request, run_id: str, path: str = "") -> Response:
    tracking = services(request).tracking
    run = tracking.get_run(run_id)
    folder = safe_relpath(path, allow_root=True)
    entries = [
        Entry(e.path.rsplit("/", 1)[-1], e.path, e.is_dir, e.size)
        for e in tracking.list_artifacts(run_id, folder)
    ]
    entries.sort(key=lambda e: (not e.is_dir, e.name))
    context = {**_header(run, "artifacts"), "folder": folder, "entries": entries}
    return render(request, "run/artifacts.html", context | {"trail": _trail(folder)})


def _trail(path: str) -> list[tuple[str, str]]:
    """The folders down to ``path``: (name, path) each."""
    parts = [p for p in path.split("/") if p]
    return [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


@router.get("/runs/{run_id}/artifacts/preview")
def preview(request: Request, run_id: str, path: str = "") -> Response:
    tracking = services(request).tracking
    run = tracking.get_run(run_id)
    file = safe_relpath(path)
    is_image = _extension(file) in IMAGES
    with tracking.open_artifact_reader(run_id, file) as reader:  # NotFound before the page
        head = b"" if is_image else reader.read(PREVIEW_BYTES + 1)
    binary = b"\0" in head
    context = {
        **_header(run, "artifacts"),
        "file": file,
        "name": file.rsplit("/", 1)[-1],
        "trail": _trail(file.rpartition("/")[0]),
        "is_image": is_image,
        "binary": binary,
        "text": "" if binary else head[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
        "truncated": len(head) > PREVIEW_BYTES,
        "preview_bytes": PREVIEW_BYTES,
    }
    return render(request, "run/preview.html", context)


@router.get("/runs/{run_id}/artifacts/image")
def image(request: Request, run_id: str, path: str = "") -> Response:
    file = safe_relpath(path)
    media_type = IMAGES.get(_extension(file))
    if media_type is None:
        raise InvalidArgument(
            f"artifact {file!r} is not shown as an image: only {', '.join(IMAGES)} files are; "
            "preview it as text or download it"
        )
    reader = services(request).tracking.open_artifact_reader(run_id, file)
    return _stream(reader, media_type, _disposition("inline", file))


@router.get("/runs/{run_id}/artifacts/download")
def download(request: Request, run_id: str, path: str = "") -> Response:
    file = safe_relpath(path)
    reader = services(request).tracking.open_artifact_reader(run_id, file)
    return _stream(reader, "application/octet-stream", _disposition("attachment", file))


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _disposition(kind: str, path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def _stream(reader: IO[bytes], media_type: str, disposition: str) -> Response:
    def chunks() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    headers = {"content-disposition": disposition, "x-content-type-options": "nosniff"}
    return StreamingResponse(chunks(), media_type=media_type, headers=headers)


# -- lineage -----------------------------------------------------------------------------


@router.get("/runs/{run_id}/lineage")
def lineage(request: Request, run_id: str) -> Response:
    found = services(request)
    run = found.tracking.get_run(run_id)
    environment = None
    if run.lineage.environment_digest:
        try:
            environment = found.tracking.get_environment(run.lineage.environment_digest)
        except NotFound:
            environment = None  # recorded by digest; the row may be gone with a cleanup
    versions = found.registry.search_model_versions(run_id=run.id, max_results=MODEL_VERSIONS_SHOWN)
    linked = {d for v in versions for d in v.lineage.get("training_datasets", [])}
    context = {
        **_header(run, "lineage"),
        "environment": environment,
        "versions": versions,
        "datasets": _training_datasets(found, run, linked),
    }
    return render(request, "run/lineage.html", context)


def _training_datasets(found: Services, run: Run, linked: set[int]) -> list[TrainingDataset]:
    """The feature store's training datasets the run read (logged as inputs) or its model
    versions were trained on, those the caller may see."""
    ids = set(linked)
    for dataset in run.inputs:
        at = found.features.dataset_at(dataset.uri)
        if at is not None:
            ids.add(at)
    shown = []
    for id in sorted(ids):
        try:
            shown.append(found.features.get_training_dataset(id))
        except (NotFound, PermissionDenied):
            continue
    return shown
