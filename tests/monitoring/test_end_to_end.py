"""Monitoring end to end on the embedded default, as ``plinth server``'s scheduler runs it:
a model's serving window drifting, and its late labels showing its performance fell, each
raising an alert that reaches a webhook on loopback (the feature-group insert's path is
``test_loop.test_a_drifted_insert_reaches_the_webhook_end_to_end``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.monitoring.loop import run_once
from plinth.monitoring.types import MonitorSpec
from plinth.store.sql import now_ms
from tests.backends import local_client
from tests.monitoring.conftest import DAY, churn_model, log_predictions, outcomes
from tests.monitoring.scripted import Webhook

HOUR = 3_600_000


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Client]:
    made = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    made.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    yield made
    made.close()


def test_a_drifting_serving_window_reaches_the_webhook(local: Client) -> None:
    churn_model(local)
    now = now_ms()
    log_predictions(local, now - DAY, now - HOUR, 2_000, seed=80)  # like the training data
    monitors = local.monitors
    with Webhook(200) as hook:
        monitors.create_monitor(
            "churn-inputs", "input_drift", "churn", schedule_seconds=3600, webhook_url=hook.url
        )
        [calm] = run_once(monitors, now)  # the last day's window
        assert calm.detail.startswith("ok (schedule)"), calm.detail
        # then the customers change: older, and most of them on the pro plan
        log_predictions(local, now - HOUR, now, 6_000, seed=81, age_shift=15, pro=0.8)
        assert run_once(monitors, now + HOUR // 2) == []  # not due again yet
        [drifted] = run_once(monitors, now + 2 * HOUR)
        assert drifted.detail.startswith("breach (schedule)") and drifted.alert_id is not None
    [sent] = hook.received
    assert sent.body["alert_id"] == drifted.alert_id and sent.body["kind"] == "input_drift"
    assert "2 of 3 columns drifted (67%) (age, plan)" in sent.body["summary"]
    [alert] = monitors.list_alerts().items
    assert alert.delivery == "delivered" and "(age, plan)" in alert.message
    statuses = [e.status for e in monitors.list_evaluations("churn-inputs").items]
    assert statuses == ["breach", "ok"]  # newest first


def test_late_labels_that_show_a_fall_reach_the_webhook(local: Client) -> None:
    churn_model(local)
    now = now_ms()
    day = log_predictions(local, now - DAY, now - HOUR, 2_000, seed=90).frame
    monitors = local.monitors
    with Webhook(200) as hook:
        for name, floor in (("auc-floor", 0.6), ("auc-target", 0.9)):
            monitors.create_monitor(
                name,
                "performance",
                "churn",
                MonitorSpec(metric="auc", min_value=floor),
                schedule_seconds=3600,
                webhook_url=hook.url,
            )
        before = run_once(monitors, now)
        assert [a.detail.split(" (")[0] for a in before] == ["skipped", "skipped"]  # no labels
        y = outcomes(day["p"].to_numpy(), seed=91)
        receipt = local.log_labels(
            "churn",
            [
                {"label": int(v), "request_id": r, "row": int(i)}
                for v, r, i in zip(y, day["request_id"], day["row"], strict=True)
            ],
        )
        assert receipt.accepted == 2_000 and receipt.unmatched == 0
        after = {a.monitor: a for a in run_once(monitors, now + 2 * HOUR)}
    assert after["auc-floor"].detail.startswith("ok"), after["auc-floor"].detail
    assert after["auc-target"].detail.startswith("breach")
    [sent] = hook.received
    assert sent.body["monitor"] == "auc-target" and sent.body["kind"] == "performance"
    assert "below min_value 0.9" in sent.body["summary"]
