"""Score jobs and the prediction log are seen by those who may read the model they score."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import plinth
from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.client import Client
from plinth.serving.checks import CheckResult
from tests.serving.conftest import logistic

BOB = Principal("bob", Role.EDITOR, via="token")


@pytest.fixture
def auth(client: Client) -> AuthService:
    service = AuthService(client.tracking.store)
    service.create_user("bob", Role.EDITOR)
    client.register_model(logistic(), name="churn")
    client.register_model(logistic(), name="secret")
    service.revoke_grant(Kind.MODEL, "secret", "everyone", "*")
    return service


def test_jobs_of_a_private_model_are_hidden(client: Client, auth: AuthService) -> None:
    jobs = client.score_jobs
    jobs.start_score_job("s-1", "secret", 1, "in.parquet", "out")
    jobs.start_score_job("c-1", "churn", 1, "in.parquet", "out")
    with acting_as(BOB):
        assert [j.job_key for j in jobs.list_score_jobs()] == ["c-1"]
        assert jobs.list_score_jobs(model_name="secret") == []
        for call in (
            lambda: jobs.get_score_job("s-1"),
            lambda: jobs.finish_score_job("s-1", "FAILED"),
            lambda: jobs.record_score_checks("s-1", 3, [CheckResult("rows", True, "ok")]),
            lambda: jobs.start_score_job("s-2", "secret", 1, "in.parquet", "out"),
            lambda: jobs.start_score_job("s-1", "churn", 1, "in.parquet", "out"),  # take it over
            lambda: jobs.list_logged_requests("secret"),
        ):
            with pytest.raises(plinth.NotFound, match=r"'s-1' not found|secret"):
                call()
        assert jobs.get_score_job("c-1").status == "RUNNING"
    job = jobs.get_score_job("s-1")
    assert (job.model_name, job.status, job.rows) == ("secret", "RUNNING", None)
    assert [j.job_key for j in jobs.list_score_jobs()] == ["c-1", "s-1"]


def test_a_reader_of_the_model_runs_its_jobs(client: Client, auth: AuthService) -> None:
    auth.grant(Kind.MODEL, "secret", "user", "bob", "viewer")
    jobs = client.score_jobs
    with acting_as(BOB):
        jobs.start_score_job("s-1", "secret", 1, "in.parquet", "out")
        jobs.record_score_checks("s-1", 3, [CheckResult("rows", True, "ok")])
        assert jobs.finish_score_job("s-1", "DELIVERED", 3).status == "DELIVERED"
        assert [j.job_key for j in jobs.list_score_jobs(model_name="secret")] == ["s-1"]
        assert jobs.list_logged_requests("secret") == []
    started = auth.list_security_events(event="score_job_started")
    assert [(e.actor, e.target) for e in started] == [("bob", "model:secret")]
    assert "s-1" in started[0].detail


def test_only_its_starter_or_an_editor_of_the_model_ends_a_job(
    client: Client, auth: AuthService
) -> None:
    auth.create_user("carol", Role.EDITOR)
    auth.grant(Kind.MODEL, "secret", "user", "bob", "viewer")
    auth.grant(Kind.MODEL, "secret", "user", "carol", "viewer")
    jobs = client.score_jobs
    with acting_as(BOB):
        assert jobs.start_score_job("s-1", "secret", 1, "in", "out").started_by == "bob"
    with acting_as(Principal("carol", Role.EDITOR, via="token")):
        with pytest.raises(plinth.PermissionDenied, match="editor"):
            jobs.finish_score_job("s-1", "FAILED")
        with pytest.raises(plinth.PermissionDenied):
            jobs.record_score_checks("s-1", 3, [CheckResult("rows", True, "ok")])
    assert jobs.get_score_job("s-1").status == "RUNNING"
    auth.grant(Kind.MODEL, "secret", "user", "carol", "editor")
    with acting_as(Principal("carol", Role.EDITOR, via="token")):
        assert jobs.finish_score_job("s-1", "FAILED").status == "FAILED"


def test_every_score_job_operation_has_a_rule() -> None:
    from plinth.api import endpoints_of
    from plinth.serving.jobs import ScoreJobService

    for ep in endpoints_of(ScoreJobService):
        assert hasattr(getattr(ScoreJobService, ep.name), "__plinth_access__"), ep.name


def test_a_profile_that_is_not_one_of_the_jobs_rows_is_refused(tmp_path: Path) -> None:
    from plinth.stats.profile import profile
    from tests.backends import running_server

    frame = pd.DataFrame({"age": [30.0, 41.0, 25.0], "prediction": [0, 1, 0]})
    with (
        running_server(tmp_path / "server") as url,
        plinth.connect(url, home=tmp_path / "c") as remote,
    ):
        jobs = remote.score_jobs
        jobs.start_score_job("job-1", "churn", 1, "in.parquet", "s3://b/out")
        jobs.finish_score_job("job-1", "DELIVERED", 3)
        more = profile(pd.concat([frame, frame])).to_dict()
        with pytest.raises(plinth.InvalidArgument, match="'job-1' has 6 rows, not 3"):
            jobs.record_score_profile("job-1", more)
        with pytest.raises(plinth.InvalidArgument, match="'job-1' is not a profile"):
            jobs.record_score_profile("job-1", {"rows": 3, "columns": "age"})
        miscounted = profile(frame).to_dict()
        miscounted["columns"][0]["count"] = 2
        with pytest.raises(
            plinth.InvalidArgument,
            match=r"column 'age': profile field 'sample' holds 3 values, more than the 2",
        ):
            jobs.record_score_profile("job-1", miscounted)
        assert jobs.record_score_profile("job-1", profile(frame).to_dict()) > 0


def test_only_an_editor_of_the_model_records_a_jobs_profile(
    client: Client, auth: AuthService
) -> None:
    """A job's input profile is what its drift monitors judge (and alert on): a reader who
    may run the job may not make one up."""
    import pandas as pd

    from plinth.stats.profile import profile

    auth.create_user("victor", Role.VIEWER)
    auth.grant(Kind.MODEL, "secret", "user", "victor", "viewer")
    auth.grant(Kind.MODEL, "secret", "user", "bob", "editor")
    made_up = profile(pd.DataFrame({"x": [1e9, 2e9]})).to_dict()
    jobs = client.score_jobs
    with acting_as(Principal("victor", Role.VIEWER, via="token")):
        jobs.start_score_job("v-1", "secret", 1, "in", "out")
        with pytest.raises(plinth.PermissionDenied, match="editor"):
            jobs.record_score_profile("v-1", made_up)
        assert jobs.finish_score_job("v-1", "DELIVERED", 2).status == "DELIVERED"
    with acting_as(BOB):
        assert jobs.record_score_profile("v-1", made_up) > 0
