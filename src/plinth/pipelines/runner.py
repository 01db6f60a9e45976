"""Running a pipeline in this process, every step recorded.

A pipeline run is a row of ``pipeline_runs`` and a tracking run (experiment: the
pipeline's ``experiment`` or name; tags ``plinth.pipeline``, ``plinth.pipeline_run``; the
run params in param group ``pipeline``; each step's duration as metric
``step.<name>.seconds``). The metrics a step logged are stored as it ends, before the next
step starts. Each step's status, times, inputs' digests, output (see ``outputs``), log
(``pipeline/<step>/log.txt``) and traceback are recorded in ``pipeline_steps``. A step's
failure is recorded, never raised: later steps are skipped and the run fails. A thread
heartbeats the run; once the run is no longer this worker's (cancelled, or taken back by
the scheduler) the runner stops before the next step and records nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.pipelines import logs, outputs, records
from plinth.pipelines.context import StepContext
from plinth.pipelines.types import PipelineRun, StepRun
from plinth.store.sql import now_ms

if TYPE_CHECKING:
    from plinth.auth.access import Access
    from plinth.client import Client
    from plinth.pipelines.pipeline import Pipeline
    from plinth.pipelines.step import Step
    from plinth.store.engine import Store
    from plinth.tracking.run import ActiveRun

#: how often a running pipeline run says it is alive (the scheduler reclaims runs whose
#: heartbeat is much older than this)
HEARTBEAT_SECONDS = 5.0


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_pipeline(
    client: Client,
    pipeline: Pipeline,
    params: dict[str, Any] | None = None,
    *,
    trigger: str = "manual",
    resume_from: int | None = None,
    from_step: str | None = None,
) -> PipelineRun:
    """Record a run of ``pipeline`` and run it in this process. ``resume_from``: a run of
    the same pipeline whose outputs of the steps before ``from_step`` are reused (its
    params too, unless ``params`` are given)."""
    store = _store_of(client)
    if from_step is not None:
        pipeline.step(from_step)  # InvalidArgument naming the steps
        if resume_from is None:
            raise InvalidArgument(
                f"from_step {from_step!r} needs resume_from: the run whose earlier steps' "
                "outputs to reuse"
            )
    if resume_from is not None:
        previous = records.get_run(store, resume_from, steps=False)
        if previous.pipeline != pipeline.name:
            raise InvalidArgument(
                f"pipeline run {resume_from} is a run of {previous.pipeline!r}, not of "
                f"{pipeline.name!r}; resume a run of the same pipeline"
            )
        params = previous.params if params is None else params
        trigger = "rerun" if trigger == "manual" else trigger
    access = _may_run(store, pipeline.name)
    with store.write() as conn:
        created = records.insert_run(
            conn,
            pipeline=pipeline.name,
            trigger=trigger,
            created_by=access.actor(),
            params=params,
            resumed_from=resume_from,
            from_step=from_step,
        )
    assert created is not None  # no schedule, no trigger key: nothing to conflict with
    return execute(client, pipeline, created)


def _may_run(store: Store, name: str) -> Access:
    """A registered pipeline is run by those who may write it (as the service queues its
    runs): PermissionDenied, or NotFound when the caller may not even see it. A name
    nobody registered is anyone's to run in process (its runs share nothing with
    another creator's: see ``_Execution``)."""
    from plinth.auth.access import access_for
    from plinth.auth.types import Action, Kind
    from plinth.store.schema import pipelines

    access = access_for(store)
    with store.read() as conn:
        found = conn.execute(select(pipelines.c.name).where(pipelines.c.name == name)).first()
    if found is not None:
        access.require(Action.WRITE, Kind.PIPELINE, name, repr(name))
    return access


def execute(
    client: Client,
    pipeline: Pipeline,
    pipeline_run: int,
    *,
    worker: str | None = None,
    echo: bool = True,
) -> PipelineRun:
    """Run an inserted run: claim it if queued (a run already running must be
    ``worker``'s), run its steps, finish it. Returns it as recorded, steps included. A
    step's failure is in the result, not raised; Conflict when the run is not this
    worker's to run. ``echo=False``: what the steps print and log goes to their logs only,
    not to this process's console too (a worker whose console is a file)."""
    store = _store_of(client)
    worker = worker or default_worker()
    row = records.get_run(store, pipeline_run, steps=False)
    if row.pipeline != pipeline.name:
        raise InvalidArgument(
            f"pipeline run {pipeline_run} is a run of {row.pipeline!r}, not of {pipeline.name!r}"
        )
    if row.status == "queued":
        if not records.claim(store, pipeline_run, worker):
            raise Conflict(f"pipeline run {pipeline_run} was taken by another worker first")
    elif row.status != "running" or row.worker != worker:
        held = f" by {row.worker}" if row.status == "running" else ""
        raise Conflict(
            f"pipeline run {pipeline_run} is {row.status}{held}; only a queued run (or one "
            "this worker claimed) can be executed"
        )
    _Execution(client, store, pipeline, row, worker, echo).run()
    return records.get_run(store, pipeline_run)


def load_output(client: Client, pipeline_run: int, step: str, *, trust_pickle: bool = False) -> Any:
    """A step's stored output, decoded (a reference resolved again through ``client``).
    A pickled output is only read with ``trust_pickle`` (reading it runs its code)."""
    run = records.get_run(_store_of(client), pipeline_run)
    found = _step_of(run, step)
    if found.output is None:
        raise InvalidArgument(
            f"step {step!r} of pipeline run {pipeline_run} is {found.status} and has no output"
        )
    return outputs.load_value(client, found.output, trust_pickle=trust_pickle)


def _step_of(run: PipelineRun, name: str) -> StepRun:
    for found in run.steps:
        if found.name == name:
            return found
    raise NotFound(
        f"pipeline run {run.id} has no step {name!r}; its steps are "
        f"{', '.join(s.name for s in run.steps) or 'none'}"
    )


def _store_of(client: Client) -> Store:
    if client.remote:
        raise InvalidArgument(
            "pipelines run next to the store: connect with plinth.connect(store_uri=...) "
            "(or queue the run for the scheduler) instead of through a server"
        )
    store: Store = client.tracking.store
    return store


class _Stop(Exception):
    """The run cannot go on: recorded as the run's error, not raised to the caller."""


class _Heartbeat:
    """Beats every ``HEARTBEAT_SECONDS`` from a thread; ``beat()`` also on demand."""

    def __init__(self, store: Store, pipeline_run: int, worker: str) -> None:
        self._store, self._run, self._worker = store, pipeline_run, worker
        self._stopping = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"plinth-pipeline-heartbeat-{pipeline_run}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS + 5)

    def beat(self) -> bool:
        if self.lost.is_set():
            return False
        try:
            alive = records.heartbeat(self._store, self._run, self._worker)
        except Exception as exc:  # a store blip: go on; a long outage is the scheduler's call
            print(f"plinth: pipeline run {self._run} heartbeat failed: {exc}", file=sys.stderr)
            return True
        if not alive:
            self.lost.set()
        return alive

    def _loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            if not self.beat():
                return


class _Execution:
    def __init__(
        self,
        client: Client,
        store: Store,
        pipeline: Pipeline,
        row: PipelineRun,
        worker: str,
        echo: bool = True,
    ) -> None:
        self.client, self.store, self.pipeline, self.row = client, store, pipeline, row
        self.worker, self.echo = worker, echo
        self.params = {**pipeline.params, **row.params}
        self.described: dict[str, dict[str, Any]] = {}  # step -> its output's description
        self.values: dict[str, Any] = {}  # step -> its output, once loaded
        self.heart = _Heartbeat(store, row.id, worker)
        self.tracking: ActiveRun | None = None
        self.resumed_steps: dict[str, StepRun] = {}  # the resumed run's steps

    def run(self) -> None:
        self.heart.start()
        try:
            self._run()
        except _Stop as stop:
            self._end("failed", str(stop))
        except BaseException as exc:
            error = f"the runner failed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                self._end("failed", error)
            raise
        finally:
            self.heart.stop()

    def _run(self) -> None:
        pipeline, row = self.pipeline, self.row
        records.add_steps(self.store, row.id, pipeline.step_names)
        source, start = self._plan()
        self.tracking = self.client.start_run(
            pipeline.experiment or pipeline.name,
            f"{pipeline.name}-{row.id}",
            description=pipeline.description,
            tags={"plinth.pipeline": pipeline.name, "plinth.pipeline_run": str(row.id)},
        )
        records.set_tracking_run(self.store, row.id, self.tracking.id, self.worker)
        if self.params:
            self.tracking.log_params(self.params, group="pipeline")
        for position, current in enumerate(pipeline.steps):
            if not self.heart.beat():
                self._abandon()
                return
            if source is not None and position < start:
                self._reuse(current, source)
                continue
            error = self._run_step(current)
            if self.heart.lost.is_set():
                self._abandon()
                return
            if error is not None:
                last = error.strip().splitlines()[-1] if error.strip() else "failed"
                self._end("failed", f"step {current.name} failed: {last}")
                return
        self._end("succeeded", None)

    def _end(self, status: str, error: str | None) -> None:
        finished = records.finish(self.store, self.row.id, status, error, worker=self.worker)
        if self.tracking is not None:
            # a run cancelled (or taken back) at the last moment was not this one's to end
            ended = "FINISHED" if status == "succeeded" else "FAILED"
            self.tracking.end(ended if finished else "KILLED")

    def _abandon(self) -> None:
        # no longer ours (cancelled, or handed to another worker): record nothing more
        if self.tracking is not None:
            self.tracking.end("KILLED")

    # -- resuming ------------------------------------------------------------------------

    def _plan(self) -> tuple[int | None, int]:
        """The run whose outputs are reused, and the first step to run."""
        row, names = self.row, self.pipeline.step_names
        source, from_step = row.resumed_from, row.from_step
        if row.retry_of is not None:
            # a retry goes on where the attempt before it stopped (which may itself have
            # reused a resumed run's outputs); one that did nothing: as the row says
            attempt = records.previous_attempt(self.store, row.id, row.retry_of)
            previous = records.get_run(self.store, attempt) if attempt is not None else None
            done = (
                {s.name for s in previous.steps if s.status in records.DONE_STEPS}
                if previous
                else set()
            )
            if done:
                source = attempt
                from_step = next((name for name in names if name not in done), None)
        if source is None or from_step is None:
            return None, 0
        if from_step not in names:
            raise _Stop(
                f"cannot resume from step {from_step!r}: pipeline {self.pipeline.name!r} has "
                f"steps {', '.join(names)}"
            )
        start = names.index(from_step)
        previous = records.get_run(self.store, source)
        if previous.pipeline != self.pipeline.name:
            raise _Stop(f"pipeline run {source} is not a run of {self.pipeline.name!r}")
        earlier = {s.name: s for s in previous.steps}
        for name in names[:start]:
            found = earlier.get(name)
            if found is None or found.status not in records.DONE_STEPS or not found.output:
                status = found.status if found else "not in it"
                raise _Stop(
                    f"cannot resume pipeline run {source} from step {from_step!r}: its step "
                    f"{name!r} is {status}, with no output to reuse; resume from an "
                    "earlier step"
                )
            if found.output.get("kind") == "pickle" and previous.created_by != row.created_by:
                # reading a pickle runs the code of whoever wrote it, as this run's creator
                raise _Stop(
                    f"cannot resume pipeline run {source} from step {from_step!r}: its step "
                    f"{name!r} output is a pickle written by a run of "
                    f"{previous.created_by!r}, and this run is {row.created_by!r}'s; only "
                    "your own runs' pickled outputs are reused: resume from step "
                    f"{name!r} or earlier"
                )
            self.described[name] = found.output
        self.resumed_steps = earlier
        return source, start

    def _reuse(self, current: Step, source: int) -> None:
        found = self.resumed_steps[current.name]
        self._write(
            current.name,
            status="reused",
            reused_from=source,
            code_version=found.code_version,
            cache_key=found.cache_key,
            inputs=found.inputs,
            output=found.output,
            log_path=self._note(current.name, f"not run: output reused from pipeline run {source}"),
        )

    def _note(self, step: str, text: str) -> str:
        """A step that did not run still has a log, saying why."""
        assert self.tracking is not None
        path = f"{outputs.output_folder(step)}/log.txt"
        self.client.upload_artifact_bytes(self.tracking.id, f"{text}\n".encode(), path)
        return path

    # -- one step ------------------------------------------------------------------------

    def _run_step(self, current: Step) -> str | None:
        """Run one step (or take its output from the cache); its traceback if it failed."""
        try:
            kwargs, inputs = self._inputs(current)
        except Exception:  # an earlier output that cannot be read back (its file gone)
            unreadable = traceback.format_exc()
            self._write(current.name, status="failed", error=unreadable, finished_at=now_ms())
            return unreadable
        cache_key = None
        if current.cache:
            # a step taking the context may read any run param through context.params
            seen = self.params if "context" in kwargs else None
            cache_key = _cache_key(current, inputs, seen)
        started = now_ms()
        self._write(
            current.name,
            status="running",
            started_at=started,
            code_version=current.code_version,
            cache_key=cache_key,
            inputs=inputs,
        )
        if cache_key is not None and self._from_cache(current.name, cache_key):
            return None
        assert self.tracking is not None
        logger = logging.getLogger(f"plinth.pipeline.{self.pipeline.name}.{current.name}")
        if "context" in kwargs:
            kwargs["context"] = self._context(current, logger)
        error: str | None = None
        interrupted: BaseException | None = None  # raised again once the step is recorded
        began = time.monotonic()
        with logs.capture(logger, echo=self.echo) as log:
            try:
                value = current.fn(**kwargs)
            except (Exception, SystemExit):
                error = traceback.format_exc()
            except BaseException as exc:
                error, interrupted = traceback.format_exc(), exc
        seconds = time.monotonic() - began
        output = None
        if error is None:
            try:
                output = outputs.store_output(self.client, self.tracking.id, current.name, value)
            except Exception as exc:
                error = traceback.format_exc()
                log.write(f"could not store the output of step {current.name}: {exc}\n")
        metric = f"step.{current.name}.seconds"
        self.tracking.define_metric(metric, "min")
        self.tracking.log_metric(metric, seconds)
        try:
            # what the step logged is stored before any later step reads the run (a
            # version's lineage snapshots its run's metrics; a gate reads that snapshot)
            self.tracking.flush()
        except Exception as exc:
            error = error or traceback.format_exc()
            log.write(f"could not store the metrics of step {current.name}: {exc}\n")
        if error is not None:
            log.write(error)
        log_path = f"{outputs.output_folder(current.name)}/log.txt"
        self.client.upload_artifact_bytes(self.tracking.id, log.text().encode(), log_path)
        done = dict(finished_at=now_ms(), log_path=log_path)
        if error is not None or output is None:
            self._write(current.name, status="failed", error=error, **done)
            if interrupted is not None:
                raise interrupted
            return error or "failed"
        self.described[current.name] = output
        self.values[current.name] = value
        self._write(current.name, status="succeeded", output=output, **done)
        return None

    def _inputs(self, current: Step) -> tuple[dict[str, Any], dict[str, Any]]:
        """The step's arguments, and what they were: each one's source and digest."""
        kwargs: dict[str, Any] = {}
        inputs: dict[str, Any] = {}
        for name, wired in self.pipeline.inputs[current.name].items():
            if wired.source == "context":
                kwargs[name] = None  # made once the cache missed
            elif wired.source == "step":
                kwargs[name] = self._value(name)
                inputs[name] = {"source": "step", "sha256": self.described[name]["sha256"]}
            else:
                given = name in self.params
                kwargs[name] = self.params[name] if given else current.defaults[name]
                inputs[name] = {
                    "source": "param" if given else "default",
                    "sha256": _digest(kwargs[name]),
                }
        return kwargs, inputs

    def _value(self, step: str) -> Any:
        if step not in self.values:
            # an output reused from another run of this pipeline by the same creator (a
            # cache hit, a resumed run): their own code wrote it
            self.values[step] = outputs.load_value(
                self.client, self.described[step], trust_pickle=True
            )
        return self.values[step]

    def _from_cache(self, step: str, cache_key: str) -> bool:
        hit = records.find_cached(
            self.store, self.pipeline.name, cache_key, self.row.id, self.row.created_by
        )
        if hit is None:
            return False
        source, output = hit
        try:
            value = outputs.load_value(self.client, output, trust_pickle=True)
        except Exception as exc:  # its artifact is gone: run the step again
            print(f"plinth: cached output of {step} unreadable ({exc}); rerunning", file=sys.stderr)
            return False
        self.described[step], self.values[step] = output, value
        note = f"not run: output cached from pipeline run {source} (cache key {cache_key})"
        self._write(
            step,
            status="cached",
            reused_from=source,
            output=output,
            finished_at=now_ms(),
            log_path=self._note(step, note),
        )
        return True

    def _context(self, current: Step, logger: logging.Logger) -> StepContext:
        row = self.row
        assert self.tracking is not None
        return StepContext(
            client=self.client,
            run=self.tracking,
            pipeline=self.pipeline.name,
            pipeline_run=row.id,
            root_run=row.retry_of or row.id,
            step=current.name,
            params=dict(self.params),
            attempt=row.attempt,
            trigger={
                "kind": row.trigger,
                "schedule_id": row.schedule_id,
                "trigger_key": row.trigger_key,
                "scheduled_for": _ms(row.scheduled_for),
                "alert_id": row.alert_id,
            },
            log=logger,
        )

    def _write(self, step: str, **values: Any) -> None:
        if not records.write_step(self.store, self.row.id, step, self.worker, **values):
            self.heart.lost.set()


def _cache_key(current: Step, inputs: dict[str, Any], params: dict[str, Any] | None) -> str:
    digests = {name: found["sha256"] for name, found in inputs.items()}
    if params is not None:
        digests[" context.params"] = _digest(params)  # (no parameter has this name)
    key = json.dumps([current.name, current.code_version, digests], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _digest(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except TypeError:  # keys sort_keys cannot order (1 and "b"): ordered by their repr
        text = _digest_text(value)
    except ValueError:  # a circular structure
        text = repr(value)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_text(value: Any) -> str:
    def plain(found: Any, depth: int) -> Any:
        if depth > 50:
            return repr(found)
        if isinstance(found, dict):
            items = sorted(((repr(k), plain(v, depth + 1)) for k, v in found.items()), key=_first)
            return {"dict": [list(item) for item in items]}
        if isinstance(found, list | tuple):
            return [plain(v, depth + 1) for v in found]
        return found

    try:
        return json.dumps(plain(value, 0), sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _ms(at: Any) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)
