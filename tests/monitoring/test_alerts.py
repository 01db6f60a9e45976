"""Alerts: a breach is stored, logged and POSTed to a real webhook on loopback, retried with
back-off (500s, then a 200), not repeated within the cooldown for the same finding, and a
webhook that never answers costs one delivery budget and is recorded as failed."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from plinth.client import Client
from plinth.monitoring import alerts as alerting
from plinth.monitoring.loop import retry_deliveries
from plinth.monitoring.types import MonitorSpec
from plinth.store.schema import alerts, monitors
from plinth.store.sql import now_ms
from tests.backends import local_client
from tests.monitoring.scripted import (
    FAST,
    Outcome,
    Scripted,
    Webhook,
    drift,
    make_targets,
    service_for,
    silent_webhook,
)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Client]:
    with local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "a")) as client:
        make_targets(client)
        yield client


def test_a_breach_alerts_logs_and_reaches_the_webhook(
    local: Client, caplog: pytest.LogCaptureFixture
) -> None:
    service = service_for(local, Scripted(drift("age", "plan")))
    with Webhook(200) as hook:
        service.create_monitor("churn-inputs", "input_drift", "churn", webhook_url=hook.url)
        with caplog.at_level(logging.WARNING, logger="plinth.monitoring"):
            found = service.run_monitor("churn-inputs")
    assert found.status == "breach" and found.alert_id is not None
    [alert] = service.list_alerts().items
    assert (alert.id, alert.evaluation_id, alert.monitor) == (
        found.alert_id,
        found.id,
        "churn-inputs",
    )
    assert (alert.severity, alert.status, alert.message) == (
        "warning",
        "open",
        "2 of 4 columns drifted (50%)",
    )
    assert (alert.delivery, alert.attempts, alert.last_error) == ("delivered", 1, None)
    assert alert.dedup_key == "drift:age,plan"
    [sent] = hook.received
    assert sent.path == "/hooks/plinth" and sent.headers["content-type"] == "application/json"
    assert sent.body == {
        "monitor": "churn-inputs",
        "kind": "input_drift",
        "target": "churn",
        "status": "breach",
        "severity": "warning",
        "summary": "2 of 4 columns drifted (50%)",
        "evaluation_id": found.id,
        "alert_id": alert.id,
        "dedup_key": "drift:age,plan",
        "at": alert.at.isoformat(),
        "result": {"drifted_share": 0.5, "preset": "plinth", "drifted_columns": ["age", "plan"]},
    }
    said = [r.getMessage() for r in caplog.records]
    assert (
        f"monitor 'churn-inputs' (input_drift on churn): alert {alert.id} [warning]: 2 of 4 columns drifted (50%)"
        in said
    )


def test_delivery_is_retried_with_back_off_until_the_webhook_takes_it(local: Client) -> None:
    service = service_for(local, Scripted(drift("age")))
    waits: list[float] = []
    policy = replace(FAST, backoff=0.05)
    with Webhook(500, 503, 200) as hook:
        sent = alerting.post(hook.url, {"alert_id": 1}, policy, sleep=waits.append)
        assert sent == alerting.DeliveryResult(True, 3, None)
        assert waits == [0.05, 0.1]  # exponential back-off between the attempts
        assert [r.body for r in hook.received] == [{"alert_id": 1}] * 3
    with Webhook(500, 500, 500, 500, 200) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        found = service.run_monitor("m")  # a round of 3 attempts, all refused
        [alert] = service.list_alerts().items
        assert (alert.delivery, alert.attempts, alert.rounds) == ("failed", 3, 1)
        assert alert.last_error == "HTTP 500: status 500"
        # the scheduler tries again once the round's back-off has passed, not before
        assert retry_deliveries(service, now=now_ms()) == []
        done = retry_deliveries(service, now=now_ms() + 61_000)
        assert [(d.monitor, d.action, d.alert_id) for d in done] == [
            ("m", "delivered", found.alert_id)
        ]
    [alert] = service.list_alerts().items
    assert (alert.delivery, alert.attempts, alert.last_error) == ("delivered", 5, None)
    assert alert.rounds == 2
    assert len(hook.received) == 5
    assert {r.body["alert_id"] for r in hook.received} == {alert.id}
    assert retry_deliveries(service, now=now_ms() + 10**9) == []  # delivered: never again


def test_a_refusal_is_not_repeated_and_attempts_run_out(local: Client) -> None:
    service = service_for(local, Scripted(drift("age")), replace(FAST, max_attempts=6))
    with Webhook(404) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        service.run_monitor("m")
        [alert] = service.list_alerts().items
        assert (alert.delivery, alert.attempts) == ("failed", 1)  # a 404 is not worth a retry
        assert (alert.rounds, alert.last_error) == (1, "not retried: HTTP 404: status 404")
        hook.statuses = [500]
        assert retry_deliveries(service, now=now_ms() + 10**9) == []  # nor ever again
    assert len(hook.received) == 1
    service.create_monitor("n", "input_drift", "churn", webhook_url=hook.url)
    with Webhook(500) as hook:
        service.update_monitor("n", webhook_url=hook.url)
        service.run_monitor("n")
        later = now_ms() + 10**8
        assert [d.action for d in retry_deliveries(service, now=later)] == ["failed"]
        alert = service.list_alerts(monitor="n").items[0]
        assert (alert.attempts, alert.rounds, alert.last_error) == (
            6,
            2,
            "HTTP 500: status 500",
        )
        assert retry_deliveries(service, now=later) == []  # 6 attempts at most: given up
    assert len(hook.received) == 6


def test_short_rounds_back_off_by_rounds_not_attempts(local: Client) -> None:
    """Rounds cut short (a 429, then a back-off longer than the budget left: one attempt
    each) still back off: the second retry waits twice as long as the first."""
    service = service_for(local, Scripted(drift("age")), replace(FAST, backoff=100.0))
    with Webhook(429) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        service.run_monitor("m")
        start = service.list_alerts().items[0]
        at = round(start.at.timestamp() * 1000)
        assert [d.action for d in retry_deliveries(service, now=at + 61_000)] == ["failed"]
        assert retry_deliveries(service, now=at + 62_000) == []  # round 3: after 120 s
        assert [d.action for d in retry_deliveries(service, now=at + 121_000)] == ["failed"]
        assert retry_deliveries(service, now=at + 200_000) == []  # round 4: after 240 s
    assert len(hook.received) == 3
    [alert] = service.list_alerts().items
    assert (alert.rounds, alert.last_error) == (3, "HTTP 429: status 429")


def test_a_webhook_that_never_answers_costs_one_budget(local: Client) -> None:
    policy = replace(FAST, timeout=0.3, budget=1.0)
    service = service_for(local, Scripted(drift("age")), policy)
    with silent_webhook() as url:
        service.create_monitor("m", "input_drift", "churn", webhook_url=url)
        started = time.monotonic()
        found = service.run_monitor("m")
        spent = time.monotonic() - started
    assert found.status == "breach"  # the evaluation is answered all the same
    [alert] = service.list_alerts().items
    assert alert.delivery == "failed" and 1 <= alert.attempts <= 3
    assert alert.rounds == 1
    assert re.fullmatch(r"no (complete )?answer within 0\.[0-9]+ s", alert.last_error or "")
    assert spent < 10  # bounded by the budget (1 s), not hanging: a generous bound


def test_the_webhook_is_told_after_the_transaction_commits(local: Client) -> None:
    """While the webhook is being told, the store takes other writes (no transaction is
    held open across the network) and the alert is already there to read."""
    service = service_for(local, Scripted(drift("age")))
    seen: list[int] = []

    def meanwhile() -> None:
        with local.tracking.store.write() as conn:
            conn.execute(update(monitors).values(cooldown_seconds=7))
        seen.extend(a.id for a in service.list_alerts())

    with Webhook(200, during=meanwhile) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        found = service.run_monitor("m")
    assert hook.failures == []
    assert seen == [found.alert_id]
    assert service.get_monitor("m").cooldown_seconds == 7


def test_the_same_finding_alerts_once_per_cooldown(local: Client) -> None:
    check = Scripted(drift("age"), drift("age"), drift("age", "plan"), drift(), drift("age"))
    service = service_for(local, check)
    service.create_monitor("m", "input_drift", "churn", cooldown_seconds=3600)
    found = [service.run_monitor("m") for _ in range(5)]
    assert [f.status for f in found] == ["breach", "breach", "breach", "ok", "breach"]
    first, again, other, _, later = found
    assert first.alert_id is not None and first.suppressed_by is None
    assert again.alert_id is None and again.suppressed_by == first.alert_id  # stored all the same
    assert other.alert_id is not None  # a new finding (plan drifted too) alerts at once
    assert later.suppressed_by == first.alert_id
    assert [a.dedup_key for a in service.list_alerts()] == ["drift:age,plan", "drift:age"]
    assert [e.suppressed_by for e in service.list_evaluations("m")][-2] == first.alert_id
    # once the cooldown has passed, the same finding alerts again
    with local.tracking.store.write() as conn:
        conn.execute(update(alerts).values(at=alerts.c.at - 3_601_000))
    assert service.run_monitor("m").alert_id is not None
    # without a cooldown, every breach alerts
    service.update_monitor("m", cooldown_seconds=0)
    assert service.run_monitor("m").alert_id is not None
    assert len(service.list_alerts().items) == 4


def test_a_performance_breach_is_critical_and_keyed_by_its_metric(local: Client) -> None:
    low = Outcome("breach", "auc 0.61 < 0.7", {"metric": "auc", "value": 0.61, "windows": [1, 2]})
    service = service_for(local, Scripted(low))
    service.create_monitor("auc", "performance", "churn", MonitorSpec(metric="auc", min_value=0.7))
    service.run_monitor("auc")
    [alert] = service.list_alerts().items
    assert (alert.severity, alert.dedup_key, alert.delivery) == ("critical", "metric:auc", "none")
    assert alerting.result_summary(low.result) == {"metric": "auc", "value": 0.61}


def test_alerts_are_listed_by_monitor_and_status_and_acknowledged(local: Client) -> None:
    service = service_for(local, Scripted(drift("age")))
    for name in ("a", "b"):
        service.create_monitor(name, "input_drift", "churn", cooldown_seconds=0)
        service.run_monitor(name)
    service.run_monitor("a")
    assert [(x.monitor, x.id) for x in service.list_alerts()] == [("a", 3), ("b", 2), ("a", 1)]
    assert [x.id for x in service.list_alerts(monitor="a")] == [3, 1]
    done = service.acknowledge_alert(1)
    assert done.status == "acknowledged" and done.acknowledged_by and done.acknowledged_at
    assert service.acknowledge_alert(1) == done  # the first acknowledgement stays
    assert [x.id for x in service.list_alerts(status="open")] == [3, 2]
    assert [x.id for x in service.list_alerts(status="acknowledged")] == [1]
    from plinth.errors import InvalidArgument, NotFound

    with pytest.raises(InvalidArgument, match="status: 'closed' is not one of open, acknowledged"):
        service.list_alerts(status="closed")
    with pytest.raises(NotFound, match="alert 99 does not exist"):
        service.acknowledge_alert(99)


def test_long_findings_are_keyed_within_the_column(local: Client) -> None:
    many = [f"column_{i:03d}" for i in range(200)]
    service = service_for(local, Scripted(drift(*many, of=200)))
    service.create_monitor("wide", "input_drift", "churn")
    service.run_monitor("wide")
    [alert] = service.list_alerts().items
    assert len(alert.dedup_key) == 400 and alert.dedup_key.startswith("drift:column_000,")
    assert alert.dedup_key == alerting.dedup_key(
        service.get_monitor("wide"), drift(*many, of=200).result
    )


def test_an_alert_whose_webhook_was_removed_is_not_left_pending(
    local: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_for(local, Scripted(drift("age")))
    service.create_monitor("m", "input_drift", "churn", webhook_url="http://127.0.0.1:9/x")
    with monkeypatch.context() as patched:  # the process dies before the alert's round
        patched.setattr(alerting, "deliver", lambda *args, **kwargs: None)
        service.run_monitor("m")
    assert service.list_alerts().items[0].delivery == "pending"
    service.update_monitor("m", webhook_url="")  # the owner removes the webhook
    assert retry_deliveries(service, now=now_ms() + 10**9) == []
    [alert] = service.list_alerts().items
    assert (alert.delivery, alert.attempts) == ("none", 0)


@contextlib.contextmanager
def trickling_webhook() -> Iterator[str]:
    """A receiver sending its status line at once, then a header one byte each 0.1 s (for
    10 s at most): every read gets something within its timeout, the answer never ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100):
                    time.sleep(0.1)
                    conn.sendall(b"a")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


def test_a_webhook_trickling_its_answer_is_cut_at_the_budget() -> None:
    policy = replace(FAST, attempts=1, timeout=0.5, budget=1.0)
    with trickling_webhook() as url:
        started = time.monotonic()
        sent = alerting.post(url, {"alert_id": 1}, policy)
        spent = time.monotonic() - started
    assert (sent.delivered, sent.attempts) == (False, 1)
    assert re.fullmatch(r"no complete answer within [0-9.]+ s", sent.last_error or "")
    assert spent < 5  # the budget (1 s), not the trickle (10 s): a generous bound


def test_an_alert_being_delivered_is_not_picked_again(local: Client) -> None:
    """While a round is under way the alert is ``sending``: the scheduler does not start
    another one (it did, for a round longer than the grace), unless the round's lease has
    run out (its process died)."""
    service = service_for(local, Scripted(drift("age")))
    meanwhile: list[Any] = []

    def scheduler_pass() -> None:
        if not meanwhile:  # once: the nested round would call this again
            meanwhile.append(service.list_alerts().items[0])
            meanwhile.append(retry_deliveries(service, now=now_ms() + 31_000))

    with Webhook(200, during=scheduler_pass) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        service.run_monitor("m")
    assert hook.failures == []
    during, passed = meanwhile
    assert (during.delivery, during.rounds, during.last_error) == ("sending", 1, None)
    assert passed == [] and len(hook.received) == 1
    [alert] = service.list_alerts().items
    assert (alert.delivery, alert.attempts, alert.last_error) == ("delivered", 1, None)
    # a claim still held is not taken by another process, even one calling deliver itself
    with local.tracking.store.write() as conn:
        conn.execute(update(alerts).values(delivery="sending", claimed_at=now_ms()))
    assert alerting.deliver(local.tracking.store, alert.id, FAST) is None
    # a round whose process died is taken up once its claim has expired
    with local.tracking.store.write() as conn:
        conn.execute(update(alerts).values(claimed_at=5))
    with Webhook(200) as hook:
        service.update_monitor("m", webhook_url=hook.url)
        done = retry_deliveries(service, now=now_ms())
    assert [d.action for d in done] == ["delivered"] and len(hook.received) == 1
    [alert] = service.list_alerts().items
    assert (alert.delivery, alert.rounds, alert.attempts) == ("delivered", 2, 2)
    with local.tracking.store.read() as conn:
        assert conn.execute(select(alerts.c.claimed_at)).scalar_one() is None


def test_of_two_processes_reading_the_same_alert_one_takes_its_round(local: Client) -> None:
    """Both read the alert due; the claim (an update on the round read) succeeds for one:
    the other, or one reading it before that round ended, makes no second round."""
    service = service_for(local, Scripted(drift("age")))
    with Webhook(500) as hook:
        service.create_monitor("m", "input_drift", "churn", webhook_url=hook.url)
        found = service.run_monitor("m")  # round 1: three 500s
    assert found.alert_id is not None and len(hook.received) == 3
    store = local.tracking.store
    first, second = (alerting.pending_delivery(store, found.alert_id) for _ in range(2))
    assert first is not None and second is not None and first.rounds == 1
    now = now_ms()
    assert alerting._claim(store, first, now, FAST) is True
    assert alerting._claim(store, second, now, FAST) is False  # a live claim holds it
    failed = alerting.DeliveryResult(False, 1, "HTTP 500")
    alerting.record_delivery(store, found.alert_id, failed, now)
    # the round ended: its claim is free, but the alert is no longer as the second read it
    assert alerting._claim(store, second, now, FAST) is False
    [alert] = service.list_alerts().items
    assert (alert.delivery, alert.rounds, alert.last_error) == ("failed", 2, "HTTP 500")
