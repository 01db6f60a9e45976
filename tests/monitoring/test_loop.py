"""The monitor scheduler: monitors evaluated when their schedule is due or a new commit /
score job arrives, one monitor's failure costing only itself, failed deliveries retried;
among two schedulers only the lease holder evaluates; in ``plinth server`` it runs in the
background and ``/health`` tells its state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.config import load_settings
from plinth.errors import Unavailable
from plinth.monitoring.loop import LEASE, MonitorLoop, run_once
from plinth.monitoring.types import MonitorSpec
from plinth.store import lease
from plinth.store.sql import now_ms
from tests.backends import local_client
from tests.monitoring.scripted import Scripted, Webhook, drift, make_targets, service_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

HOUR_MS = 3_600_000


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Client]:
    with local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "a")) as client:
        make_targets(client)
        yield client


def test_scheduled_monitors_are_evaluated_when_due(local: Client) -> None:
    check = Scripted(drift())
    service = service_for(local, check)
    service.create_monitor("hourly", "input_drift", "churn", schedule_seconds=3600)
    service.create_monitor("daily", "input_drift", "churn", schedule_seconds=86_400)
    service.create_monitor("by-hand", "input_drift", "churn")
    service.create_monitor("off", "input_drift", "churn", schedule_seconds=60)
    service.update_monitor("off", enabled=False)
    start = now_ms()
    done = run_once(service, now=start)  # never evaluated: due at once
    assert [(d.monitor, d.action) for d in done] == [
        ("daily", "evaluated"),
        ("hourly", "evaluated"),
    ]
    assert all(d.detail.startswith("ok (schedule): 0 of 4") for d in done)
    assert run_once(service, now=start + 60_000) == []
    assert [d.monitor for d in run_once(service, now=start + HOUR_MS + 60_000)] == ["hourly"]
    assert [d.monitor for d in run_once(service, now=start + 25 * HOUR_MS)] == ["daily", "hourly"]
    assert [c[1] for c in check.calls] == ["schedule"] * 5
    assert service.list_evaluations("by-hand").items == []
    assert service.list_evaluations("off").items == []


def test_on_event_monitors_are_evaluated_for_each_new_commit_or_job(local: Client) -> None:
    check = Scripted(drift("spend"), drift())
    service = service_for(local, check)
    service.create_monitor("group", "feature_drift", "customers", on_event=True)
    service.create_monitor("inputs", "input_drift", "churn", on_event=True)
    assert run_once(service) == []  # nothing committed, no job yet
    check.events = {"group": 4, "inputs": 17}
    done = run_once(service)
    assert [(d.monitor, d.action) for d in done] == [
        ("group", "evaluated"),
        ("inputs", "evaluated"),
    ]
    assert [c[1] for c in check.calls] == ["commit:4", "job:17"]
    assert done[0].alert_id is not None  # the commit's breach alerted
    assert service.get_monitor("group").last_event == 4
    assert run_once(service) == []  # the same events: nothing new
    check.events["group"] = 5
    assert [d.monitor for d in run_once(service)] == ["group"]
    assert check.calls[-1][1] == "commit:5"
    [latest, first] = service.list_evaluations("group").items
    assert (latest.trigger, latest.event, first.trigger) == ("commit:5", 5, "commit:4")


def test_a_failing_check_is_not_run_again_for_the_same_event(local: Client) -> None:
    check = Scripted(Unavailable("the offline store is away"))
    service = service_for(local, check)
    service.create_monitor("group", "feature_drift", "customers", on_event=True)
    check.events = {"group": 3}
    [done] = run_once(service)
    assert (
        done.action == "evaluated" and done.detail == "error (commit:3): the offline store is away"
    )
    assert run_once(service) == []  # the event is seen: its error evaluation stands for it
    assert service.get_monitor("group").last_event == 3


def test_one_monitors_failure_costs_only_itself(local: Client) -> None:
    check = Scripted(drift())
    service = service_for(local, check)
    for name in ("a", "b", "c"):
        service.create_monitor(name, "input_drift", "churn", on_event=True)
    check.events = {"a": 1, "b": RuntimeError("boom"), "c": 2}  # type: ignore[dict-item]
    done = run_once(service)
    assert [(d.monitor, d.action, d.detail[:30]) for d in done] == [
        ("a", "evaluated", "ok (job:1): 0 of 4 columns dri"),
        ("b", "error", "RuntimeError: boom"),
        ("c", "evaluated", "ok (job:2): 0 of 4 columns dri"),
    ]


def test_a_pass_retries_failed_deliveries(local: Client) -> None:
    check = Scripted(drift("age"))
    service = service_for(local, check)
    with Webhook(500, 500, 500, 200) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        found = service.run_monitor("m")
        assert service.list_alerts().items[0].delivery == "failed"
        done = run_once(service, now=now_ms() + 2 * 60_000)
    assert [(d.monitor, d.action, d.alert_id) for d in done] == [("m", "delivered", found.alert_id)]
    assert len(hook.received) == 4


def test_only_the_lease_holder_evaluates(local: Client) -> None:
    check = Scripted(drift())
    service = service_for(local, check)
    service.create_monitor("hourly", "input_drift", "churn", schedule_seconds=3600)
    one, two = MonitorLoop(service, 30), MonitorLoop(service, 30)
    assert (one.lease_seconds, MonitorLoop(service, 50).lease_seconds) == (120, 150)
    assert one.run_pass() and [d.monitor for d in one.done] == ["hourly"]
    assert not two.run_pass(now=now_ms() + 2 * HOUR_MS)  # one holds the lease
    assert two.done == [] and two.state()["passes"] == 0
    assert len(check.calls) == 1
    held = lease.current(service.store, LEASE)
    assert held is not None and held.holder == one.holder
    assert one.state()["holds_lease"] is True and two.state()["holds_lease"] is False
    assert lease.release(service.store, LEASE, one.holder)
    assert two.run_pass(now=now_ms() + 2 * HOUR_MS)
    assert [d.monitor for d in two.done] == ["hourly"]
    assert not one.run_pass(now=now_ms() + 4 * HOUR_MS)  # it finds the lease taken
    assert len(check.calls) == 2
    state = two.state()
    assert state["passes"] == 1 and state["last_pass"] == {"evaluated": 1}


def test_a_pass_ends_when_its_lease_is_lost(local: Client) -> None:
    check = Scripted(drift())
    service = service_for(local, check)
    for name in ("a", "b"):
        service.create_monitor(name, "input_drift", "churn", schedule_seconds=3600)
    loop = MonitorLoop(service, 30)
    taken: list[bool] = []

    def take_over(*args: object, **kwargs: object) -> Scripted:
        # while "a" is evaluated, another replica takes the lapsed lease
        if not taken:
            lease.release(service.store, LEASE, loop.holder)
            taken.append(lease.acquire(service.store, LEASE, "someone else", 60))
        return check(*args, **kwargs)  # type: ignore[arg-type,return-value]

    service.evaluator = take_over  # type: ignore[assignment]
    assert not loop.run_pass()  # lost during the pass
    assert taken == [True]
    assert [d.monitor for d in loop.done] == ["a"]  # "b" left to the holder
    assert service.list_evaluations("b").items == []


def test_a_check_longer_than_the_lease_keeps_it(local: Client) -> None:
    """While a pass runs its lease is renewed, so a check outlasting the lease's length
    does not let another replica take it and evaluate the same monitor."""
    check = Scripted(drift())
    service = service_for(local, check)
    service.create_monitor("slow", "input_drift", "churn", schedule_seconds=3600)
    loop = MonitorLoop(service, 30)
    loop.lease_seconds = 2.0
    seen: list[bool] = []

    def slow(*args: object, **kwargs: object) -> Scripted:
        first = lease.current(service.store, LEASE)
        assert first is not None and first.holder == loop.holder
        for _ in range(400):  # until renewed (a quarter of the lease), at most 20 s
            held = lease.current(service.store, LEASE)
            if held is not None and held.expires_at_ms > first.expires_at_ms:
                break
            time.sleep(0.05)
        # a replica looking once the lease taken at the start would have expired
        later = first.expires_at_ms + 1
        seen.append(lease.acquire(service.store, LEASE, "someone else", 60, now=later))
        return check(*args, **kwargs)  # type: ignore[arg-type,return-value]

    service.evaluator = slow  # type: ignore[assignment]
    assert loop.run_pass()
    assert seen == [False]
    assert [d.action for d in loop.done] == ["evaluated"]


def test_the_scheduler_runs_in_the_server_and_health_tells_its_state(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from plinth.server.app import create_app

    settings = load_settings(home=tmp_path / "home", monitor_loop_seconds=0.05)
    app = create_app(settings, background=True)
    loop: MonitorLoop = app.state.monitor_scheduler
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        make_targets(client)
        client.monitors.create_monitor("hourly", "input_drift", "churn", schedule_seconds=3600)
        with TestClient(app) as http:
            assert loop.alive
            deadline = time.monotonic() + 60  # a bound on waiting, not what is tested
            while loop.state()["passes"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            state = http.get("/health").json()["monitor_scheduler"]
            assert state["running"] is True and state["holds_lease"] is True
            assert state["passes"] >= 1 and state["failure"] is None
            held = lease.current(client.tracking.store, LEASE)
            assert held is not None and held.holder == loop.holder
            # evaluated by the server's own checks (its data, not this test's)
            [evaluation] = client.monitors.list_evaluations("hourly").items
            assert evaluation.trigger == "schedule"
        assert not loop.alive
        assert lease.current(client.tracking.store, LEASE) is None  # given up on the way out


def test_no_scheduler_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plinth.server.app import create_app

    on = load_settings(home=tmp_path / "home")
    assert on.monitor_loop_seconds == 30
    assert not hasattr(create_app(on).state, "monitor_scheduler")  # not a background app
    assert hasattr(create_app(on, background=True).state, "monitor_scheduler")
    off = load_settings(home=tmp_path / "home", monitor_loop_seconds=0)
    assert not hasattr(create_app(off, background=True).state, "monitor_scheduler")
    monkeypatch.setenv("PLINTH_MONITOR_LOOP_SECONDS", "2.5")
    assert load_settings(home=tmp_path).monitor_loop_seconds == 2.5
    monkeypatch.setenv("PLINTH_MONITOR_LOOP_SECONDS", "-1")
    with pytest.raises(Exception, match="monitor_loop_seconds"):
        load_settings(home=tmp_path)


def test_a_drifted_insert_reaches_the_webhook_end_to_end(tmp_path: Path) -> None:
    """The real checks on a real feature group: each insert is evaluated by the scheduler
    (on_event), the undrifted one passes, the shifted one breaches and its alert reaches a
    webhook on loopback."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import connect

    client = connect(
        store_uri=f"sqlite:///{tmp_path / 'plinth.db'}",
        artifact_uri=str(tmp_path / "artifacts"),
        online_uri=f"sqlite:///{tmp_path / 'online.db'}",
    )
    fs = client.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    fs.create_feature_group(
        "customers", entity="customer", event_time="ts", schema={"spend": "float64"}
    )
    rng = np.random.default_rng(7)

    def insert(first: int, shift: float) -> None:
        fs.insert(
            "customers",
            pd.DataFrame(
                {
                    "customer_id": np.arange(first, first + 2000),
                    "ts": pd.Timestamp("2026-01-01", tz="UTC"),
                    "spend": rng.normal(50 + shift, 10, 2000),
                }
            ),
        )

    monitors = client.monitors
    with Webhook(200) as hook:
        monitors.create_monitor(
            "spend",
            "feature_drift",
            "customers",
            MonitorSpec(reference="previous"),
            on_event=True,
            webhook_url=hook.url,
        )
        insert(0, 0.0)
        [first] = run_once(monitors)
        assert first.detail.startswith("skipped (commit:0)")  # nothing to compare with yet
        insert(2000, 0.0)
        [same] = run_once(monitors)
        assert same.detail.startswith("ok (commit:1)") and same.alert_id is None
        insert(4000, 30.0)  # three standard deviations up
        [shifted] = run_once(monitors)
        assert shifted.detail.startswith("breach (commit:2)") and shifted.alert_id is not None
        assert run_once(monitors) == []
    [sent] = hook.received
    assert sent.body["alert_id"] == shifted.alert_id and sent.body["kind"] == "feature_drift"
    assert sent.body["result"]["drifted_columns"] == ["spend"]
    assert monitors.list_alerts().items[0].delivery == "delivered"
    client.close()
