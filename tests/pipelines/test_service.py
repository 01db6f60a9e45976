"""The pipeline service on every backend (SQLite, PostgreSQL, a server over HTTP): register,
read, list, register again, delete; runs queued, listed, rerun and cancelled; steps'
logs; schedules and triggers starting from now; arguments refused naming the field; then
permissions on a server with authentication on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from plinth.auth.types import Kind, Role
from plinth.client import Client
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.pipelines.types import ScheduleSpec
from plinth.store.engine import Store
from plinth.store.schema import alerts, monitor_evaluations, pipeline_runs
from plinth.store.sql import now_ms
from tests.backends import AuthServer
from tests.pipelines.service_fixtures import finish, spec

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration), "remote"]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    from tests.conftest import _backend_client

    made = _backend_client(request, tmp_path)
    yield next(made)
    next(made, None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """A client on the store itself: the tests write runs as a runner would."""
    from tests.conftest import _backend_client

    made = _backend_client(request, tmp_path)
    yield next(made)
    next(made, None)


def store_of(client: Client) -> Store:
    store: Store = client.tracking.store  # type: ignore[attr-defined]
    return store


# -- pipelines ---------------------------------------------------------------------------------


def test_register_get_list_register_again_delete(backend: Client) -> None:
    service = backend.pipelines
    made = service.register_pipeline(spec())
    assert (made.name, made.entrypoint, made.experiment) == (
        "churn-retrain",
        "pipelines.churn:pipeline",
        "churn-retrain",  # its runs are tracked under its own name by default
    )
    assert made.steps == ["get_data", "train", "register"] and made.params == {
        "since": "2026-01-01"
    }
    assert (made.retries, made.concurrency, made.timeout_seconds) == (2, 1, None)
    assert made.owner and made.created_at == made.updated_at
    assert service.get_pipeline("churn-retrain") == made
    service.register_pipeline(spec("a-first", entrypoint="flows/a.py:pipe", experiment="exp-a"))
    service.register_pipeline(spec("z-last"))
    first = service.list_pipelines(max_results=2)
    assert [p.name for p in first] == ["a-first", "churn-retrain"] and first.next_page_token
    rest = service.list_pipelines(page_token=first.next_page_token)
    assert [p.name for p in rest] == ["z-last"] and rest.next_page_token is None
    again = service.register_pipeline(
        spec(steps=["get_data", "train"], params={}, concurrency=3, timeout_seconds=600.0)
    )
    assert (again.steps, again.params, again.concurrency, again.timeout_seconds) == (
        ["get_data", "train"],
        {},
        3,
        600.0,
    )
    assert again.created_at == made.created_at and again.owner == made.owner
    assert service.get_pipeline("a-first").experiment == "exp-a"
    service.delete_pipeline("z-last")
    with pytest.raises(NotFound, match="pipeline 'z-last' does not exist"):
        service.get_pipeline("z-last")
    assert [p.name for p in service.list_pipelines()] == ["a-first", "churn-retrain"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "-bad"}, "pipeline name '-bad' is not valid"),
        ({"entrypoint": "pipelines.churn"}, "spec.entrypoint: 'pipelines.churn' does not name"),
        ({"entrypoint": "pipelines churn:pipe"}, "spec.entrypoint"),
        ({"entrypoint": "flows/a.py:"}, "spec.entrypoint"),
        ({"steps": ["a", "b", "a"]}, "spec.steps: a named twice"),
        ({"params": {"at": {1, 2}}}, "spec.params: values must be JSON"),
        ({"timeout_seconds": 0.0}, "spec.timeout_seconds: more than 0"),
        ({"retries": 11}, "spec.retries: a whole number from 0 to 10, got 11"),
        ({"retries": -1}, "spec.retries"),
        ({"retry_backoff_seconds": -1.0}, "spec.retry_backoff_seconds: 0 or more"),
        ({"concurrency": 0}, "spec.concurrency: a whole number from 1 to 100, got 0"),
        ({"concurrency": 101}, "spec.concurrency"),
        ({"steps": [f"s{i}" for i in range(1001)]}, "spec.steps: at most 1000 steps, got 1001"),
        ({"description": "x" * 10_001}, "spec.description: at most 10000 characters, got 10001"),
        ({"params": {"blob": "x" * 65_536}}, "spec.params: at most 64 KiB as JSON, got 65548"),
    ],
)
def test_a_bad_pipeline_is_refused_naming_the_field(
    local: Client, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        local.pipelines.register_pipeline(spec(**changes))
    assert local.pipelines.list_pipelines().items == []


def test_a_pipeline_at_the_limits_is_registered(local: Client) -> None:
    steps = [f"s{i}" for i in range(1000)]
    params = {"blob": "x" * (65_536 - len('{"blob": ""}'))}  # 64 KiB of JSON exactly
    made = local.pipelines.register_pipeline(
        spec(steps=steps, description="x" * 10_000, params=params)
    )
    assert (len(made.steps), len(made.description), made.params) == (1000, 10_000, params)
    with pytest.raises(InvalidArgument, match="params: at most 64 KiB as JSON"):
        local.pipelines.queue_run("churn-retrain", {"blob": "x" * 65_536})
    assert local.pipelines.list_all_runs().items == []


def test_a_misspelt_field_is_refused_over_http(backend: Client) -> None:
    with pytest.raises(InvalidArgument, match="retires"):
        backend.pipelines.register_pipeline(  # type: ignore[arg-type]  # as JSON gives it
            {"name": "p", "entrypoint": "m:p", "retires": 3}
        )


# -- runs --------------------------------------------------------------------------------------


def test_runs_are_queued_listed_and_cancelled(backend: Client) -> None:
    service = backend.pipelines
    service.register_pipeline(spec())
    service.register_pipeline(spec("other"))
    first = service.queue_run("churn-retrain", {"since": "2026-02-01"})
    assert (first.pipeline, first.status, first.trigger, first.params) == (
        "churn-retrain",
        "queued",
        "manual",
        {"since": "2026-02-01"},
    )
    assert first.max_attempts == 3 and first.attempt == 1 and first.created_by
    second = service.queue_run("churn-retrain")
    elsewhere = service.queue_run("other")
    assert [r.id for r in service.list_runs("churn-retrain")] == [second.id, first.id]
    assert [r.id for r in service.list_all_runs()] == [elsewhere.id, second.id, first.id]
    page = service.list_all_runs(max_results=1)
    assert [r.id for r in page] == [elsewhere.id] and page.next_page_token
    assert service.get_run(first.id) == first
    cancelled = service.cancel_run(first.id)
    assert (cancelled.status, cancelled.finished_at is not None) == ("cancelled", True)
    assert cancelled.error and cancelled.error.startswith("cancelled by")
    assert service.cancel_run(first.id) == cancelled  # once is enough
    assert [r.id for r in service.list_runs("churn-retrain", status="cancelled")] == [first.id]
    assert [r.id for r in service.list_runs("churn-retrain", status="queued")] == [second.id]
    with pytest.raises(InvalidArgument, match="status: 'done' is not one of queued"):
        service.list_runs("churn-retrain", status="done")
    with pytest.raises(NotFound, match="pipeline 'nope' does not exist"):
        service.queue_run("nope")
    with pytest.raises(InvalidArgument, match="params: values must be JSON"):
        service.queue_run("churn-retrain", {"x": float("nan")})
    with pytest.raises(NotFound, match="pipeline run 999 does not exist"):
        service.get_run(999)
    with pytest.raises(Conflict, match="queued or running run"):
        service.delete_pipeline("churn-retrain")  # second is still queued


def test_a_running_run_is_cancelled_with_its_steps(local: Client) -> None:
    service = local.pipelines
    service.register_pipeline(spec())
    run = service.queue_run("churn-retrain")
    finish(
        store_of(local),
        run.id,
        "running",
        {"get_data": "succeeded", "train": "running", "register": "pending"},
        worker="host:1",
    )
    cancelled = service.cancel_run(run.id)
    assert cancelled.status == "cancelled"
    assert [(s.name, s.status) for s in service.get_run(run.id).steps] == [
        ("get_data", "succeeded"),
        ("train", "failed"),
        ("register", "skipped"),
    ]
    done = service.queue_run("churn-retrain")
    finish(store_of(local), done.id, "succeeded", {"get_data": "succeeded"})
    with pytest.raises(Conflict, match=f"pipeline run {done.id} has succeeded already"):
        service.cancel_run(done.id)


def test_get_run_has_its_steps_in_order(local: Client) -> None:
    service = local.pipelines
    service.register_pipeline(spec())
    run = service.queue_run("churn-retrain")
    finish(
        store_of(local),
        run.id,
        "failed",
        {"get_data": "succeeded", "train": "failed", "register": "skipped"},
        error="step train failed: ValueError: boom",
    )
    found = service.get_run(run.id)
    assert found.status == "failed" and found.error == "step train failed: ValueError: boom"
    assert [s.name for s in found.steps] == ["get_data", "train", "register"]
    get_data, train, register = found.steps
    assert get_data.duration_seconds == 1.5 and register.duration_seconds is None
    assert train.error and "ValueError: boom" in train.error
    assert service.list_runs("churn-retrain").items[0].steps == []  # pages carry no steps


def test_a_rerun_resumes_where_the_run_failed(local: Client) -> None:
    service = local.pipelines
    service.register_pipeline(spec())
    run = service.queue_run("churn-retrain", {"since": "2026-03-01"})
    with pytest.raises(Conflict, match=f"pipeline run {run.id} is queued: rerun a finished"):
        service.rerun(run.id)
    finish(
        store_of(local),
        run.id,
        "failed",
        {"get_data": "succeeded", "train": "failed", "register": "skipped"},
    )
    again = service.rerun(run.id)
    assert (again.trigger, again.status, again.resumed_from, again.from_step) == (
        "rerun",
        "queued",
        run.id,
        "train",
    )
    assert again.params == {"since": "2026-03-01"} and again.max_attempts == 3
    chosen = service.rerun(run.id, from_step="train")
    assert (chosen.resumed_from, chosen.from_step) == (run.id, "train")
    fresh = service.rerun(run.id, from_step="get_data")  # from the start: nothing reused
    assert (fresh.resumed_from, fresh.from_step) == (None, None)
    with pytest.raises(
        InvalidArgument, match=r"from_step: .* no step 'deploy': give one of get_data"
    ):
        service.rerun(run.id, from_step="deploy")
    # after a step that failed there is no output to take: such a run could not succeed
    queued = len(service.list_runs("churn-retrain").items)
    with pytest.raises(
        InvalidArgument,
        match=f"from_step: pipeline run {run.id} cannot be resumed at 'register': its step "
        "'train' before it is failed, so it has no output to reuse "
        r"\(resume at 'train' or an earlier step\)",
    ):
        service.rerun(run.id, from_step="register")
    # a run cancelled before it started recorded no step at all
    never = service.cancel_run(service.queue_run("churn-retrain").id)
    with pytest.raises(InvalidArgument, match="its step 'get_data' before it is not recorded"):
        service.rerun(never.id, from_step="train")
    assert len(service.list_runs("churn-retrain").items) == queued + 1  # only `never`


def test_run_logs_are_the_steps_logs(local: Client) -> None:
    service = local.pipelines
    service.register_pipeline(spec())
    run = service.queue_run("churn-retrain")
    assert service.run_logs(run.id) == ""  # not started: no logs yet
    with local.start_run("churn-retrain", capture_environment=False) as tracked:
        tracked.log_text("reading since 2026-01-01\n", "pipeline/get_data/log.txt")
        tracked.log_text("fitting\nValueError: boom\n", "pipeline/train/log.txt")
        tracking_run = tracked.id
    finish(
        store_of(local),
        run.id,
        "failed",
        {"get_data": "succeeded", "train": "failed", "register": "skipped"},
        run_id=tracking_run,
    )
    assert service.run_logs(run.id) == (
        "== get_data (succeeded) ==\nreading since 2026-01-01\n"
        "== train (failed) ==\nfitting\nValueError: boom\n"
    )
    assert service.run_logs(run.id, step="train") == "fitting\nValueError: boom\n"
    assert service.run_logs(run.id, step="register") == ""
    with pytest.raises(NotFound, match=r"has no step 'deploy' \(its steps: get_data, train"):
        service.run_logs(run.id, step="deploy")


# -- schedules and triggers --------------------------------------------------------------------


def test_a_cron_schedule_starts_from_now(backend: Client) -> None:
    service = backend.pipelines
    service.register_pipeline(spec())
    before = now_ms()
    made = service.create_schedule(
        "churn-retrain", ScheduleSpec(cron="0 3 * * *", timezone="Europe/Paris", catchup="all")
    )
    after = now_ms()
    assert (made.pipeline, made.kind, made.cron, made.timezone, made.catchup, made.paused) == (
        "churn-retrain",
        "cron",
        "0 3 * * *",
        "Europe/Paris",
        "all",
        False,
    )
    assert made.cursor is not None and before <= made.cursor <= after
    assert made.next_at is not None and made.next_at.timestamp() * 1000 > after
    # 03:00 in Paris is 01:00 or 02:00 UTC
    assert made.next_at.hour in (1, 2) and made.next_at.minute == 0
    paused = service.pause_schedule(made.id)
    assert paused.paused and paused.next_at is None
    resumed = service.resume_schedule(made.id)
    assert not resumed.paused and resumed.cursor is not None and resumed.cursor >= made.cursor
    other = service.create_schedule("churn-retrain", ScheduleSpec(cron="*/5 * * * *"))
    assert [s.id for s in service.list_schedules("churn-retrain")] == [made.id, other.id]
    assert [s.id for s in service.list_all_schedules()] == [made.id, other.id]
    service.delete_schedule(made.id)
    assert [s.id for s in service.list_schedules("churn-retrain")] == [other.id]
    with pytest.raises(NotFound, match=f"pipeline schedule {made.id} does not exist"):
        service.pause_schedule(made.id)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cron": "61 * * * *"}, "spec.cron: .*the minute field '61' is not valid"),
        ({"cron": "every day"}, "spec.cron: .*2 field.s.; expected five"),
        ({"cron": "0 " + "1," * 100 + "2 * * *"}, "spec.cron: at most 200 characters"),
        ({}, "spec.cron: a cron schedule needs one"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "spec.timezone: 'Mars/Olympus'"),
        ({"cron": "0 3 * * *", "catchup": "some"}, "spec.catchup: 'some' is not one of skip"),
        ({"cron": "0 3 * * *", "target": "m"}, "spec.target: a cron schedule watches nothing"),
        ({"kind": "weekly"}, "spec.kind: 'weekly' is not one of cron, alert"),
        ({"kind": "alert"}, "spec.target: name the monitor to watch"),
        ({"kind": "alert", "target": "m", "cron": "* * * * *"}, "spec.cron: a alert trigger"),
        ({"kind": "alert", "target": "nope"}, "spec.target: monitor 'nope' does not exist"),
        ({"kind": "commit", "target": "nope"}, "spec.target: feature group 'nope' does not"),
        ({"kind": "score_job", "target": "nope"}, "spec.target: registered model 'nope'"),
        ({"cron": "0 3 * * *", "params": {"x": object()}}, "spec.params: values must be JSON"),
        (
            {"cron": "0 3 * * *", "params": {"blob": "x" * 65_536}},
            "spec.params: at most 64 KiB as JSON",
        ),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(
    local: Client, given: dict[str, Any], message: str
) -> None:
    local.pipelines.register_pipeline(spec())
    with pytest.raises((InvalidArgument, NotFound), match=message):
        local.pipelines.create_schedule("churn-retrain", ScheduleSpec(**given))
    assert local.pipelines.list_schedules("churn-retrain") == []


def test_a_trigger_starts_after_the_newest_event(local: Client) -> None:
    """An alert, commit or score job from before the trigger never starts a run."""
    from tests.monitoring.scripted import make_targets

    make_targets(local)
    service = local.pipelines
    service.register_pipeline(spec())
    local.monitors.create_monitor("churn-inputs", "input_drift", "churn")
    quiet = service.create_schedule(
        "churn-retrain", ScheduleSpec(kind="alert", target="churn-inputs")
    )
    assert quiet.cursor == 0 and quiet.next_at is None
    newest = _raise_alerts(store_of(local), "churn-inputs", 3)
    on_alert = service.create_schedule(
        "churn-retrain", ScheduleSpec(kind="alert", target="churn-inputs", params={"why": "drift"})
    )
    assert (on_alert.kind, on_alert.target, on_alert.cursor) == ("alert", "churn-inputs", newest)
    assert on_alert.params == {"why": "drift"}
    on_commit = service.create_schedule(
        "churn-retrain", ScheduleSpec(kind="commit", target="customers")
    )
    assert on_commit.cursor == 0  # no commit yet
    on_job = service.create_schedule(
        "churn-retrain", ScheduleSpec(kind="score_job", target="churn")
    )
    assert on_job.cursor == 0
    # paused while alerts came: resumed, they do not start runs either
    service.pause_schedule(on_alert.id)
    later = _raise_alerts(store_of(local), "churn-inputs", 2)
    assert service.resume_schedule(on_alert.id).cursor == later > newest


def _raise_alerts(store: Store, monitor: str, count: int) -> int:
    at = now_ms()
    with store.write() as conn:
        for _ in range(count):
            evaluation = conn.execute(
                insert(monitor_evaluations)
                .returning(monitor_evaluations.c.id)
                .values(monitor=monitor, at=at, status="breach", trigger="manual", result="{}")
            ).scalar_one()
            newest = conn.execute(
                insert(alerts)
                .returning(alerts.c.id)
                .values(
                    monitor=monitor,
                    evaluation_id=evaluation,
                    at=at,
                    severity="warning",
                    message="drift",
                    status="open",
                    delivery="none",
                    attempts=0,
                    dedup_key="k",
                    rounds=0,
                )
            ).scalar_one()
    return int(newest)


def test_deleting_a_pipeline_deletes_its_runs_and_schedules(local: Client) -> None:
    service = local.pipelines
    service.register_pipeline(spec())
    run = service.queue_run("churn-retrain")
    finish(store_of(local), run.id, "succeeded", {"get_data": "succeeded"})
    service.create_schedule("churn-retrain", ScheduleSpec(cron="0 3 * * *"))
    service.delete_pipeline("churn-retrain")
    with pytest.raises(NotFound, match=f"pipeline run {run.id} does not exist"):
        service.get_run(run.id)
    assert service.list_all_schedules() == [] and service.list_all_runs().items == []
    with store_of(local).read() as conn:
        assert conn.execute(pipeline_runs.select()).all() == []


# -- permissions on a server with authentication on ------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthServer]:
    made = AuthServer(tmp_path / "server")
    with made.http:
        yield made


def test_who_may_see_run_and_schedule_a_pipeline(server: AuthServer) -> None:
    alice = server.user("alice", Role.ADMIN)  # pipeline code is deployed by an admin
    mallory = server.user("mallory", Role.EDITOR)
    victor = server.user("victor", Role.VIEWER)
    http = server.http
    body = {"spec": {"name": "churn-retrain", "entrypoint": "pipelines.churn:pipeline"}}
    made = http.post("/api/v1/pipelines", json=body, headers=alice)
    assert made.status_code == 200, made.text
    assert made.json()["owner"] == "alice"
    run = http.post("/api/v1/pipelines/churn-retrain/runs", json={}, headers=alice).json()
    cron = {"spec": {"cron": "0 3 * * *"}}
    schedule = http.post("/api/v1/pipelines/churn-retrain/schedules", json=cron, headers=alice)
    assert schedule.status_code == 200, schedule.text
    schedule_id = schedule.json()["id"]

    # private to alice: to mallory it does not exist, in the words used for a missing one
    for path, missing in (
        ("/api/v1/pipelines/churn-retrain", "pipeline 'churn-retrain' does not exist"),
        (f"/api/v1/pipeline-runs/{run['id']}", f"pipeline run {run['id']} does not exist"),
        (f"/api/v1/pipeline-runs/{run['id']}/logs", f"pipeline run {run['id']} does not exist"),
    ):
        answer = http.get(path, headers=mallory)
        assert (answer.status_code, answer.json()["message"]) == (404, missing)
    assert http.get("/api/v1/pipeline-runs/999", headers=mallory).json()["message"] == (
        "pipeline run 999 does not exist"
    )
    for listing in ("/api/v1/pipelines", "/api/v1/pipeline-runs", "/api/v1/pipeline-schedules"):
        answer = http.get(listing, headers=mallory)
        assert answer.status_code == 200 and "churn-retrain" not in answer.text
    refused = http.post(f"/api/v1/pipeline-schedules/{schedule_id}/pause", json={}, headers=mallory)
    assert (refused.status_code, refused.json()["message"]) == (
        404,
        f"pipeline schedule {schedule_id} does not exist",
    )
    taken = http.post("/api/v1/pipelines", json=body, headers=mallory)  # the same name again
    assert taken.status_code == 404

    # victor may read it, but a viewer changes nothing
    server.auth.grant(Kind.PIPELINE, "churn-retrain", "user", "victor", "viewer")
    assert http.get("/api/v1/pipelines/churn-retrain", headers=victor).status_code == 200
    assert http.get(f"/api/v1/pipeline-runs/{run['id']}", headers=victor).status_code == 200
    assert [p["name"] for p in http.get("/api/v1/pipelines", headers=victor).json()["items"]] == [
        "churn-retrain"
    ]
    for method, path, sent in (
        ("POST", "/api/v1/pipelines/churn-retrain/runs", {}),
        ("POST", "/api/v1/pipelines/churn-retrain/schedules", cron),
        ("POST", f"/api/v1/pipeline-runs/{run['id']}/cancel", {}),
        ("POST", f"/api/v1/pipeline-schedules/{schedule_id}/pause", {}),
        ("DELETE", "/api/v1/pipelines/churn-retrain", None),
    ):
        answer = http.request(method, path, json=sent, headers=victor)
        assert answer.status_code == 403, (path, answer.text)
    assert http.post("/api/v1/pipelines", json=body, headers=victor).status_code == 403
    # the logs are the tracking run's: reading them needs read on its experiment too
    finish(server.store, run["id"], "failed", {"train": "failed"}, run_id="0" * 32)
    logs = http.get(f"/api/v1/pipeline-runs/{run['id']}/logs", headers=victor)
    assert logs.status_code == 404 and logs.json()["message"] == (
        f"the logs of pipeline run {run['id']} are in tracking run {'0' * 32}, which does not "
        "exist or which you may not read (ask for read on its experiment)"
    )

    # an editor of the pipeline queues and schedules, but only on what it may read
    server.auth.grant(Kind.PIPELINE, "churn-retrain", "user", "mallory", "editor")
    queued = http.post("/api/v1/pipelines/churn-retrain/runs", json={}, headers=mallory)
    assert queued.status_code == 200 and queued.json()["created_by"] == "mallory"
    assert http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
    watch = {"spec": {"kind": "score_job", "target": "churn"}}
    hidden = http.post("/api/v1/pipelines/churn-retrain/schedules", json=watch, headers=mallory)
    assert (hidden.status_code, hidden.json()["message"]) == (
        404,
        "spec.target: registered model 'churn' does not exist",
    )
    assert http.delete("/api/v1/pipelines/churn-retrain", headers=mallory).status_code == 403
    with server.store.write() as conn:  # the runs finish, so the owner may delete it
        conn.execute(update(pipeline_runs).values(status="succeeded"))
    assert http.delete("/api/v1/pipelines/churn-retrain", headers=alice).status_code == 200
    assert json.loads(http.get("/api/v1/pipeline-runs", headers=alice).text)["items"] == []


def test_pipeline_code_is_deployed_by_an_admin(server: AuthServer) -> None:
    """An entrypoint is code the scheduler's workers run with the store's credentials: an
    editor may not register a pipeline nor change its entrypoint, only its params, limits
    and description (with write on it)."""
    root = server.user("root", Role.ADMIN)
    ann = server.user("ann", Role.EDITOR)
    mallory = server.user("mallory", Role.EDITOR)
    http = server.http

    def register(headers: dict[str, str], **changes: Any) -> Any:
        given = {"name": "churn-retrain", "entrypoint": "pipelines.churn:pipeline", **changes}
        return http.post("/api/v1/pipelines", json={"spec": given}, headers=headers)

    refused = register(ann)
    assert (refused.status_code, refused.json()["message"]) == (
        403,
        "'ann' may not register a pipeline: that needs the admin role (theirs is editor); "
        "the scheduler's workers run a pipeline's code with the store's credentials, so an "
        "admin deploys it",
    )
    assert http.get("/api/v1/pipelines", headers=root).json()["items"] == []
    assert register(root).status_code == 200
    server.auth.grant(Kind.PIPELINE, "churn-retrain", "user", "ann", "editor")

    again = register(ann, description="weekly now", retries=3)  # the same entrypoint
    assert again.status_code == 200, again.text
    assert (again.json()["description"], again.json()["retries"], again.json()["owner"]) == (
        "weekly now",
        3,
        "root",
    )
    moved = register(ann, entrypoint="/tmp/uploaded/evil.py:pipe")
    assert (moved.status_code, moved.json()["message"]) == (
        403,
        "'ann' may not change the entrypoint of pipeline 'churn-retrain' (from "
        "'pipelines.churn:pipeline'): that needs the admin role (theirs is editor); the "
        "scheduler's workers run a pipeline's code with the store's credentials, so an admin "
        "deploys it",
    )
    assert register(mallory, entrypoint="evil:pipe").status_code == 404  # may not see it
    found = http.get("/api/v1/pipelines/churn-retrain", headers=root).json()
    assert (found["entrypoint"], found["description"]) == ("pipelines.churn:pipeline", "weekly now")
    assert register(root, entrypoint="pipelines.churn2:pipeline").status_code == 200
    found = http.get("/api/v1/pipelines/churn-retrain", headers=root).json()
    assert found["entrypoint"] == "pipelines.churn2:pipeline"


def test_resuming_a_trigger_needs_read_on_what_it_watches(server: AuthServer) -> None:
    root = server.user("root", Role.ADMIN)
    ann = server.user("ann", Role.EDITOR)
    http = server.http
    body = {"spec": {"name": "churn-retrain", "entrypoint": "pipelines.churn:pipeline"}}
    assert http.post("/api/v1/pipelines", json=body, headers=root).status_code == 200
    assert http.post("/api/v1/models", json={"name": "churn"}, headers=root).is_success
    server.auth.grant(Kind.PIPELINE, "churn-retrain", "user", "ann", "editor")
    server.auth.grant(Kind.MODEL, "churn", "user", "ann", "viewer")
    watch = {"spec": {"kind": "score_job", "target": "churn"}}
    made = http.post("/api/v1/pipelines/churn-retrain/schedules", json=watch, headers=ann)
    assert made.status_code == 200, made.text
    schedule_id = made.json()["id"]
    paused = http.post(f"/api/v1/pipeline-schedules/{schedule_id}/pause", json={}, headers=ann)
    assert paused.json()["paused"] is True
    server.auth.revoke_grant(Kind.MODEL, "churn", "user", "ann")

    resume = f"/api/v1/pipeline-schedules/{schedule_id}/resume"
    refused = http.post(resume, json={}, headers=ann)
    assert (refused.status_code, refused.json()["message"]) == (
        404,
        f"pipeline schedule {schedule_id}: registered model 'churn' does not exist",
    )
    listed = http.get("/api/v1/pipelines/churn-retrain/schedules", headers=root).json()
    assert [s["paused"] for s in listed] == [True]
    resumed = http.post(resume, json={}, headers=root)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False


def test_steps_and_logs_over_http(tmp_path: Path) -> None:
    """A run's steps and logs read through a server as on the store."""
    from plinth.client import connect
    from plinth.config import load_settings
    from plinth.store.engine import open_store
    from tests.backends import running_server

    home = tmp_path / "server-home"
    with running_server(home) as url, connect(url) as remote:  # type: ignore[arg-type]
        service = remote.pipelines
        service.register_pipeline(spec())
        run = service.queue_run("churn-retrain")
        with remote.start_run("churn-retrain", capture_environment=False) as tracked:
            tracked.log_text("fitting\n", "pipeline/train/log.txt")
        store = open_store(load_settings(home=home).resolved_store_uri)
        finish(
            store, run.id, "failed", {"get_data": "succeeded", "train": "failed"}, run_id=tracked.id
        )
        found = service.get_run(run.id)
        assert [(s.name, s.status) for s in found.steps] == [
            ("get_data", "succeeded"),
            ("train", "failed"),
        ]
        assert found.run_id == tracked.id
        assert service.run_logs(run.id) == "== train (failed) ==\nfitting\n"
        assert service.run_logs(run.id, step="train") == "fitting\n"
        again = service.rerun(run.id)
        assert (again.resumed_from, again.from_step) == (run.id, "train")
