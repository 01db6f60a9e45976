"""The model side of monitoring as one service: labels, performance per window, model input
drift (serving windows and batch score jobs against the version's training data) and the
stored profiles for charts (``/profiles``, ``/profile-deciles``).

A version's training-data profile is computed once, from its first linked training dataset
(all its columns, the label included), stored as ``training_data`` (subject
``model/version``) and re-used. A serving window's profile is stored (``serving_window``,
with its start and end) when a monitor evaluates it, so an evaluation can point at what it
compared; a dashboard's look at the same drift stores nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument, NotFound, PlinthError
from plinth.monitoring.labels import LabelIn, LabelReceipt, check_labels, join_labels, read_labels
from plinth.monitoring.performance import Performance, Task, measure
from plinth.monitoring.profile_views import (
    DecileRow,
    ProfileInfo,
    ProfileView,
    decile_rows,
    list_profile_rows,
    profile_view,
    readable_profile,
)
from plinth.monitoring.windows import (
    MAX_WINDOW_ROWS,
    PREDICTION,
    SCORE,
    TrainingData,
    Window,
    iso,
    read_window,
    read_windows,
    storage_options,
    training_data,
)
from plinth.stats.drift import drift_report
from plinth.stats.profile import ColumnProfile, TableProfile, profile, profile_delta
from plinth.store.profiles import load_profile, profile_rows, save_profile
from plinth.store.schema import score_jobs
from plinth.store.sql import now_ms as clock

if TYPE_CHECKING:
    from plinth.features.service import FeatureService
    from plinth.registry.service import RegistryService
    from plinth.registry.types import ModelVersion
    from plinth.store.engine import Store

MAX_WINDOWS = 366
MAX_WINDOW_SECONDS = 366 * 86_400
MAX_SPAN_SECONDS = 10 * 366 * 86_400  # all the windows of a performance call together
#: ``now_ms`` a caller may give: from 2000-01-01 to 2100-01-01 (UTC)
EARLIEST_MS = 946_684_800_000
LATEST_MS = 4_102_444_800_000
_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class InputDrift:
    """A model version's inputs (and predictions) against its training data.

    ``status``: ok | drift | skipped (``summary`` says why). ``report``: the inputs'
    ``DriftReport.to_dict()``; ``prediction``: the prediction column against the training
    labels (a one-column ``DriftReport.to_dict()``, None with ``prediction_note`` saying why).
    ``subject``: what was compared (a serving window, or a score job)."""

    __pydantic_config__ = _JSON

    model_name: str
    version: int
    status: str
    summary: str
    subject: str
    report: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    prediction_note: str = ""
    reference_profile: int | None = None
    current_profile: int | None = None
    window_start: int | None = None
    window_end: int | None = None
    rows: int = 0
    capped: bool = False
    not_logged: list[str] = field(default_factory=list)  # inputs the current data lacks
    drifted_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Reference:
    profile_id: int
    profile: TableProfile
    data: TrainingData


class MonitoringData:
    """Labels, performance, input drift and profiles of the models in one central store."""

    def __init__(self, store: Store, registry: RegistryService, features: FeatureService) -> None:
        self.store = store
        self.registry = registry
        self.features = features

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- labels --------------------------------------------------------------------------

    @endpoint("POST", "/models/{model_name}/labels")
    @guarded(Action.WRITE, Kind.MODEL, "model_name")
    def log_labels(self, model_name: str, labels: list[LabelIn]) -> LabelReceipt:
        """Store late labels of a model's predictions (``plinth.monitoring.labels``): the
        batch (at most 10,000) is checked whole and stored in one transaction, or refused
        naming ``labels[i].field``. Request ids the prediction log does not hold are stored
        and named in the receipt. WRITE on the model, as for A/B events: labels change its
        measured performance."""
        from plinth.monitoring.labels import store_labels

        self.registry.get_registered_model(model_name)
        now = clock()
        checked = check_labels(list(labels), now)
        with self.store.write() as conn:
            return store_labels(conn, model_name, checked, self.access.actor(), now)

    # -- performance ---------------------------------------------------------------------

    @endpoint("GET", "/models/{model_name}/performance")
    @guarded(Action.READ, Kind.MODEL, "model_name")
    def performance(
        self,
        model_name: str,
        version: int | None = None,
        window_seconds: int = 86_400,
        windows: int = 7,
        metric: str | None = None,
        now_ms: int | None = None,
    ) -> Performance:
        """The version's performance in each of the last ``windows`` windows of
        ``window_seconds`` (oldest first): measured on the predictions labels were joined
        to, estimated (CBPE, binary classifiers with probability outputs) on all of them,
        and its validation metric. ``version``: default the PRODUCTION one, else the
        newest."""
        check_window_seconds(window_seconds)
        if not 1 <= windows <= MAX_WINDOWS:
            raise InvalidArgument(f"windows must be from 1 to {MAX_WINDOWS}, not {windows}")
        if windows * window_seconds > MAX_SPAN_SECONDS:
            raise InvalidArgument(
                f"windows x window_seconds must be at most {MAX_SPAN_SECONDS} s (10 years), "
                f"not {windows} x {window_seconds}"
            )
        end = clock() if now_ms is None else check_now_ms(now_ms)
        mv = self.model_version(model_name, version)
        window_ms = window_seconds * 1000
        start = end - windows * window_ms
        window = read_windows(self.store, model_name, mv.version, start, end, windows, meta=True)
        with self.store.read() as conn:
            found = read_labels(conn, model_name, start)
        joined = join_labels(window.table, found.table)
        measured = measure(
            model_name, mv.version, joined, start=start, window_ms=window_ms, windows=windows,
            metric=metric, task_hint=self._task_hint(mv), validation=self._validation(mv),
            capped=window.capped,
        )  # fmt: skip
        if not found.capped:
            return measured
        note = f"{found.note()} (of those that happened since {iso(start)})"
        return dataclasses.replace(measured, capped=True, skipped=[*measured.skipped, note])

    def _task_hint(self, mv: ModelVersion) -> Task | None:
        """Binary or regression, from the training labels' profile (None: unknown)."""
        try:
            reference = self.reference(mv)
        except PlinthError:  # the training data is gone or unreadable: judge by the labels
            return None
        if isinstance(reference, str):
            return None
        label = reference.data.label
        column = reference.profile.columns.get(label) if label is not None else None
        if column is None:
            return None
        values = column.values or {}
        if column.kind == "categorical" and len(values) == 2:
            if set(values) == {"false", "true"}:
                return Task("binary", 1)  # booleans: true is 1
            negative, positive = sorted(values)
            return Task("binary", positive, negative)
        if column.kind == "numeric" and values and set(values) <= {"0", "1", "0.0", "1.0"}:
            return Task("binary", 1)
        return Task("regression") if column.kind == "numeric" else None

    def _validation(self, mv: ModelVersion) -> dict[str, float]:
        """The version's metrics: its registration's, updated by its run's latest."""
        metrics = {
            k: float(v)
            for k, v in (mv.lineage.get("metrics") or {}).items()
            if isinstance(v, int | float)
        }
        if mv.run_id:
            try:
                run = self.registry.tracking.get_run(mv.run_id)
                metrics.update({k: s.last for k, s in run.metrics.items() if s.last is not None})
            except PlinthError:  # the run was deleted or is not readable: keep the lineage
                pass
        return metrics

    # -- input drift ---------------------------------------------------------------------

    @endpoint("GET", "/models/{model_name}/input-drift")
    @guarded(Action.READ, Kind.MODEL, "model_name")
    def input_drift(
        self,
        model_name: str,
        version: int | None = None,
        window_seconds: int = 86_400,
        preset: str = "plinth",
        columns: list[str] | None = None,
        score_job: int | None = None,
        max_drifted_share: float | None = None,
        now_ms: int | None = None,
    ) -> InputDrift:
        """The version's inputs in the prediction log's last ``window_seconds`` against its
        training data, per input column, and its predictions against the training labels;
        with ``score_job``, that batch job's inputs and scores against the training data of
        the version that scored them. Nothing is stored."""
        check_window_seconds(window_seconds)
        now = clock() if now_ms is None else check_now_ms(now_ms)
        mv = self.model_version(model_name, version)
        return self.drift(
            mv, window_seconds=window_seconds, preset=preset, columns=columns,
            score_job=score_job, max_drifted_share=max_drifted_share,
            now_ms=now, save=False,
        )  # fmt: skip

    def drift(
        self,
        mv: ModelVersion,
        *,
        window_seconds: int,
        preset: str,
        columns: list[str] | None,
        score_job: int | None,
        max_drifted_share: float | None,
        now_ms: int,
        save: bool,
    ) -> InputDrift:
        """``input_drift`` for a resolved version; ``save`` stores the window's profile."""
        check_window_seconds(window_seconds)
        check_now_ms(now_ms)
        if score_job is not None:  # a job is judged against the version that scored it
            scored = self._job_version(mv.model_name, score_job)
            if scored != mv.version:
                mv = self.registry.get_model_version(mv.model_name, scored)
        what = f"version {mv.version} of {mv.model_name}"
        reference = self.reference(mv)
        if isinstance(reference, str):
            return InputDrift(mv.model_name, mv.version, "skipped", reference, "training data")
        current: tuple[str, int | None, TableProfile, Window | None] | InputDrift
        if score_job is not None:
            current = self._job_profile(mv, score_job)
        else:
            current = self._window_profile(mv, now_ms - window_seconds * 1000, now_ms, save)
        if isinstance(current, InputDrift):
            return current
        subject, current_id, cur, window = current
        names = mv.signature.input_names if mv.signature is not None else _inputs(cur)
        if columns:
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise InvalidArgument(f"column {unknown[0]!r} is not an input of {what}")
            names = list(columns)
        compared = [c for c in names if c in reference.profile.columns and c in cur.columns]
        not_logged = [c for c in names if c not in cur.columns]
        base = InputDrift(
            mv.model_name, mv.version, "skipped", "", subject,
            reference_profile=reference.profile_id, current_profile=current_id,
            window_start=None if window is None else window.start,
            window_end=None if window is None else window.end,
            rows=cur.rows, capped=bool(window and window.capped), not_logged=not_logged,
        )  # fmt: skip
        if not compared:
            why = f"no input of {what} is in both {reference.data.source} and {subject}"
            return dataclasses.replace(base, summary=f"skipped: {why}")
        report = drift_report(
            reference.profile, cur, preset=preset, columns=compared,
            share_threshold=max_drifted_share,
        )  # fmt: skip
        prediction, note = self._prediction_drift(reference, window, cur, preset)
        drifted = [c.column for c in report.columns if c.drifted]
        status = "drift" if report.dataset_drifted else "ok"
        summary = f"{what}, {subject}: {report.summary()}"
        if drifted:
            summary += f" ({', '.join(drifted[:8])}{', ...' if len(drifted) > 8 else ''})"
        if window is not None and window.capped:
            summary += f"; {window.note()}"
        return dataclasses.replace(
            base, status=status, summary=summary, report=report.to_dict(),
            prediction=prediction, prediction_note=note, drifted_columns=drifted,
        )  # fmt: skip

    def reference(self, mv: ModelVersion) -> _Reference | str:
        """The training-data profile of ``mv`` (computed and stored the first time), or why
        there is none."""
        data = training_data(self.features, mv)
        if data is None:
            return f"skipped: version {mv.version} of {mv.model_name} has no training data linked"
        subject = f"{mv.model_name}/{mv.version}"
        with self.store.read() as conn:
            rows = profile_rows(
                conn, subject_kind="training_data", subject=subject, model_name=mv.model_name,
                model_version=mv.version, limit=1,
            )  # fmt: skip
            if rows:
                return _Reference(rows[0].id, load_profile(conn, rows[0].id), data)
        try:
            computed = profile_delta(data.uri, storage_options=storage_options(data.uri))
        except PlinthError:
            raise
        except Exception as e:  # the rows were deleted or cannot be reached
            raise NotFound(f"the rows of {data.source} at {data.uri} cannot be read: {e}") from e
        with self.store.write() as conn:
            stored = save_profile(
                conn, computed, subject_kind="training_data", subject=subject,
                model_name=mv.model_name, model_version=mv.version,
                created_by=self.access.actor(),
            )  # fmt: skip
        return _Reference(stored, computed, data)

    def _window_profile(
        self, mv: ModelVersion, start: int, end: int, save: bool
    ) -> tuple[str, int | None, TableProfile, Window] | InputDrift:
        window = read_window(self.store, mv.model_name, mv.version, start, end)
        subject = f"serving window {iso(start)} to {iso(end)}"
        if not window.rows:
            why = f"no predictions of version {mv.version} of {mv.model_name} in the {subject}"
            return InputDrift(
                mv.model_name, mv.version, "skipped", f"skipped: {why}", subject,
                window_start=start, window_end=end,
            )  # fmt: skip
        columns = [c for c in window.table.column_names if c != SCORE]
        current = profile(window.table.select(columns))
        current_id = None
        if save:
            with self.store.write() as conn:
                current_id = save_profile(
                    conn, current, subject_kind="serving_window",
                    subject=f"{mv.model_name}/{mv.version}", model_name=mv.model_name,
                    model_version=mv.version, window_start=start, window_end=end,
                    created_by=self.access.actor(),
                )  # fmt: skip
        return subject, current_id, current, window

    def _job_version(self, model_name: str, job_id: int) -> int:
        sj = score_jobs.c
        with self.store.read() as conn:
            found = conn.execute(
                select(sj.model_version).where(sj.id == job_id, sj.model_name == model_name)
            ).scalar()
        if found is None:
            raise NotFound(f"score job {job_id} of model {model_name!r} not found")
        return int(found)

    def _job_profile(
        self, mv: ModelVersion, job_id: int
    ) -> tuple[str, int | None, TableProfile, None] | InputDrift:
        with self.store.read() as conn:
            job = conn.execute(
                select(score_jobs.c.job_key, score_jobs.c.model_name).where(
                    score_jobs.c.id == job_id
                )
            ).first()
            if job is None or job.model_name != mv.model_name:
                raise NotFound(f"score job {job_id} of model {mv.model_name!r} not found")
            rows = profile_rows(conn, subject_kind="score_job", subject=job.job_key, limit=1)
            found = load_profile(conn, rows[0].id) if rows else None
        subject = f"score job {job_id}"
        if found is None:
            why = f"{subject} has no stored profile of its inputs (it delivered no rows?)"
            return InputDrift(mv.model_name, mv.version, "skipped", f"skipped: {why}", subject)
        return subject, rows[0].id, found, None

    def _prediction_drift(
        self, reference: _Reference, window: Window | None, current: TableProfile, preset: str
    ) -> tuple[dict[str, Any] | None, str]:
        label = reference.data.label
        if label is None or label not in reference.profile.columns:
            return None, f"{reference.data.source} has no label to compare the predictions with"
        if PREDICTION not in current.columns:
            return None, "the current data holds no prediction column"
        trained = dataclasses.replace(reference.profile.columns[label], name=PREDICTION)
        ref = TableProfile(reference.profile.rows, {PREDICTION: trained})
        cur = _prediction_profile(window, current, trained)
        try:
            report = drift_report(ref, cur, preset=preset, columns=[PREDICTION])
        except InvalidArgument as e:  # e.g. the predictions' type is not the labels'
            return None, f"predictions not compared with the training labels: {e.message}"
        return report.to_dict(), ""

    # -- versions ------------------------------------------------------------------------

    def model_version(self, model_name: str, version: int | None) -> ModelVersion:
        """``version`` of the model; default its PRODUCTION version, else its newest."""
        if version is not None:
            return self.registry.get_model_version(model_name, version)
        model = self.registry.get_registered_model(model_name)
        chosen = model.production_version or model.latest_version
        if chosen is None:
            raise NotFound(f"registered model {model_name!r} has no versions")
        return self.registry.get_model_version(model_name, chosen)

    # -- profiles ------------------------------------------------------------------------

    @endpoint("GET", "/profiles")
    @guarded()
    def list_profiles(
        self,
        subject_kind: str | None = None,
        model_name: str | None = None,
        model_version: int | None = None,
        group_name: str | None = None,
        limit: int = 100,
    ) -> list[ProfileInfo]:
        """Stored profiles, newest first, of what the caller may see."""
        return list_profile_rows(
            self.access, subject_kind, model_name, model_version, group_name, limit
        )

    @endpoint("GET", "/profiles/{profile_id}")
    @guarded(check=readable_profile)
    def get_profile(
        self, profile_id: int, bins: int = 30, compare_to: int | None = None
    ) -> ProfileView:
        """A stored profile for charts: per column its figures, deciles, top values and its
        histogram in about ``bins`` display bins (on the same edges as profile
        ``compare_to``'s, for a reference beside it)."""
        if compare_to is not None:
            readable_profile(self.access, {"profile_id": compare_to})
        with self.store.read() as conn:
            return profile_view(conn, profile_id, bins, compare_to)

    @endpoint("GET", "/profile-deciles")
    @guarded()
    def deciles(
        self,
        model_name: str | None = None,
        subject_kind: str | None = None,
        column: str | None = None,
        limit: int = 1_000,
    ) -> list[DecileRow]:
        """The deciles metadata table: per model version, kind of subject (training data,
        serving window, score job) and column, the deciles of its newest profile."""
        return decile_rows(self.access, model_name, subject_kind, column, limit)


def check_window_seconds(window_seconds: int) -> int:
    """``window_seconds`` if from 60 s to 366 days; else InvalidArgument naming it."""
    if not 60 <= window_seconds <= MAX_WINDOW_SECONDS:
        raise InvalidArgument(
            f"window_seconds must be from 60 to {MAX_WINDOW_SECONDS} (366 days), "
            f"not {window_seconds}"
        )
    return window_seconds


def check_now_ms(now_ms: int) -> int:
    """``now_ms`` if it is a time from 2000 to 2100 (ms); else InvalidArgument naming it."""
    if isinstance(now_ms, bool) or not EARLIEST_MS <= now_ms < LATEST_MS:
        raise InvalidArgument(
            f"now_ms must be ms since the epoch from {EARLIEST_MS} (2000-01-01) to "
            f"{LATEST_MS} (2100-01-01), not {now_ms}"
        )
    return now_ms


def _inputs(current: TableProfile) -> list[str]:
    return [c for c in current.columns if c != PREDICTION and not c.startswith("__")]


def _prediction_profile(
    window: Window | None, current: TableProfile, trained: ColumnProfile
) -> TableProfile:
    """The predictions as the labels are: a window whose outputs are probabilities of a
    binary label is compared as predicted classes (probability >= 0.5)."""
    logged = current.columns[PREDICTION]
    if window is None or SCORE not in window.table.column_names:
        return TableProfile(current.rows, {PREDICTION: logged})
    if logged.kind == trained.kind and not _is_binary(trained):
        return TableProfile(current.rows, {PREDICTION: logged})
    classes = pc.cast(pc.greater_equal(window.table[SCORE], 0.5), pa.int64())
    return profile(pa.table({PREDICTION: classes}))


def _is_binary(column: ColumnProfile) -> bool:
    return column.values is not None and set(column.values) <= {
        "0",
        "1",
        "0.0",
        "1.0",
        "true",
        "false",
    }


__all__ = ["MAX_WINDOW_ROWS", "InputDrift", "LabelIn", "LabelReceipt", "MonitoringData"]
