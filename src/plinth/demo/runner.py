"""``plinth demo``: the whole story of the architecture ("How data flows") on generated
churn data, in a fresh embedded store of its own, step after step with a progress display;
then where to look. The demo never writes into an existing store: its home is a new
folder, or one an earlier demo made (which it says it replaces)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from plinth.demo import loop, retrain, story
from plinth.demo.story import Demo
from plinth.errors import Conflict, InvalidArgument

DEFAULT_HOME = Path(".plinth-demo")
MARKER = ".plinth-demo"  # a file in every home the demo made: only those it replaces

STEPS: list[tuple[str, Callable[[Demo], str]]] = [
    ("feature pipeline with validation", story.feature_pipeline),
    ("training with tracking", story.training),
    ("registry with gates", story.registry),
    ("serving with enrichment", story.serving),
    ("A/B test with simulated traffic", loop.ab_test),
    ("drift injected into later traffic", loop.drift),
    ("monitor", loop.monitor),
    ("retraining triggered by the alert", loop.retraining),
    ("champion/challenger decision", loop.decision),
    ("batch scoring", loop.batch_scoring),
]
# what the demo's store URIs come from; a client's server settings would take it elsewhere
_SETTINGS = ("PLINTH_URI", "PLINTH_TOKEN", "PLINTH_CONFIG")


def prepare_home(home: Path, console: Console) -> Path:
    """A fresh folder for the demo's store: new, empty, or an earlier demo's (replaced)."""
    home = home.expanduser()
    try:
        if home.exists() and not home.is_dir():
            raise InvalidArgument(f"--home {home} is a file: give a folder for the demo's store")
        if home.is_dir() and any(home.iterdir()):
            if not (home / MARKER).is_file():
                raise InvalidArgument(
                    f"--home {home} is not empty and no earlier demo made it: the demo makes "
                    "a store of its own and never writes into one you use; give a new folder"
                )
            console.print(f"replacing the earlier demo's store in {escape(str(home))}")
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)
        (home / MARKER).write_text("made by `plinth demo`; it may replace this folder\n")
    except OSError as exc:
        raise InvalidArgument(
            f"--home {home}: cannot make the demo's store there ({exc.strerror or exc}); "
            "give a folder you can write to"
        ) from None
    return home.resolve()


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Conflict when ``host:port`` cannot be listened on (``--serve``'s dashboard), told
    before the demo spends its minute rather than after."""
    import socket

    with socket.socket() as probe:
        # as uvicorn binds: a port left in TIME_WAIT by an ended server is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise Conflict(
                f"--port {port}: {host}:{port} is not free for the dashboard "
                f"({exc.strerror or exc}); stop what listens there or give another --port"
            ) from None


@contextlib.contextmanager
def demo_environment(home: Path) -> Iterator[None]:
    """The demo's store for everything this process and its workers open: the scheduler's
    workers and the services read their settings from the environment."""
    given = {
        "PLINTH_HOME": str(home),
        "PLINTH_STORE_URI": f"sqlite:///{home / 'plinth.db'}",
        "PLINTH_ARTIFACT_URI": str(home / "artifacts"),
        "PLINTH_ONLINE_URI": f"sqlite:///{home / 'online.db'}",
    }
    saved = {k: os.environ.get(k) for k in (*given, *_SETTINGS)}
    quiet = logging.getLogger("plinth")
    level = quiet.level
    os.environ.update(given)
    for name in _SETTINGS:
        os.environ.pop(name, None)
    quiet.setLevel(logging.ERROR)  # each step prints its own line; an alert is one of them
    try:
        yield
    finally:
        quiet.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(home: Path, seed: int, customers: int, console: Console) -> Demo:
    """Every step in order on a fresh store under ``home`` (inside ``demo_environment``)."""
    from plinth.client import connect, set_default_client
    from plinth.demo.world import make_world

    client = connect(
        store_uri=f"sqlite:///{home / 'plinth.db'}",
        artifact_uri=str(home / "artifacts"),
        online_uri=f"sqlite:///{home / 'online.db'}",
        home=str(home),
    )
    set_default_client(client)
    demo = Demo(client, make_world(seed, customers), home, seed)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("starting", total=len(STEPS))
            for number, (title, step) in enumerate(STEPS, start=1):
                progress.update(task, description=f"{number}. {title}")
                started = time.monotonic()
                before = len(demo.setbacks)
                try:
                    line = step(demo)
                except Exception:
                    progress.console.print(f"[red]✗ {number:>2}. {escape(title)} failed[/red]")
                    raise
                took = time.monotonic() - started
                # a refused or blocked outcome is not a success: marked, never a green tick
                cut = len(demo.setbacks) > before
                mark = "[yellow]![/yellow]" if cut else "[green]✓[/green]"
                where = f"step {number} ({title})"
                demo.setbacks[before:] = [f"{where}: {why}" for why in demo.setbacks[before:]]
                progress.console.print(
                    f"{mark} {number:>2}. {escape(line)} [dim]({took:.1f} s)[/dim]",
                    highlight=False,
                )
                demo.steps.append(
                    {"step": title, "line": line, "seconds": round(took, 2), "ok": not cut}
                )
                progress.advance(task)
    finally:
        demo.stop_services()
        set_default_client(None)
        client.close()
    return demo


def pages(demo: Demo) -> list[tuple[str, str]]:
    """The dashboard pages of what the demo made: (what it shows, path)."""
    made = demo.made
    found = [
        ("feature group, commits, statistics", f"/ui/features/groups/{story.GROUP}"),
        ("training set (point in time)", f"/ui/features/datasets/{made['training_dataset']}"),
        ("runs and per-epoch metrics", f"/ui/experiments/{story.EXPERIMENT}"),
        ("v1's run, lineage, training set", f"/ui/runs/{made['best_run']}/lineage"),
        ("versions, stages, gates, history", f"/ui/models/{story.MODEL}"),
        ("prediction log", f"/ui/serving/predictions?model={story.MODEL}"),
        ("A/B test results", f"/ui/abtests/{loop.AB}"),
        ("monitor and alert", f"/ui/monitors/{loop.MONITOR}"),
        ("performance on late labels", f"/ui/monitors/{loop.PERFORMANCE}"),
        ("retraining decisions", "/ui/model-decisions"),
        ("score jobs and checks", "/ui/serving"),
    ]
    if made.get("pipeline_run") is not None:
        found.insert(-2, ("retraining run", f"/ui/pipeline-runs/{made['pipeline_run']}"))
    return found


def commands(demo: Demo) -> list[str]:
    """The CLI commands that show the same, on the demo's store."""
    found = [
        f"plinth features commits {story.GROUP}",
        f"plinth runs show {demo.made['best_run']}",
        f"plinth models history {story.MODEL}",
        f"plinth ab results {loop.AB}",
        "plinth monitors alerts",
        f"plinth pipelines runs {retrain.NAME}",
        f"plinth score-jobs --model {story.MODEL}",
    ]
    return [f"PLINTH_HOME={demo.home} {c}" for c in found]


def where_to_look(demo: Demo, dashboard: str) -> list[str]:
    lines = [f"  {what:<36} {dashboard}{path}" for what, path in pages(demo)]
    return ["dashboard:", *lines, "commands:", *(f"  {c}" for c in commands(demo))]
