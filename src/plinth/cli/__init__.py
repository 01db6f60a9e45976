"""The ``plinth`` command: rich tables for people, ``--json`` for scripts."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from plinth.cli.common import (
    JsonOption,
    ReasonOption,
    _client,
    _fmt,
    _pairs,
    _print_json,
    _say,
    _table,
    err,
    out,
)
from plinth.errors import PlinthError
from plinth.registry.types import Stage

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Plinth: track, register, serve and monitor models.",
)
experiments_app = typer.Typer(
    no_args_is_help=True, help="Experiments: modelling tasks holding runs."
)
runs_app = typer.Typer(no_args_is_help=True, help="Runs: one training of one candidate each.")
db_app = typer.Typer(no_args_is_help=True, help="The central metadata store.")
models_app = typer.Typer(
    no_args_is_help=True, help="The model registry: versions, stages, aliases, history."
)
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
ViewOption = Annotated[
    str, typer.Option("--view", help="active, deleted or all (deleted ones are hidden)")
]


def _runs_table(runs: list[Any], title: str) -> Table:
    metric_names = sorted({k for r in runs for k in r.metrics})[:6]
    table = Table(title=title)
    for column in ("#", "name", "id", "status", "started", *metric_names):
        table.add_column(column, overflow="fold")
    for r in runs:
        table.add_row(
            str(r.number),
            escape(r.name),
            r.id,
            r.status.value,
            _fmt(r.start_time),
            *(_fmt(r.metrics[m].last) if m in r.metrics else "-" for m in metric_names),
        )
    return table


@experiments_app.command("list")
def experiments_list(
    json_: JsonOption = False,
    name_like: Annotated[str | None, typer.Option("--like")] = None,
    view: ViewOption = "active",
) -> None:
    """List experiments."""
    found = _client().list_experiments(name_like, view=view).items
    if json_:
        return _print_json(found)
    table = Table(title="experiments")
    for column in ("name", "id", "owner", "created", "description"):
        table.add_column(column, overflow="fold")
    for e in found:
        table.add_row(
            *(escape(_fmt(v)) for v in (e.name, e.id, e.owner, e.created_at, e.description))
        )
    out.print(table)


@experiments_app.command("show")
def experiments_show(experiment: str, json_: JsonOption = False) -> None:
    """Show one experiment (by name or id) and its latest runs."""
    client = _client()
    found = client.get_experiment(experiment)
    # a deleted experiment's runs are deleted with it: show those
    view = "active" if found.deleted_at is None else "all"
    runs = client.search_runs(experiments=[found.id], max_results=20, view=view).items
    if json_:
        return _print_json({"experiment": found, "runs": runs})
    out.print(
        f"[bold]{escape(found.name)}[/bold]  id={found.id}  owner={escape(found.owner or '-')}"
    )
    if found.deleted_at is not None:
        out.print(f"deleted {_fmt(found.deleted_at)} (plinth experiments restore)")
    if found.description:
        out.print(escape(found.description))
    if found.tags:
        out.print("tags: " + escape(_pairs(found.tags)))
    out.print(_runs_table(runs, "latest runs"))


@experiments_app.command("delete")
def experiments_delete(experiment: str, json_: JsonOption = False) -> None:
    """Delete an experiment and its runs (softly: restore brings them back)."""
    client = _client()
    client.delete_experiment(experiment)
    found = client.get_experiment(experiment)
    _say(json_, found, f"deleted experiment {found.name} and its runs")


@experiments_app.command("restore")
def experiments_restore(experiment: str, json_: JsonOption = False) -> None:
    """Restore a deleted experiment with the runs its deletion took."""
    client = _client()
    client.restore_experiment(experiment)
    found = client.get_experiment(experiment)
    _say(json_, found, f"restored experiment {found.name}")


@experiments_app.command("rename")
def experiments_rename(experiment: str, new_name: str, json_: JsonOption = False) -> None:
    """Rename an experiment (by name or id); its id and runs stay."""
    found = _client().rename_experiment(experiment, new_name)
    _say(json_, found, f"renamed experiment {experiment} to {found.name}")


@runs_app.command("list")
def runs_list(
    experiment: Annotated[list[str] | None, typer.Option("--experiment", "-e")] = None,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
    view: ViewOption = "active",
) -> None:
    """List the latest runs, newest first."""
    runs = _client().search_runs(experiments=experiment, max_results=max_results, view=view).items
    return _print_json(runs) if json_ else out.print(_runs_table(runs, "runs"))


@runs_app.command("search")
def runs_search(
    filter: Annotated[
        str, typer.Argument(help='e.g. "metrics.val_f1 > 0.8 and params.hyper.lr = 0.1"')
    ] = "",
    order_by: Annotated[list[str] | None, typer.Option("--order-by", "-o")] = None,
    experiment: Annotated[list[str] | None, typer.Option("--experiment", "-e")] = None,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
    view: ViewOption = "active",
) -> None:
    """Search runs with the filter language."""
    runs = _client().search_runs(filter or None, order_by, experiment, max_results, view=view).items
    return _print_json(runs) if json_ else out.print(_runs_table(runs, f"runs matching {filter!r}"))


@runs_app.command("show")
def runs_show(run_id: str, json_: JsonOption = False) -> None:
    """Show a run: status, lineage, params, metric summaries, tags, inputs."""
    run = _client().get_run(run_id)
    if json_:
        return _print_json(run)
    out.print(
        f"[bold]{escape(run.name)}[/bold] (#{run.number} in {escape(run.experiment_name)})  {run.status.value}"
    )
    out.print(
        f"id {run.id}  owner {escape(run.owner or '-')}  started {_fmt(run.start_time)}  ended {_fmt(run.end_time)}"
    )
    if run.deleted_at is not None:
        out.print(f"deleted {_fmt(run.deleted_at)} (plinth runs restore)")
    lineage = {k: v for k, v in dataclasses.asdict(run.lineage).items() if v is not None}
    if lineage:
        out.print("lineage: " + escape(", ".join(f"{k}={v}" for k, v in lineage.items())))
    params = Table(title="params")
    for column in ("group", "name", "value"):
        params.add_column(column)
    for group, values in sorted(run.params.items()):
        for name, value in sorted(values.items()):
            params.add_row(escape(group), escape(name), escape(json.dumps(value)))
    out.print(params)
    metrics = Table(title="metrics")
    for column in ("name", "last", "step", "min", "max", "best", "best step", "points"):
        metrics.add_column(column)
    for m in sorted(run.metrics.values(), key=lambda m: m.key):
        metrics.add_row(
            escape(m.key),
            _fmt(m.last),
            str(m.last_step),
            _fmt(m.min),
            _fmt(m.max),
            _fmt(m.best),
            _fmt(m.best_step),
            str(m.count),
        )
    out.print(metrics)
    if run.tags:
        out.print("tags: " + escape(_pairs(run.tags)))
    for i in run.inputs:
        out.print(
            escape(f"input {i.name}: {i.uri} digest={i.digest or '-'} version={i.version or '-'}")
            + f" rows={_fmt(i.rows)}"
        )


@runs_app.command("compare")
def runs_compare(
    run_ids: list[str],
    json_: JsonOption = False,
    all_params: Annotated[bool, typer.Option("--all")] = False,
) -> None:
    """Compare runs side by side: params that differ (--all for every one) and metric summaries."""
    cmp = _client().compare_runs(run_ids)
    if json_:
        return _print_json(cmp)
    table = Table(title="comparison")
    table.add_column("")
    for name in cmp.run_names:
        table.add_column(escape(name))
    for name in cmp.params if all_params else cmp.params_differing:
        table.add_row(escape(f"params.{name}"), *(escape(_fmt(v)) for v in cmp.params[name]))
    for name, summaries in cmp.metrics.items():
        table.add_row(escape(f"metrics.{name}"), *(_fmt(s.last) if s else "-" for s in summaries))
        table.add_row("  best", *(_fmt(s.best) if s else "-" for s in summaries))
    out.print(table)


@runs_app.command("delete")
def runs_delete(run_id: str, json_: JsonOption = False) -> None:
    """Delete a run (softly: hidden from lists, restore brings it back)."""
    client = _client()
    client.delete_run(run_id)
    _say(json_, client.get_run(run_id), f"deleted run {run_id}")


@runs_app.command("restore")
def runs_restore(run_id: str, json_: JsonOption = False) -> None:
    """Restore a deleted run."""
    client = _client()
    client.restore_run(run_id)
    _say(json_, client.get_run(run_id), f"restored run {run_id}")


@runs_app.command("close-stale")
def runs_close_stale(
    timeout: Annotated[float, typer.Option(help="seconds without a heartbeat")] = 300.0,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e")] = None,
    json_: JsonOption = False,
) -> None:
    """Mark RUNNING runs whose process died (no heartbeat) as KILLED."""
    closed = _client().close_stale_runs(timeout, experiment)
    return (
        _print_json(closed) if json_ else out.print(f"closed {len(closed)} stale run(s) as KILLED")
    )


@runs_app.command("recover")
def runs_recover(
    run_id: Annotated[str | None, typer.Argument(help="only this run's points")] = None,
    json_: JsonOption = False,
) -> None:
    """Write the metric points that killed processes left in this home's local spool
    (points the store already holds are skipped)."""
    replayed = _client().recover_runs(run_id)
    if json_:
        return _print_json(replayed)
    total = sum(replayed.values())
    out.print(f"replayed {total} spooled metric point(s) into {len(replayed)} run(s)")
    return None


# -- models ----------------------------------------------------------------------------


def _gate_text(gate: Any) -> str:
    stages = "/".join(s.value for s in gate.stages)
    if gate.kind == "metric":
        return f"{gate.expression} (before {stages})"
    return f"{gate.metric} not worse than production, {gate.direction} (before {stages})"


@models_app.command("list")
def models_list(
    name_like: Annotated[str | None, typer.Option("--like", help="SQL LIKE pattern")] = None,
    max_results: Annotated[int, typer.Option("--max")] = 100,
    json_: JsonOption = False,
) -> None:
    """List registered models."""
    found = _client().registry.list_registered_models(name_like, max_results).items
    if json_:
        return _print_json(found)
    rows = [
        (m.name, m.latest_version, m.production_version, _pairs(m.aliases), m.updated_at)
        for m in found
    ]
    columns = ("name", "latest", "production", "aliases", "updated")
    out.print(_table("registered models", columns, rows))


@models_app.command("show")
def models_show(
    name: str,
    version: Annotated[int | None, typer.Option("--version", help="one version's story")] = None,
    json_: JsonOption = False,
) -> None:
    """Show a model and its versions, or with --version everything about one version."""
    client = _client()
    if version is not None:
        mv = client.get_model_version(name, version)
        return _print_json(mv) if json_ else _print_version(mv)
    model = client.registry.get_registered_model(name)
    gates = client.registry.get_gates(name)
    # the name filter is a LIKE pattern ('_' matches any character): keep exact matches
    found = client.registry.search_model_versions(name=name, max_results=10_000)
    versions = [v for v in found if v.model_name == name]
    if json_:
        return _print_json({"model": model, "gates": gates, "versions": versions})
    _print_model(model, gates, versions)


def _print_model(model: Any, gates: list[Any], versions: list[Any]) -> None:
    out.print(f"[bold]{model.name}[/bold]  owner={escape(model.owner or '-')}", highlight=False)
    if model.description:
        out.print(escape(model.description))
    out.print(f"tags: {escape(_pairs(model.tags))}", highlight=False)
    out.print(f"aliases: {escape(_pairs(model.aliases))}", highlight=False)
    out.print(f"gates: {'; '.join(_gate_text(g) for g in gates) or '-'}", highlight=False)
    rows = [
        (v.version, v.stage, ", ".join(v.aliases) or "-", v.flavor, v.run_id, v.created_at)
        for v in versions
    ]
    columns = ("version", "stage", "aliases", "flavor", "run", "created")
    out.print(_table("versions", columns, rows))


def _print_version(mv: Any) -> None:
    lineage, manifest = mv.lineage, mv.manifest
    aliases = " ".join(f"@{a}" for a in mv.aliases) or "no aliases"
    out.print(f"[bold]{mv.uri}[/bold]  {mv.stage.value}  {aliases}", highlight=False)
    out.print(
        f"flavor {manifest.flavor} ({manifest.model_class or '-'})  owner {mv.owner or '-'}  "
        f"created {_fmt(mv.created_at)}  python {manifest.python_version}  "
        f"plinth {manifest.plinth_version}",
        highlight=False,
    )
    if manifest.pickled:  # who may load it: say so where people decide
        out.print("pickled: loads only with --trust-pickle or PLINTH_TRUST_PICKLE", highlight=False)
    if mv.description:
        out.print(escape(mv.description))
    run = f"{lineage.get('run_name')} in {lineage.get('experiment')}" if mv.run_id else "none"
    out.print(f"source run: {_fmt(mv.run_id)} ({escape(run)})", highlight=False)
    out.print(f"code: {escape(_pairs(lineage.get('code', {})))}", highlight=False)
    out.print(f"tags: {escape(_pairs(mv.tags))}", highlight=False)
    _print_signature(mv.signature)
    _print_lineage_tables(lineage)
    requirements = lineage.get("requirements") or manifest.requirements
    out.print(f"requirements: {', '.join(f'{k}=={v}' for k, v in sorted(requirements.items()))}")
    files = [(file, digest[:12]) for file, digest in sorted(manifest.files.items())]
    out.print(_table("package files", ("file", "sha256"), files))


def _print_signature(signature: Any) -> None:
    if signature is None:
        out.print("signature: none (register with an input example to reach PRODUCTION)")
        return
    rows = [("input", c.name, c.dtype) for c in signature.inputs]
    rows += [("output", c.name, c.dtype) for c in signature.outputs]
    out.print(_table("signature", ("", "column", "dtype"), rows))


def _print_lineage_tables(lineage: dict[str, Any]) -> None:
    datasets = [
        (d.get("name"), d.get("uri"), d.get("version"), d.get("digest"), d.get("rows"))
        for d in lineage.get("datasets", [])
    ]
    if datasets:
        columns = ("name", "uri", "version", "digest", "rows")
        out.print(_table("training datasets", columns, datasets))
    params = [
        (group, key, json.dumps(value))
        for group, values in sorted(lineage.get("params", {}).items())
        for key, value in sorted(values.items())
    ]
    if params:
        out.print(_table("params", ("group", "name", "value"), params))
    metrics = sorted(lineage.get("metrics", {}).items())
    if metrics:
        out.print(_table("metrics", ("name", "value"), metrics))


@models_app.command("history")
def models_history(name: str, json_: JsonOption = False) -> None:
    """The model's audit trail, oldest first."""
    rows = _client().model_history(name)
    if json_:
        return _print_json(rows)
    columns = ("when", "who", "action", "version", "change", "reason")
    out.print(_table(f"history of {name}", columns, [_history_row(h) for h in rows]))


def _history_row(h: Any) -> tuple[Any, ...]:
    change = f"{h.from_value or '-'} → {h.to_value or '-'}"
    if "alias" in h.details:
        change = f"@{h.details['alias']}: {change}"
    return (h.at, h.actor or "-", h.action, h.version, change, h.reason or "-")


@models_app.command("stage")
def models_stage(
    name: str,
    version: int,
    stage: Annotated[Stage, typer.Argument(case_sensitive=False)],
    reason: ReasonOption = "",
    allow_archived: Annotated[bool, typer.Option("--allow-archived")] = False,
    json_: JsonOption = False,
) -> None:
    """Move a version to a stage (gates run before STAGING and PRODUCTION)."""
    mv = _client().set_stage(name, version, stage, reason, allow_archived=allow_archived)
    _say(json_, mv, f"{mv.uri} is now {mv.stage.value}")


@models_app.command("alias")
def models_alias(
    name: str, alias: str, version: int, reason: ReasonOption = "", json_: JsonOption = False
) -> None:
    """Point an alias (champion, challenger, ...) at a version."""
    mv = _client().set_alias(name, alias, version, reason)
    _say(json_, mv, f"@{alias} -> {mv.uri} ({mv.stage.value})")


@models_app.command("unalias")
def models_unalias(name: str, alias: str, json_: JsonOption = False) -> None:
    """Remove an alias."""
    _client().registry.delete_alias(name=name, alias=alias)
    _say(json_, {"model": name, "alias": alias, "removed": True}, f"removed @{alias} from {name}")


@models_app.command("rollback")
def models_rollback(name: str, reason: ReasonOption = "", json_: JsonOption = False) -> None:
    """Restore the previous PRODUCTION version."""
    mv = _client().rollback(name, reason)
    _say(json_, mv, f"rolled back {name}: {mv.uri} is {mv.stage.value} again")


@models_app.command("delete")
def models_delete(
    name: str, version: int, reason: ReasonOption = "", json_: JsonOption = False
) -> None:
    """Delete a version and its package (refused while PRODUCTION or aliased)."""
    registry = _client().registry
    registry.delete_model_version(name=name, version=version, reason=reason)
    deleted = {"model": name, "version": version, "deleted": True}
    _say(json_, deleted, f"deleted models:/{name}/{version}")


@db_app.command("upgrade")
def db_upgrade(json_: JsonOption = False) -> None:
    """Apply the store's schema migrations."""
    from plinth.config import load_settings
    from plinth.store.engine import Store

    settings = load_settings()
    store = Store(settings.resolved_store_uri, migrate=False, **settings.store_timeouts)
    store.upgrade()
    shown = store.engine.url.render_as_string(hide_password=True)
    revision = store.current_revision()
    _say(json_, {"store": shown, "revision": revision}, f"store {shown} is at revision {revision}")


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth", help="require a token on every call (default: PLINTH_AUTH)"
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="serve a non-loopback address without authentication"),
    ] = False,
) -> None:
    """Run the Plinth server: the dashboard at /, the REST API under /api/v1 (documented
    at /docs). On an address other machines can reach it needs --auth, or --insecure in so
    many words."""
    from plinth.cli.auth import exposure_warning
    from plinth.config import load_settings

    given = {"host": host, "port": port, "auth": auth}
    settings = load_settings(**{k: v for k, v in given.items() if v is not None})
    # decided before anything starts: a refused server never binds its address
    warning = exposure_warning(settings.host, settings.auth, insecure)
    if warning is not None:
        err.print(f"[bold red]{escape(warning)}[/bold red]", highlight=False)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    where = f"dashboard: http://{shown}:{settings.port}/  API: /api/v1 (docs at /docs)"
    err.print(escape(where), highlight=False)
    from plinth.server.app import serve

    serve(settings)


def main() -> None:
    # Standalone mode: typer reports usage errors itself (exit 2, no traceback). Its
    # exceptions are not click's (typer vendors click), so catching those here would miss.
    try:
        app()
    except PlinthError as exc:
        # escaped: a message quoting user input such as "[/x]" is not markup; soft_wrap
        # keeps it on one line however narrow the terminal
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(1)


# At the end: plinth.features.cli uses the helpers above (it makes its sub-app before
# importing them, so either module may be imported first).
from plinth.cli.features import features_app  # noqa: E402

app.add_typer(features_app, name="features")

from plinth.serving.serve_cli import serve  # noqa: E402

app.command("serve")(serve)

from plinth.abtests.router_cli import router  # noqa: E402

app.command("router")(router)

from plinth.cli.score import score, score_jobs  # noqa: E402

app.command("score")(score)
app.command("score-jobs")(score_jobs)

from plinth.cli.auth import audit, grants_app, groups_app, login, logout, tokens_app, users_app  # noqa: E402, I001
from plinth.cli.auth import whoami  # noqa: E402

app.add_typer(users_app, name="users")
app.add_typer(groups_app, name="groups")
app.add_typer(tokens_app, name="tokens")
app.add_typer(grants_app, name="grants")
app.command("login")(login)
app.command("logout")(logout)
app.command("whoami")(whoami)
app.command("audit")(audit)

from plinth.cli.abtests import ab_app  # noqa: E402

app.add_typer(ab_app, name="ab")

from plinth.cli.monitors import monitors_app  # noqa: E402

app.add_typer(monitors_app, name="monitors")

from plinth.cli.scheduler import scheduler  # noqa: E402

app.command("scheduler")(scheduler)

from plinth.cli.pipelines import pipelines_app  # noqa: E402

app.add_typer(pipelines_app, name="pipelines")

from plinth.cli.demo import demo  # noqa: E402

app.command("demo")(demo)
