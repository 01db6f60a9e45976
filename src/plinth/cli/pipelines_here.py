"""Running a pipeline in the CLI's own process (``plinth pipelines run`` / ``rerun``
without ``--queue``): each step's progress printed as it goes, exit 1 naming the step
that failed."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from plinth.cli.common import _print_json, err, out

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.pipelines.pipeline import Pipeline
    from plinth.pipelines.types import PipelineRun

EXIT_FAILED = 1  # the run failed (or was cancelled)

_MARKS = {
    "succeeded": "[green]✓[/green]",
    "cached": "[green]✓[/green]",
    "reused": "[green]✓[/green]",
    "failed": "[red]✗[/red]",
    "skipped": "[dim]-[/dim]",
    "running": "[yellow]▶[/yellow]",
}


def run_here(client: Client, pipeline: Pipeline, json_: bool, **how: Any) -> None:
    from plinth.pipelines.runner import default_worker, run_pipeline

    # a remote client cannot run it here: the runner says so
    quiet = json_ or client.remote
    progress = None if quiet else _Progress(client, pipeline.name, default_worker())
    if progress is not None:
        progress.start()
    try:
        # with --json, stdout is the JSON alone: what the steps print goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if json_ else contextlib.nullcontext():
            done = run_pipeline(client, pipeline, **how)
    finally:
        if progress is not None:
            progress.stop()
    if progress is not None:
        progress.show(done)
    if json_:
        _print_json(done)
    else:
        color = "green" if done.status == "succeeded" else "red"
        out.print(
            f"pipeline run {done.id} of {escape(done.pipeline)}: [{color}]{done.status}[/{color}]"
            f" in {seconds_of(done) or 0:.1f}s",
            highlight=False,
        )
    if done.status != "succeeded":
        failed = next((s.name for s in done.steps if s.status == "failed"), None)
        last = (done.error or done.status).strip().splitlines()[-1]
        if failed and f"step {failed}" not in last:
            last = f"step {failed} failed: {last}"
        err.print(
            f"[red]error:[/red] pipeline run {done.id} {done.status}: {escape(last)} "
            f"(plinth pipelines logs {done.id})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED)


class _Progress:
    """Prints each step's progress while the run goes on in this process: the run is found
    by this process's worker name (the runner's), then its steps are polled."""

    def __init__(self, client: Client, pipeline: str, worker: str) -> None:
        from sqlalchemy import func, select

        from plinth.store.schema import pipeline_runs

        self.store = client.tracking.store
        self.pipeline = pipeline
        self.worker = worker
        with self.store.read() as conn:
            self.after = int(conn.execute(select(func.max(pipeline_runs.c.id))).scalar() or 0)
        self.shown: dict[str, str] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="plinth-progress", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                found = self._find()
            except Exception:  # a progress line is not worth stopping the run
                continue
            if found is not None:
                self.show(found)

    def _find(self) -> PipelineRun | None:
        from sqlalchemy import select

        from plinth.pipelines import rows
        from plinth.store.schema import pipeline_runs

        r = pipeline_runs.c
        query = (
            select(r.id)
            .where(r.id > self.after, r.pipeline == self.pipeline, r.worker == self.worker)
            .order_by(r.id.desc())
            .limit(1)
        )
        with self.store.read() as conn:
            found = conn.execute(query).scalar()
            return None if found is None else rows.load_run(conn, int(found))

    def show(self, run: PipelineRun) -> None:
        """Print what changed since last shown (each step once per status)."""
        for step in run.steps:
            if step.status == "pending" or self.shown.get(step.name) == step.status:
                continue
            self.shown[step.name] = step.status
            took = f" {step.duration_seconds:.1f}s" if step.duration_seconds is not None else ""
            mark = _MARKS.get(step.status, " ")
            out.print(
                f"  {mark} {escape(step.name)} [dim]{step.status}{took}[/dim]", highlight=False
            )


def seconds_of(run: PipelineRun) -> float | None:
    if run.started_at is None or run.finished_at is None:
        return None
    return (run.finished_at - run.started_at).total_seconds()
