"""The Python client: the same methods in-process (local store) and remote (a Plinth server)."""

from __future__ import annotations

import io
import shutil
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plinth.registry.client import RegistryClient

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    import pandas as pd  # type: ignore[import-untyped]

    from plinth.abtests.service import AbTestService
    from plinth.auth.service import AuthService
    from plinth.config import Settings
    from plinth.features.service import FeatureService
    from plinth.features.store import FeatureStore
    from plinth.monitoring.data import MonitoringData
    from plinth.monitoring.labels import LabelIn, LabelReceipt
    from plinth.monitoring.service import MonitorService
    from plinth.pipelines.service import PipelineService
    from plinth.registry.service import RegistryService
    from plinth.serving.jobs import ScoreJobService
    from plinth.tracking.run import ActiveRun
    from plinth.tracking.service import TrackingService
    from plinth.tracking.types import (
        ArtifactEntry,
        Experiment,
        MetricPoint,
        MetricSeries,
        Page,
        Run,
        RunComparison,
    )


class Client(RegistryClient):
    """Use ``plinth.connect()``. ``tracking`` and ``registry`` are the services (local) or
    their HTTP proxies (remote); the methods here add what runs on the caller's side."""

    features: FeatureService

    def __init__(
        self,
        tracking: TrackingService,
        registry: RegistryService,
        features: FeatureService,
        score_jobs: ScoreJobService,
        settings: Settings,
        *,
        remote: bool,
        target: str = "",
    ) -> None:
        self.tracking = tracking
        self.registry = registry
        self.features = features
        self.score_jobs = score_jobs
        self.settings = settings
        self.remote = remote
        # The server or store this client writes to: a spool is only replayed by a client
        # of the same one.
        self.target = target
        self._feature_store: FeatureStore | None = None

    @property
    def auth(self) -> AuthService:
        """Users, groups, tokens, grants and the security log (``plinth.auth.service``)."""
        from plinth.auth.service import AuthService

        if self.remote:
            from plinth.remote import RemoteAuth

            return RemoteAuth(self.tracking.transport)  # type: ignore[attr-defined,return-value]
        return AuthService(self.tracking.store)

    @property
    def abtests(self) -> AbTestService:
        """A/B experiments between models: design, changes, lifecycle
        (``plinth.abtests.service``)."""
        from plinth.abtests.service import AbTestService

        if self.remote:
            from plinth.remote import RemoteAbTests

            return RemoteAbTests(self.tracking.transport)  # type: ignore[attr-defined,return-value]
        return AbTestService(
            self.tracking.store, self.settings.resolved_artifact_uri, self.registry
        )

    @property
    def monitors(self) -> MonitorService:
        """Monitors of feature groups and models, their evaluations and alerts
        (``plinth.monitoring.service``)."""
        from plinth.monitoring.service import MonitorService

        if self.remote:
            from plinth.remote import RemoteMonitors

            return RemoteMonitors(self.tracking.transport)  # type: ignore[attr-defined,return-value]
        return MonitorService(self.tracking.store, self.monitoring)

    @property
    def pipelines(self) -> PipelineService:
        """Registered pipelines, their runs, steps, logs and schedules
        (``plinth.pipelines.service``)."""
        from plinth.pipelines.service import PipelineService

        if self.remote:
            from plinth.remote import RemotePipelines

            return RemotePipelines(self.tracking.transport)  # type: ignore[attr-defined,return-value]
        return PipelineService(self.tracking.store, self.tracking)

    @property
    def monitoring(self) -> MonitoringData:
        """Late labels, measured and estimated performance, input drift and profiles of
        models (``plinth.monitoring.data``): what monitors check."""
        from plinth.monitoring.data import MonitoringData

        if self.remote:
            from plinth.remote import RemoteMonitoringData

            return RemoteMonitoringData(self.tracking.transport)  # type: ignore[attr-defined,return-value]
        return MonitoringData(self.tracking.store, self.registry, self.features)

    def log_labels(
        self,
        model: str,
        labels: Sequence[LabelIn | dict[str, Any]] | None = None,
        *,
        label: Any = None,
        request_id: str | None = None,
        row: int = 0,
        entity: dict[str, Any] | None = None,
        at: datetime | int | None = None,
    ) -> LabelReceipt:
        """Record outcomes that arrive after the predictions: a batch (``labels``, each a
        ``LabelIn`` or a dict of its fields) or one (``label``, for the prediction of
        ``request_id`` (and ``row`` within it) or for the newest one of an ``entity`` such
        as ``{"customer_id": 42}``, ``at`` when it happened; default now). The batch is
        stored whole or refused naming ``labels[i].field``."""
        from plinth.monitoring.labels import LabelIn

        if labels is None:
            labels = [LabelIn(label, request_id, row, entity, at)]
        elif label is not None or request_id is not None or entity is not None:
            from plinth.errors import InvalidArgument

            raise InvalidArgument("give labels (a batch) or label= (one), not both")
        batch = [x if isinstance(x, LabelIn) else LabelIn(**x) for x in labels]
        return self.monitoring.log_labels(model, batch)

    def log_event(
        self,
        experiment: str,
        name: str,
        value: float = 1.0,
        unit: str | None = None,
        request_id: str | None = None,
        event_id: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """Record one outcome of an A/B experiment (a click, a purchase, its revenue) for a
        unit, or for the request whose exposure names the unit. ``event_id`` (a fresh uuid4
        by default) makes a retry harmless: an event id is counted once. ``at`` defaults to
        now. Returns the event id."""
        import uuid
        from datetime import UTC, datetime

        from plinth.abtests.events import Event

        event_id = uuid.uuid4().hex if event_id is None else event_id
        when = datetime.now(UTC) if at is None else at
        event = Event(
            experiment,
            name,
            event_id,
            int(when.timestamp() * 1000),
            value,
            unit,
            request_id,
        )
        self.abtests.log_events(experiment, [event])
        return event_id

    def feature_store(self) -> FeatureStore:
        """The feature store: metadata through this client. Data goes straight to the
        offline (Delta) and online (SQLite/Redis) stores named by the settings; a remote
        client uses the server's stores instead, directly when every party can reach them
        (S3, Redis), else through the server (``plinth.remote_data``)."""
        from plinth.features.offline import OfflineStore, OfflineTables
        from plinth.features.online import OnlineStore, online_store_for
        from plinth.features.store import FeatureStore

        if self._feature_store is None:
            offline: OfflineTables
            online: OnlineStore
            materializer = None
            if self.remote:
                from plinth.remote_data import remote_feature_stores

                transport = self.features.transport  # type: ignore[attr-defined]
                offline, online, materializer = remote_feature_stores(transport, self.settings)
            else:
                offline = OfflineStore(self.settings.resolved_artifact_uri)
                online = online_store_for(
                    self.settings.resolved_online_uri, timeout=self.settings.online_timeout
                )
            self._feature_store = FeatureStore(
                self.features, offline, online, materializer, self.settings.spark_master
            )
        return self._feature_store

    def read_predictions(
        self, model: str, *, version: int | None = None, since: datetime | None = None
    ) -> pd.DataFrame:
        """What model services logged, one row per prediction, oldest first:
        ``request_id``, ``at`` (UTC), ``model_version``, ``latency_ms`` (of the whole
        request), the input columns as the model used them and ``prediction``. ``model`` is
        a name (every version) or a model URI (``models:/churn/3``, ``models:/churn@production``:
        that version); ``version`` picks one version of a name; ``since`` a start time."""
        from plinth.errors import InvalidArgument
        from plinth.serving.predlog import predictions_frame

        name = model
        if model.startswith("models:/"):
            if version is not None:
                raise InvalidArgument(f"{model!r} names its version already: drop version=")
            resolved = self.get_model_version(model)
            name, version = resolved.model_name, resolved.version
        since_ms = None if since is None else int(since.timestamp() * 1000)
        return predictions_frame(self.score_jobs, name, version, since_ms)

    def close(self) -> None:
        """Release the HTTP connections of a remote client (a local one holds none)."""
        close = getattr(self.tracking, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs --------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str = "default",
        name: str | None = None,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        seed: int | None = None,
        capture_environment: bool = True,
    ) -> ActiveRun:
        """Start a run (creating the experiment if needed), with the calling code's lineage."""
        from plinth.tracking.lineage import capture_environment as environment
        from plinth.tracking.lineage import capture_lineage, seed_everything
        from plinth.tracking.run import ActiveRun

        if seed is not None:
            seed_everything(seed)
        run = self.tracking.create_run(
            experiment,
            name,
            description,
            tags,
            capture_lineage(seed),
            environment() if capture_environment else None,
        )
        self._recover_quietly()
        return ActiveRun(self, run)

    def attach_run(self, run_id: str) -> ActiveRun:
        """Log into a run another process started (a worker of a distributed training job,
        say). The run is not this process's to end: leaving its ``with`` block or exiting
        writes the buffered points and leaves the run RUNNING; ``end()`` still ends it."""
        from plinth.tracking.run import ActiveRun

        run = self.tracking.get_run(run_id)
        self.recover_runs(run_id)
        return ActiveRun(self, run, owned=False)

    def recover_runs(self, run_id: str | None = None) -> dict[str, int]:
        """Write the metric points that processes killed before their flush left in this
        Plinth home's spool (all runs of this client's store, or ``run_id``'s); returns the
        points replayed per run. Points the store already holds are skipped."""
        from plinth.errors import Conflict, NotFound
        from plinth.tracking.spool import orphans, replay

        root = self.settings.home.resolve() / "spool"
        replayed: dict[str, int] = {}
        for orphan in orphans(root, self.target, run_id):
            try:
                sent = replay(
                    orphan,
                    lambda run, batch: self.tracking.log_metric_batch(run, batch),
                )
            except NotFound:
                continue  # the run was deleted: keep the points, the user may want them
            except Conflict:
                if self.tracking.get_run(orphan.run_id).deleted_at is None:
                    raise
                continue  # deleted softly: kept for when it is restored
            if sent is not None:
                replayed[orphan.run_id] = replayed.get(orphan.run_id, 0) + sent
        return replayed

    def _recover_quietly(self) -> None:
        # The next process to start a run in this home replays what killed ones left.
        if not (self.settings.home / "spool").is_dir():
            return
        try:
            self.recover_runs()
        except Exception as exc:  # logging must not fail for a spool it could not replay
            print(f"plinth: could not replay spooled metric points: {exc}", file=sys.stderr)

    def get_run(self, run_id: str) -> Run:
        return self.tracking.get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        return self.tracking.get_metric_history(run_id, key)

    def get_metric_series(
        self,
        run_id: str,
        key: str,
        max_points: int = 2000,
        start: float | None = None,
        end: float | None = None,
    ) -> MetricSeries:
        """A metric downsampled for a chart (see ``TrackingService.get_metric_series``)."""
        return self.tracking.get_metric_series(run_id, key, max_points, start, end)

    def search_runs(
        self,
        filter: str | None = None,
        order_by: list[str] | None = None,
        experiments: list[str] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        view: str = "active",
    ) -> Page[Run]:
        """Runs matching ``filter``, e.g. ``"metrics.val_f1 > 0.8 and params.hyper.lr = 0.1"``;
        ``view`` "deleted" or "all" shows deleted runs."""
        return self.tracking.search_runs(
            filter, order_by, experiments, max_results, page_token, view
        )

    def compare_runs(self, run_ids: list[str]) -> RunComparison:
        return self.tracking.compare_runs(run_ids)

    def rename_run(self, run_id: str, name: str) -> Run:
        return self.tracking.rename_run(run_id, name)

    def delete_run(self, run_id: str) -> None:
        """Delete a run softly: hidden from searches, restorable with ``restore_run``."""
        self.tracking.delete_run(run_id)

    def restore_run(self, run_id: str) -> None:
        self.tracking.restore_run(run_id)

    def reopen_run(self, run_id: str) -> Run:
        """Make an ended run RUNNING again, to log more to it."""
        return self.tracking.reopen_run(run_id)

    def close_stale_runs(
        self, timeout_seconds: float = 300.0, experiment: str | None = None
    ) -> list[str]:
        """Mark runs whose process stopped sending heartbeats as KILLED."""
        return self.tracking.close_stale_runs(timeout_seconds, experiment)

    # -- experiments -------------------------------------------------------------------

    def create_experiment(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> Experiment:
        return self.tracking.create_experiment(name, description, tags)

    def get_experiment(self, experiment: str) -> Experiment:
        return self.tracking.get_experiment(experiment)

    def list_experiments(
        self, name_like: str | None = None, max_results: int = 1000, view: str = "active"
    ) -> Page[Experiment]:
        return self.tracking.list_experiments(name_like, max_results, view=view)

    def rename_experiment(self, experiment: str, new_name: str) -> Experiment:
        return self.tracking.rename_experiment(experiment, new_name)

    def delete_experiment(self, experiment: str) -> None:
        """Delete an experiment and its runs softly: hidden from listings, restorable with
        ``restore_experiment``."""
        self.tracking.delete_experiment(experiment)

    def restore_experiment(self, experiment: str) -> None:
        self.tracking.restore_experiment(experiment)

    # -- artifacts ---------------------------------------------------------------------

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        return self.tracking.list_artifacts(run_id, path)

    def upload_artifact(self, run_id: str, local_path: str | Path, artifact_path: str) -> None:
        with open(local_path, "rb") as source:
            self._upload(run_id, artifact_path, source)

    def upload_artifact_bytes(self, run_id: str, data: bytes, artifact_path: str) -> None:
        self._upload(run_id, artifact_path, io.BytesIO(data))

    def download_artifact(self, run_id: str, artifact_path: str, dest: str | Path) -> Path:
        """Copy one artifact file to ``dest`` (a file path, or a folder to put it in)."""
        target = Path(dest)
        if target.is_dir():
            target = target / Path(artifact_path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:  # an existing file is replaced only by a complete download
            with open(partial, "wb") as out:
                self._download(run_id, artifact_path, out)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def read_artifact(self, run_id: str, artifact_path: str) -> bytes:
        out = io.BytesIO()
        self._download(run_id, artifact_path, out)
        return out.getvalue()

    def _upload(self, run_id: str, artifact_path: str, source: IO[bytes]) -> None:
        if self.remote:
            self.tracking.upload_artifact(run_id, artifact_path, source)  # type: ignore[attr-defined]
        else:
            with self.tracking.open_artifact_writer(run_id, artifact_path) as out:
                shutil.copyfileobj(source, out, 1024 * 1024)

    def _download(self, run_id: str, artifact_path: str, out: IO[bytes]) -> None:
        if self.remote:
            self.tracking.download_artifact(run_id, artifact_path, out)  # type: ignore[attr-defined]
        else:
            with self.tracking.open_artifact_reader(run_id, artifact_path) as source:
                shutil.copyfileobj(source, out, 1024 * 1024)


def connect(
    uri: str | None = None,
    *,
    store_uri: str | None = None,
    artifact_uri: str | None = None,
    **settings: Any,
) -> Client:
    """A client for a Plinth server (``http://host:port``) or for a store used in-process.

    With no arguments: the server named by ``PLINTH_URI``, else the embedded store under
    ``PLINTH_HOME``. A non-HTTP ``uri`` is taken as the metadata store URI.
    """
    from plinth.config import load_settings

    if uri and not uri.startswith(("http://", "https://")):
        store_uri, uri = uri, None
    overrides = {"store_uri": store_uri, "artifact_uri": artifact_uri, **settings}
    resolved = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    server = uri or resolved.uri
    if server:
        from plinth.auth.credentials import saved_token
        from plinth.remote import remote_services

        token = resolved.token or saved_token(server)
        # one server, one spool folder: http://h:5151/ and http://h:5151 name the same
        return Client(
            *remote_services(server, token), resolved, remote=True, target=server.rstrip("/")
        )
    from plinth.features.service import FeatureService
    from plinth.registry.service import RegistryService
    from plinth.serving.jobs import ScoreJobService
    from plinth.store.artifacts import ArtifactStore
    from plinth.store.engine import open_store
    from plinth.tracking.service import TrackingService

    tracking = TrackingService(
        open_store(resolved.resolved_store_uri, **resolved.store_timeouts),
        ArtifactStore(resolved.resolved_artifact_uri),
    )
    if resolved.token:
        _act_locally_as(tracking.store, resolved.token)
    registry = RegistryService(tracking.store, tracking.artifacts, tracking)
    features = FeatureService(tracking.store, resolved.resolved_artifact_uri)
    jobs = ScoreJobService(tracking.store)
    return Client(
        tracking, registry, features, jobs, resolved, remote=False, target=tracking.store.uri
    )


def _act_locally_as(store: Any, token: str) -> None:
    """A token given to a client of a store (not a server): act as its user, so that the
    same calls get the same answers as through a server."""
    from plinth.auth.access import access_for
    from plinth.auth.identity import Authenticator

    access = access_for(store)
    access.default = Authenticator(access).authenticate(token)


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The client the module-level functions use, made on first use from the settings."""
    global _default
    with _default_lock:
        if _default is None:
            _default = connect()
        return _default


def set_default_client(client: Client | None) -> None:
    global _default
    with _default_lock:
        _default = client
