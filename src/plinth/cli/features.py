"""``plinth features``: the feature store's catalog, commits, validation reports and
statistics; materialisation and online lookups."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

features_app: typer.Typer = typer.Typer(
    no_args_is_help=True,
    help="The feature store: entities, feature groups, commits, online lookups.",
)

from rich.markup import escape  # noqa: E402

from plinth.cli.common import JsonOption, _client, _fmt, _pairs, _print_json, _say, _table, err, out  # noqa: E402
from plinth.errors import InvalidArgument, NotFound  # noqa: E402

if TYPE_CHECKING:
    from plinth.features.service import FeatureService
    from plinth.features.store import FeatureStore
    from plinth.features.types import CommitInfo, Expectation, FeatureGroup, ValidationReport

VersionOption = Annotated[
    int | None, typer.Option("--version", help="the group's version (default: the latest)")
]
TimeOption = Annotated[
    str | None, typer.Option(help="ISO time with a timezone, e.g. 2026-01-31T00:00:00+00:00")
]
# A key value that looks like an integer is sent as one; "007" stays a string (an ID, not 7).
_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def _service() -> FeatureService:
    service: FeatureService = _client().features
    return service


def _store() -> FeatureStore:
    store: FeatureStore = _client().feature_store()
    return store


@features_app.command("entities")
def entities(json_: JsonOption = False) -> None:
    """List entities: what feature groups are keyed by."""
    found = _service().list_entities()
    if json_:
        return _print_json(found)
    rows = [(e.name, ", ".join(e.join_keys), e.value_type, e.description) for e in found]
    out.print(_table("entities", ("name", "join keys", "value type", "description"), rows))


@features_app.command("groups")
def groups(
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="in names, descriptions, tags")
    ] = None,
    entity: Annotated[str | None, typer.Option("--entity", "-e")] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions")] = False,
    json_: JsonOption = False,
) -> None:
    """The catalog of feature groups (latest versions unless --all-versions)."""
    found = _service().list_feature_groups(query, entity, all_versions)
    if json_:
        return _print_json(found)
    columns = ("name", "version", "entity", "features", "online", "ttl", "description")
    out.print(_table("feature groups", columns, [_group_row(g) for g in found]))


def _group_row(g: FeatureGroup) -> tuple[Any, ...]:
    return (
        g.name,
        g.version,
        g.entity,
        len(g.features),
        _yes(g.online),
        _ttl(g.ttl_seconds),
        g.description,
    )


@features_app.command("show")
def show(group: str, version: VersionOption = None, json_: JsonOption = False) -> None:
    """Everything about one feature group: schema, rules, commits, materialisation."""
    service = _service()
    found = service.get_feature_group(group, version)
    commits = service.list_commits(found.name, found.version)
    until = service.get_materialized_until(found.name, found.version)
    if json_:
        last = commits[-1] if commits else None
        shown = {"group": found, "commits": len(commits), "last_commit": last}
        return _print_json({**shown, "materialized_until": until})
    _print_group(found, commits, until)


def _print_group(group: FeatureGroup, commits: list[CommitInfo], until: int | None) -> None:
    out.print(
        f"[bold]{escape(group.ref)}[/bold]  entity {escape(group.entity)}  "
        f"owner {escape(group.owner or '-')}  created {_fmt(group.created_at)}",
        highlight=False,
    )
    lines = [
        group.description,
        f"keys: {', '.join(group.keys)}  event time: {group.event_time}",
        f"online: {_yes(group.online)}  ttl: {_ttl(group.ttl_seconds)}",
        f"table: {group.table_uri}",
        f"expectations ({group.validation_mode}): "
        + ("; ".join(_rule(e) for e in group.expectations) or "none"),
        f"commits: {len(commits)}" + (f", last: {_commit_text(commits[-1])}" if commits else ""),
        f"drift reference: {group.drift_reference.describe()}",
        "materialized until: " + ("never" if until is None else f"offline (Delta) version {until}"),
    ]
    for line in filter(None, lines):
        out.print(escape(line), highlight=False)
    rows = [(f.name, f.dtype, f.description, _pairs(f.tags)) for f in group.features]
    out.print(_table("features", ("name", "dtype", "description", "tags"), rows))


@features_app.command("commits")
def commits(group: str, version: VersionOption = None, json_: JsonOption = False) -> None:
    """The group's inserts, oldest first: one Delta commit each, with its drift verdict."""
    service = _service()
    found = service.get_feature_group(group, version)
    listed = service.list_commits(found.name, found.version)
    if json_:
        return _print_json(listed)
    rows = [
        (
            c.commit_version,
            c.rows,
            c.operation,
            c.written_by or "-",
            c.at,
            _passed(c.validation_passed),
            drift_cell(c.drift),
        )
        for c in listed
    ]
    columns = ("delta version", "rows", "operation", "who", "when", "validation", "drift")
    out.print(_table(f"commits of {found.ref}", columns, rows))


def drift_cell(verdict: dict[str, Any] | None) -> str:
    """A commit's drift verdict in a few words: "2/12 drifted", "dataset drift: 7/12
    drifted", "error", "—" when not checked."""
    if verdict is None:
        return "—"
    if "error" in verdict:
        return "error"
    if "tested_columns" not in verdict:
        return "—"
    share = f"{verdict['drifted_columns']}/{verdict['tested_columns']} drifted"
    return f"dataset drift: {share}" if verdict.get("dataset_drifted") else share


@features_app.command("commit-drift")
def commit_drift(
    group: str,
    commit: Annotated[int, typer.Argument(help="the commit's Delta version")],
    version: VersionOption = None,
    json_: JsonOption = False,
) -> None:
    """One commit's drift verdict: per feature, the test, its statistic and p-value."""
    service = _service()
    found = service.get_feature_group(group, version)
    chosen = _pick_commit(found, service.list_commits(found.name, found.version), commit)
    verdict = chosen.drift
    if json_:
        return _print_json(verdict)
    title = f"drift of {found.ref} commit {commit}"
    if verdict is None:
        out.print(escape(f"{title}: not checked (drift reference none, or no profile)"))
        return
    for line in _verdict_lines(verdict):
        out.print(escape(f"{title}: {line}"), highlight=False)
    if "columns" in verdict:
        columns = ("column", "test", "statistic", "p-value", "drifted", "method", "note")
        rows = [_drift_row(c) for c in verdict["columns"]]
        out.print(_table(title, columns, rows))


def _verdict_lines(verdict: dict[str, Any]) -> list[str]:
    reference = verdict.get("reference") or "none"
    if "error" in verdict:
        return [f"reference {reference}; ERROR {verdict['error']}"]
    if "tested_columns" not in verdict:
        return [f"not checked: {verdict.get('reason', 'no reference')}"]
    dataset = "DATASET DRIFT" if verdict.get("dataset_drifted") else "no dataset drift"
    summary = f"{verdict['drifted_columns']} of {verdict['tested_columns']} column(s) drifted"
    return [
        f"against {reference} ({verdict.get('reference_rows')} row(s)); "
        f"{verdict.get('preset')} preset",
        f"{summary}: {dataset} (share threshold {verdict.get('share_threshold')})",
    ]


def _drift_row(column: dict[str, Any]) -> tuple[Any, ...]:
    method = column.get("method", "")
    if method == "sample" and column.get("sample_size"):
        method = f"sample of {column['sample_size']}"
    note = column.get("error") or column.get("detail") or ""
    return (
        column.get("column"),
        column.get("test"),
        column.get("statistic"),
        column.get("p_value"),
        "DRIFTED" if column.get("drifted") else "no",
        method,
        note,
    )


@features_app.command("drift-reference")
def drift_reference(
    group: str,
    version: VersionOption = None,
    previous: Annotated[
        bool, typer.Option("--previous", help="compare each insert with the previous commit")
    ] = False,
    days: Annotated[
        int | None, typer.Option("--days", help="... with the commits of the last N days")
    ] = None,
    commit: Annotated[
        int | None, typer.Option("--commit", help="... with this commit (a Delta version)")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="no drift check")] = False,
    preset: Annotated[
        str | None, typer.Option("--preset", help="the tests: plinth (default) or evidently")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Show, or choose, what each insert into the group is compared with for drift."""
    from plinth.features.types import DriftReference

    service = _service()
    found = service.get_feature_group(group, version)
    chosen = [
        kind
        for kind, given in (
            ("previous", previous),
            ("days", days is not None),
            ("commit", commit is not None),
            ("none", none),
        )
        if given
    ]
    if len(chosen) > 1:
        raise InvalidArgument(
            "give one of --previous, --days N, --commit C, --none; got "
            + ", ".join(f"--{kind}" for kind in chosen)
        )
    if chosen or preset is not None:
        current = found.drift_reference
        reference = replace(current, preset=preset or current.preset)
        if chosen:
            kind = chosen[0]
            reference = DriftReference(
                kind,
                days if kind == "days" else None,
                commit if kind == "commit" else None,
                preset or current.preset,
            )
        found = service.set_drift_reference(found.name, found.version, reference)
    line = f"drift reference of {found.ref}: {found.drift_reference.describe()}"
    _say(json_, found.drift_reference, line)


@features_app.command("repair")
def repair(
    group: Annotated[str | None, typer.Argument(help="one group (default: every group)")] = None,
    version: VersionOption = None,
    json_: JsonOption = False,
) -> None:
    """Record offline commits that have no record (a writer killed after its Delta commit)
    with their statistics and validation report, and delete data files no commit uses."""
    store = _store()
    if group is None:
        targets = store.service.list_feature_groups(all_versions=True)
    else:
        targets = [store.service.get_feature_group(group, version)]
    done = [store.repair(target) for target in targets]
    if json_:
        return _print_json(done)
    rows = [
        (
            f"{r.group}:v{r.version}",
            ", ".join(str(c.commit_version) for c in r.recorded) or "-",
            len(r.removed_files),
        )
        for r in done
    ]
    columns = ("group", "commits recorded", "orphan files removed")
    out.print(_table("repair", columns, rows))


@features_app.command("reports")
def reports(
    group: str,
    version: VersionOption = None,
    failed: Annotated[bool, typer.Option("--failed", help="only reports that failed")] = False,
    json_: JsonOption = False,
) -> None:
    """Validation reports of the group's writes, with what failed."""
    service = _service()
    found = service.get_feature_group(group, version)
    listed = service.list_reports(found.name, found.version)
    if failed:
        listed = [r for r in listed if not r.passed]
    if json_:
        return _print_json(listed)
    columns = ("id", "when", "delta version", "mode", "rows", "result", "failing expectations")
    rows = [_report_row(r) for r in listed]
    out.print(_table(f"validation reports of {found.ref}", columns, rows))


def _report_row(r: ValidationReport) -> tuple[Any, ...]:
    written = "refused" if r.commit_version is None else r.commit_version
    return (r.id, r.at, written, r.mode, r.rows, _passed(r.passed), _failures(r))


def _failures(report: ValidationReport) -> str:
    lines = []
    for r in report.results:
        if not r.passed:
            example = f"; e.g. {r.sample[0]}" if r.sample else ""
            lines.append(f"{_rule(r.expectation)}: {r.detail}{example}")  # detail counts rows
    return "\n".join(lines) or "-"


@features_app.command("stats")
def stats(
    group: str,
    version: VersionOption = None,
    commit: Annotated[
        int | None, typer.Option("--commit", help="a Delta version (default: the last commit)")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Per-feature statistics of the rows one commit wrote."""
    service = _service()
    found = service.get_feature_group(group, version)
    chosen = _pick_commit(found, service.list_commits(found.name, found.version), commit)
    if json_:
        return _print_json(chosen)
    rows = [
        (s.column, s.count, s.nulls, s.distinct, s.mean, s.std, s.min, s.max)
        for s in chosen.statistics
    ]
    columns = ("feature", "count", "nulls", "distinct", "mean", "std", "min", "max")
    title = f"{found.ref}: the {chosen.rows} row(s) of Delta version {chosen.commit_version}"
    out.print(_table(title, columns, rows))


def _pick_commit(group: FeatureGroup, found: list[CommitInfo], wanted: int | None) -> CommitInfo:
    if not found:
        raise NotFound(f"feature group {group.ref} has no commits yet")
    if wanted is None:
        return found[-1]
    for c in found:
        if c.commit_version == wanted:
            return c
    versions = ", ".join(str(c.commit_version) for c in found)
    raise NotFound(f"feature group {group.ref} has no commit at Delta version {wanted}: {versions}")


@features_app.command("materialize")
def materialize(
    group: str,
    version: VersionOption = None,
    start: TimeOption = None,
    end: TimeOption = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="only what changed since the last run")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Copy the latest value per key (event time in [start, end)) to the online store."""
    if incremental and (start or end):
        raise InvalidArgument(
            "--incremental copies what changed since the last materialisation; "
            "it takes no --start or --end"
        )
    window = _aware("--start", start), _aware("--end", end)
    if window[0] and window[1] and window[0] >= window[1]:
        raise InvalidArgument(f"--start {start} is not before --end {end}")
    store = _store()
    found = store.service.get_feature_group(group, version)
    # on stderr: the spinner must not get into --json output
    with err.status(f"materializing {escape(found.ref)}"):
        if incremental:
            written = store.materialize_incremental(found)
        else:
            written = store.materialize(found, *window)
    until = store.service.get_materialized_until(found.name, found.version)
    done = {"group": found.name, "version": found.version, "rows_written": written}
    line = f"wrote {written} row(s) of {found.ref} to the online store"
    _say(json_, {**done, "materialized_until": until}, line)


def _aware(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"{option} {text!r} is not an ISO time such as 2026-01-31T00:00:00+00:00"
        ) from None
    if at.tzinfo is None:  # as the store: a naive time is refused, not guessed
        raise InvalidArgument(
            f"{option} {text!r} has no timezone; give one, e.g. {at.isoformat()}+00:00"
        )
    return at


@features_app.command("lookup")
def lookup(
    features: Annotated[list[str], typer.Argument(help='"group:feature" or "group:v2:feature"')],
    key: Annotated[
        list[str],
        typer.Option(
            "--key",
            "-k",
            help="one entity: customer_id=1001 (a,b keys: a=1,b=2); repeat for more",
        ),
    ],
    json_: JsonOption = False,
) -> None:
    """Look features up online: a value and a status (PRESENT, NOT_FOUND, OUTSIDE_TTL)."""
    rows = [_entity_row(k) for k in key]
    names = set(rows[0])
    for text, row in zip(key, rows, strict=True):
        if set(row) != names:
            raise InvalidArgument(
                f"--key {text!r} names {sorted(row)}; every --key must name {sorted(names)}"
            )
    found = _store().get_online_features(features, rows)
    if json_:
        values = [{k: _jsonable(v) for k, v in r.items()} for r in found.rows]
        return _print_json({"features": features, "rows": values, "statuses": found.statuses})
    table = [
        (_pairs(entity), ref, values.get(ref.split(":")[-1]), statuses.get(ref.split(":")[-1]))
        for entity, values, statuses in zip(rows, found.rows, found.statuses, strict=True)
        for ref in features
    ]
    out.print(_table("online features", ("entity", "feature", "value", "status"), table))


def _entity_row(text: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for pair in text.split(","):
        name, equals, value = (part.strip() for part in pair.partition("="))
        if not (name and equals and value) or name in row:
            raise InvalidArgument(
                f"--key {text!r} is not join_key=value, e.g. customer_id=1001 "
                "(customer_id=1001,store_id=7 for a composite key)"
            )
        row[name] = int(value) if _INT.fullmatch(value) else value
    return row


def _jsonable(value: Any) -> Any:
    # dates and times as ISO text; datetime is a date too
    return value.isoformat() if isinstance(value, date) else value


def _passed(flag: bool) -> str:
    return "passed" if flag else "FAILED"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _ttl(seconds: int | None) -> str:
    """Seconds as parse_ttl reads them back: 30d, 12h, 90m, 45s."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _rule(e: Expectation) -> str:
    target = [e.column] if e.column else list(e.columns)
    bounds = (("q", e.q), ("min", e.min), ("max", e.max), ("pattern", e.pattern))
    details = [f"{name}={value}" for name, value in bounds if value is not None]
    if e.values:
        details.append(f"values={e.values}")
    return f"{e.kind}({', '.join([*target, *details])})"


def _commit_text(c: CommitInfo) -> str:
    who = f" by {c.written_by}" if c.written_by else ""
    return f"Delta version {c.commit_version}, {c.rows} row(s){who} at {_fmt(c.at)}"


@features_app.command("insert")
def insert(
    group: str,
    source: Annotated[str, typer.Argument(help="a Parquet file or folder, or a Delta table")],
    version: VersionOption = None,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="rows per streamed chunk")
    ] = 500_000,
    online: Annotated[
        bool, typer.Option("--online", help="also write to the online store")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Insert a Parquet source into a group: validated, streamed, ONE offline commit."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    store = _store()
    found = store.service.get_feature_group(group, version)
    total = _row_count(source)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # on stderr, so --json stays clean; only on a terminal, so logs get no bar debris
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"inserting into {escape(found.ref)}", total=total)
        commit = store.insert(
            found,
            source,
            write_online=online,
            chunk_rows=chunk_rows,
            progress=lambda rows: bar.update(task, completed=rows),
        )
    line = f"committed {commit.rows} row(s) to {found.ref} as Delta version {commit.commit_version}"
    _say(json_, commit, line)


def _row_count(source: str) -> int | None:
    import pyarrow.dataset as ds

    try:
        return int(ds.dataset(source, format="parquet").count_rows())
    except (OSError, ValueError):
        return None  # a Delta folder, say: the bar counts without a total


@features_app.command("views")
def views(json_: JsonOption = False) -> None:
    """Feature views: every version, with what each reads and computes."""
    found = _service().list_feature_views()
    if json_:
        return _print_json(found)
    rows = [
        (
            v.ref,
            ", ".join(v.features),
            ", ".join(r.name for r in v.request) or "-",
            ", ".join(t.name for t in v.transformations) or "-",
            v.label,
            v.description,
        )
        for v in found
    ]
    columns = ("view", "features", "request", "transformations", "label", "description")
    out.print(_table("feature views", columns, rows))


@features_app.command("view")
def view(
    name: str,
    version: Annotated[
        int | None, typer.Option("--version", help="the view's version (default: the latest)")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """One feature view: what it reads, and each transformation's source, which is the code
    that runs for training and serving."""
    found = _service().get_feature_view(name, version)
    if json_:
        return _print_json(found)
    out.print(
        f"[bold]{escape(found.ref)}[/bold]  owner {escape(found.owner or '-')}  "
        f"created {_fmt(found.created_at)}",
        highlight=False,
    )
    lines = [
        found.description,
        f"features: {', '.join(found.features)}",
        f"keys: {', '.join(found.keys)}  label: {found.label or '-'}",
        "request: " + (", ".join(f"{r.name} {r.dtype}" for r in found.request) or "-"),
    ]
    for line in filter(None, lines):
        out.print(escape(line), highlight=False)
    for t in found.transformations:
        outputs = ", ".join(f"{o.name} {o.dtype}" for o in t.outputs)
        out.print(
            f"\n[bold]transformation {escape(t.name)}[/bold]: "
            f"{escape(', '.join(t.inputs))} -> {escape(outputs)}",
            highlight=False,
        )
        # as stored, not wrapped or highlighted: this text is exactly what runs
        source = t.source.rstrip("\n") or (
            "(no source: stored by an older Plinth as a pickle, which is never run; "
            "re-create this view version)"
        )
        out.print(escape(source), highlight=False, soft_wrap=True)


@features_app.command("datasets")
def datasets(
    view: Annotated[str | None, typer.Option("--view", help="only those of this view")] = None,
    json_: JsonOption = False,
) -> None:
    """Training datasets: the view, rows and the group commits each one read."""
    found = _service().list_training_datasets(view)
    if json_:
        return _print_json(found)
    rows = [
        (d.id, f"{d.view}:v{d.view_version}", d.rows, _pairs(d.group_commits), d.created_at, d.uri)
        for d in found
    ]
    columns = ("id", "view", "rows", "group commits", "created", "uri")
    out.print(_table("training datasets", columns, rows))


@features_app.command("usage")
def usage(
    target: Annotated[str, typer.Argument(help="a group, or one feature as group:feature")],
    version: VersionOption = None,
    json_: JsonOption = False,
) -> None:
    """Where a group or feature is used: feature views, training datasets, model versions."""
    found = _store().where_used(target, version)
    if json_:
        return _print_json(found)
    rows: list[tuple[Any, ...]] = [("feature view", v, "") for v in found.feature_views]
    rows += [("training dataset", str(d), "") for d in found.training_datasets]
    rows += [("model version", f"{m.model} v{m.version}", m.stage) for m in found.model_versions]
    out.print(_table(f"where {target} is used", ("kind", "name", "stage"), rows))


@features_app.command("delete")
def delete_group(
    group: str,
    version: VersionOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="also remove the feature views that read it")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    json_: JsonOption = False,
) -> None:
    """Delete a group (one version or all) with its offline and online data. Refused while a
    PRODUCTION model was trained on it."""
    what = group if version is None else f"{group}:v{version}"
    if not yes and not typer.confirm(f"delete {what} and all its data?", err=True):
        raise typer.Exit(1)
    removed = _store().delete_feature_group(group, version, force=force)
    _say(json_, [g.ref for g in removed], f"deleted {', '.join(g.ref for g in removed)}")
