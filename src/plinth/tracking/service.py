"""Tracking's service layer: runs, params, metrics, tags, inputs, search (experiments in
``experiments.py``).

Every public method is one operation of the API (see ``plinth.api``); the server mounts
them as routes and the remote client calls them with the same signatures.
"""

from __future__ import annotations

import contextlib
import json
import operator
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from types import SimpleNamespace
from typing import IO, Any

from sqlalchemy import ColumnElement, Connection, delete, or_, select, update

from plinth.api import endpoint
from plinth.auth.access import Access, by_run, guarded
from plinth.auth.types import Action, Kind, Level, Role
from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, WriteConflict
from plinth.store.artifacts import ArtifactStore, safe_relpath
from plinth.store.engine import Store
from plinth.store.schema import (
    environments,
    experiments,
    metric_summaries,
    model_versions,
    params,
    run_inputs,
    run_tags,
    runs,
)
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    opt_datetime,
    to_datetime,
    upsert,
)
from plinth.tracking import metrics as metric_store
from plinth.tracking import statements as sql
from plinth.tracking.checks import param_row
from plinth.tracking.experiments import ExperimentService, in_view
from plinth.tracking.search import Statistics, ordered_metrics, parse_filter
from plinth.tracking.search import order_by as order_by_
from plinth.tracking.series import read_series
from plinth.tracking.types import (
    ArtifactEntry,
    DatasetInput,
    Environment,
    Lineage,
    MetricBatch,
    MetricPoint,
    MetricSeries,
    Page,
    Run,
    RunComparison,
    RunStatus,
    check_tags,
    validate_key,
)

_validate_name = validate_key


def _may_create_run(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the experiment (the editor role, when the run creates it)"""
    if not access.require_experiment(Action.WRITE, arguments["experiment"]):
        access.require_role(Role.EDITOR, f"create experiment {arguments['experiment']!r}")


def _may_close_stale(access: Access, arguments: dict[str, Any]) -> None:
    """owner of the experiment (an admin, for every experiment at once)"""
    experiment = arguments["experiment"]
    if experiment is None:
        access.require_role(Role.ADMIN, "close the stale runs of every experiment")
        return
    key = access.experiment_key(experiment)
    if key is not None:
        access.require(Action.MANAGE, Kind.EXPERIMENT, key, repr(experiment))


def _may_delete_run(access: Access, arguments: dict[str, Any]) -> None:
    """the run's owner with write on its experiment, or manage on the experiment"""
    run_id = str(arguments["run_id"])
    principal = access.principal()
    found = access.run_level(principal, run_id)
    if found is not None and found[2] >= Level.EDITOR:
        with access.store.read() as conn:
            owner = conn.execute(select(runs.c.owner).where(runs.c.id == run_id)).scalar()
        if owner == principal.name:
            return
    access.require_run(Action.MANAGE, run_id)


def _readable_runs(access: Access, arguments: dict[str, Any]) -> None:
    """read on the experiment of every run"""
    for run_id in arguments["run_ids"] if isinstance(arguments["run_ids"], list) else []:
        key = access.run_experiment(str(run_id))
        if key is not None:
            access.require(Action.READ, Kind.EXPERIMENT, key, repr(run_id))


class TrackingService(ExperimentService):
    def __init__(self, store: Store, artifacts: ArtifactStore) -> None:
        super().__init__(store)
        self.artifacts = artifacts
        self._saved_environments: set[str] = set()
        self._statistics = Statistics(store)

    # -- runs --------------------------------------------------------------------------

    @endpoint("POST", "/runs")
    @guarded(check=_may_create_run)
    def create_run(
        self,
        experiment: str,
        name: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        lineage: Lineage | None = None,
        environment: Environment | None = None,
    ) -> Run:
        """Start a run in an experiment (by name or id), creating the experiment if needed."""
        _validate_name(experiment, "experiment name")
        if name is not None:
            _validate_name(name, "run name")
        lineage = lineage or Lineage()
        if environment is not None:
            lineage = replace(lineage, environment_digest=environment.digest)
        row = {
            "id": uuid.uuid4().hex,
            "description": description,
            "status": RunStatus.RUNNING.value,
            "owner": self.access.actor(),
            "start_time": now_ms(),
            "end_time": None,
            **{f.name: getattr(lineage, f.name) for f in fields(Lineage)},
        }
        row["heartbeat_at"] = row["start_time"]
        row["deleted_at"] = None
        try:
            with self.store.write() as conn:
                experiment_id, experiment_name = self._experiment_for_run(conn, experiment)
                taken = conn.execute(sql.take_run_number, {"experiment_id": experiment_id}).scalar()
                if taken is None:  # deleted since it was read
                    raise _deleted_experiment(experiment_name)
                number = taken - 1
                if name is None:
                    name = self._auto_name(conn, experiment_id, number)
                elif conn.execute(
                    sql.run_named, {"experiment_id": experiment_id, "run_name": name}
                ).first():
                    raise AlreadyExists(
                        f"experiment {experiment!r} already has a run named {name!r}"
                    )
                if environment is not None:
                    self._save_environment(conn, environment)
                row.update(experiment_id=experiment_id, number=number, name=name)
                conn.execute(sql.insert_run, row)
                self._set_tags(conn, row["id"], tags or {})
        except WriteConflict as exc:
            # Two processes raced for the same new experiment or run name; the loser retries once.
            if "experiments" in exc.detail and "name" in exc.detail:
                return self.create_run(experiment, name, description, tags, lineage, environment)
            raise AlreadyExists(
                f"experiment {experiment!r} already has a run named {name!r}"
            ) from None
        if environment is not None:
            self._saved_environments.add(environment.digest)
        row["experiment_name"] = experiment_name
        return _run_from_row(
            SimpleNamespace(**row),
            {"tags": dict(tags or {}), "params": {}, "metrics": {}, "inputs": []},
            self.artifacts.uri(),
        )

    def _experiment_for_run(self, conn: Connection, experiment: str) -> tuple[str, str]:
        found = conn.execute(sql.find_experiment, {"ref": experiment}).first()
        if found is not None:
            if found.deleted_at is not None:  # never used, nor made anew, in silence
                raise _deleted_experiment(found.name)
            return found.id, found.name
        return self._insert_experiment(conn, experiment, ""), experiment

    def _auto_name(self, conn: Connection, experiment_id: str, number: int) -> str:
        name = f"run-{number}"
        taken = conn.execute(
            sql.run_named, {"experiment_id": experiment_id, "run_name": name}
        ).first()
        return f"{name}-{uuid.uuid4().hex[:6]}" if taken else name

    def _save_environment(self, conn: Connection, env: Environment) -> None:
        if env.digest in self._saved_environments:
            return
        row = {
            "digest": env.digest,
            "python_version": env.python_version,
            "platform": env.platform,
            "packages": json.dumps(env.packages, sort_keys=True),
        }
        upsert(conn, environments, [row], ["digest"])

    @endpoint("GET", "/runs/{run_id}")
    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def get_run(self, run_id: str) -> Run:
        with self.store.read() as conn:
            found = self._load_runs(conn, [run_id])
        if not found:
            raise NotFound(f"run {run_id!r} does not exist")
        return found[0]

    @endpoint("POST", "/runs/{run_id}/end")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def end_run(
        self,
        run_id: str,
        status: RunStatus = RunStatus.FINISHED,
        last_metrics: MetricBatch | None = None,
    ) -> None:
        """Close a RUNNING run, writing its last metric points in the same transaction;
        ending it again with the same status changes nothing."""
        status = RunStatus(status)
        if status is RunStatus.RUNNING:
            raise InvalidArgument("end_run: status must be FINISHED, FAILED or KILLED, not RUNNING")
        if last_metrics is not None:
            metric_store.validate_batch(last_metrics)
        with self._run_must_exist(run_id), self.store.write() as conn:
            current = self._locked_status(conn, run_id)
            if current is not RunStatus.RUNNING:
                if current is not status:
                    raise Conflict(
                        f"run {run_id!r} already ended as {current.value}; cannot end it as {status.value}"
                    )
                if last_metrics is not None and last_metrics.keys:
                    # the same end again: its points are only taken if a spool says they
                    # are the ones written then
                    self._write_points(conn, run_id, last_metrics, current)
                return
            if last_metrics is not None and last_metrics.keys:
                metric_store.write_batch(conn, run_id, last_metrics)
            conn.execute(
                sql.end_running_run,
                {"run_id": run_id, "new_status": status.value, "ended_at": now_ms()},
            )

    @endpoint("POST", "/runs/{run_id}/reopen")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def reopen_run(self, run_id: str) -> Run:
        """Make an ended run RUNNING again (no end time, a fresh heartbeat), to log more to
        it; a RUNNING run stays as it is. A Conflict on a deleted run."""
        with self.store.write() as conn:
            if self._locked_status(conn, run_id) is not RunStatus.RUNNING:
                conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(status=RunStatus.RUNNING.value, end_time=None, heartbeat_at=now_ms())
                )
                self.access.record("run_reopened", f"run:{run_id}", conn=conn)
        return self.get_run(run_id)

    @endpoint("POST", "/runs/{run_id}/heartbeat")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def heartbeat(self, run_id: str) -> None:
        with self.store.write() as conn:
            self._touch(conn, run_id)

    @endpoint("POST", "/runs/close-stale")
    @guarded(check=_may_close_stale)
    def close_stale_runs(
        self, timeout_seconds: float = 300.0, experiment: str | None = None
    ) -> list[str]:
        """Mark RUNNING runs whose heartbeat is older than the timeout as KILLED; returns their ids."""
        if not 0 < timeout_seconds < 10**9:
            raise InvalidArgument(
                f"timeout_seconds must be a positive number of seconds, got {timeout_seconds}"
            )
        cutoff = now_ms() - int(timeout_seconds * 1000)
        query = select(runs.c.id).where(
            runs.c.status == RunStatus.RUNNING.value, runs.c.heartbeat_at < cutoff
        )
        if experiment is not None:
            query = query.where(runs.c.experiment_id == self._experiment(experiment).id)
        with self.store.write() as conn:
            stale = list(conn.execute(query).scalars())
            if stale:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(stale), runs.c.status == RunStatus.RUNNING.value)
                    .values(status=RunStatus.KILLED.value, end_time=runs.c.heartbeat_at)
                )
        return stale

    @endpoint("POST", "/runs/{run_id}/rename")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def rename_run(self, run_id: str, name: str) -> Run:
        """Give a run another name, unique in its experiment (its number and id stay)."""
        _validate_name(name, "run name")
        try:
            with self.store.write() as conn:
                self._writable(conn, run_id)
                self._rename(conn, run_id, name)
        except WriteConflict:  # another run took the name meanwhile
            raise _run_name_taken(self.get_run(run_id).experiment_name, name) from None
        return self.get_run(run_id)

    def _rename(self, conn: Connection, run_id: str, name: str, *, suffix: bool = False) -> None:
        """Rename a run; a name another run of its experiment has is AlreadyExists, or,
        with ``suffix``, gets a ``-xxxxxx`` suffix."""
        found = conn.execute(
            select(runs.c.experiment_id, runs.c.name, _experiments.c.name.label("exp"))
            .join(_experiments, _experiments.c.id == runs.c.experiment_id)
            .where(runs.c.id == run_id)
        ).one()
        if found.name == name:
            return
        if conn.execute(
            sql.run_named, {"experiment_id": found.experiment_id, "run_name": name}
        ).first():
            if not suffix:
                raise _run_name_taken(found.exp, name)
            name = f"{name}-{uuid.uuid4().hex[:6]}"
        conn.execute(update(runs).where(runs.c.id == run_id).values(name=name))

    @endpoint("POST", "/runs/{run_id}/delete")
    @guarded(check=_may_delete_run)
    def delete_run(self, run_id: str) -> None:
        """Delete a run, softly: it leaves searches (but ``view="deleted"``), keeps its data,
        takes no writes, and comes back with ``restore_run``. Deleting it again changes
        nothing. Its owner may (with write on its experiment), or whoever manages the
        experiment: an editor does not delete a colleague's run."""
        with self.store.write() as conn:
            self._status(conn, run_id)
            marked = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.deleted_at.is_(None))
                .values(deleted_at=now_ms())
            )
            if marked.rowcount:
                self.access.record("run_deleted", f"run:{run_id}", conn=conn)

    @endpoint("POST", "/runs/{run_id}/restore")
    @guarded(check=_may_delete_run)
    def restore_run(self, run_id: str) -> None:
        """Bring back a deleted run (a Conflict while its experiment is deleted: restore
        that, which restores the runs it took with it)."""
        with self.store.write() as conn:
            found = conn.execute(
                select(_experiments.c.name, _experiments.c.deleted_at)
                .join(runs, runs.c.experiment_id == _experiments.c.id)
                .where(runs.c.id == run_id)
            ).first()
            if found is None:
                raise NotFound(f"run {run_id!r} does not exist")
            if found.deleted_at is not None:
                raise Conflict(
                    f"run {run_id} is in experiment {found.name!r}, which is deleted: "
                    "restore the experiment first"
                )
            restored = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.deleted_at.is_not(None))
                .values(deleted_at=None)
            )
            if restored.rowcount:
                self.access.record("run_restored", f"run:{run_id}", conn=conn)

    # -- params, metrics, tags, inputs -------------------------------------------------

    @endpoint("POST", "/runs/{run_id}/params")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def log_params(self, run_id: str, params: dict[str, Any], group: str = "default") -> None:
        """Log params once: the same value again is fine, a different value is a Conflict."""
        _validate_name(group, "param group")
        rows = [param_row(run_id, group, key, value) for key, value in params.items()]
        try:
            self._log_params_once(run_id, group, rows)
        except WriteConflict:
            # Unknown run (its foreign key), or another writer logged some of these params
            # first: compare with what it wrote.
            with self.store.read() as conn:
                self._status(conn, run_id)
            self._log_params_once(run_id, group, rows)

    def _log_params_once(self, run_id: str, group: str, rows: list[dict[str, Any]]) -> None:
        with self.store.write() as conn:
            self._writable(conn, run_id)
            self._insert_params(conn, run_id, group, rows)

    def _insert_params(
        self, conn: Connection, run_id: str, group: str, rows: list[dict[str, Any]]
    ) -> None:
        existing = dict(
            conn.execute(
                sql.params_of_group,
                {"run_id": run_id, "param_group": group, "keys": [r["key"] for r in rows]},
            ).all()
        )
        for row in rows:
            old = existing.get(row["key"])
            if old is not None and old != row["value"]:
                raise Conflict(
                    f"param {group}.{row['key']} of run {run_id} is already {old}; "
                    f"params are immutable, cannot set it to {row['value']}"
                )
        new_rows = [row for row in rows if row["key"] not in existing]
        if new_rows:
            conn.execute(sql.insert_params, new_rows)

    @endpoint("POST", "/runs/{run_id}/metrics")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def log_metric_batch(self, run_id: str, batch: MetricBatch) -> None:
        """Write metric points to a RUNNING run. A run that has ended takes no new points
        (Conflict): its metrics are final, as its status says. The one exception are points
        a writer's spool kept: a KILLED run's (its process died) and, for a run its owner
        ended, those logged no later than its end (a writer the end overtook); taken once."""
        metric_store.validate_batch(batch)
        with self._run_must_exist(run_id), self.store.write() as conn:
            status = self._locked_status(conn, run_id)
            if batch.keys:
                self._write_points(conn, run_id, batch, status)
                if status is RunStatus.RUNNING:
                    self._touch(conn, run_id)  # a run that writes is alive

    def _locked_status(self, conn: Connection, run_id: str) -> RunStatus:
        """The status of a run that takes writes (not deleted), its row locked."""
        found = metric_store.lock_run(conn, run_id)
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if found[1] is not None:
            raise _deleted_run(run_id)
        return RunStatus(found[0])

    def _write_points(
        self, conn: Connection, run_id: str, batch: MetricBatch, status: RunStatus
    ) -> None:
        if status is not RunStatus.RUNNING:
            if batch.spool is not None and metric_store.already_written(conn, run_id, batch):
                return
            # A KILLED run's end is its last heartbeat, which its dead process outlived
            # by up to a beat: its spool is taken whole.
            ended = conn.execute(select(runs.c.end_time).where(runs.c.id == run_id)).scalar()
            in_time = status is RunStatus.KILLED or (
                ended is not None and max(batch.timestamps) <= ended
            )
            if batch.spool is None or not in_time:
                raise Conflict(
                    f"run {run_id} is {status.value}: an ended run takes no new metric "
                    f"points (got {len(batch)}, the first {batch.keys[0]!r}); start a new run"
                )
        metric_store.write_batch(conn, run_id, batch)

    @endpoint("GET", "/runs/{run_id}/spools/{spool}")
    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def get_spool_progress(self, run_id: str, spool: str) -> int:
        """How many points of a writer's spool the store holds (0 for an unknown spool)."""
        with self.store.read() as conn:
            self._status(conn, run_id)
            return metric_store.spool_progress(conn, run_id, spool)

    @contextlib.contextmanager
    def _run_must_exist(self, run_id: str) -> Iterator[None]:
        """Turns the foreign-key failure of a write for an unknown run into NotFound."""
        try:
            yield
        except WriteConflict:
            with self.store.read() as conn:
                self._status(conn, run_id)
            raise Conflict(
                f"run {run_id}: a concurrent write logged the same values first"
            ) from None

    @endpoint("GET", "/runs/{run_id}/metric-history")
    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        with self.store.read() as conn:
            points = metric_store.history(conn, run_id, key)
            if not points:
                self._status(conn, run_id)
                raise NotFound(f"run {run_id} has no metric {key!r}")
        return points

    @endpoint("GET", "/runs/{run_id}/metric-series")
    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def get_metric_series(
        self,
        run_id: str,
        key: str,
        max_points: int = 2000,
        start: float | None = None,
        end: float | None = None,
    ) -> MetricSeries:
        """A metric for a chart: downsampled on the server to ``max_points`` points that keep
        its shape (extremes included), optionally only steps ``start`` to ``end``; its
        is-best points apart."""
        with self.store.read() as conn:
            found = read_series(conn, run_id, key, max_points, start, end)
            if found.count == 0 and start is None and end is None:
                self._status(conn, run_id)
                raise NotFound(f"run {run_id} has no metric {key!r}")
        return found

    @endpoint("POST", "/runs/{run_id}/tags")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with self.store.write() as conn:
            self._writable(conn, run_id)
            self._set_tags(conn, run_id, tags)

    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def log_batch(
        self,
        run_id: str,
        batch: MetricBatch | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        name: str | None = None,
        group: str = "default",
    ) -> None:
        """Params, metric points, tags and a new name in one transaction: all are written
        or, on any error (a changed param, an ended run's points...), none. A name another
        run of the experiment has gets a ``-xxxxxx`` suffix (MLflow's runs share names;
        ``rename_run`` refuses it)."""
        _validate_name(group, "param group")
        rows = [param_row(run_id, group, key, value) for key, value in (params or {}).items()]
        if batch is not None:
            metric_store.validate_batch(batch)
        check_tags(tags)
        if name is not None:
            _validate_name(name, "run name")
        with self._run_must_exist(run_id), self.store.write() as conn:
            status = self._locked_status(conn, run_id)
            if rows:
                self._insert_params(conn, run_id, group, rows)
            if batch is not None and batch.keys:
                self._write_points(conn, run_id, batch, status)
                if status is RunStatus.RUNNING:
                    self._touch(conn, run_id)
            if tags:
                self._set_tags(conn, run_id, tags)
            if name is not None:
                self._rename(conn, run_id, name, suffix=True)

    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def append_to_tag(self, run_id: str, key: str, entry: Any, max_length: int) -> None:
        """Append ``entry`` to the JSON list the tag ``key`` holds (a value that is no list
        starts one), under the run's row lock: concurrent appends queue, none is lost.
        InvalidArgument, writing nothing, once the tag would pass ``max_length``."""
        with self._run_must_exist(run_id), self.store.write() as conn:
            self._locked_status(conn, run_id)
            old = conn.execute(
                select(run_tags.c.value).where(run_tags.c.run_id == run_id, run_tags.c.key == key)
            ).scalar()
            try:
                entries = json.loads(old) if old else []
            except ValueError:
                entries = []
            value = json.dumps([*(entries if isinstance(entries, list) else []), entry])
            if len(value) > max_length:
                raise InvalidArgument(
                    f"tag {key!r} of run {run_id} would be {len(value):,} characters with this "
                    f"entry; it may hold {max_length:,}"
                )
            self._set_tags(conn, run_id, {key: value})

    @endpoint("DELETE", "/runs/{run_id}/tags")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def delete_tag(self, run_id: str, key: str) -> None:
        with self.store.write() as conn:
            self._writable(conn, run_id)
            deleted = conn.execute(
                delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.key == key)
            )
            if deleted.rowcount == 0:
                raise NotFound(f"run {run_id} has no tag {key!r}")

    @endpoint("POST", "/runs/{run_id}/inputs")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def log_input(self, run_id: str, dataset: DatasetInput) -> None:
        """Record a dataset the run read (name, uri, digest or version, rows, the context it
        was used in); logging the same name again replaces it."""
        _validate_name(dataset.name, "input name")
        if not dataset.uri:
            raise InvalidArgument(f"input {dataset.name!r}: uri must not be empty")
        if dataset.rows is not None and dataset.rows < 0:
            raise InvalidArgument(f"input {dataset.name!r}: rows must be >= 0, got {dataset.rows}")
        for what in ("context", "source_type"):
            value = getattr(dataset, what)
            if value is not None and not 0 < len(value) <= _MAX_INPUT_LABEL:
                raise InvalidArgument(
                    f"input {dataset.name!r}: {what} must be 1 to {_MAX_INPUT_LABEL} "
                    f"characters, got {len(value)}"
                )
        row = {
            "run_id": run_id,
            "name": dataset.name,
            "uri": dataset.uri,
            "digest": dataset.digest,
            "version": dataset.version,
            "rows": dataset.rows,
            "logged_at": now_ms(),
            **{name: getattr(dataset, name) for name in _INPUT_EXTRAS},
        }
        with self.store.write() as conn:
            self._writable(conn, run_id)
            upsert(
                conn,
                run_inputs,
                [row],
                ["run_id", "name"],
                _INPUT_UPDATES,
            )

    @endpoint("POST", "/runs/{run_id}/seed")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def set_seed(self, run_id: str, seed: int) -> None:
        with self.store.write() as conn:
            self._writable(conn, run_id)
            conn.execute(update(runs).where(runs.c.id == run_id).values(seed=seed))

    @endpoint("GET", "/environments/{digest}")
    @guarded()
    def get_environment(self, digest: str) -> Environment:
        with self.store.read() as conn:
            row = conn.execute(select(environments).where(environments.c.digest == digest)).first()
        if row is None:
            raise NotFound(f"environment {digest!r} does not exist")
        return Environment(row.digest, row.python_version, row.platform, json.loads(row.packages))

    # -- search ------------------------------------------------------------------------

    @endpoint("POST", "/runs/search")
    @guarded()
    def search_runs(
        self,
        filter: str | None = None,
        order_by: list[str] | None = None,
        experiments: list[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        view: str = "active",
    ) -> Page[Run]:
        """Runs matching a filter (see ``plinth.tracking.search``), newest first by default;
        of the ``view`` "active" (not deleted), "deleted" or "all"."""
        offset = decode_page_token(page_token)
        limit = check_max_results(max_results)
        lifecycle = in_view(runs.c.deleted_at, view)
        self._statistics.refresh()
        matching = parse_filter(filter, ordered_metrics(order_by))
        query = (
            select(runs.c.id)
            .join(_experiments, _experiments.c.id == runs.c.experiment_id)
            .where(matching.where, lifecycle)
        )
        if experiments:  # each one checked: the caller may read it
            query = query.where(runs.c.experiment_id.in_(self._readable_experiments(experiments)))
        elif (visible := self.access.visible(Kind.EXPERIMENT)) is not None:
            query = query.where(runs.c.experiment_id.in_(visible))
        query = order_by_(query, order_by or ["start_time DESC"], matching.metrics, matching.bounds)
        query = query.order_by(runs.c.id).offset(offset).limit(limit + 1)
        with self.store.read() as conn:
            ids = list(conn.execute(query).scalars())
            items = self._load_runs(conn, ids[:limit])
        return Page(items, encode_page_token(offset + limit) if len(ids) > limit else None)

    @guarded()
    def readable_experiments(self, experiments: list[str]) -> list[str]:
        """The ids of those of ``experiments`` (names or ids) that exist and the caller may
        read, in one statement; the others are left out (a listing's view of them)."""
        return self._readable_experiments(experiments, missing_ok=True)

    def _readable_experiments(self, refs: list[str], missing_ok: bool = False) -> list[str]:
        """Names or ids -> ids, a name before an id as ``get_experiment`` reads them; one
        that is not there, or that the caller may not read, is NotFound (as there)."""
        if len(refs) > MAX_EXPERIMENTS:
            raise InvalidArgument(
                f"{len(refs):,} experiments given; a search takes up to {MAX_EXPERIMENTS:,}"
            )
        wanted = sorted(set(refs))
        e = _experiments.c
        with self.store.read() as conn:
            rows = conn.execute(
                select(e.id, e.name).where(or_(e.name.in_(wanted), e.id.in_(wanted)))
            ).all()
        by_name = {row.name: row.id for row in rows}
        ids = {row.id for row in rows}
        visible = self.access.visible(Kind.EXPERIMENT)
        found: list[str] = []
        for ref in refs:
            key = by_name.get(ref) or (ref if ref in ids else None)
            if key is not None and (visible is None or key in visible):
                found.append(key)
            elif not missing_ok:
                raise NotFound(f"experiment {ref!r} does not exist")
        return found

    @endpoint("POST", "/runs/compare")
    @guarded(check=_readable_runs)
    def compare_runs(self, run_ids: list[str]) -> RunComparison:
        if not 1 <= len(run_ids) <= 100:
            raise InvalidArgument(f"compare_runs takes 1 to 100 run ids, got {len(run_ids)}")
        with self.store.read() as conn:
            loaded = {run.id: run for run in self._load_runs(conn, run_ids)}
        missing = [r for r in run_ids if r not in loaded]
        if missing:
            raise NotFound(f"runs {missing} do not exist")
        chosen = [loaded[r] for r in run_ids]
        param_names = sorted(
            {f"{g}.{k}" for run in chosen for g, ps in run.params.items() for k in ps}
        )
        table = {
            name: [
                run.params.get(name.split(".", 1)[0], {}).get(name.split(".", 1)[1])
                for run in chosen
            ]
            for name in param_names
        }
        differing = [name for name, values in table.items() if any(v != values[0] for v in values)]
        metric_names = sorted({k for run in chosen for k in run.metrics})
        metric_table = {name: [run.metrics.get(name) for run in chosen] for name in metric_names}
        return RunComparison(run_ids, [r.name for r in chosen], table, differing, metric_table)

    # -- artifacts ---------------------------------------------------------------------

    @endpoint("GET", "/runs/{run_id}/artifacts")
    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        base = self._artifact_base(run_id)
        prefix = f"{base}/{safe_relpath(path, allow_root=True)}".rstrip("/")
        return [
            ArtifactEntry(info.path[len(base) + 1 :], info.is_dir, info.size)
            for info in self.artifacts.list(prefix)
        ]

    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def open_artifact_writer(self, run_id: str, path: str) -> IO[bytes]:
        """A run artifact is written freely until a model version is registered from the
        folder it is in: from then on those files are read-only (a Conflict names the
        version). Checked when the write opens and again right before it is published."""
        full = f"{self._artifact_base(run_id, writing=True)}/{safe_relpath(path)}"

        def check() -> None:
            self._refuse_registered(run_id, full)

        check()
        return self.artifacts.open_write(full, check)

    def _registered_from(self, run_id: str, full: str, *, inside: bool = False) -> Any:
        """The first model version registered from a folder holding the artifact ``full``
        (or, ``inside``, from a folder inside it), None if there is none."""
        parts = full.split("/")
        folders = ["/".join(parts[:i]) for i in range(3, len(parts) + 1)]  # <exp>/<run>/artifacts/…
        package = model_versions.c.package_uri
        chosen: ColumnElement[bool] = package.in_(folders)
        if inside:
            chosen = chosen | package.startswith(f"{full}/", autoescape=True)
        with self.store.read() as conn:
            return conn.execute(
                select(model_versions.c.model_name, model_versions.c.version)
                .where(model_versions.c.run_id == run_id, chosen)
                .order_by(model_versions.c.model_name, model_versions.c.version)
                .limit(1)
            ).first()

    def _refuse_registered(self, run_id: str, full: str) -> None:
        row = self._registered_from(run_id, full)
        if row is not None:
            raise Conflict(
                f"artifact {full.split('/', 3)[3]!r} of run {run_id} belongs to model version "
                f"models:/{row.model_name}/{row.version}: a registered version's files are "
                "read-only; log the new files under another path"
            )

    @guarded(Action.WRITE, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def delete_artifacts(self, run_id: str, path: str) -> None:
        """Delete a run's artifact file or folder; never one that holds, or is inside, a
        folder a model version was registered from (a Conflict names the version)."""
        full = f"{self._artifact_base(run_id, writing=True)}/{safe_relpath(path)}"
        row = self._registered_from(run_id, full, inside=True)
        if row is not None:
            raise Conflict(
                f"artifact {path!r} of run {run_id} holds files of model version "
                f"models:/{row.model_name}/{row.version}: a registered version's files are "
                "read-only"
            )
        self.artifacts.delete(full)

    @guarded(Action.READ, Kind.EXPERIMENT, "run_id", resolve=by_run)
    def open_artifact_reader(self, run_id: str, path: str) -> IO[bytes]:
        return self.artifacts.open_read(f"{self._artifact_base(run_id)}/{safe_relpath(path)}")

    def _artifact_base(self, run_id: str, writing: bool = False) -> str:
        with self.store.read() as conn:
            found = conn.execute(
                select(runs.c.experiment_id, runs.c.deleted_at).where(runs.c.id == run_id)
            ).first()
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if writing and found.deleted_at is not None:
            raise _deleted_run(run_id)
        return f"{found.experiment_id}/{run_id}/artifacts"

    # -- helpers -----------------------------------------------------------------------

    def _status(self, conn: Connection, run_id: str) -> RunStatus:
        status = conn.execute(sql.run_status, {"run_id": run_id}).scalar()
        if status is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return RunStatus(status)

    def _writable(self, conn: Connection, run_id: str) -> RunStatus:
        """The status of a run that takes writes: NotFound, or a Conflict if it is deleted."""
        found = conn.execute(sql.run_state, {"run_id": run_id}).first()
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if found.deleted_at is not None:
            raise _deleted_run(run_id)
        return RunStatus(found.status)

    def _touch(self, conn: Connection, run_id: str) -> None:
        touched = conn.execute(sql.touch_run, {"run_id": run_id, "now": now_ms()})
        if touched.rowcount == 0:
            raise NotFound(f"run {run_id!r} does not exist")

    def _set_tags(self, conn: Connection, run_id: str, tags: dict[str, str]) -> None:
        check_tags(tags)
        rows = [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()]
        upsert(conn, run_tags, rows, ["run_id", "key"], {"value": lambda ex: ex.value})

    def _load_runs(self, conn: Connection, run_ids: list[str]) -> list[Run]:
        if not run_ids:
            return []
        rows = conn.execute(
            select(runs, _experiments.c.name.label("experiment_name"))
            .join(_experiments, _experiments.c.id == runs.c.experiment_id)
            .where(runs.c.id.in_(run_ids))
        ).all()
        by_run: dict[str, dict[str, Any]] = {
            row.id: {"params": {}, "metrics": {}, "tags": {}, "inputs": []} for row in rows
        }
        ids = list(by_run)
        # Plain tuples, fetched whole: a search loads ~15 rows a run, and per-row attribute
        # access cost more than the queries.
        p = _params.c
        loads = json.loads
        for run_id, group, key, value in conn.execute(
            select(p.run_id, p.group, p.key, p.value).where(p.run_id.in_(ids))
        ).all():
            by_run[run_id]["params"].setdefault(group, {})[key] = loads(value)
        for row in conn.execute(
            select(*_SUMMARY_COLUMNS).where(metric_summaries.c.run_id.in_(ids))
        ).all():
            by_run[row[0]]["metrics"][row[1]] = metric_store.summary_from_tuple(row[1:])
        for t in conn.execute(select(run_tags).where(run_tags.c.run_id.in_(ids))):
            by_run[t.run_id]["tags"][t.key] = t.value
        for i in conn.execute(
            select(run_inputs).where(run_inputs.c.run_id.in_(ids)).order_by(run_inputs.c.logged_at)
        ):
            by_run[i.run_id]["inputs"].append(
                DatasetInput(
                    i.name,
                    i.uri,
                    i.digest,
                    i.version,
                    i.rows,
                    to_datetime(i.logged_at),
                    **{name: getattr(i, name) for name in _INPUT_EXTRAS},
                )
            )
        root = self.artifacts.uri()
        loaded = {row.id: _run_from_row(row, by_run[row.id], root) for row in rows}
        return [loaded[r] for r in run_ids if r in loaded]


_params = params
_experiments = experiments
MAX_EXPERIMENTS = 1000  # experiments one search names
_SUMMARY_COLUMNS = [
    metric_summaries.c[name]
    for name in ("run_id", "key", "goal", "count", "last", "last_step", "min", "max", "best")
]
_SUMMARY_COLUMNS += [metric_summaries.c.best_step, metric_summaries.c.last_timestamp]
_INPUT_EXTRAS = ("context", "source_type", "schema", "profile")
_MAX_INPUT_LABEL = 500
_INPUT_UPDATES: dict[str, Any] = {
    name: operator.attrgetter(name)
    for name in ("uri", "digest", "version", "rows", "logged_at", *_INPUT_EXTRAS)
}


def _run_from_row(row: Any, parts: dict[str, Any], artifact_root: str) -> Run:
    lineage = Lineage(
        row.git_commit,
        row.git_dirty,
        row.git_remote,
        row.entry_point,
        row.host,
        row.seed,
        row.environment_digest,
    )
    return Run(
        id=row.id,
        experiment_id=row.experiment_id,
        experiment_name=row.experiment_name,
        number=row.number,
        name=row.name,
        description=row.description,
        status=RunStatus(row.status),
        owner=row.owner,
        start_time=to_datetime(row.start_time),
        end_time=opt_datetime(row.end_time),
        heartbeat_at=to_datetime(row.heartbeat_at),
        artifact_uri=f"{artifact_root.rstrip('/')}/{row.experiment_id}/{row.id}/artifacts",
        lineage=lineage,
        **parts,
        deleted_at=opt_datetime(row.deleted_at),
    )


def _deleted_run(run_id: str) -> Conflict:
    return Conflict(f"run {run_id} is deleted; restore it first")


def _deleted_experiment(name: str) -> Conflict:
    return Conflict(
        f"experiment {name!r} is deleted: restore it first (or start the run in another experiment)"
    )


def _run_name_taken(experiment: str, name: str) -> AlreadyExists:
    return AlreadyExists(f"experiment {experiment!r} already has a run named {name!r}")
