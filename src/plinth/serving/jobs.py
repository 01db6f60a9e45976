"""Score jobs: the central store's record of every batch scoring job (model version, input,
output, status, rows, the checks and their verdicts, the Delta version that delivered
it). A service with endpoints, so a job run by a client of a remote server is recorded on
that server as one run locally is recorded in its store."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import select

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument, NotFound
from plinth.serving.checks import CheckResult
from plinth.serving.logged import PredictionLogReads
from plinth.store.schema import score_jobs
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    upsert,
)
from plinth.tracking.types import Page

if TYPE_CHECKING:
    from sqlalchemy import Row


STATUSES = ("RUNNING", "DELIVERED", "BLOCKED", "FAILED")


@dataclass(frozen=True)
class ScoreJob:
    __pydantic_config__: ClassVar[dict[str, str]] = {"ser_json_inf_nan": "strings"}

    id: int
    job_key: str
    model_name: str
    model_version: int
    input: str
    output: str
    status: str  # RUNNING, DELIVERED, BLOCKED, FAILED
    rows: int | None = None
    checks: list[CheckResult] = field(default_factory=list)
    output_version: int | None = None  # the Delta version that delivered the scores
    started_at: int = 0  # ms since the epoch
    finished_at: int | None = None
    host: str | None = None  # where the latest run ran (its process id below)
    pid: int | None = None
    started_by: str = ""  # the caller that started the latest run


def model_of_job(access: Access, job_key: Any) -> str | None:
    """A job's model (None for a job never started: the method says so)."""
    with access.store.read() as conn:
        found: str | None = conn.execute(
            select(score_jobs.c.model_name).where(score_jobs.c.job_key == str(job_key))
        ).scalar()
    return found


def readable_job(access: Access, arguments: dict[str, Any]) -> None:
    """viewer on the job's model"""
    job_key = arguments["job_key"]
    model = model_of_job(access, job_key)
    if model is None:
        return  # the method says it was never started
    try:
        access.require(Action.READ, Kind.MODEL, model, repr(model))
    except NotFound:  # the job of a model the caller may not see is not there either
        raise NotFound(f"score job {job_key!r} not found") from None


def own_job(access: Access, arguments: dict[str, Any]) -> None:
    """viewer on the job's model, and the job's starter or an editor of its model"""
    readable_job(access, arguments)
    with access.store.read() as conn:
        row = conn.execute(
            select(score_jobs.c.model_name, score_jobs.c.started_by).where(
                score_jobs.c.job_key == str(arguments["job_key"])
            )
        ).first()
    if row is not None and row.started_by != access.actor():
        access.require(Action.WRITE, Kind.MODEL, row.model_name, repr(row.model_name))


def writable_job(access: Access, arguments: dict[str, Any]) -> None:
    """editor on the job's model (a job's profile is what its drift monitors judge)"""
    readable_job(access, arguments)
    model = model_of_job(access, arguments["job_key"])
    if model is not None:
        access.require(Action.WRITE, Kind.MODEL, model, repr(model))


class ScoreJobService(PredictionLogReads):
    """Serving's records in the central store: score jobs, and reading the prediction log.
    A job is seen and recorded by those who may read (predict with) its model."""

    @property
    def access(self) -> Access:
        return access_for(self.store)

    @endpoint("PUT", "/score-jobs/{job_key}")
    @guarded(Action.READ, Kind.MODEL, "model_name")
    def start_score_job(
        self,
        job_key: str,
        model_name: str,
        model_version: int,
        input: str,
        output: str,
        host: str | None = None,
        pid: int | None = None,
    ) -> ScoreJob:
        """Record a job as RUNNING (again, for a job key seen before: a re-run) by process
        ``pid`` on ``host``, so a reconcile there can tell when the run died."""
        _check_key(job_key)
        if not 0 < len(model_name) <= 500:
            raise InvalidArgument("model_name must have 1 to 500 characters")
        _check_count("model_version", model_version, 1, _INT32)
        if host is not None and not 0 < len(host) <= 255:
            raise InvalidArgument("host must have 1 to 255 characters")
        if pid is not None:
            _check_count("pid", pid, 1, _INT32)
        row = {
            "job_key": job_key, "model_name": model_name, "model_version": model_version,
            "input": input, "output": output, "status": "RUNNING", "rows": None,
            "checks": "[]", "output_version": None, "started_at": now_ms(), "finished_at": None,
            "host": host, "pid": pid, "started_by": self.access.actor(),
        }  # fmt: skip
        update = {k: (lambda ex, k=k: getattr(ex, k)) for k in row if k != "job_key"}
        # a re-run under a key seen before takes over that job: as ending it would
        if model_of_job(self.access, job_key) is not None:
            own_job(self.access, {"job_key": job_key})
        with self.store.write() as conn:
            upsert(conn, score_jobs, [row], ["job_key"], update)
            self.access.record(
                "score_job_started",
                f"model:{model_name}",
                detail=f"job {job_key}: v{model_version} {input} -> {output}",
                conn=conn,
            )
        return self._load_job(job_key)

    @endpoint("PATCH", "/score-jobs/{job_key}")
    @guarded(check=own_job)
    def finish_score_job(
        self,
        job_key: str,
        status: str,
        rows: int | None = None,
        checks: list[CheckResult] | None = None,
        output_version: int | None = None,
    ) -> ScoreJob:
        """Record how a job ended; ``rows``, ``checks`` and ``output_version`` when given."""
        _check_key(job_key)
        if status not in STATUSES[1:]:
            raise InvalidArgument(f"a job ends {', '.join(STATUSES[1:])}, not {status!r}")
        for name, value in (("rows", rows), ("output_version", output_version)):
            if value is not None:
                _check_count(name, value, 0, _INT63)
        values: dict[str, Any] = {"status": status, "finished_at": now_ms()}
        if rows is not None:
            values["rows"] = rows
        if checks is not None:
            values["checks"] = json.dumps([asdict(c) for c in checks])
        if output_version is not None:
            values["output_version"] = output_version
        with self.store.write() as conn:
            done = conn.execute(
                score_jobs.update().where(score_jobs.c.job_key == job_key).values(values)
            )
        if done.rowcount == 0:
            raise NotFound(f"score job {job_key!r} was never started")
        return self._load_job(job_key)

    @endpoint("POST", "/score-jobs/{job_key}/checks")
    @guarded(check=own_job)
    def record_score_checks(self, job_key: str, rows: int, checks: list[CheckResult]) -> None:
        """Record a RUNNING job's checks, judged before its commit: a run killed after the
        commit leaves them for the reconcile that marks the job DELIVERED. A job no longer
        running (another run of it ended it) keeps what that run recorded."""
        _check_key(job_key)
        _check_count("rows", rows, 0, _INT63)
        values = {"rows": rows, "checks": json.dumps([asdict(c) for c in checks])}
        with self.store.write() as conn:
            conn.execute(
                score_jobs.update()
                .where(score_jobs.c.job_key == job_key, score_jobs.c.status == "RUNNING")
                .values(values)
            )

    @endpoint("POST", "/score-jobs/{job_key}/profile")
    @guarded(check=writable_job)
    def record_score_profile(self, job_key: str, profile: dict[str, Any]) -> int:
        """Store the profile of a job's model inputs and scores (``TableProfile.to_dict()``)
        as a profile of subject kind ``score_job`` (subject: the job key), for input drift
        monitoring; returns its id. A profile that does not read as one, or (the job
        finished) not of the rows the job scored, is refused (InvalidArgument)."""
        from plinth.store.profiles import received_profile, save_profile

        job = self._load_job(job_key)
        table = received_profile(profile, of=f"score job {job_key!r}", rows=job.rows)
        with self.store.write() as conn:
            return save_profile(
                conn, table, subject_kind="score_job", subject=job_key,
                model_name=job.model_name, model_version=job.model_version,
                score_job_id=job.id, window_start=job.started_at,
                window_end=job.finished_at or now_ms(), created_by=self.access.actor(),
            )  # fmt: skip

    @endpoint("GET", "/score-jobs/{job_key}")
    @guarded(check=readable_job)
    def get_score_job(self, job_key: str) -> ScoreJob:
        return self._load_job(job_key)

    def _load_job(self, job_key: str) -> ScoreJob:
        with self.store.read() as conn:
            row = conn.execute(select(score_jobs).where(score_jobs.c.job_key == job_key)).first()
        if row is None:
            raise NotFound(f"score job {job_key!r} not found")
        return _job(row)

    @endpoint("GET", "/score-jobs")
    @guarded()
    def list_score_jobs(self, model_name: str | None = None, limit: int = 100) -> list[ScoreJob]:
        """The latest jobs first, of one model or all: of the models the caller may see."""
        _check_count("limit", limit, 1, 10_000)
        return self._jobs(model_name, None, 0, limit)

    @guarded()
    def page_score_jobs(
        self,
        model_name: str | None = None,
        status: str | None = None,
        max_results: int = 50,
        page_token: str | None = None,
    ) -> Page[ScoreJob]:
        """A page of ``list_score_jobs``, also filtered by status (the dashboard's list)."""
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        found = self._jobs(model_name, status, offset, limit + 1)
        more = encode_page_token(offset + limit) if len(found) > limit else None
        return Page(found[:limit], more)

    def _jobs(
        self, model_name: str | None, status: str | None, offset: int, limit: int
    ) -> list[ScoreJob]:
        query = select(score_jobs).order_by(score_jobs.c.id.desc()).offset(offset).limit(limit)
        if model_name is not None:
            query = query.where(score_jobs.c.model_name == model_name)
        if status is not None:
            query = query.where(score_jobs.c.status == status)
        visible = self.access.visible(Kind.MODEL)
        if visible is not None:
            query = query.where(score_jobs.c.model_name.in_(visible))
        with self.store.read() as conn:
            return [_job(row) for row in conn.execute(query).all()]


_INT32 = 2**31 - 1
_INT63 = 2**63 - 1


def _check_key(job_key: str) -> None:
    if not 0 < len(job_key) <= 128:
        raise InvalidArgument(f"a job key must have 1 to 128 characters, not {len(job_key)}")


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be from {low} to {high}, not {value}")


def _job(row: Row[Any]) -> ScoreJob:
    values = dict(row._mapping)
    values["checks"] = [CheckResult(**c) for c in json.loads(values["checks"] or "[]")]
    return ScoreJob(**values)
