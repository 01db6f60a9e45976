"""A pipeline run in a process of its own: ``python -m plinth.pipelines.worker RUN``, as
the scheduler starts it (the store's settings in its environment); ``--wait`` gets ready
first, then reads the run's id from stdin (the scheduler's warm worker).

It acts as the pipeline's owner (a stored user's role and groups as they are now; the
embedded default's local user when the owner is theirs), so a run can do no more than
its owner may. It loads the registered entrypoint and executes the run
(``runner.execute``: claims it, heartbeats, records every step; what the steps print
and log goes to their logs only, not to the worker's own output). An entrypoint that
cannot be imported, or an owner who may no longer act, fails the run with the reason.

A watchdog thread enforces each step's ``timeout_seconds``: a step over it fails the run
("step X timed out after N s") and the process ends at once with its process group (a
step that never returns cannot be interrupted otherwise; the processes it started go
with it); the scheduler's own timeout covers the whole run.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from sqlalchemy import select

from plinth.auth.access import access_for
from plinth.auth.context import SYSTEM, acting_as
from plinth.auth.types import Principal, Role
from plinth.client import Client, connect
from plinth.errors import PlinthError
from plinth.pipelines import records
from plinth.store.engine import Store
from plinth.store.schema import group_members, pipeline_runs, pipeline_steps, pipelines, users
from plinth.store.sql import now_ms

log = logging.getLogger("plinth.pipelines.worker")

#: the exit code of a worker that ended a step over its timeout
TIMED_OUT = 3
WATCH_SECONDS = 0.5


def owner_principal(store: Store, name: str) -> Principal | None:
    """A stored user's principal (None: disabled); else the platform's own, or the
    store's default principal (the local user of an embedded store) when ``name`` is
    theirs; else None (a user since deleted)."""
    with store.read() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first()
        if row is not None:
            if row.disabled:
                return None
            groups = conn.execute(
                select(group_members.c.group_name).where(group_members.c.user_name == name)
            ).scalars()
            return Principal(row.name, Role(row.role), tuple(sorted(groups)), row.kind, "owner")
    if name == SYSTEM.name:
        return SYSTEM
    default = access_for(store).default
    return default if default.name == name else None


def act_as_owner(store: Store, owner: Principal) -> None:
    """Make ``owner`` the store's default principal in this process: ``acting_as`` holds
    only in the thread that entered it (a context variable), and a thread a step starts
    would otherwise act as the default (the embedded store's local user, an admin)."""
    access = access_for(store)
    access.default = owner
    access.forget_decisions()


def run(client: Client, pipeline_run: int) -> int:
    """Execute ``pipeline_run`` (queued) in this process; the exit code."""
    from plinth.pipelines import entrypoints, runner

    store = client.tracking.store
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with store.read() as conn:
        row = conn.execute(
            select(pipeline_runs.c.status, pipelines.c.entrypoint, pipelines.c.owner)
            .join(pipelines, pipelines.c.name == pipeline_runs.c.pipeline)
            .where(pipeline_runs.c.id == pipeline_run)
        ).first()
    if row is None or row.status != "queued":  # another worker has it, or it was cancelled
        log.warning("pipeline run %d: not queued (%s); nothing to do", pipeline_run, row)
        return 0
    owner = owner_principal(store, row.owner)
    if owner is None:
        return _refuse(store, pipeline_run, worker, f"owner {row.owner} is disabled or gone")
    act_as_owner(store, owner)
    with acting_as(owner):
        try:
            pipeline = entrypoints.load_pipeline(row.entrypoint)
        except PlinthError as exc:
            return _refuse(store, pipeline_run, worker, exc.message)
        except Exception as exc:  # the user's code failed on import: its error is the run's
            error = f"pipeline entrypoint {row.entrypoint!r}: {type(exc).__name__}: {exc}"
            return _refuse(store, pipeline_run, worker, error)
        limits = {
            s.name: s.timeout_seconds for s in pipeline.steps if s.timeout_seconds is not None
        }
        if limits:
            Watchdog(store, pipeline_run, worker, limits).start()
        # the steps' output is in their logs (capped): not copied to the worker's log file
        done = runner.execute(client, pipeline, pipeline_run, worker=worker, echo=False)
    log.info("pipeline run %d: %s", pipeline_run, done.status)
    return 0


def _refuse(store: Store, pipeline_run: int, worker: str, error: str) -> int:
    log.error("pipeline run %d: %s", pipeline_run, error)
    if records.claim(store, pipeline_run, worker):
        records.finish(store, pipeline_run, "failed", error, worker=worker)
    return 1


def end_group(code: int) -> None:
    """End this process at once, and with it the processes its steps started: a worker
    leads a process group of its own (the scheduler starts it in a new session), so the
    whole group is killed (this process included: it then exits on SIGKILL); a process
    that leads no group (``plinth pipelines run`` in a shell's) only exits."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(code)


class Watchdog(threading.Thread):
    """Looks at the run's running step every ``WATCH_SECONDS``; one over its limit fails
    the run and ends the process."""

    def __init__(
        self,
        store: Store,
        pipeline_run: int,
        worker: str,
        limits: dict[str, float],
        exit: Any = None,
    ) -> None:
        super().__init__(name="pipeline-watchdog", daemon=True)
        self.store = store
        self.pipeline_run = pipeline_run
        self.worker = worker
        self.limits = limits
        self.exit = exit or end_group
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(WATCH_SECONDS):
            try:
                over = self.check(now_ms())
            except Exception:  # the store is away: look again next time
                log.warning("pipeline run %d: watchdog", self.pipeline_run, exc_info=True)
                continue
            if over is not None:
                self.exit(TIMED_OUT)
                return

    def check(self, now: int) -> str | None:
        """The error when the running step is over its limit (the run failed); else None."""
        s = pipeline_steps.c
        with self.store.read() as conn:
            steps = conn.execute(
                select(s.name, s.started_at).where(
                    s.pipeline_run == self.pipeline_run, s.status == "running"
                )
            ).all()
        for step in steps:
            limit = self.limits.get(step.name)
            if limit is None or step.started_at is None or now - step.started_at <= limit * 1000:
                continue
            error = f"step {step.name} timed out after {limit:g} s"
            log.error("pipeline run %d: %s", self.pipeline_run, error)
            records.finish(self.store, self.pipeline_run, "failed", error, worker=self.worker)
            return error
        return None


def main(argv: list[str] | None = None) -> int:
    """``RUN_ID``: run it; ``--wait``: get ready (imports, the store), then run the id
    read from stdin (none: end)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (args[0].isdigit() or args[0] == "--wait"):
        print("usage: python -m plinth.pipelines.worker RUN_ID | --wait", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = connect()
    if args[0] != "--wait":
        return run(client, int(args[0]))
    from plinth.pipelines import entrypoints, runner  # noqa: F401 (imported ahead: needed next)

    given = sys.stdin.readline().strip()
    return run(client, int(given)) if given.isdigit() else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # non-daemon threads a step left behind must not keep a finished run's process alive
    os._exit(code)
