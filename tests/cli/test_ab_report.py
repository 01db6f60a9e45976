"""``plinth ab report NAME -o FILE``: one HTML file with the results, charts and warnings
that opens without a network (everything inlined, nothing fetched)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main
from tests.ui.pages.abtests_data import design, guarded, traffic

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

runner = CliRunner()
_FETCHES = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=", re.I)
_SPEC = re.compile(r'<script type="application/json" id="abtest-spec-([^"]+)">(.*?)</script>', re.S)


def test_the_report_is_one_file_with_the_results(tmp_path: Path) -> None:
    ab = plinth.default_client().abtests
    design(ab, guardrails=guarded("revenue", 0.05))
    ab.start_abtest("churn", reason="arms serving")
    units, buyers = {"control": 1200, "b": 800}, {"control": 120, "b": 120}
    traffic(ab, "churn", units, buyers, revenue={"control": 20.0, "b": 10.0})
    out = tmp_path / "churn.html"
    done = runner.invoke(app, ["ab", "report", "churn", "-o", str(out)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert f"wrote the report of churn to {out}" in done.stdout
    page = out.read_text(encoding="utf-8")
    again = runner.invoke(app, ["ab", "report", "churn", "-o", str(tmp_path / "2.html"), "--json"])
    said = json.loads(again.stdout)
    assert said["path"] == str(tmp_path / "2.html") and said["bytes"] > 10_000
    assert _FETCHES.findall(page) == []  # no script, style or image from anywhere
    assert "@import" not in page and "url(http" not in page
    assert "uPlot" in page and "data-spec=" in page  # the chart library and our charts
    results = ab.abtest_results("churn")
    found = results.primary["b"]
    assert ">1,200<" in page and ">800<" in page
    assert "0.1 <span" in page and "0.15 <span" in page
    assert f"{found.absolute_lift:+.4g}" == "+0.05" and "+0.05 <span" in page
    specs = {key: json.loads(spec) for key, spec in _SPEC.findall(page)}
    [b] = [s for s in specs["lift-absolute"]["series"] if s["label"] == "b"]
    assert (b["y"], b["lower"], b["upper"]) == (
        [found.absolute_lift],
        [found.absolute_ci[0]],
        [found.absolute_ci[1]],
    )
    assert "guardrail-revenue" in specs
    warnings = page.split('class="abtests-warning"', 1)[1].split("</div>", 1)[0]
    assert "Sample ratio mismatch" in warnings and "Guardrail revenue broken in arm b" in warnings
    assert "arms serving" in page.split('id="abtest-history"', 1)[1]
    assert 'hx-get="' not in page  # a snapshot: nothing polls


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["plinth", "ab", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_refusals_exit_1_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nope.html"
    assert run_main(monkeypatch, "report", "nope", "-o", str(out)) == 1
    assert capsys.readouterr().err == "error: A/B experiment 'nope' does not exist\n"
    assert not out.exists()
    design(plinth.default_client().abtests)
    folder = tmp_path / "no-such-folder"
    assert run_main(monkeypatch, "report", "churn", "-o", str(folder / "churn.html")) == 1
    assert f"error: cannot write the report to {folder}" in capsys.readouterr().err
    assert run_main(monkeypatch, "report", "churn") == 2  # -o is required


def test_the_report_of_a_server_s_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.client import set_default_client
    from plinth.config import load_settings
    from tests.backends import local_client, running_server

    home = tmp_path / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as local:
            design(local.abtests)
            local.abtests.start_abtest("churn")
            traffic(local.abtests, "churn", {"control": 400, "b": 400}, {"control": 40, "b": 80})
        monkeypatch.setenv("PLINTH_URI", url)  # the CLI is a remote client of the server
        set_default_client(None)
        out = tmp_path / "remote.html"
        try:
            assert run_main(monkeypatch, "report", "churn", "-o", str(out)) == 0
        finally:
            plinth.default_client().close()  # the CLI's remote client, and its connections
            set_default_client(None)
    page = out.read_text(encoding="utf-8")
    assert ">400<" in page and "0.1 <span" in page and "0.2 <span" in page
    assert "+0.1 <span" in page and "lift-absolute" in page
