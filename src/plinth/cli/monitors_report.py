"""``plinth monitors report``: a monitor's evaluations, drift and performance as one
self-contained HTML file (``plinth.ui.monitor_report``); with ``--model``, a model's input
drift now (its recent serving window against its version's training data).

The command function is registered into the ``monitors`` app of ``plinth.cli.monitors``:
``monitors_app.command("report")(report)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from plinth.cli.common import JsonOption, _client, _print_json, out
from plinth.errors import InvalidArgument, Unavailable


def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the HTML file to write, e.g. churn-drift.html")
    ],
    name: Annotated[str | None, typer.Argument(help="the monitor's name")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="instead of a monitor: this model's input drift now"),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", help="with --model: the version (default: PRODUCTION, else newest)"
        ),
    ] = None,
    window_seconds: Annotated[
        int, typer.Option("--window-seconds", help="with --model: the serving window to compare")
    ] = 86_400,
    preset: Annotated[
        str, typer.Option("--preset", help="with --model: plinth or evidently")
    ] = "plinth",
    json_: JsonOption = False,
) -> None:
    """Write a monitor's report (spec, evaluations over time, drift per column with
    reference-vs-current histograms, or performance per window; alerts), or with --model a
    model's input drift report, as ONE self-contained HTML file: it opens offline."""
    from plinth.ui.monitor_report import (
        render_input_drift_report,
        render_monitor_report,
        write_text,
    )

    if (name is None) == (model is None):
        raise InvalidArgument("give a monitor's NAME or --model MODEL (one of them)")
    client = _client()
    data = _monitoring(client)
    if name is not None:
        text = render_monitor_report(client.monitors, data, name)
        subject = f"monitor {name}"
    else:
        assert model is not None
        text = render_input_drift_report(
            data, model, version=version, window_seconds=window_seconds, preset=preset
        )
        subject = f"the input drift of {model}"
    size = write_text(text, output)
    if json_:
        return _print_json({"report": subject, "path": str(output), "bytes": size})
    line = f"wrote the report of {subject} to {output} ({size:,} bytes)"
    out.print(escape(line), highlight=False, soft_wrap=True)


def _monitoring(client: Any) -> Any:
    """The client's ``MonitoringData`` (profiles, performance, input drift): its
    ``monitoring`` when it has one, else a local one over the client's store."""
    found = getattr(client, "monitoring", None)
    if found is not None:
        return found
    if client.remote:
        raise Unavailable("this client cannot read monitoring data from a server: upgrade it")
    from plinth.monitoring.data import MonitoringData

    return MonitoringData(client.tracking.store, client.registry, client.feature_store().service)
