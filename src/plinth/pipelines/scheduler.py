"""The pipeline scheduler: enqueues the runs schedules and events call for, starts queued
runs in worker subprocesses, and cleans up after them.

One tick (``Scheduler.tick``):

1. enqueue due runs (``triggers.enqueue_due``);
2. reap this scheduler's finished workers: one that exited while its run was still
   running fails the run ("worker exited with code N during step X");
3. kill the runs past their pipeline's ``timeout_seconds`` ("timed out after N s") and
   the running runs cancelled meanwhile;
4. reclaim orphans: running runs whose worker was on this host and is gone, or is on
   another host and has not sent a heartbeat for ``stale_seconds``, fail ("worker
   lost") — this is how a standby that took over adopts the runs of the scheduler that
   died: it cannot ``wait()`` on them, so it looks at their pids and heartbeats (a live
   worker on this host is left alone whatever its heartbeat: after the store was away
   for a while, all heartbeats are old);
5. retry the failed runs with attempts left: a new queued run (trigger ``retry``,
   ``attempt + 1``, ``retry_of`` the first attempt) that waits
   ``retry_backoff_seconds * 2 ** (attempt - 1)``; created once, in a transaction that
   first locks the failed run and looks for it;
6. start queued runs whose ``not_before`` has come, within each pipeline's
   ``concurrency`` (its running runs) and ``max_workers`` (all running runs) in all.

Failed runs are looked at for a retry for a day after they failed (``RETRY_WITHIN_MS``):
the retry is made on the next tick; history does not slow the ticks down.

A worker is ``python -m plinth.pipelines.worker RUN`` in its own session (process group,
killed as a whole when it ends, times out, is cancelled or is found dead: what its steps
started goes with it), with only the basics and the store's settings of the scheduler's
environment (``WORKER_ENV``, and ``pass_env``); a run the scheduler fails has its
tracking run ended too. Its output goes to ``log_dir``, where files not written to for a
week are removed. A worker claims its run, so a run is never executed twice.
``plinth scheduler`` ticks under the lease
``pipeline-scheduler``: one scheduler at a time, a second one waits as a standby. Workers
do not depend on the scheduler: when it dies or the store is away for a while, they
carry on, and the scheduler that ticks next finds them by their rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import aliased

from plinth.client import Client
from plinth.errors import InvalidArgument, PlinthError
from plinth.pipelines import records, triggers
from plinth.store.lease import LeasedLoop
from plinth.store.schema import pipeline_runs, pipeline_steps, pipelines
from plinth.store.sql import now_ms
from plinth.tracking.types import RunStatus

log = logging.getLogger("plinth.pipelines.scheduler")

LEASE = "pipeline-scheduler"
WORKER_MODULE = "plinth.pipelines.worker"
WARM_AGAIN_SECONDS = 5.0
#: a worker's log file is removed this long after its last write
LOG_KEEP_SECONDS = 7 * 24 * 3600
PRUNE_EVERY_SECONDS = 24 * 3600
#: a failed run is retried within this long of its failure (the next tick, normally)
RETRY_WITHIN_MS = 24 * 3600 * 1000
#: the system's basics a worker inherits (besides Plinth's settings, ``AWS_*`` and ``pass_env``)
WORKER_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
)


@dataclass(frozen=True)
class Action:
    """What a tick did to a run: ``enqueued``, ``started``, ``failed``, ``killed``,
    ``retried`` (``pipeline_run`` is the new attempt)."""

    action: str
    pipeline_run: int
    detail: str = ""


class Scheduler(LeasedLoop):
    """Ticks every ``tick_seconds`` while holding the lease (``run``/``start``), or one
    ``tick(now)`` at a time (tests, benchmarks: no lease). ``warm``: keep one idle worker
    started ahead, so that a run starts without waiting for Python's imports (call
    ``close`` when done ticking by hand). Each worker's output goes to
    ``log_dir/worker-PID.log``."""

    def __init__(
        self,
        client: Client,
        *,
        tick_seconds: float = 0.5,
        max_workers: int = 2,
        lease_seconds: float = 30.0,
        stale_seconds: float = 120.0,
        grace_seconds: float | None = None,
        log_dir: Path | None = None,
        warm: bool = True,
        on_change: Callable[[bool], None] | None = None,
        pass_env: Iterable[str] = (),
    ) -> None:
        if client.remote:
            raise InvalidArgument(
                "the pipeline scheduler works on the central store itself: connect to a "
                "store URI (PLINTH_STORE_URI), not to a server"
            )
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise InvalidArgument(f"max_workers: 1 or more, got {max_workers!r}")
        super().__init__(
            client.tracking.store,
            LEASE,
            seconds=tick_seconds,
            lease_seconds=lease_seconds,
            logger=log,
            on_change=on_change,
        )
        self.client = client
        self.max_workers = max_workers
        self.stale_ms = int(stale_seconds * 1000)
        # "skip" still runs an occurrence a tick late; a little more for a slow pass
        self.grace_ms = int((grace_seconds or max(2 * tick_seconds, 10.0)) * 1000)
        self.host = socket.gethostname()
        self.log_dir = log_dir or client.settings.home.resolve() / "logs" / "pipeline-workers"
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.warm = warm
        self.pass_env = tuple(pass_env)
        self._warm: subprocess.Popen[bytes] | None = None
        self._spawned = 0
        self._warmed_at = -WARM_AGAIN_SECONDS
        self._pruned_at: float | None = None

    def work(self) -> None:
        for done in self.tick():
            log.info("pipeline run %d: %s %s", done.pipeline_run, done.action, done.detail)
        # ready before the next run is due; after a tick that reached the store (a warm
        # worker that cannot reach it ends), and not more often than every few seconds
        idle = self._warm is None or self._warm.poll() is not None
        if self.warm and idle and time.monotonic() - self._warmed_at > WARM_AGAIN_SECONDS:
            self._warmed_at = time.monotonic()
            self._warm = self._spawn("--wait")

    def tick(self, now: int | None = None) -> list[Action]:
        at = now_ms() if now is None else now
        done = [
            Action("enqueued", e.pipeline_run, f"{e.pipeline} ({e.trigger_key})")
            for e in triggers.enqueue_due(self.store, at, self.grace_ms)
        ]
        done += self._reap()
        done += self._kill_overdue(at)
        done += self._reclaim(at)
        done += self._retry(at)
        done += self._dispatch(at)
        return done

    # -- workers ---------------------------------------------------------------------------

    def _reap(self) -> list[Action]:
        done = []
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            del self.children[run_id]
            kill_group(child.pid)  # what its steps started ends with it
            row = self._row(run_id)
            if row is None or row.status not in ("queued", "running"):
                continue  # finished, or cancelled
            if row.status == "running" and row.worker != f"{self.host}:{child.pid}":
                continue  # another worker claimed it first: this one had nothing to do
            how = f"signal {-code}" if code < 0 else f"code {code}"
            error = f"worker exited with {how} {self._where(run_id)}"
            if self._fail(row, error, ended="FAILED"):
                done.append(Action("failed", run_id, error))
        return done

    def _kill_overdue(self, at: int) -> list[Action]:
        r, p = pipeline_runs.c, pipelines.c
        with self.store.read() as conn:
            overdue = conn.execute(
                select(pipeline_runs, p.timeout_seconds)
                .join(pipelines, p.name == r.pipeline)
                .where(
                    r.status == "running",
                    p.timeout_seconds.is_not(None),
                    r.started_at < at - p.timeout_seconds * 1000,
                )
            ).all()
            cancelled = conn.execute(
                select(pipeline_runs).where(
                    r.status == "cancelled",
                    r.worker.is_not(None),
                    r.finished_at.is_(None) | (r.finished_at > at - self.stale_ms),
                )
            ).all()
        done = []
        for row in overdue:
            error = f"timed out after {row.timeout_seconds:g} s"
            if self._fail(row, error, ended="KILLED"):
                done.append(Action("killed" if self._kill(row) else "failed", row.id, error))
        for row in cancelled:
            if self._kill(row):
                self._end_tracking(row, "KILLED")
                done.append(Action("killed", row.id, "cancelled"))
        return done

    def _reclaim(self, at: int) -> list[Action]:
        r = pipeline_runs.c
        with self.store.read() as conn:
            running = conn.execute(select(pipeline_runs).where(r.status == "running")).all()
        done = []
        for row in running:
            if row.id in self.children:
                continue  # ours and alive: reaped when it exits
            if self._on_this_host(row.worker):
                if self._alive(row):
                    # alive: its heartbeat may be stale only because the store was away;
                    # the pipeline's timeout limits it
                    continue
                pid = self._pid(row.worker)
                if pid is not None and orphaned_group(pid):
                    kill_group(pid)  # the processes its steps started, left behind
                error = f"worker lost ({row.worker}: gone)"
            elif (row.heartbeat_at or row.started_at or row.queued_at) < at - self.stale_ms:
                error = f"worker lost ({row.worker}: no heartbeat)"
            else:
                continue
            if self._fail(row, error, ended="FAILED"):
                done.append(Action("failed", row.id, error))
        return done

    def _retry(self, at: int) -> list[Action]:
        r = pipeline_runs.c
        later = aliased(pipeline_runs)
        root = func.coalesce(r.retry_of, r.id)
        with self.store.read() as conn:
            due = conn.execute(
                select(r.id)
                .outerjoin(
                    later,
                    and_(
                        later.c.retry_of == root,
                        later.c.attempt == r.attempt + 1,
                    ),
                )
                .where(
                    r.status == "failed",
                    # a failure is retried on the next tick; older ones were handled (or
                    # failed while no scheduler ran for a day: not retried that late)
                    r.finished_at >= at - RETRY_WITHIN_MS,
                    r.attempt < r.max_attempts,
                    later.c.id.is_(None),
                )
            ).scalars()
            failed = list(due)
        done = []
        for run_id in failed:
            made = self._retry_one(run_id, at)
            if made is not None:
                done.append(Action("retried", made[0], f"attempt {made[1]} of run {run_id}"))
        return done

    def _retry_one(self, run_id: int, at: int) -> tuple[int, int] | None:
        r, p = pipeline_runs.c, pipelines.c
        with self.store.write() as conn:
            # locks the failed run (PostgreSQL; SQLite writes one at a time): a second
            # scheduler waits here, then sees the retry made
            row = conn.execute(
                select(pipeline_runs, p.retry_backoff_seconds)
                .join(pipelines, p.name == r.pipeline)
                .where(r.id == run_id)
                .with_for_update(of=pipeline_runs)
            ).first()
            if row is None or row.status != "failed" or row.attempt >= row.max_attempts:
                return None
            root = row.retry_of or row.id
            attempt = row.attempt + 1
            exists = conn.execute(
                select(r.id).where(r.retry_of == root, r.attempt == attempt)
            ).first()
            if exists is not None:
                return None
            backoff = row.retry_backoff_seconds * 2 ** (row.attempt - 1)
            made = records.insert_run(
                conn,
                pipeline=row.pipeline,
                trigger="retry",
                created_by=row.created_by,
                params=json.loads(row.params or "{}"),
                schedule_id=row.schedule_id,
                trigger_key=f"retry:{root}:{attempt}",
                scheduled_for=row.scheduled_for,
                alert_id=row.alert_id,
                attempt=attempt,
                max_attempts=row.max_attempts,
                retry_of=root,
                # a retry of ``rerun --from`` resumes as its first attempt did
                resumed_from=row.resumed_from,
                from_step=row.from_step,
                # from the failure (which may come after this tick began)
                not_before=max(at, row.finished_at or at) + int(backoff * 1000),
                now=at,
            )
        return None if made is None else (made, attempt)

    def _dispatch(self, at: int) -> list[Action]:
        r, p = pipeline_runs.c, pipelines.c
        with self.store.read() as conn:
            running = conn.execute(
                select(r.id, r.pipeline).where(
                    (r.status == "running") | r.id.in_(list(self.children))
                )
            ).all()
            queued = conn.execute(
                select(r.id, r.pipeline, p.concurrency)
                .join(pipelines, p.name == r.pipeline)
                .where(r.status == "queued", r.not_before <= at)
                .order_by(r.not_before, r.id)
            ).all()
        # running, and started by us but perhaps not claimed yet
        busy = {row.id: row.pipeline for row in running}
        per_pipeline: dict[str, int] = {}
        for name in busy.values():
            per_pipeline[name] = per_pipeline.get(name, 0) + 1
        done = []
        for row in queued:
            if len(busy) >= self.max_workers:
                break
            if row.id in self.children or per_pipeline.get(row.pipeline, 0) >= row.concurrency:
                continue
            pid = self._start(row.id)
            busy[row.id] = row.pipeline
            per_pipeline[row.pipeline] = per_pipeline.get(row.pipeline, 0) + 1
            done.append(Action("started", row.id, f"{row.pipeline} in worker pid {pid}"))
        return done

    def _start(self, run_id: int) -> int:
        """Hand the run to the warm worker (started earlier, its imports done and the
        store open: it waits for a run id on its stdin), else to a new worker; then warm
        up the next one."""
        child = self._warm
        self._warm = None
        if child is not None and child.poll() is None and child.stdin is not None:
            try:
                child.stdin.write(f"{run_id}\n".encode())
                child.stdin.close()
            except OSError:  # it died meanwhile
                child = None
        else:
            child = None
        if child is None:
            child = self._spawn(str(run_id))
        self.children[run_id] = child
        if self.warm:
            self._warm = self._spawn("--wait")
        return child.pid

    def _spawn(self, argument: str) -> subprocess.Popen[bytes]:
        settings = self.client.settings
        env = worker_environment(os.environ, self.pass_env)
        env.update(
            PLINTH_HOME=str(settings.home.resolve()),
            PLINTH_STORE_URI=self.store.uri,
            PLINTH_ARTIFACT_URI=settings.resolved_artifact_uri,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawned += 1
        starting = self.log_dir / f"starting-{os.getpid()}-{self._spawned}.log"
        output: IO[bytes]
        with open(starting, "ab") as output:
            child = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, argument],
                env=env,
                stdin=subprocess.PIPE if argument == "--wait" else subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        # named by its pid, as its runs' ``worker`` (host:pid) says
        starting.replace(self.log_dir / f"worker-{child.pid}.log")
        return child

    def prune_logs(self, now: float | None = None) -> list[Path]:
        """Remove the workers' log files not written to for ``LOG_KEEP_SECONDS`` (the
        scheduler does when it starts, then once a day); the removed files."""
        limit = (time.time() if now is None else now) - LOG_KEEP_SECONDS
        removed = []
        try:
            found = list(self.log_dir.glob("worker-*.log")) + list(
                self.log_dir.glob("starting-*.log")
            )
        except OSError:
            return []
        for path in found:
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed.append(path)
            except OSError:  # gone meanwhile, or not ours to remove
                continue
        if removed:
            log.info("pipeline scheduler: removed %d old worker log(s)", len(removed))
        return removed

    def close(self) -> None:
        """End the idle warm worker (the running ones run on)."""
        warm, self._warm = self._warm, None
        if warm is not None:
            if warm.stdin is not None:
                warm.stdin.close()  # it reads no run id and ends
            try:
                warm.wait(10)
            except subprocess.TimeoutExpired:
                warm.kill()
                warm.wait()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.close()

    def run_pass(self) -> bool:
        if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            self.prune_logs()
        holds = super().run_pass()
        if not holds:  # a standby: its former workers are the holder's to judge; it
            # still waits for them, so that none lingers as a zombie
            for run_id, child in list(self.children.items()):
                if child.poll() is not None:
                    del self.children[run_id]
                    kill_group(child.pid)
        return holds

    def lost(self) -> None:
        # a standby now holds the lease: it adopts our workers by their rows; we keep
        # reaping them so that they do not linger as zombies
        if self.stopping:  # given up on the way out, not lost
            return
        log.warning(
            "pipeline scheduler: lost the lease; %d worker(s) left running", len(self.children)
        )

    # -- helpers ---------------------------------------------------------------------------

    def _row(self, run_id: int) -> Any:
        with self.store.read() as conn:
            return conn.execute(select(pipeline_runs).where(pipeline_runs.c.id == run_id)).first()

    def _fail(self, row: Any, error: str, *, ended: str) -> bool:
        """Fail a run still running under the same worker (or still queued: its worker
        died before claiming it); its tracking run, if it has one, ends as ``ended``."""
        if row.status == "queued":
            r = pipeline_runs.c
            with self.store.write() as conn:
                failed = (
                    conn.execute(
                        update(pipeline_runs)
                        .where(r.id == row.id, r.status == "queued")
                        .values(status="failed", error=error, finished_at=now_ms())
                    ).rowcount
                    == 1
                )
        else:
            failed = records.finish(self.store, row.id, "failed", error, worker=row.worker)
        if failed:
            self._end_tracking(row, ended)
        return failed

    def _end_tracking(self, row: Any, status: str) -> None:
        """End the tracking run of a pipeline run the scheduler ended (its worker cannot)."""
        run_id = row.run_id
        if run_id is None:  # perhaps started since the row was read
            found = self._row(row.id)
            run_id = None if found is None else found.run_id
        if run_id is None:
            return
        try:
            self.client.tracking.end_run(run_id, RunStatus(status))
        except PlinthError as exc:  # ended meanwhile (as another status), or deleted
            log.warning("pipeline run %d: tracking run %s: %s", row.id, run_id, exc)

    def _where(self, run_id: int) -> str:
        s = pipeline_steps.c
        with self.store.read() as conn:
            step = conn.execute(
                select(s.name)
                .where(s.pipeline_run == run_id, s.status == "running")
                .order_by(s.position)
            ).first()
        return "before its first step" if step is None else f"during step {step.name}"

    def _on_this_host(self, worker: str | None) -> bool:
        return worker is not None and worker.rpartition(":")[0] == self.host

    def _pid(self, worker: str | None) -> int | None:
        if not self._on_this_host(worker):
            return None
        assert worker is not None
        try:
            return int(worker.rpartition(":")[2])
        except ValueError:
            return None

    def _alive(self, row: Any) -> bool:
        """Whether the worker of ``row`` is a live process on this host, started before
        it claimed the run: a worker, or a process running the run itself (``plinth
        pipelines run``); a pid since reused by a newer process does not count."""
        child = self.children.get(row.id)
        if child is not None:
            return child.poll() is None
        pid = self._pid(row.worker)
        if pid is None:
            return False
        started = process_started_ms(pid)
        if started is None:
            return False
        claimed = row.started_at or row.queued_at
        # /proc counts in clock ticks from a boot time in whole seconds
        return started == UNKNOWN or started <= claimed + 2_000

    def _kill(self, row: Any) -> bool:
        """Kill the process group of ``row``'s worker if it is alive on this host. Only a
        worker: a process running the run itself (``plinth pipelines run``, a notebook)
        is the user's; it stops by itself when its heartbeat finds the run ended."""
        if not self._alive(row):
            return False
        child = self.children.get(row.id)
        pid = child.pid if child is not None else self._pid(row.worker)
        if pid is None or (child is None and not is_worker(pid)):
            return False
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def kill_group(pid: int) -> None:
    """Kill process group ``pid`` (a worker's: it leads a session of its own), if any is
    left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def orphaned_group(pid: int) -> bool:
    """Whether processes are left of the session and process group ``pid`` whose leader
    is gone: what a dead worker's steps started (a worker leads both; a process group id
    is not given to a new process while its group lives). False where ``/proc`` cannot
    tell, and while a process ``pid`` lives (a pid reused by another)."""
    if process_started_ms(pid) is not None:
        return False
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return False
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[2] == str(pid) and fields[3] == str(pid):
            return True
    return False


def worker_environment(environ: Mapping[str, str], passed: Iterable[str] = ()) -> dict[str, str]:
    """What a worker inherits of the scheduler's environment: the system's basics
    (``WORKER_ENV``), Plinth's settings (``PLINTH_*``) but the client's server and token
    (a worker runs against the store itself), the object store's ``AWS_*`` credentials
    and proxy and certificate settings (the artifacts live there), and the names
    ``passed``; not the rest."""
    names = set(WORKER_ENV) | set(passed) | _NETWORK_ENV
    return {
        name: value
        for name, value in environ.items()
        if name in names
        or (name.startswith("PLINTH_") and name not in _CLIENT_ENV)
        or name.startswith("AWS_")
    }


#: a client's settings: the server it calls and its token (not a worker's)
_CLIENT_ENV = frozenset({"PLINTH_URI", "PLINTH_TOKEN"})
_NETWORK_ENV = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
    | {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
)


def is_worker(pid: int) -> bool:
    """Whether process ``pid`` is a pipeline worker (where ``/proc`` tells; else assumed)."""
    try:
        return WORKER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self/cmdline").exists()
    except OSError:
        return True


#: a live process whose start time cannot be read (no ``/proc``)
UNKNOWN = -1


def process_started_ms(pid: int) -> int | None:
    """When process ``pid`` started (ms since the epoch); None when there is no such
    process; ``UNKNOWN`` when it lives but its start cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # /proc is there: the process is not
    except (OSError, StopIteration, ValueError):
        pass
    else:
        fields = stat.rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):  # a zombie: exited, not yet waited for
            return None
        ticks = int(fields[19])  # field 22: starttime
        return boot * 1000 + ticks * 1000 // os.sysconf("SC_CLK_TCK")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return UNKNOWN
