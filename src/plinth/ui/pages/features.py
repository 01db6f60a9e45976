"""The feature store: the catalog, entities, feature groups (schema, versions, commits,
statistics per commit, validation, where used), feature views and training datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from plinth.errors import InvalidArgument, NotFound, PlinthError
from plinth.features import statistics
from plinth.features.refs import parse_ref
from plinth.features.service import FeatureService
from plinth.features.types import (
    ColumnStatistics,
    CommitInfo,
    Entity,
    FeatureGroup,
    FeatureView,
    ModelUse,
    TrainingDataset,
)
from plinth.ui.charts import chart, series
from plinth.ui.sections import Section
from plinth.ui.web import HtmlRoute, is_htmx, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "features",
    "Features",
    "/features",
    router,
    summary="The feature store: search entities, feature groups and views; schemas, commits, "
    "statistics, validation reports, where used; training datasets.",
    order=30,
)

PER_PAGE = 50  # a list of one kind, or of commits, reports, datasets
PREVIEW = 10  # of each kind when the catalog shows every kind
REPORTS_PER_PAGE = 20
KINDS = ("all", "entities", "groups", "views")
NUMERIC = ("int32", "int64", "float32", "float64")

T = TypeVar("T")


@dataclass(frozen=True)
class Listed:
    """One kind's part of the catalog: the items shown and how many matched."""

    items: list[Any]
    total: int
    has_next: bool


def _slice(items: Sequence[T], page: int, size: int) -> Listed:
    page_token(page, size)  # refuses a page below 1 in the same words as other lists
    start = (page - 1) * size
    return Listed(list(items[start : start + size]), len(items), start + size < len(items))


# -- the catalog -------------------------------------------------------------------------


@router.get("/features")
def catalog(
    request: Request, q: str = "", entity: str = "", kind: str = "all", page: int = 1
) -> Response:
    if kind not in KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    page_token(page, PER_PAGE)  # a bad page is refused even where the kinds are previewed
    fs = services(request).features
    needle = q.strip().lower()
    all_entities = fs.list_entities()
    found: dict[str, Listed | None] = {}
    wanted = KINDS[1:] if kind == "all" else (kind,)
    size, at = (PREVIEW, 1) if kind == "all" else (PER_PAGE, page)
    if "entities" in wanted:
        matches = [e for e in all_entities if _entity_matches(e, needle, entity)]
        found["entities"] = _slice(matches, at, size)
    if "groups" in wanted:
        groups = fs.list_feature_groups(query=needle or None, entity=entity or None)
        found["groups"] = _slice(groups, at, size)
    if "views" in wanted:
        found["views"] = _slice(_matching_views(fs, needle, entity), at, size)
    context = {
        "q": q,
        "entity": entity,
        "kind": kind,
        "page": page,
        "entities": all_entities,
        "found": found,
        "paged": kind != "all",
    }
    template = "features/_results.html" if is_htmx(request) else "features/catalog.html"
    return render(request, template, context)


def _entity_matches(e: Entity, needle: str, entity: str) -> bool:
    if entity and e.name != entity:
        return False
    return not needle or needle in " ".join([e.name, e.description, *e.join_keys]).lower()


def _matching_views(fs: FeatureService, needle: str, entity: str) -> list[FeatureView]:
    latest: dict[str, FeatureView] = {}
    for v in fs.list_feature_views():  # every version, ascending: the last one stays
        latest[v.name] = v
    views = list(latest.values())
    if entity:
        of_entity = {g.name for g in fs.list_feature_groups(entity=entity)}
        views = [v for v in views if of_entity & {parse_ref(f)[0] for f in v.features}]
    if needle:
        views = [v for v in views if needle in _view_text(v)]
    return views


def _view_text(v: FeatureView) -> str:
    parts = [v.name, v.description, v.label or "", *v.features]
    parts += [t.name for t in v.transformations] + [r.name for r in v.request]
    return " ".join(parts).lower()


# -- entities ----------------------------------------------------------------------------


@router.get("/features/entities/{name}")
def entity_page(request: Request, name: str) -> Response:
    fs = services(request).features
    found = fs.get_entity(name)
    groups = fs.list_feature_groups(entity=name)
    return render(request, "features/entity.html", {"entity": found, "groups": groups})


# -- feature groups ----------------------------------------------------------------------


@router.get("/features/groups/{name}")
def group_page(request: Request, name: str, version: int | None = None, page: int = 1) -> Response:
    fs = services(request).features
    group = fs.get_feature_group(name, version)
    versions = [g for g in fs.list_feature_groups(query=name, all_versions=True) if g.name == name]
    commits = _slice(fs.list_commits(name, group.version)[::-1], page, PER_PAGE)
    reports = fs.list_reports(name, group.version)[::-1]
    usage = fs.where_used(name)
    context = {
        "group": group,
        "versions": versions,
        "commits": commits,
        "page": page,
        "reports": reports[:5],
        "report_count": len(reports),
        "failed_count": sum(not r.passed for r in reports),
        "usage": usage,
        "view_links": [_view_link(ref) for ref in usage.feature_views],
    }
    return render(request, "features/group.html", context)


@router.get("/features/groups/{name}/commits/{commit}")
def commit_page(request: Request, name: str, commit: int, version: int | None = None) -> Response:
    fs = services(request).features
    group = fs.get_feature_group(name, version)
    found = _commit(fs, group, commit)
    reports = [r for r in fs.list_reports(name, group.version) if r.commit_version == commit]
    dtypes = {f.name: f.dtype for f in group.features}
    numeric = [s for s in found.statistics if dtypes.get(s.column) in NUMERIC and s.deciles]
    other = [s for s in found.statistics if s not in numeric]
    # top values and histograms arrived together: a commit without any predates both
    recorded = any(s.bin_counts or s.top_values for s in found.statistics)
    context = {
        "group": group,
        "commit": found,
        "reports": reports,
        "numeric": numeric,
        "other": other,
        "ranked": [s for s in other if s.top_values],
        "recorded": recorded,
        "bins": statistics.BINS,
        "top": statistics.TOP_VALUES,
        "top_cap": statistics.TOP_VALUES_MAX_DISTINCT,
        "dtypes": dtypes,
    }
    return render(request, "features/commit.html", context)


@router.get("/features/groups/{name}/commits/{commit}/histogram/{column}")
def histogram_chart(
    request: Request, name: str, commit: int, column: str, version: int | None = None
) -> Response:
    """A numeric feature's histogram in one commit: a bar per bin at the bin's centre."""
    fs = services(request).features
    group = fs.get_feature_group(name, version)
    stats = _column(_commit(fs, group, commit), column)
    edges = stats.bin_edges
    centres = [(low + high) / 2 for low, high in pairwise(edges)]
    counts = [float(c) for c in stats.bin_counts]
    return chart(
        [series(column, centres, counts, "bars")] if counts else [],
        column,
        "rows",
        empty=f"{column} has no finite values in this commit.",
    )


@router.get("/features/groups/{name}/commits/{commit}/quantiles/{column}")
def quantile_chart(
    request: Request, name: str, commit: int, column: str, version: int | None = None
) -> Response:
    """A numeric feature's deciles in one commit as a quantile plot, for commits written
    before histograms were recorded: deciles alone cannot draw a histogram honestly."""
    fs = services(request).features
    group = fs.get_feature_group(name, version)
    stats = _column(_commit(fs, group, commit), column)
    shares = [round(100 * i / (len(stats.deciles) - 1)) for i in range(len(stats.deciles))]
    drawn = [series(column, shares, stats.deciles, "line")] if stats.deciles else []
    drawn += [series("deciles", shares, stats.deciles, "points")] if stats.deciles else []
    return chart(
        drawn,
        "share of rows at or below (%)",
        column,
        empty=f"{column} has no numeric values in this commit.",
    )


@router.get("/features/groups/{name}/validation")
def validation_page(
    request: Request, name: str, version: int | None = None, page: int = 1
) -> Response:
    fs = services(request).features
    group = fs.get_feature_group(name, version)
    reports = _slice(fs.list_reports(name, group.version)[::-1], page, REPORTS_PER_PAGE)
    context = {"group": group, "reports": reports, "page": page}
    return render(request, "features/validation.html", context)


def _commit(fs: FeatureService, group: FeatureGroup, commit: int) -> CommitInfo:
    commits = fs.list_commits(group.name, group.version)
    for c in commits:
        if c.commit_version == commit:
            return c
    known = ", ".join(str(c.commit_version) for c in commits) or "none yet"
    raise NotFound(f"feature group {group.ref} has no commit {commit} (its commits: {known})")


def _column(commit: CommitInfo, column: str) -> ColumnStatistics:
    for stats in commit.statistics:
        if stats.column == column:
            return stats
    raise NotFound(
        f"commit {commit.commit_version} of {commit.group} has no statistics of {column!r}"
    )


def _view_link(ref: str) -> tuple[str, int, str]:
    name, _, version = ref.rpartition(":v")
    return name, int(version), ref


# -- feature views and training datasets -------------------------------------------------


@router.get("/features/views/{name}")
def view_page(request: Request, name: str, version: int | None = None) -> Response:
    fs = services(request).features
    view = fs.get_feature_view(name, version)
    versions = [v for v in fs.list_feature_views() if v.name == name]
    groups = _source_groups(fs, view)
    selected = []
    for ref in view.features:
        group_name, group_version, feature = parse_ref(ref)
        group = groups[(group_name, group_version or 0)]
        spec = None if group is None else next(f for f in group.features if f.name == feature)
        selected.append((group_name, group_version, feature, spec))
    datasets = fs.list_training_datasets(view=name)
    context = {
        "view": view,
        "versions": versions,
        "selected": selected,
        "groups": groups,
        "dataset_count": len(datasets),
    }
    return render(request, "features/view.html", context)


@router.get("/features/views/{name}/datasets")
def view_datasets(request: Request, name: str, page: int = 1) -> Response:
    fs = services(request).features
    view = fs.get_feature_view(name)
    datasets = _slice(fs.list_training_datasets(view=name)[::-1], page, PER_PAGE)
    context = {"view": view, "datasets": datasets, "page": page}
    return render(request, "features/datasets.html", context)


@router.get("/features/datasets/{id}")
def dataset_page(request: Request, id: int) -> Response:
    found = services(request)
    dataset = found.features.get_training_dataset(id)
    uses = _model_uses(found.features, dataset)
    runs: dict[tuple[str, int], str | None] = {}
    for use in uses:
        version = found.registry.get_model_version(use.model, use.version)
        runs[(use.model, use.version)] = version.run_id
    time_range, unavailable = _time_range(request, dataset)
    context = {
        "dataset": dataset,
        "uses": uses,
        "runs": runs,
        "time_range": time_range,
        "unavailable": unavailable,
    }
    return render(request, "features/dataset.html", context)


def _source_groups(
    fs: FeatureService, view: FeatureView
) -> dict[tuple[str, int], FeatureGroup | None]:
    """The group versions a view reads; None for one the caller may no longer see."""
    groups: dict[tuple[str, int], FeatureGroup | None] = {}
    for ref in view.features:
        name, version, _ = parse_ref(ref)
        key = (name, version or 0)
        if key not in groups:
            try:
                groups[key] = fs.get_feature_group(name, version)
            except NotFound:
                groups[key] = None
    return groups


def _model_uses(fs: FeatureService, dataset: TrainingDataset) -> list[ModelUse]:
    """The model versions trained on ``dataset`` (lineage keeps them per group it read)."""
    uses: dict[tuple[str, int], ModelUse] = {}
    for ref in dataset.group_commits:
        name, _, version = ref.rpartition(":v")
        try:
            usage = fs.where_used(name, int(version))
        except NotFound:  # the group was removed since; its lineage went with it
            continue
        for use in usage.model_versions:
            if use.training_dataset == dataset.id:
                uses[(use.model, use.version)] = use
    return [uses[k] for k in sorted(uses)]


def _time_range(request: Request, dataset: TrainingDataset) -> tuple[tuple[Any, Any] | None, str]:
    """The first and last entity timestamps, read from the dataset's entity rows (only the
    record is in the catalog); with the reason when they cannot be read."""
    try:
        offline = services(request).feature_store.offline
        table = offline.read_snapshot(dataset.entity_uri, columns=[dataset.timestamp_column])
    except PlinthError as error:
        return None, error.message
    if table.num_rows == 0:
        return None, f"the entity rows have no values in {dataset.timestamp_column!r}"
    bounds: Callable[[pa.ChunkedArray], Any] = pc.min_max
    found = bounds(table.column(dataset.timestamp_column)).as_py()
    return (found["min"], found["max"]), ""
