"""The run a training script holds open: ``with plinth.start_run(...) as run``."""

from __future__ import annotations

import atexit
import itertools
import json
import operator
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument
from plinth.tracking.buffer import MetricBuffer
from plinth.tracking.lineage import seed_everything
from plinth.tracking.spool import Spool
from plinth.tracking.types import DatasetInput, Run, RunStatus, validate_key

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.registry.types import ModelVersion, Signature

_starts = itertools.count()
_open_runs: set[ActiveRun] = set()
_runs_lock = threading.Lock()  # strong: a run its caller dropped must still end at exit


class ActiveRun:
    """A run being logged to. Metric points go to a local spool and a buffer, and are
    written in the background.

    ``owned`` runs (the ones this process started) are ended when their ``with`` block or
    the process ends; a run attached from elsewhere (``Client.attach_run``) is only
    flushed then: the process that started it ends it."""

    def __init__(self, client: Client, run: Run, *, owned: bool = True) -> None:
        self._client = client
        self.info = run
        self.id = run.id
        self.name = run.name
        self.experiment_id = run.experiment_id
        self.owned = owned
        self._goals: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._ended = False
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        settings = client.settings
        tracking = client.tracking
        self._spool = _open_spool(client, run.id)
        self._buffer = MetricBuffer(
            lambda batch: tracking.log_metric_batch(run.id, batch),
            lambda: tracking.heartbeat(run.id),
            self._goals,
            interval=settings.flush_interval,
            max_points=settings.flush_max_points,
            heartbeat_interval=settings.heartbeat_interval,
            spool=self._spool,
        )
        self._points = self._buffer.points
        self._started = next(_starts)
        with _runs_lock:
            _open_runs.add(self)

    # -- metrics (the hot path) --------------------------------------------------------

    def define_metric(self, key: str, goal: str) -> None:
        """Say whether bigger ('max') or smaller ('min') is better; inferred from the name otherwise."""
        if goal not in ("max", "min"):
            raise InvalidArgument(f"metric {key!r}: goal must be 'max' or 'min', not {goal!r}")
        validate_key(key)
        self._goals[key] = goal
        if self._spool is not None:
            self._spool.set_goal(key, goal)

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        *,
        is_best: bool | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Log one point: on the local spool when this returns, in the store within the
        flush interval. ``step`` defaults to the metric's previous step + 1 (0 first);
        ``is_best`` defaults to "improves on the run's best so far" in the metric's goal
        direction, judged by the store against every point of the run written before.

        Raises InvalidArgument for a value that is not a number (bools and None too), a
        step that is not an integer, and Conflict once the store refused the run's points
        because the run has ended."""
        if self._ended:
            raise InvalidArgument(f"run {self.id} has ended: start a new run to log {key!r}")
        refused = self._buffer.refused
        if refused is not None:
            raise refused
        if type(value) is not float:
            value = metric_value(key, value)
        if key not in self._last_step:
            validate_key(key)
        if step is None:
            step = self._last_step.get(key, -1) + 1
        elif type(step) is not int or not -_INT64 <= step < _INT64:
            step = metric_step(key, step)
        if is_best is not None and type(is_best) is not bool:
            raise InvalidArgument(f"metric {key!r}: is_best must be True, False or None")
        ms = int(time.time() * 1000) if timestamp is None else metric_timestamp(key, timestamp)
        with self._log_lock:
            self._last_step[key] = step
            if self._spool is not None:
                self._spool.append(key, value, step, ms, is_best)
            self._points.append((key, value, step, ms, is_best))
        if len(self._points) >= self._buffer._max_points:
            self._buffer.wait_for_room()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def flush(self) -> None:
        """Write every buffered metric point now."""
        self._buffer.flush()

    # -- params, tags, inputs, seed ----------------------------------------------------

    def log_param(self, key: str, value: Any, group: str = "default") -> None:
        self._client.tracking.log_params(self.id, {key: value}, group)

    def log_params(self, params: dict[str, Any], group: str = "default") -> None:
        self._client.tracking.log_params(self.id, params, group)

    def set_tag(self, key: str, value: str) -> None:
        self._client.tracking.set_tags(self.id, {key: value})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._client.tracking.set_tags(self.id, tags)

    def log_input(
        self,
        name: Any,
        uri: str | None = None,
        digest: str | None = None,
        version: str | None = None,
        rows: int | None = None,
        context: str | None = None,
    ) -> None:
        """Record a dataset this run read: where it is, which exact version and what for
        (``context``: "training", "eval"...). A training dataset of the feature store can be
        given as is; model versions this run logs are then linked to it."""
        info = getattr(name, "info", name)
        if not isinstance(name, str) and hasattr(info, "entity_uri"):  # a training dataset
            name, uri = f"{info.view}_v{info.view_version}", info.uri
            version, rows = str(info.id), info.rows
        if uri is None:
            raise InvalidArgument(f"log_input({name!r}) needs the dataset's uri")
        self._client.tracking.log_input(
            self.id, DatasetInput(name, uri, digest, version, rows, context=context)
        )

    def seed(self, seed: int) -> int:
        """Seed random, NumPy and PyTorch, and record the seed in the run's lineage."""
        seed_everything(seed)
        self._client.tracking.set_seed(self.id, seed)
        return seed

    # -- artifacts ---------------------------------------------------------------------

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> str:
        """Store a file (or a whole folder) under the run; returns its artifact path."""
        source = Path(local_path)
        dest = artifact_path or source.name
        if source.is_dir():
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                self._client.upload_artifact(
                    self.id, file, f"{dest}/{file.relative_to(source).as_posix()}"
                )
        elif source.is_file():
            self._client.upload_artifact(self.id, source, dest)
        else:
            raise InvalidArgument(f"log_artifact: {source} is neither a file nor a folder")
        return dest

    def log_model(
        self,
        model: Any,
        name: str = "model",
        *,
        input_example: Any = None,
        registered_model: str | None = None,
        signature: Signature | None = None,
        flavor: str | None = None,
        training_dataset: Any = None,
    ) -> ModelVersion | None:
        """Store a model package (model, manifest, signature, sha256s) under the run's
        artifact ``name``; with ``registered_model`` also register it as that model's next
        version, with this run's lineage (and ``training_dataset``, see ``register_model``).
        Returns the version, or None when not registered."""
        import tempfile

        from plinth.registry.package import save_package

        with tempfile.TemporaryDirectory(prefix="plinth-model-") as tmp:
            save_package(
                model, Path(tmp), flavor=flavor, input_example=input_example, signature=signature
            )
            self.log_artifact(tmp, name)
        if registered_model is None:
            return None
        self.flush()  # the version's lineage snapshots the run's metrics as they are now
        package = f"{self.experiment_id}/{self.id}/artifacts/{name}"
        from plinth.registry.types import dataset_id

        return self._client.registry.create_model_version(
            registered_model,
            package,
            self.id,
            "",
            None,
            dataset_id(training_dataset),
        )

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> str:
        return self.log_artifact(local_dir, artifact_path or Path(local_dir).name)

    def log_text(self, text: str, artifact_path: str) -> None:
        self._client.upload_artifact_bytes(self.id, text.encode(), artifact_path)

    def log_dict(self, data: dict[str, Any], artifact_path: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_path)

    # -- lifecycle ---------------------------------------------------------------------

    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        """Flush everything and close the run with a final status. If the store refuses,
        the points stay buffered (and spooled) and ``end`` can be called again."""
        final = _parse_status(status)
        with self._lock:
            if self._ended:
                return
            self._ended = True
        last = self._buffer.close()
        try:
            # The points still buffered travel with the end: one write, one round trip.
            self._client.tracking.end_run(self.id, final, last)
        except BaseException:
            if last is not None:
                self._buffer.restore(last)
            self._ended = False
            raise
        self._buffer.written()
        with _runs_lock:
            _open_runs.discard(self)

    def detach(self) -> None:
        """Write every buffered point and stop logging, leaving the run as it is (RUNNING
        for its owner to end): what an attached run does at the end of its block."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        last = self._buffer.close()
        try:
            if last is not None and self._buffer.refused is None:
                self._client.tracking.log_metric_batch(self.id, last)
        except BaseException:
            if last is not None:
                self._buffer.restore(last)
            self._ended = False
            raise
        self._buffer.written()
        with _runs_lock:
            _open_runs.discard(self)

    def _finish(self, status: RunStatus) -> None:
        if self.owned:
            self.end(status)
        else:
            self.detach()

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._finish(RunStatus.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self._finish(RunStatus.KILLED)
        else:
            self._finish(RunStatus.FAILED)

    def __repr__(self) -> str:
        return f"<ActiveRun {self.name} id={self.id}>"


_exit_status = RunStatus.FINISHED
_previous_excepthook = sys.excepthook


def _remember_crash(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    # A script that dies of an uncaught exception leaves its open runs FAILED (KILLED on
    # Ctrl-C), not FINISHED, when they are closed at exit.
    global _exit_status
    _exit_status = RunStatus.KILLED if issubclass(kind, KeyboardInterrupt) else RunStatus.FAILED
    _previous_excepthook(kind, exc, tb)


sys.excepthook = _remember_crash


@atexit.register
def _end_open_runs() -> None:
    with _runs_lock:
        still_open = list(_open_runs)
    for run in still_open:
        try:
            run._finish(_exit_status)
        except Exception as exc:  # the interpreter is exiting: report, do not raise
            print(f"plinth: could not close run {run.id}: {exc}", file=sys.stderr)


def active_run() -> ActiveRun | None:
    """The run this process started most recently and has not ended (the MLflow-style fluent API)."""
    with _runs_lock:
        return max(_open_runs, key=lambda run: run._started, default=None)


def require_active_run() -> ActiveRun:
    run = active_run()
    if run is None:
        raise InvalidArgument("there is no active run: call plinth.start_run() first")
    return run


_INT64 = 2**63


def metric_value(key: str, value: Any, what: str = "value") -> float:
    """A metric's value as a float: any real number (NumPy's too, a one-element tensor),
    not a bool, a string or None."""
    if isinstance(value, (bool, str | bytes)) or value is None:
        raise InvalidArgument(
            f"metric {key!r}: {what} {value!r:.40} is not a number; log a float or an int"
        )
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(
            f"metric {key!r}: {what} {value!r:.40} is not a number; log a float or an int"
        ) from None


def metric_timestamp(key: str, seconds: Any) -> int:
    """Seconds since the epoch (``time.time()``) as the store's milliseconds."""
    value = metric_value(key, seconds, "timestamp")
    if not -1e15 < value < 1e15:  # NaN, infinities and times no clock gives
        raise InvalidArgument(f"metric {key!r}: timestamp {seconds!r:.40} is not a time")
    return int(value * 1000)


def metric_step(key: str, step: Any) -> int:
    """A step as an int: an integer (NumPy's too), not a float, a bool or a string."""
    try:
        if isinstance(step, bool):
            raise TypeError
        number = operator.index(step)
    except TypeError:
        raise InvalidArgument(f"metric {key!r}: step {step!r:.40} is not an integer") from None
    if not -_INT64 <= number < _INT64:
        raise InvalidArgument(f"metric {key!r}: step {number} does not fit in 64 bits")
    return number


def _open_spool(client: Client, run_id: str) -> Spool | None:
    try:
        return Spool(client.settings.home.resolve() / "spool", run_id, client.target)
    except OSError as exc:  # a read-only home: log on, as before, without the spool
        print(
            f"plinth: no local spool for run {run_id} ({exc}); points logged in the last "
            "flush interval are lost if this process is killed",
            file=sys.stderr,
        )
        return None


def _parse_status(status: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(status.upper() if isinstance(status, str) else status)
    except ValueError:
        raise InvalidArgument(
            f"status {status!r} is not one of {', '.join(RunStatus.__members__)}"
        ) from None
