"""``plinth monitors report``: one self-contained HTML file (inline style and SVG, no
script, nothing fetched from anywhere) with what the monitor's page shows; with
``--model``, a model's input drift now."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from plinth.cli.monitors_report import report
from plinth.errors import InvalidArgument
from plinth.ui.monitor_report import render_input_drift_report, render_monitor_report
from tests.backends import local_client
from tests.ui.conftest import Dashboard
from tests.ui.monitors_data import seed_drift, seed_models, services

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

# anything a browser would fetch: a script, stylesheet, image or frame by address, a CSS
# import or url(), or any absolute web address at all
_FETCHES = re.compile(
    r"<(?:script|link|img|iframe|object|embed)\b|\b(?:src|href)\s*=\s*\"(?!#)", re.I
)
_WEB = re.compile(r"https?://", re.I)


def self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert _FETCHES.findall(page) == []
    assert _WEB.findall(page) == []
    assert "@import" not in page and "url(" not in page


def test_a_drift_monitors_report_is_one_file_with_its_charts(dashboard: Dashboard) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    seed_drift(found.feature_store, seeded)
    seeded.monitors.update_monitor("spend-drift", webhook_url="https://hooks.example.com/T0/secret")
    page = render_monitor_report(seeded.monitors, seeded.data, "spend-drift")
    self_contained(page)
    assert "<h1>Monitor spend-drift</h1>" in page
    assert "--fg:" in page  # the dashboard's stylesheet, inlined
    titles = re.findall(r"<svg\b[^>]*><title>([^<]*)</title>", page)
    assert "Evaluations over time" in titles
    assert "avg_spend: reference vs current" in titles
    assert "segment: reference vs current" in titles
    assert any("per column over time" in t for t in titles)
    assert "hooks.example.com" in page and "secret" not in page
    assert "Acknowledge" not in page and "Run now" not in page  # a snapshot: no actions
    [alert] = seeded.monitors.list_alerts().items
    assert alert.message in page


def test_a_performance_monitors_report(dashboard: Dashboard) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        seed_models(client, seeded, int(time.time() * 1000))
    page = render_monitor_report(seeded.monitors, seeded.data, "churn-auc")
    self_contained(page)
    assert "<title>auc per window</title>" in page
    assert "Performance per window" in page


def test_a_models_input_drift_report(dashboard: Dashboard) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        seed_models(client, seeded, int(time.time() * 1000))
    drifted = seeded.data.input_drift("churn")  # the last day: older customers
    assert drifted.status == "drift" and drifted.drifted_columns == ["age"]
    page = render_input_drift_report(seeded.data, "churn")
    self_contained(page)
    assert "<h1>Input drift of churn (version 1)</h1>" in page
    assert drifted.summary in page.replace("&#39;", "'")
    assert re.search(r'<tr class="monitors-drifted">\s*<td>age</td>', page)
    assert re.search(r"<tr>\s*<td>spend</td>.*?<td>no</td>", page, re.S)
    assert 'aria-label="Prediction drift"' in page or "Not compared." in page
    # a look now stores no window profile: no histograms, and the page says where they are
    assert "<svg" not in page and "plinth monitors report MONITOR" in page


def test_the_command_writes_the_file_through_the_client(
    dashboard: Dashboard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    seed_drift(found.feature_store, seeded)

    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        monkeypatch.setattr("plinth.cli.monitors_report._client", lambda: client)
        app = typer.Typer()
        app.command("report")(report)
        app.command("other")(lambda: None)  # two commands: the first argument names one
        out = tmp_path / "drift.html"
        done = CliRunner().invoke(
            app, ["report", "spend-drift", "-o", str(out)], catch_exceptions=False
        )
        assert done.exit_code == 0, done.output
        assert f"wrote the report of monitor spend-drift to {out}" in done.stdout
        written = out.read_text(encoding="utf-8")
        self_contained(written)
        assert "<title>avg_spend: reference vs current</title>" in written  # profiles read
        again = CliRunner().invoke(
            app, ["report", "spend-drift", "-o", str(tmp_path / "2.html"), "--json"]
        )
        said = json.loads(again.stdout)
        assert said["path"] == str(tmp_path / "2.html") and said["bytes"] == out.stat().st_size
        with pytest.raises(InvalidArgument, match="give a monitor's NAME or --model MODEL"):
            CliRunner().invoke(app, ["report", "-o", str(out)], catch_exceptions=False)
        with pytest.raises(InvalidArgument, match="cannot write the report to"):
            CliRunner().invoke(
                app,
                ["report", "spend-drift", "-o", str(tmp_path / "no" / "x.html")],
                catch_exceptions=False,
            )
