"""``plinth demo``: the whole loop on generated churn data, in a store of its own
(``plinth.demo``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from plinth.cli.common import JsonOption, _print_json, err, out


def demo(
    home: Annotated[
        Path | None,
        typer.Option(
            help="folder for the demo's own store: new or empty, or an earlier demo's "
            "(replaced); default ./.plinth-demo. Never your PLINTH_HOME's store."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the generated data and models")] = 7,
    customers: Annotated[
        int, typer.Option(help="customers in the generated world (500 to 50,000)")
    ] = 2_000,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            "--keep-serving",
            help="then run the dashboard on the demo's store until Ctrl-C",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="the dashboard's port with --serve")] = 5151,
    json_: JsonOption = False,
) -> None:
    """Run the whole story on generated churn data: features, training, registry,
    serving, an A/B test, drift, an alert, retraining, champion/challenger and batch
    scoring, each step through Plinth's own APIs and services on loopback; then show
    where to look."""
    from plinth.demo.runner import (
        DEFAULT_HOME,
        check_port_free,
        demo_environment,
        prepare_home,
        run_demo,
    )

    if not 500 <= customers <= 50_000:
        raise typer.BadParameter(f"--customers: 500 to 50,000, got {customers}")
    if serve:
        check_port_free(port)
    started = time.monotonic()
    shown = err if json_ else out  # with --json, stdout holds only the JSON
    folder = prepare_home(home or DEFAULT_HOME, shown)
    shown.print(f"plinth demo: a fresh store in {escape(str(folder))} (seed {seed})")
    with demo_environment(folder):
        from plinth.demo.runner import commands, pages, where_to_look

        made = run_demo(folder, seed, customers, shown)
        seconds = time.monotonic() - started
        dashboard = f"http://127.0.0.1:{port}"
        if json_:
            _print_json(
                {
                    "home": str(folder),
                    "seconds": round(seconds, 1),
                    "ended_early": made.setbacks,
                    "steps": made.steps,
                    "made": made.made,
                    "dashboard": {what: dashboard + path for what, path in pages(made)},
                    "commands": commands(made),
                }
            )
        if made.setbacks:
            shown.print(
                f"[yellow]the story ended early[/yellow] at {escape(made.setbacks[0])}"
                + "".join(f"; then at {escape(later)}" for later in made.setbacks[1:]),
                highlight=False,
                soft_wrap=True,
            )
        if not json_:
            out.print(f"done in {seconds:.1f} s. Where to look:", highlight=False)
            for line in where_to_look(made, dashboard):
                out.print(escape(line), highlight=False, soft_wrap=True)
        if not serve:
            shown.print(
                escape(f"start the dashboard: PLINTH_HOME={folder} plinth server --port {port}")
                + "  (or plinth demo --serve)",
                highlight=False,
                soft_wrap=True,
            )
            return
        from plinth.config import load_settings
        from plinth.server.app import serve as run_server

        err.print(f"dashboard: {dashboard}/ (Ctrl-C to stop)", highlight=False)
        run_server(load_settings(home=folder, port=port))
