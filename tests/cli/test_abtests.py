"""``plinth ab ...`` against the store in PLINTH_HOME: a design from a JSON file through its
whole lifecycle, and refusals as one line on stderr with exit status 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main

runner = CliRunner()

SPEC = {
    "name": "churn-v3",
    "hypothesis": "v3 keeps more customers",
    "primary": {
        "name": "revenue",
        "kind": "ratio",
        "event": "revenue",
        "denominator_event": "visit",
    },
    "arms": [
        {"name": "champion", "share": 0.5, "model_uri": "models:/churn@champion", "control": True},
        {"name": "challenger", "share": 0.5, "url": "http://127.0.0.1:8001/predict"},
    ],
    "guardrails": [{"metric": "latency_p99", "max_value": 250}],
    "mde": 0.03,
    "mode": "canary",
    "canary": {"steps": [0.5, 1.0], "every_seconds": 3600},  # starts at its first step
}


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plinth.cli.abtests.out", Console(width=220))  # no cell folds


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["ab", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["plinth", "ab", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def spec_file(tmp_path: Path, spec: Any = None, name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(SPEC if spec is None else spec))
    return str(path)


def test_a_design_through_its_lifecycle(tmp_path: Path) -> None:
    said = invoke("create", spec_file(tmp_path))
    assert "created A/B experiment churn-v3 (draft)" in said
    shown = invoke("show", "churn-v3")
    for words in (
        "v3 keeps more customers",
        "revenue: ratio of revenue / visit",
        "canary",
        "guardrail latency_p99",
        "at most 250",
        "models:/churn@champion",
        "http://127.0.0.1:8001/predict",
        "5000",
    ):
        assert words in shown, words
    assert "is running (version 2)" in invoke("start", "churn-v3", "--reason", "approved")
    assert "challenger 0.1" in invoke(
        "shares", "churn-v3", "champion=0.9", "challenger=0.1", "--reason", "canary step"
    )
    assert "is paused" in invoke("pause", "churn-v3")
    assert "is running" in invoke("resume", "churn-v3")
    listed = invoke("list", "--status", "running")
    assert "churn-v3" in listed and "champion 0.9, challenger 0.1" in listed
    assert "churn-v3" not in invoke("list", "--status", "draft")
    assert "is stopped (version 6)" in invoke("stop", "churn-v3", "--reason", "done")
    history = invoke("history", "churn-v3")
    for words in ("approved", "canary step", "champion 0.5 -> 0.9", "status: paused -> running"):
        assert words in history, words
    versions = json.loads(invoke("history", "churn-v3", "--json"))
    assert [v["action"] for v in versions] == [
        "create",
        "start",
        "update",
        "pause",
        "resume",
        "stop",
    ]
    as_json = json.loads(invoke("show", "churn-v3", "--json"))
    assert as_json["status"] == "stopped" and as_json["allocation"]["ranges"]["challenger"]
    assert plinth.default_client().abtests.get_abtest("churn-v3").version == 6


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{not json", "is not JSON"),
        ([1, 2], "give an object of the experiment's fields"),
        ({**SPEC, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({k: v for k, v in SPEC.items() if k != "mde"}, "mde: Field required"),
        ({**SPEC, "arms": [{"name": "a", "share": "half"}]}, "arms[0].share: Input should be"),
        (
            {**SPEC, "primary": {"name": "r", "kind": "ratio", "event": "revenue"}},
            "primary.denominator_event: a ratio KPI",
        ),
        ({**SPEC, "alpha": 0}, "alpha: must be between 0 and 1"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spec: Any,
    message: str,
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    assert run_main(monkeypatch, "create", str(path)) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert plinth.default_client().abtests.list_abtests().items == []


def test_refusals_exit_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "create", str(tmp_path / "missing.json")) == 1
    assert "cannot read" in capsys.readouterr().err
    invoke("create", spec_file(tmp_path))
    assert run_main(monkeypatch, "resume", "churn-v3") == 1
    assert capsys.readouterr().err == (
        "error: cannot resume A/B experiment 'churn-v3': it is draft; it has not started: "
        "start it first\n"
    )
    assert run_main(monkeypatch, "show", "nope") == 1
    assert capsys.readouterr().err == "error: A/B experiment 'nope' does not exist\n"
    assert run_main(monkeypatch, "shares", "churn-v3", "champion:0.4") == 1
    assert "'champion:0.4': give ARM=SHARE" in capsys.readouterr().err
    invoke("start", "churn-v3")
    assert run_main(monkeypatch, "shares", "churn-v3", "champion=0.4", "challenger=0.6") == 1
    assert "reason: say why" in capsys.readouterr().err
    assert run_main(monkeypatch, "list", "--status", "sideways") == 2  # a usage error


def test_power_prints_the_units_per_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    said = invoke("power", "--effect", "0.05", "--alpha", "0.05", "--power", "0.8")
    assert said.startswith("6,280.05 → 6,281 units per arm (12,562 in all;")
    three = invoke(
        "power", "--effect", "0.01", "--kind", "proportions", "--baseline", "0.1",
        "--arms", "3", "--units-per-day", "20000",
    )  # fmt: skip
    assert "Bonferroni-adjusted alpha 0.05/2 = 0.025" in three
    assert "days at 20,000 units a day" in three
    figures = json.loads(invoke("power", "--effect", "0.05", "--json"))
    assert figures["per_arm"] == 6281 and figures["total"] == 12562
    assert run_main(monkeypatch, "power", "--effect", "0.01", "--kind", "proportions") == 1
    assert run_main(monkeypatch, "power", "--effect", "0.05", "--kind", "odds") == 1


def test_plan_prints_the_sample_and_what_the_duration_is_based_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = dict(SPEC, primary={"name": "conversion", "kind": "proportion", "event": "buy"})
    invoke("create", spec_file(tmp_path, spec))
    said = invoke("plan", "churn-v3", "--baseline", "0.1")
    assert "units per arm" in said and "duration unknown: no requests in" in said
    assert json.loads(invoke("plan", "churn-v3", "--baseline", "0.1", "--json"))["days"] is None
    assert run_main(monkeypatch, "plan", "churn-v3") == 1  # a proportion needs its baseline


def test_results_table_with_an_srm_warning(tmp_path: Path) -> None:
    from tests.abtests.test_results import T0, events, exposures

    spec = dict(SPEC, primary={"name": "conversion", "kind": "proportion", "event": "buy"})
    invoke("create", spec_file(tmp_path, spec))
    root = tmp_path / "home" / "artifacts"
    rows = [(T0, f"c{i}", "champion") for i in range(1200)]
    exposures(root, rows + [(T0, f"t{i}", "challenger") for i in range(800)], "churn-v3")
    events(root, [{"unit": f"c{i}", "event_id": str(i)} for i in range(0, 1200, 4)], "churn-v3")
    shown = invoke("results", "churn-v3")
    assert "champion (control)" in shown and "1,200" in shown and "0.25" in shown
    assert "-0.25 [" in shown and "-100.00% [" in shown  # the challenger converts no one
    assert "SAMPLE RATIO MISMATCH: p = " in shown
    assert "guardrail latency_p99: no latency measured in arm(s)" in shown
    assert json.loads(invoke("results", "churn-v3", "--json"))["units_by_arm"] == {
        "champion": 1200,
        "challenger": 800,
    }


def test_check_then_promote_the_winner(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from tests.abtests.test_results import T0, events, exposures

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(frame, [0, 0, 1, 1])
    with plinth.connect() as client:
        for _ in range(2):
            client.register_model(model, "churn", input_example=frame)
    spec = dict(
        SPEC,
        primary={"name": "conversion", "kind": "proportion", "event": "buy"},
        arms=[
            {"name": "champion", "share": 0.5, "model_uri": "models:/churn/1", "control": True},
            {"name": "challenger", "share": 0.5, "model_uri": "models:/churn/2"},
        ],
    )
    invoke("create", spec_file(tmp_path, spec))
    invoke("start", "churn-v3")
    root = tmp_path / "home" / "artifacts"
    arms = {"champion": 40, "challenger": 120}  # buyers of 400 units each
    exposures(root, [(T0, f"{a}{i}", a) for a in arms for i in range(400)], "churn-v3")
    events(root, [{"unit": f"{a}{i}", "event_id": f"{a}{i}"} for a, n in arms.items() for i in range(n)], "churn-v3")  # fmt: skip
    checked = invoke("check", "churn-v3")
    assert checked.startswith("churn-v3: left it running (units: champion 400, challenger 400;")
    assert "planned per arm" in checked
    said = invoke("promote", "churn-v3", "--reason", "triples conversion")
    assert said.startswith("promoted arm challenger of churn-v3: churn v2 is PRODUCTION;")
    assert "the experiment is stopped" in said
    assert json.loads(invoke("check", "churn-v3", "--json"))["status"] == "stopped"
