"""The ``plinth`` command: rich tables for people, ``--json`` for scripts."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plinth.errors import PlinthError

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
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
F = TypeVar("F", bound=Callable[..., Any])


def _client() -> Any:
    from plinth.client import default_client

    return default_client()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, sort_keys=True) + "\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _runs_table(runs: list[Any], title: str) -> Table:
    metric_names = sorted({k for r in runs for k in r.metrics})[:6]
    table = Table(title=title)
    for column in ("#", "name", "id", "status", "started", *metric_names):
        table.add_column(column, overflow="fold")
    for r in runs:
        table.add_row(
            str(r.number),
            r.name,
            r.id,
            r.status.value,
            _fmt(r.start_time),
            *(_fmt(r.metrics[m].last) if m in r.metrics else "-" for m in metric_names),
        )
    return table


@experiments_app.command("list")
def experiments_list(
    json_: JsonOption = False, name_like: Annotated[str | None, typer.Option("--like")] = None
) -> None:
    """List experiments."""
    found = _client().list_experiments(name_like).items
    if json_:
        return _print_json(found)
    table = Table(title="experiments")
    for column in ("name", "id", "owner", "created", "description"):
        table.add_column(column, overflow="fold")
    for e in found:
        table.add_row(e.name, e.id, e.owner, _fmt(e.created_at), e.description)
    out.print(table)


@experiments_app.command("show")
def experiments_show(experiment: str, json_: JsonOption = False) -> None:
    """Show one experiment (by name or id) and its latest runs."""
    client = _client()
    found = client.get_experiment(experiment)
    runs = client.search_runs(experiments=[found.id], max_results=20).items
    if json_:
        return _print_json({"experiment": found, "runs": runs})
    out.print(f"[bold]{found.name}[/bold]  id={found.id}  owner={found.owner or '-'}")
    if found.description:
        out.print(found.description)
    if found.tags:
        out.print("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(found.tags.items())))
    out.print(_runs_table(runs, "latest runs"))


@runs_app.command("list")
def runs_list(
    experiment: Annotated[list[str] | None, typer.Option("--experiment", "-e")] = None,
    max_results: Annotated[int, typer.Option("--max")] = 50,
    json_: JsonOption = False,
) -> None:
    """List the latest runs, newest first."""
    runs = _client().search_runs(experiments=experiment, max_results=max_results).items
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
) -> None:
    """Search runs with the filter language."""
    runs = _client().search_runs(filter or None, order_by, experiment, max_results).items
    return _print_json(runs) if json_ else out.print(_runs_table(runs, f"runs matching {filter!r}"))


@runs_app.command("show")
def runs_show(run_id: str, json_: JsonOption = False) -> None:
    """Show a run: status, lineage, params, metric summaries, tags, inputs."""
    run = _client().get_run(run_id)
    if json_:
        return _print_json(run)
    out.print(
        f"[bold]{run.name}[/bold] (#{run.number} in {run.experiment_name})  {run.status.value}"
    )
    out.print(
        f"id {run.id}  owner {run.owner or '-'}  started {_fmt(run.start_time)}  ended {_fmt(run.end_time)}"
    )
    lineage = {k: v for k, v in dataclasses.asdict(run.lineage).items() if v is not None}
    if lineage:
        out.print("lineage: " + ", ".join(f"{k}={v}" for k, v in lineage.items()))
    params = Table(title="params")
    for column in ("group", "name", "value"):
        params.add_column(column)
    for group, values in sorted(run.params.items()):
        for name, value in sorted(values.items()):
            params.add_row(group, name, json.dumps(value))
    out.print(params)
    metrics = Table(title="metrics")
    for column in ("name", "last", "step", "min", "max", "best", "best step", "points"):
        metrics.add_column(column)
    for m in sorted(run.metrics.values(), key=lambda m: m.key):
        metrics.add_row(
            m.key,
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
        out.print("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items())))
    for i in run.inputs:
        out.print(
            f"input {i.name}: {i.uri} digest={i.digest or '-'} version={i.version or '-'} rows={_fmt(i.rows)}"
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
        table.add_column(name)
    for name in cmp.params if all_params else cmp.params_differing:
        table.add_row(f"params.{name}", *(_fmt(v) for v in cmp.params[name]))
    for name, summaries in cmp.metrics.items():
        table.add_row(f"metrics.{name}", *(_fmt(s.last) if s else "-" for s in summaries))
        table.add_row("  best", *(_fmt(s.best) if s else "-" for s in summaries))
    out.print(table)


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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the store's schema migrations."""
    from plinth.config import load_settings
    from plinth.store.engine import Store

    settings = load_settings()
    store = Store(settings.resolved_store_uri, migrate=False)
    store.upgrade()
    out.print(
        f"store {store.engine.url.render_as_string(hide_password=True)} is at revision {store.current_revision()}"
    )


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Run the Plinth server (REST API under /api/v1)."""
    from plinth.config import load_settings
    from plinth.server.app import serve

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve(load_settings(**overrides))


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
