"""The monitor contract on every backend (SQLite, PostgreSQL, a server over HTTP): create,
read, list, change, delete; arguments refused naming the field; evaluations stored with
what the check found (its failure included, never raised); then permissions on a server
with authentication on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.auth.context import SYSTEM, acting_as
from plinth.auth.types import Kind, Role
from plinth.client import Client
from plinth.errors import AlreadyExists, InvalidArgument, NotFound
from plinth.monitoring.service import MonitorService
from plinth.monitoring.types import MonitorSpec
from tests.backends import AuthServer
from tests.monitoring.scripted import Outcome, Scripted, drift, make_targets, service_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def as_given(spec: dict[str, Any]) -> Any:
    """A spec as JSON gives it (the service checks and coerces it, naming its fields)."""
    return spec


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration), "remote"]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """The same client API against each backend: SQLite, PostgreSQL, a server over HTTP
    (the suite's ``client`` fixture; this folder's conftest has its own ``client``)."""
    from tests.conftest import _backend_client

    made = _backend_client(request, tmp_path)
    yield next(made)
    next(made, None)


def test_create_get_list_update_delete(backend: Client) -> None:
    client = backend
    make_targets(client)
    monitors = client.monitors
    made = monitors.create_monitor(
        "churn-inputs",
        "input_drift",
        "churn",
        MonitorSpec(columns=["age", "plan"], max_drifted_share=0.3),
        schedule_seconds=3600,
        webhook_url="https://hooks.example.com/T0/B0",
    )
    assert (made.kind, made.target, made.schedule_seconds, made.on_event) == (
        "input_drift",
        "churn",
        3600,
        False,
    )
    assert made.owner and made.enabled and made.cooldown_seconds == 3600
    assert made.spec.reference == "training" and made.spec.columns == ["age", "plan"]
    assert monitors.get_monitor("churn-inputs") == made
    group = monitors.create_monitor("customers-drift", "feature_drift", "customers", on_event=True)
    assert group.spec.reference == "group"  # the group's own drift reference by default
    auc = monitors.create_monitor(
        "churn-auc",
        "performance",
        "churn",
        as_given({"metric": "auc", "min_value": 0.7, "window_seconds": 3600}),
        cooldown_seconds=0,
    )
    assert (auc.spec.metric, auc.spec.min_value, auc.cooldown_seconds) == ("auc", 0.7, 0)
    first = monitors.list_monitors(max_results=2)
    assert [m.name for m in first] == ["churn-auc", "churn-inputs"] and first.next_page_token
    rest = monitors.list_monitors(page_token=first.next_page_token)
    assert [m.name for m in rest] == ["customers-drift"] and rest.next_page_token is None
    assert [m.name for m in monitors.list_monitors(kind="feature_drift")] == ["customers-drift"]
    assert [m.name for m in monitors.list_monitors(target="churn")] == ["churn-auc", "churn-inputs"]
    with pytest.raises(AlreadyExists, match="monitor 'churn-auc' already exists"):
        monitors.create_monitor("churn-auc", "performance", "churn", MonitorSpec(metric="f1"))

    off = monitors.update_monitor("churn-inputs", enabled=False, schedule_seconds=0, webhook_url="")
    assert (off.enabled, off.schedule_seconds, off.webhook_url) == (False, None, None)
    assert off.spec == made.spec and off.updated_at >= made.updated_at
    moved = monitors.update_monitor("churn-auc", spec=as_given({"metric": "f1", "max_value": 0.99}))
    assert (moved.spec.metric, moved.spec.min_value, moved.spec.max_value) == ("f1", None, 0.99)
    assert monitors.get_monitor("churn-auc") == moved
    with pytest.raises(InvalidArgument, match=r"spec.metric: a performance monitor watches"):
        monitors.update_monitor("churn-auc", spec=as_given({"metric": "nope"}))

    monitors.delete_monitor("churn-inputs")
    with pytest.raises(NotFound, match="monitor 'churn-inputs' does not exist"):
        monitors.get_monitor("churn-inputs")
    with pytest.raises(NotFound, match="monitor 'churn-inputs' does not exist"):
        monitors.run_monitor("churn-inputs")
    assert [m.name for m in monitors.list_monitors()] == ["churn-auc", "customers-drift"]


def test_a_check_that_cannot_run_is_an_error_evaluation(backend: Client) -> None:
    """A check that cannot judge (a model without versions) says so in its evaluation
    instead of failing the call; on every backend with the real checks."""
    client = backend
    make_targets(client)
    client.monitors.create_monitor("m", "input_drift", "churn")
    found = client.monitors.run_monitor("m")
    assert (found.status, found.summary) == ("error", "registered model 'churn' has no versions")
    [stored] = client.monitors.list_evaluations("m").items
    assert (stored.id, stored.status, stored.trigger) == (found.id, "error", "manual")
    assert client.monitors.get_monitor("m").last_run_at == stored.at
    client.monitors.create_monitor("g", "feature_drift", "customers")
    skipped = client.monitors.run_monitor("g")
    assert skipped.status == "skipped"
    assert skipped.summary == "skipped: feature group customers v1 has no commits"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"name": "bad name"}, r"name: monitor name 'bad name' is not valid"),
        ({"kind": "latency"}, r"kind: 'latency' is not one of feature_drift, input_drift"),
        ({"target": "nope"}, r"target: registered model 'nope' does not exist"),
        (
            {"kind": "feature_drift", "target": "nope"},
            r"target: feature group 'nope' does not exist",
        ),
        (
            {"kind": "feature_drift", "target": "customers:v7"},
            r"target: feature group 'customers' has no version 7",
        ),
        ({"schedule_seconds": 59}, r"schedule_seconds: a whole number from 60 to"),
        ({"schedule_seconds": True}, r"schedule_seconds: a whole number"),
        ({"cooldown_seconds": -1}, r"cooldown_seconds: a whole number from 0"),
        ({"webhook_url": "ftp://h/x"}, r"webhook_url: 'ftp://h/x' is not an http:// or https://"),
        (
            {"webhook_url": "https://"},
            r"webhook_url: 'https://' is not an http:// or https:// URL with a host",
        ),
        ({"webhook_url": "https://u:pw@h/x"}, r"webhook_url: credentials in the URL"),
        ({"webhook_url": "https://h/a b"}, r"webhook_url: .* is not a URL \(ASCII, no spaces"),
        ({"webhook_url": "http://h:99999/x"}, r"webhook_url: .* is not a URL: Port out of range"),
        ({"spec": {"max_drift_share": 0.2}}, r"spec.max_drift_share: Unexpected keyword"),
        (
            {"spec": {"max_drifted_share": 0}},
            r"spec.max_drifted_share: between 0 \(excluded\) and 1",
        ),
        ({"spec": {"max_drifted_share": 1.5}}, r"spec.max_drifted_share: between 0"),
        (
            {"spec": {"preset": "nannyml"}},
            r"spec.preset: 'nannyml' is not one of plinth, evidently",
        ),
        (
            {"spec": {"reference": "previous"}},
            r"spec.reference: a input_drift monitor compares with its model version's 'training'",
        ),
        ({"spec": {"window_seconds": 10}}, r"spec.window_seconds: a whole number from 60"),
        ({"spec": {"columns": []}}, r"spec.columns: name at least one column"),
        ({"spec": {"columns": ["a", "a"]}}, r"spec.columns: a named twice"),
        ({"spec": {"metric": "auc"}}, r"spec.metric: a input_drift monitor has no metric"),
        (
            {"spec": {"model_version": 9}},
            r"spec.model_version: registered model 'churn' has no version 9",
        ),
        (
            {"kind": "performance"},
            r"spec.metric: a performance monitor watches one of auc, accuracy, f1, log_loss, rmse, mae, got None",
        ),
        (
            {"kind": "estimated_performance", "spec": {"metric": "rmse"}},
            r"spec.metric: a estimated_performance monitor watches one of auc, accuracy, f1, got 'rmse'",
        ),
        (
            {"kind": "performance", "spec": {"metric": "auc", "min_value": 0.9, "max_value": 0.8}},
            r"spec.min_value: 0.9 must be below spec.max_value 0.8",
        ),
        (
            {"kind": "performance", "spec": {"metric": "auc", "tolerance": -0.1}},
            r"spec.tolerance: 0 or more",
        ),
        (
            {"kind": "feature_drift", "target": "customers", "spec": {"reference": "days:0"}},
            r"spec.reference: 'days:0': at least 1 day",
        ),
        (
            {"kind": "feature_drift", "target": "customers", "spec": {"reference": "last week"}},
            r"spec.reference: a feature_drift monitor compares with 'group'",
        ),
        (
            {"kind": "feature_drift", "target": "customers", "spec": {"columns": ["spend", "age"]}},
            r"spec.columns: feature group 'customers' has no column 'age' \(it has customer_id, spend, ts, visits\)",
        ),
        (
            {"kind": "feature_drift", "target": "customers", "spec": {"model_version": 1}},
            r"spec.model_version: a feature_drift monitor watches no model",
        ),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    targets: MonitorService, call: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"name": "m", "kind": "input_drift", "target": "churn", **call}
    with pytest.raises((InvalidArgument, NotFound), match=message):
        targets.create_monitor(**arguments)
    assert targets.list_monitors().items == []


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorService]:
    """One store with the targets, for the cases that are all refused (nothing is stored)."""
    from tests.backends import local_client

    home = tmp_path_factory.mktemp("monitor-rules")
    with local_client(f"sqlite:///{home / 'plinth.db'}", str(home / "artifacts")) as client:
        make_targets(client)
        yield client.monitors


def test_evaluations_store_what_the_check_found(local: Client) -> None:
    make_targets(local)
    check = Scripted(
        drift(),
        Outcome("skipped", "skipped: no window yet"),
        Outcome("ok", "1 of 4", {"x": 1}, reference_profile=3, current_profile=4, event=12),
        NotFound("feature group 'customers' has no commits"),
        ZeroDivisionError("division by zero"),
        Outcome("maybe", "?"),
        Outcome("ok", "cannot be stored", {"x": object()}),
    )
    service = service_for(local, check)
    service.create_monitor("m", "input_drift", "churn")
    found = [service.run_monitor("m") for _ in range(7)]
    assert [f.status for f in found] == ["ok", "skipped", "ok", "error", "error", "error", "ok"]
    assert found[2].reference_profile == 3 and found[2].current_profile == 4
    assert found[2].event == 12 and found[2].result == {"x": 1}
    assert found[3].summary == "feature group 'customers' has no commits"
    assert found[4].summary == "ZeroDivisionError: division by zero"
    assert (
        found[5].summary
        == "TypeError: the check answered status 'maybe', not one of ok, breach, skipped"
    )
    # a result that is not JSON is stored as text, not lost
    assert found[6].result["x"].startswith("<object object")
    assert [c[1] for c in check.calls] == ["manual"] * 7
    stored = service.list_evaluations("m")
    assert [e.id for e in stored] == [f.id for f in reversed(found)]
    assert stored.items[4] == found[2]
    assert [e.id for e in service.list_evaluations("m", status="error")] == [
        found[5].id,
        found[4].id,
        found[3].id,
    ]
    page = service.list_evaluations("m", max_results=2)
    assert len(page.items) == 2 and page.next_page_token
    with pytest.raises(InvalidArgument, match="status: 'bad' is not one of ok, breach, error"):
        service.list_evaluations("m", status="bad")
    monitor = service.get_monitor("m")
    assert monitor.last_run_at == stored.items[0].at and monitor.last_event == 12


def test_a_stored_evaluation_reads_back_with_its_summary(local: Client) -> None:
    make_targets(local)
    service = service_for(local, Scripted(drift("age")))
    service.create_monitor("m", "input_drift", "churn")
    found = service.run_monitor("m")
    from plinth.store.schema import monitor_evaluations

    with local.tracking.store.read() as conn:
        row = conn.execute(monitor_evaluations.select()).one()
    stored = json.loads(row.result)
    assert stored["summary"] == "1 of 4 columns drifted (25%)"
    assert stored["result"]["drifted_share"] == 0.25
    assert service.list_evaluations("m").items == [found]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    from plinth.store.engine import open_store
    from tests.backends import empty_tables, local_client

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'plinth.db'}"
    else:
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
    with local_client(uri, str(tmp_path / "artifacts")) as client:
        yield client


# -- permissions on a server with authentication on ------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthServer]:
    made = AuthServer(tmp_path / "server")
    with made.http:
        yield made


def test_who_may_see_change_and_run_a_monitor(server: AuthServer) -> None:
    alice = server.user("alice", Role.EDITOR)
    mallory = server.user("mallory", Role.EDITOR)
    victor = server.user("victor", Role.VIEWER)
    http = server.http
    assert http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
    spec = {
        "name": "churn-inputs",
        "kind": "input_drift",
        "target": "churn",
        "webhook_url": "https://hooks.example.com/services/T0/B0/secret",
    }
    # a model mallory may not read is, to her, one that does not exist
    refused = http.post("/api/v1/monitors", json={**spec, "name": "probe"}, headers=mallory)
    assert refused.status_code == 404, refused.text
    assert refused.json()["message"] == "target: registered model 'churn' does not exist"
    made = http.post("/api/v1/monitors", json=spec, headers=alice)
    assert made.status_code == 200, made.text
    assert made.json()["owner"] == "alice"  # the caller, never the body
    assert http.post("/api/v1/monitors", json=spec, headers=victor).status_code == 403
    hidden = http.get("/api/v1/monitors/churn-inputs", headers=mallory)
    assert hidden.status_code == 404
    assert hidden.json()["message"] == "monitor 'churn-inputs' does not exist"
    assert http.get("/api/v1/monitors", headers=mallory).json()["items"] == []
    assert (
        http.post("/api/v1/monitors/churn-inputs/run", json={}, headers=mallory).status_code == 404
    )
    assert http.delete("/api/v1/monitors/churn-inputs", headers=mallory).status_code == 404

    server.auth.grant(Kind.MONITOR, "churn-inputs", "user", "victor", "viewer")
    # a monitor shows its model's data: a reader of the monitor alone does not see it
    assert http.get("/api/v1/monitors/churn-inputs", headers=victor).status_code == 404
    server.auth.grant(Kind.MODEL, "churn", "user", "victor", "viewer")
    seen = http.get("/api/v1/monitors/churn-inputs", headers=victor).json()
    # a webhook URL carries its secret in the path: a reader sees its host only
    assert seen["webhook_url"] == "https://hooks.example.com/…"
    listed = http.get("/api/v1/monitors", headers=victor).json()["items"]
    assert [m["webhook_url"] for m in listed] == ["https://hooks.example.com/…"]
    own = http.get("/api/v1/monitors/churn-inputs", headers=alice).json()
    assert own["webhook_url"] == spec["webhook_url"]
    for method, path, body in (
        ("POST", "/api/v1/monitors/churn-inputs/run", {}),
        ("POST", "/api/v1/monitors/churn-inputs", {"enabled": False}),
        ("DELETE", "/api/v1/monitors/churn-inputs", None),
    ):
        answer = http.request(method, path, json=body, headers=victor)
        assert answer.status_code == 403, (path, answer.text)
    ran = http.post("/api/v1/monitors/churn-inputs/run", json={}, headers=alice)
    assert ran.status_code == 200 and ran.json()["trigger"] == "manual"
    history = http.get("/api/v1/monitors/churn-inputs/evaluations", headers=victor).json()
    assert [e["id"] for e in history["items"]] == [ran.json()["id"]]

    # an alert is acknowledged by who may change its monitor
    with acting_as(SYSTEM):
        alerting = MonitorService(server.store, evaluator=Scripted(drift("age")))
        alerting.update_monitor("churn-inputs", webhook_url="")
        breach = alerting.run_monitor("churn-inputs")
    assert breach.alert_id is not None
    ack = f"/api/v1/alerts/{breach.alert_id}/ack"
    assert http.post(ack, json={}, headers=victor).status_code == 403
    gone = http.post(ack, json={}, headers=mallory)
    assert gone.status_code == 404
    assert gone.json()["message"] == f"alert {breach.alert_id} does not exist"
    assert http.get("/api/v1/alerts", headers=mallory).json()["items"] == []
    assert [a["id"] for a in http.get("/api/v1/alerts", headers=victor).json()["items"]] == [
        breach.alert_id
    ]
    done = http.post(ack, json={}, headers=alice).json()
    assert (done["status"], done["acknowledged_by"]) == ("acknowledged", "alice")
    assert http.post("/api/v1/alerts/999/ack", json={}, headers=alice).status_code == 404
    assert http.post("/api/v1/monitor-scheduler/tick", json={}, headers=alice).status_code == 403
    assert http.delete("/api/v1/monitors/churn-inputs", headers=alice).status_code == 200
    assert http.get("/api/v1/alerts", headers=alice).json()["items"] == []


def test_a_monitor_is_seen_and_checked_only_while_its_target_may_be_read(
    server: AuthServer,
) -> None:
    """bob's monitor of alice's model: once alice takes the model's grants back, carol (a
    reader of the monitor) finds no monitor, evaluation or alert, and the scheduler no
    longer checks it for bob."""
    from plinth.monitoring.loop import run_once
    from plinth.store.sql import now_ms

    alice = server.user("alice", Role.EDITOR)
    bob = server.user("bob", Role.EDITOR)
    carol = server.user("carol", Role.VIEWER)
    http = server.http
    assert http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
    for user in ("bob", "carol"):
        server.auth.grant(Kind.MODEL, "churn", "user", user, "viewer")
    spec = {"name": "bobs", "kind": "input_drift", "target": "churn", "schedule_seconds": 3600}
    assert http.post("/api/v1/monitors", json=spec, headers=bob).is_success
    server.auth.grant(Kind.MONITOR, "bobs", "user", "carol", "viewer")
    with acting_as(SYSTEM):
        scripted = Scripted(drift("age"))
        checking = MonitorService(server.store, evaluator=scripted)
        breach = checking.run_monitor("bobs")
    assert breach.alert_id is not None
    reads = {
        "/api/v1/monitors/bobs": 200,
        "/api/v1/monitors/bobs/evaluations": 200,
    }
    for path, status in reads.items():
        assert http.get(path, headers=carol).status_code == status, path
    assert [m["name"] for m in http.get("/api/v1/monitors", headers=carol).json()["items"]] == [
        "bobs"
    ]
    assert len(http.get("/api/v1/alerts", headers=carol).json()["items"]) == 1

    for user in ("bob", "carol"):
        taken = http.request(
            "DELETE",
            "/api/v1/grants/model/churn",
            params={"grantee_type": "user", "grantee": user},
            headers=alice,
        )
        assert taken.is_success, taken.text
    assert http.get("/api/v1/models/churn/input-drift", headers=carol).status_code == 404
    for path in reads:
        hidden = http.get(path, headers=carol)
        assert hidden.status_code == 404, (path, hidden.text)
        assert hidden.json()["message"] == "monitor 'bobs' does not exist"
    assert http.get("/api/v1/monitors", headers=carol).json()["items"] == []
    assert http.get("/api/v1/monitors?target=churn", headers=carol).json()["items"] == []
    assert http.get("/api/v1/alerts", headers=carol).json()["items"] == []
    assert http.get("/api/v1/alerts?monitor=bobs", headers=carol).json()["items"] == []
    # bob may still change and delete his monitor, but not run it or read its results
    assert http.post("/api/v1/monitors/bobs/run", json={}, headers=bob).status_code == 404
    assert http.get("/api/v1/monitors/bobs/evaluations", headers=bob).status_code == 404
    ack = http.post(f"/api/v1/alerts/{breach.alert_id}/ack", json={}, headers=bob)
    assert ack.status_code == 404, ack.text

    # the scheduler checks a monitor for its owner: bob may no longer read churn
    with acting_as(SYSTEM):
        [done] = run_once(checking, now=now_ms() + 7200_000)
        assert [call[:2] for call in scripted.calls] == [("bobs", "manual")]  # not again
        newest = checking.list_evaluations("bobs").items[0]
    assert (done.action, newest.status) == ("evaluated", "error")
    assert newest.summary == "owner bob may no longer read model churn"
    assert newest.alert_id is None
    admin = MonitorService(server.store)
    with acting_as(SYSTEM):
        assert admin.get_monitor("bobs").owner == "bob"  # an admin still sees it all


def test_late_labels_are_logged_through_the_client(backend: Client) -> None:
    """``plinth.log_labels`` and ``client.log_labels``: one label or a batch, in-process or
    through a server (``client.monitoring``)."""
    import plinth
    from plinth.client import set_default_client
    from plinth.monitoring.labels import LabelIn

    make_targets(backend)
    one = backend.log_labels("churn", label=1, request_id="r1", at=1_780_000_000_000)
    assert (one.model_name, one.accepted, one.by_request) == ("churn", 1, 1)
    assert one.unmatched_request_ids == ["r1"]  # no such prediction logged (yet): kept
    set_default_client(backend)
    batch = plinth.log_labels(
        "churn",
        [LabelIn(0, entity={"customer_id": 7}), {"label": 1, "request_id": "r2", "row": 1}],
    )
    assert (batch.accepted, batch.by_entity, batch.by_request) == (2, 1, 1)
    with pytest.raises(InvalidArgument, match=r"give labels .* or label= .*, not both"):
        backend.log_labels("churn", [LabelIn(1, "r3")], label=1)
    with pytest.raises(NotFound, match="registered model 'nope' does not exist"):
        plinth.log_labels("nope", label=1, request_id="r1")


def test_a_model_monitors_columns_are_inputs_of_its_version(local: Client) -> None:
    """``spec.columns`` of a drift monitor are checked against the signature of the version
    it watches, on create and on update, naming the column that is not an input."""
    from tests.monitoring.conftest import churn_model

    churn_model(local)
    service = local.monitors
    for kind in ("input_drift", "prediction_drift"):
        with pytest.raises(InvalidArgument, match=r"spec.columns: version 1 of registered model "
                           r"'churn' has no input '<script>' \(its inputs: age, spend, plan\)"):  # fmt: skip
            service.create_monitor(
                "m", kind, "churn", spec=as_given({"columns": ["age", "<script>"]})
            )
    made = service.create_monitor("m", "input_drift", "churn", spec=as_given({"columns": ["age"]}))
    assert made.spec.columns == ["age"]
    with pytest.raises(InvalidArgument, match=r"has no input 'x'"):
        service.update_monitor("m", spec=as_given({"columns": ["x"]}))
    assert service.get_monitor("m").spec.columns == ["age"]
