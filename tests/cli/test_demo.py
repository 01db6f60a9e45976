"""``plinth demo`` end to end: the real command on a temporary home, then every step's
outcome read back from the demo's store through the public client: the feature group's
commits, the runs and their lineage, versions and stages, the prediction log, the A/B
test's result, the alert, the pipeline run, the decision and the score table's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from plinth.cli import app
from plinth.client import Client, connect
from plinth.demo import loop, retrain, story
from plinth.demo.runner import MARKER, STEPS, prepare_home
from plinth.demo.world import FEATURES, make_world
from plinth.errors import InvalidArgument
from plinth.registry.types import Stage

runner = CliRunner(env={"COLUMNS": "200"})
CUSTOMERS = 1_000
SEED = 11


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, str]:
    """The demo's home, its JSON summary (stdout) and its progress lines (stderr)."""
    home = tmp_path_factory.mktemp("demo") / "home"
    args = ["demo", "--home", str(home), "--seed", str(SEED), "--customers", str(CUSTOMERS)]
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return home, json.loads(result.stdout), result.stderr


@pytest.fixture
def store(demo_home: tuple[Path, Any, str]) -> Client:
    home, _, _ = demo_home
    return connect(
        store_uri=f"sqlite:///{home / 'plinth.db'}",
        artifact_uri=str(home / "artifacts"),
        online_uri=f"sqlite:///{home / 'online.db'}",
        home=str(home),
    )


pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    # starlette.testclient warns once, on import, that it prefers httpx2 over httpx
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]


def test_each_step_prints_its_line_then_where_to_look(demo_home: tuple[Path, Any, str]) -> None:
    home, summary, progress = demo_home
    done = [line for line in progress.splitlines() if line.startswith("✓")]
    assert len(done) == 10, progress
    for number, (line, step) in enumerate(zip(done, summary["steps"], strict=True), start=1):
        assert line.startswith(f"✓ {number:>2}. {step['line'][:60]}")  # long lines wrap
    assert [s["step"] for s in summary["steps"]] == [title for title, _ in STEPS]
    # on its seed the whole story happens: the retrained model promoted, everyone scored
    assert all(s["ok"] for s in summary["steps"]) and summary["ended_early"] == []
    assert summary["made"]["decision"] == "promoted"
    assert "✗" not in progress and "ended early" not in progress
    assert not any(line.startswith("!") for line in progress.splitlines())
    assert summary["home"] == str(home.resolve())
    dashboard = summary["dashboard"]
    assert dashboard["A/B test results"] == f"http://127.0.0.1:5151/ui/abtests/{loop.AB}"
    assert dashboard["retraining run"] == "http://127.0.0.1:5151/ui/pipeline-runs/1"
    assert f"PLINTH_HOME={home.resolve()} plinth models history churn" in summary["commands"]


def test_every_page_it_points_to_answers(demo_home: tuple[Path, Any, str]) -> None:
    from fastapi.testclient import TestClient

    from plinth.config import load_settings
    from plinth.server.app import create_app

    home, summary, _ = demo_home
    assert len(summary["dashboard"]) == 12
    with TestClient(create_app(load_settings(home=home))) as http:
        for url in summary["dashboard"].values():
            answer = http.get(url.removeprefix("http://127.0.0.1:5151"))
            assert answer.status_code == 200, (url, answer.text[:500])
        assert "customer_features" in http.get(f"/ui/features/groups/{story.GROUP}").text


def test_the_feature_group_holds_two_commits_and_no_refused_batch(store: Client) -> None:
    commits = store.feature_store().service.list_commits(story.GROUP, 1)
    # the broken batch (negative spend) made no commit: the history, then the shifted week
    assert [(c.commit_version, c.rows) for c in commits] == [(0, 4 * CUSTOMERS), (1, CUSTOMERS)]
    assert all(c.validation_passed for c in commits)
    assert {s.column for s in commits[0].statistics} >= set(FEATURES)
    drifted = [c["column"] for c in (commits[1].drift or {})["columns"] if c["drifted"]]
    assert "support_calls_30d" in drifted


def test_runs_carry_per_epoch_metrics_and_the_training_set(store: Client) -> None:
    runs = store.search_runs(experiments=[story.EXPERIMENT]).items
    assert sorted(r.name for r in runs) == [
        "gradient-boosting",
        "linear-alpha-0.0001",
        "linear-alpha-0.01",
    ]
    for run in runs:
        assert run.status.value == "FINISHED"
        assert len(store.get_metric_history(run.id, "val/auc")) >= 10
    first = store.get_model_version(story.MODEL, 1)
    dataset = store.feature_store().get_training_dataset(1)
    assert first.run_id in {r.id for r in runs if r.name.startswith("linear")}
    assert first.lineage["training_datasets"] == [dataset.id]
    assert dataset.rows == 3 * CUSTOMERS


def test_versions_moved_through_staging_production_and_the_loop(store: Client) -> None:
    history = store.model_history(story.MODEL)
    moves = [(h.version, h.to_value) for h in history if h.action == "stage"]
    assert moves[:3] == [(1, "STAGING"), (1, "PRODUCTION"), (2, "STAGING")]
    promoted = [h for h in history if h.action == "stage" and h.to_value == "PRODUCTION"]
    # the A/B winner (if the challenger won), then the retrained challenger
    won = store.abtests.abtest_history(loop.AB)[-1].action == "promote"
    assert [h.version for h in promoted] == ([1, 2, 3] if won else [1, 3])
    if won:
        assert "winner of A/B experiment" in promoted[1].reason
    stages = {v: store.get_model_version(story.MODEL, v).stage for v in (1, 2, 3)}
    challenger = Stage.ARCHIVED if won else Stage.STAGING
    assert stages == {1: Stage.ARCHIVED, 2: challenger, 3: Stage.PRODUCTION}


def test_the_prediction_log_holds_enriched_requests(store: Client) -> None:
    logged = store.read_predictions(story.MODEL)
    # customer 42 once, everyone through the router, everyone again after the shift
    assert len(logged) >= 1 + 2 * CUSTOMERS
    world = make_world(SEED, CUSTOMERS)
    served = logged[logged["model_version"] == 1].iloc[0]
    truth = world.snapshots[-1].set_index("customer_id").loc[42]
    for feature in FEATURES:  # the values the online store held for customer 42
        assert served[feature] == pytest.approx(truth[feature])


def test_the_ab_test_was_decided_on_its_traffic(store: Client) -> None:
    results = store.abtests.abtest_results(loop.AB)
    assert sum(results.units_by_arm.values()) == CUSTOMERS
    assert set(results.units_by_arm) == {"champion", "challenger"}
    lift = results.primary["challenger"]
    low, high = lift.absolute_ci
    assert low < lift.absolute_lift < high
    experiment = store.abtests.get_abtest(loop.AB)
    assert experiment.status.value == "stopped"
    last = store.abtests.abtest_history(loop.AB)[-1]
    # the winner is promoted only when significant after Holm's adjustment; else stopped
    if results.adjusted["challenger"].rejected:
        assert last.action == "promote"
        assert store.get_model_version(story.MODEL, 2).stage in (Stage.PRODUCTION, Stage.ARCHIVED)
    else:
        assert last.action == "stop" and last.reason.startswith("no winner")


def test_the_drift_raised_one_alert_after_a_calm_evaluation(store: Client) -> None:
    statuses = [e.status for e in store.monitors.list_evaluations(loop.MONITOR).items]
    assert statuses == ["breach", "ok"]  # newest first
    (alert,) = store.monitors.list_alerts(monitor=loop.MONITOR).items
    (run,) = store.pipelines.list_runs(retrain.NAME).items
    assert (run.trigger, run.alert_id, run.status) == ("alert", alert.id, "succeeded")
    (decision,) = store.list_decisions(pipeline_run=run.id).items
    assert decision.alert_id == alert.id
    assert decision.challenger_version == 3
    assert decision.outcome == "promoted"
    assert decision.challenger_score is not None and decision.champion_score is not None
    assert decision.challenger_score > decision.champion_score


def test_the_served_predictions_were_measured_on_their_late_labels(
    demo_home: tuple[Path, Any, str], store: Client
) -> None:
    _, summary, _ = demo_home
    (evaluation,) = store.monitors.list_evaluations(loop.PERFORMANCE).items
    monitor = store.monitors.get_monitor(loop.PERFORMANCE)
    assert (monitor.kind, monitor.spec.metric) == ("performance", "accuracy")
    served = summary["made"]["served_version"]
    (window,) = [w for w in evaluation.result["windows"] if w["labelled"]]
    # every prediction of the shifted week got its customer's label, nothing else did
    assert window["labelled"] == CUSTOMERS
    accuracy = window["metrics"]["accuracy"]
    assert accuracy["n"] == CUSTOMERS and accuracy["lower"] < accuracy["value"] < accuracy["upper"]
    assert evaluation.status == ("ok" if accuracy["value"] >= loop.MIN_ACCURACY else "breach")
    line = summary["steps"][6]["line"]
    assert f"{loop.PERFORMANCE}: {evaluation.status}: v{served} accuracy " in line
    assert f"{accuracy['value']:.3f} [{accuracy['lower']:.3f}, {accuracy['upper']:.3f}]" in line


def test_the_score_table_holds_every_customer_once(demo_home: tuple[Path, Any, str]) -> None:
    home, summary, _ = demo_home
    assert summary["made"]["score_rows"] == CUSTOMERS
    scores = DeltaTable(str(home / loop.SCORES)).to_pandas()
    assert len(scores) == CUSTOMERS
    assert scores["customer_id"].nunique() == CUSTOMERS
    assert set(scores["model_version"]) == {3}
    assert set(scores["score"]) <= {0, 1}


def test_a_folder_no_demo_made_is_refused(tmp_path: Path) -> None:
    from rich.console import Console

    used = tmp_path / "mine"
    used.mkdir()
    (used / "plinth.db").write_text("a store of yours")
    with pytest.raises(InvalidArgument, match="never writes into one you use"):
        prepare_home(used, Console())
    assert (used / "plinth.db").read_text() == "a store of yours"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / MARKER).write_text("")
    (earlier / "plinth.db").write_text("an old demo")
    assert prepare_home(earlier, Console()) == earlier.resolve()
    assert not (earlier / "plinth.db").exists() and (earlier / MARKER).is_file()


def test_a_busy_port_or_an_unwritable_home_is_one_line_before_step_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import sys

    from plinth.cli import main

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["plinth", "demo", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        return int(exited.value.code or 0)

    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run("--home", str(home), "--serve", "--port", str(port)) == 1
    said = capsys.readouterr()
    assert said.err.startswith(f"error: --port {port}: 127.0.0.1:{port} is not free"), said.err
    assert said.err.count("\n") == 1 and "1." not in said.out + said.err
    assert not home.exists()  # refused before anything was made
    # a folder that cannot be made (its parent is a file: refused even to root, unlike
    # a folder without write permission)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert run("--home", str(blocked / "demo")) == 1
    said = capsys.readouterr()
    assert said.err.startswith(f"error: --home {blocked / 'demo'}: cannot make"), said.err
    assert said.err.count("\n") == 1 and "Traceback" not in said.err
