"""``plinth scheduler``: the long-running pipeline scheduler (``plinth.pipelines.scheduler``)
on the central store. One holds the lease at a time; a second copy waits as a standby and
takes over within ``--lease`` seconds when the first dies. Ctrl-C or SIGTERM stops it and
gives the lease up; the workers it started run on and are adopted by the next scheduler."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plinth.cli.common import _client, out
from plinth.errors import Unavailable

if TYPE_CHECKING:
    from plinth.pipelines.scheduler import Scheduler


log = logging.getLogger("plinth.pipelines.scheduler")


def connect_when_up(
    stopping: threading.Event,
    retry_seconds: float = 5.0,
    connect: Callable[[], Any] = _client,
) -> Any:
    """The client, once the store answers: a scheduler started while the store is down
    waits for it (and then starts as a standby or the holder, as the lease says) rather
    than exiting; None when ``stopping`` is set first."""
    while True:
        try:
            return connect()
        except Unavailable as exc:
            log.warning("store unavailable, retrying in %g s: %s", retry_seconds, exc.message)
        if stopping.wait(retry_seconds):
            return None


def scheduler(
    tick: Annotated[float, typer.Option("--tick", min=0.01, help="seconds between ticks")] = 0.5,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="pipeline runs at once, in all")
    ] = 2,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=0.1,
            envvar="PLINTH_SCHEDULER_LEASE_SECONDS",
            help="a dead scheduler's standby takes over after this many seconds",
        ),
    ] = 30.0,
    stale: Annotated[
        float,
        typer.Option("--stale", min=1, help="a running run without a heartbeat this long is lost"),
    ] = 120.0,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            help="an environment variable the workers inherit besides the basics "
            "(PATH, HOME, the store's PLINTH_* settings); repeat for more",
        ),
    ] = None,
) -> None:
    """Run pipelines on their schedules and triggers, in worker subprocesses."""
    from plinth.pipelines.scheduler import LEASE, Scheduler
    from plinth.store import lease as leases

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def changed(holds: bool) -> None:
        if holds:
            out.print(
                f"scheduler {loop.holder}: holds the lease {LEASE}; scheduling", highlight=False
            )
        elif not loop.stopping:  # on the way out, "stopped; lease released" says it
            out.print(f"scheduler {loop.holder}: lost the lease {LEASE}; standby", highlight=False)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if made is not None:
            made.stop(timeout=0)

    made: Scheduler | None = None
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = connect_when_up(stopping, retry_seconds=min(lease, 5.0))
    if client is None:
        out.print("scheduler: stopped before the store answered", highlight=False)
        return
    loop = made = Scheduler(
        client,
        tick_seconds=tick,
        max_workers=workers,
        lease_seconds=lease,
        stale_seconds=stale,
        on_change=changed,
        pass_env=pass_env or (),
    )
    if stopping.is_set():
        loop.stop(timeout=0)
    if not loop.run_pass():
        held = leases.current(loop.store, LEASE)
        by = held.holder if held is not None else "nobody (the store is away)"
        out.print(
            f"scheduler {loop.holder}: standby; the lease {LEASE} is held by {by}",
            highlight=False,
        )
    loop.run()
    how = "lease released" if loop.released else f"the lease expires within {lease:g} s"
    out.print(f"scheduler {loop.holder}: stopped; {how}", highlight=False)
