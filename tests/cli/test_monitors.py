"""``plinth monitors ...`` against the store in PLINTH_HOME: create, list, show, run (its exit
codes), evaluations, alerts, ack, enable/disable, delete, tick; refusals as one line on
stderr with exit status 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main
from plinth.monitoring import service as monitor_service
from tests.monitoring.scripted import Outcome, Scripted, drift, make_targets

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plinth.cli.monitors.out", Console(width=220))  # no cell folds


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    """The checks the CLI's monitors run: scripted by the test (the service's default
    evaluator, replaced where the client's MonitorService finds it)."""
    scripted = Scripted(drift())
    monkeypatch.setattr(monitor_service, "default_evaluator", scripted)
    monkeypatch.setattr(monitor_service, "default_newest_event", scripted.newest_event)
    make_targets(plinth.default_client())
    yield scripted


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["monitors", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["plinth", "monitors", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_create_list_show(check: Scripted) -> None:
    said = invoke(
        "create", "churn-inputs", "--kind", "input_drift", "--target", "churn",
        "--columns", "age, plan", "--max-drifted-share", "0.3", "--window", "6h",
        "--schedule", "1h", "--webhook", "https://hooks.example.com/x", "--cooldown", "30m",
    )  # fmt: skip
    assert "created monitor churn-inputs (input_drift on churn): every 1h" in said
    made = plinth.default_client().monitors.get_monitor("churn-inputs")
    assert (made.schedule_seconds, made.cooldown_seconds) == (3600, 1800)
    assert made.spec.columns == ["age", "plan"] and made.spec.window_seconds == 6 * 3600
    assert made.spec.max_drifted_share == 0.3
    invoke(
        "create",
        "auc",
        "--kind",
        "performance",
        "--target",
        "churn",
        "--metric",
        "auc",
        "--min-value",
        "0.7",
    )
    invoke(
        "create",
        "group",
        "--kind",
        "feature_drift",
        "--target",
        "customers",
        "--on-event",
        "--schedule",
        "90",
    )
    listed = invoke("list")
    assert "churn-inputs" in listed and "every 1h" in listed
    assert "every 90s and on each new commit" in listed and "by hand only" in listed
    as_json = json.loads(invoke("list", "--json"))
    assert [m["name"] for m in as_json] == ["auc", "churn-inputs", "group"]
    shown = invoke("show", "auc")
    assert "metric" in shown and "min 0.7, max None" in shown and "latest evaluations" in shown
    assert "every 1h" in invoke("show", "churn-inputs")
    shown = json.loads(invoke("show", "churn-inputs", "--json"))
    assert shown["monitor"]["webhook_url"] == "https://hooks.example.com/x"
    assert shown["evaluations"] == []


def test_run_prints_the_outcome_and_exits_by_it(check: Scripted) -> None:
    invoke("create", "m", "--kind", "input_drift", "--target", "churn")
    check.answers = [
        drift(),
        drift("age"),
        drift("age"),
        drift("age"),
        Outcome("skipped", "skipped: the window is empty"),
        ValueError("broken check"),
    ]
    assert "ok 0 of 4 columns drifted (0%)" in invoke("run", "m")
    said = invoke("run", "m")
    assert "breach 1 of 4 columns drifted (25%) -> alert 1 (plinth monitors ack 1)" in said
    assert "(within the cooldown of alert 1: no new alert)" in invoke("run", "m")
    invoke("run", "m", "--fail-on-breach", code=3)
    assert "skipped: the window is empty" in invoke("run", "m", "--fail-on-breach")
    failed = json.loads(invoke("run", "m", "--json", code=1))
    assert (failed["status"], failed["summary"]) == ("error", "ValueError: broken check")
    history = invoke("evaluations", "m")
    assert "ValueError: broken check" in history and "(cooldown of 1)" in history
    assert [
        e["status"] for e in json.loads(invoke("evaluations", "m", "--json", "--status", "breach"))
    ] == ["breach"] * 3


def test_alerts_ack_enable_disable_delete(check: Scripted) -> None:
    check.answers = [drift("age")]
    invoke("create", "m", "--kind", "input_drift", "--target", "churn", "--cooldown", "0")
    invoke("run", "m")
    invoke("run", "m")
    listed = invoke("alerts")
    assert "1 of 4 columns drifted (25%)" in listed and "warning" in listed
    assert "acknowledged by" in invoke("ack", "1")
    assert [a["id"] for a in json.loads(invoke("alerts", "--open", "--json"))] == [2]
    assert [a["id"] for a in json.loads(invoke("alerts", "--monitor", "m", "--json"))] == [2, 1]
    assert "monitor m disabled" in invoke("disable", "m")
    assert not plinth.default_client().monitors.get_monitor("m").enabled
    assert "monitor m enabled: by hand only" in invoke("enable", "m")
    assert "deleted monitor m" in invoke("delete", "m", "--yes")
    assert json.loads(invoke("list", "--json")) == []


def test_tick_runs_the_scheduler_once(check: Scripted) -> None:
    invoke("create", "hourly", "--kind", "input_drift", "--target", "churn", "--schedule", "1h")
    said = invoke("tick")
    assert "hourly" in said and "evaluated" in said and "ok (schedule)" in said
    assert "nothing was due" in invoke("tick")
    invoke("create", "events", "--kind", "input_drift", "--target", "churn", "--on-event")
    check.events = {"events": RuntimeError("no jobs table")}  # type: ignore[dict-item]
    invoke("tick", code=1)


def test_refusals_are_one_line_with_exit_status_1(
    check: Scripted, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, message in (
        (["create", "m", "--kind", "latency", "--target", "churn"], "kind: 'latency' is not one of"),
        (["create", "m", "--kind", "input_drift", "--target", "churn", "--schedule", "soon"],
         "--schedule: 'soon' is not a duration: give seconds (3600) or 30m, 1h, 7d"),
        (["create", "m", "--kind", "input_drift", "--target", "churn", "--schedule", "30s"],
         "schedule_seconds: a whole number from 60"),
        (["create", "m", "--kind", "input_drift", "--target", "nope"],
         "target: registered model 'nope' does not exist"),
        (["show", "nope"], "monitor 'nope' does not exist"),
        (["run", "nope"], "monitor 'nope' does not exist"),
        (["ack", "7"], "alert 7 does not exist"),
    ):  # fmt: skip
        assert run_main(monkeypatch, *args) == 1
        said = capsys.readouterr().err
        assert said.startswith("error: ") and message in said, said
        assert said.count("\n") == 1
