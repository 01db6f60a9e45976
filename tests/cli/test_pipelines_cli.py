"""``plinth pipelines ...`` against the store in PLINTH_HOME: register a pipeline file, run it
here (progress per step; exit 1 naming the failed step), rerun from a step, queue and
cancel, logs, schedules and triggers; refusals as one line on stderr with exit status 1."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main

runner = CliRunner()

PIPELINE = """
from pathlib import Path

import plinth


@plinth.step
def get_data(context, since: str = "2026-01-01"):
    print("reading since", since)
    return {"rows": 3, "since": since}


@plinth.step
def train(context, get_data):
    context.log.info("training on %s rows", get_data["rows"])
    if Path(context.params["flag"]).exists():
        raise ValueError("boom: the flag is up")
    return {"score": 0.9}


pipeline = plinth.Pipeline(
    "demo", [get_data, train], params={"since": "2026-01-01", "flag": FLAG},
    description="a demo",
)
"""


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plinth.cli.pipelines.out", Console(width=220))  # no cell folds
    monkeypatch.setattr("plinth.cli.pipelines.err", Console(width=220, stderr=True))
    monkeypatch.setattr("plinth.cli.pipelines_here.out", Console(width=220))
    monkeypatch.setattr("plinth.cli.pipelines_here.err", Console(width=220, stderr=True))


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    """While this file exists, the pipeline's ``train`` step fails."""
    return tmp_path / "fail-now"


@pytest.fixture
def demo(tmp_path: Path, flag: Path) -> str:
    """The entrypoint of a pipeline file: ``get_data`` then ``train``."""
    folder = tmp_path / "flows"
    folder.mkdir()
    path = folder / "demo.py"
    path.write_text(PIPELINE.replace("FLAG", repr(str(flag))))
    return f"{path}:pipeline"


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["pipelines", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``plinth pipelines ARGS`` through ``main`` (its error boundary): exit 1, the
    message on stderr."""
    monkeypatch.setattr(sys, "argv", ["plinth", "pipelines", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    return " ".join(capsys.readouterr().err.split())


def test_register_then_run_here_with_progress(demo: str, tmp_path: Path) -> None:
    said = invoke("register", demo, "--retries", "2")
    assert "registered pipeline demo: get_data > train" in said
    service = plinth.default_client().pipelines
    info = service.get_pipeline("demo")
    assert info.entrypoint == demo and Path(info.entrypoint.rsplit(":", 1)[0]).is_absolute()
    assert (info.steps, info.retries, info.description) == (["get_data", "train"], 2, "a demo")
    assert "demo" in invoke("list")

    said = invoke("run", "demo", "--param", "since=2026-02-01")
    assert "✓ get_data succeeded" in said and "✓ train succeeded" in said
    assert "succeeded in" in said
    done = service.list_runs("demo").items[0]
    assert (done.status, done.trigger, done.params) == (
        "succeeded",
        "manual",
        {"since": "2026-02-01"},
    )
    shown = invoke("show", str(done.id))
    assert "get_data" in shown and "succeeded" in shown
    assert "reading since 2026-02-01" in invoke("logs", str(done.id), "--step", "get_data")
    assert "training on 3 rows" in invoke("logs", str(done.id))
    logged = json.loads(invoke("logs", str(done.id), "--step", "train", "--json"))
    assert logged["step"] == "train" and "training on 3 rows" in logged["log"]
    ran = json.loads(invoke("run", "demo", "--json"))
    assert ran["status"] == "succeeded" and [s["name"] for s in ran["steps"]] == [
        "get_data",
        "train",
    ]


def test_a_failing_run_names_its_step_and_a_rerun_resumes(
    demo: str, flag: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("register", demo)
    flag.touch()
    said = refused(monkeypatch, capsys, "run", "demo")
    service = plinth.default_client().pipelines
    failed = service.list_runs("demo").items[0]
    assert failed.status == "failed"
    assert f"pipeline run {failed.id} failed: step train failed: ValueError: boom" in said
    out = capsys.readouterr()
    assert "boom" in invoke("logs", str(failed.id), "--step", "train") + out.out

    flag.unlink()
    said = invoke("rerun", str(failed.id))  # from the first step that failed: train
    assert "✓ get_data reused" in said and "✓ train succeeded" in said
    again = service.list_runs("demo").items[0]
    assert (again.status, again.trigger, again.resumed_from, again.from_step) == (
        "succeeded",
        "rerun",
        failed.id,
        "train",
    )


def test_an_unregistered_pipeline_runs_from_its_file(demo: str) -> None:
    said = invoke("run", demo, "--param", "since=2026-03-01")
    assert "✓ train succeeded" in said
    service = plinth.default_client().pipelines
    assert [r.status for r in service.list_all_runs().items] == ["succeeded"]
    assert service.list_pipelines().items == []  # running is not registering


def test_queue_cancel_and_rerun_queued(
    demo: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("register", demo)
    said = invoke("run", "demo", "--queue", "-p", "since=2026-04-01")
    service = plinth.default_client().pipelines
    queued = service.list_runs("demo").items[0]
    assert f"queued pipeline run {queued.id} of demo" in said
    assert (queued.status, queued.params) == ("queued", {"since": "2026-04-01"})
    assert "queued" in invoke("runs", "demo")
    assert f"pipeline run {queued.id} cancelled" in invoke("cancel", str(queued.id))
    assert service.get_run(queued.id).status == "cancelled"
    # it never ran: no step's output to resume from, here or queued
    for queue in ((), ("--queue",)):
        said = refused(monkeypatch, capsys, "rerun", str(queued.id), "--from", "train", *queue)
        assert "its step 'get_data' before it is not recorded" in said
    assert len(service.list_runs("demo").items) == 1
    said = invoke("rerun", str(queued.id), "--queue")
    rerun = service.list_runs("demo").items[0]
    assert f"queued pipeline run {rerun.id} (rerun of {queued.id})" in said
    assert (rerun.status, rerun.params) == ("queued", {"since": "2026-04-01"})


def test_schedules_and_triggers(
    demo: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    said = invoke("register", demo, "--schedule", "0 3 * * *", "--timezone", "Europe/Paris")
    assert "schedule 1: cron 0 3 * * * (Europe/Paris, catch-up latest)" in said
    again = invoke("register", demo, "--schedule", "0 3 * * *", "--timezone", "Europe/Paris")
    assert "schedule 1: cron 0 3 * * *" in again  # the same schedule, not a second one
    plinth.default_client().registry.create_registered_model("churn")
    said = invoke("schedule", "demo", "--on-score-job", "churn", "-p", "since=2026-05-01")
    assert "schedule 2 of demo: each new score job of churn" in said
    listed = invoke("schedules")
    assert "cron 0 3 * * *" in listed and "each new score job of churn" in listed
    assert "schedule 1 of demo paused" in invoke("pause", "1")
    assert "paused" in invoke("schedules", "demo")
    assert "schedule 1 of demo resumed" in invoke("resume", "1")
    assert "schedule 2 deleted" in invoke("unschedule", "2")
    service = plinth.default_client().pipelines
    assert [s.id for s in service.list_schedules("demo")] == [1]

    said = refused(monkeypatch, capsys, "schedule", "demo", "--cron", "0 25 * * *")
    assert "spec.cron: cron '0 25 * * *': the hour field '25' is not valid" in said
    said = refused(
        monkeypatch, capsys, "schedule", "demo", "--cron", "* * * * *", "--on-alert", "m"
    )
    assert "give exactly one of --cron, --on-alert" in said
    said = refused(monkeypatch, capsys, "schedule", "demo", "--on-alert", "nope")
    assert "spec.target: monitor 'nope' does not exist" in said


def test_bad_input_is_one_line_on_stderr(
    demo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a schedule that cannot be made is refused before the pipeline is registered
    said = refused(monkeypatch, capsys, "register", demo, "--schedule", "every day")
    assert "spec.cron: cron 'every day'" in said
    said = refused(
        monkeypatch, capsys, "register", demo, "--schedule", "0 3 * * *", "--timezone", "Mars/X"
    )
    assert "spec.timezone: 'Mars/X' is not a time zone" in said
    assert plinth.default_client().pipelines.list_pipelines().items == []
    broken = tmp_path / "broken.py"
    broken.write_text(textwrap.dedent("import no_such_module_here\n"))
    said = refused(monkeypatch, capsys, "register", f"{broken}:pipeline")
    assert f"pipeline entrypoint '{broken}:pipeline'" in said and "no_such_module_here" in said
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('config missing')\n")
    said = refused(monkeypatch, capsys, "register", f"{raising}:pipeline")
    assert "could not load pipeline" in said and "RuntimeError: config missing" in said
    said = refused(monkeypatch, capsys, "run", "nope")
    assert "pipeline 'nope' does not exist" in said
    said = refused(monkeypatch, capsys, "run", demo, "--queue")
    assert "the scheduler runs registered pipelines only" in said
    said = refused(monkeypatch, capsys, "run", demo, "--param", "since")
    assert "--param: 'since' is not name=value" in said
    said = refused(monkeypatch, capsys, "register", demo, "--concurrency", "0")
    assert "spec.concurrency: a whole number from 1 to 100, got 0" in said
    said = refused(monkeypatch, capsys, "show", "42")
    assert "pipeline run 42 does not exist" in said


def test_a_module_of_the_current_folder_is_an_entrypoint(
    tmp_path: Path, flag: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"flows_{tmp_path.name.replace('-', '_')}"  # not one imported by another test
    (tmp_path / package).mkdir()
    (tmp_path / package / "churn.py").write_text(PIPELINE.replace("FLAG", repr(str(flag))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    said = invoke("register", f"{package}.churn:pipeline")
    assert "registered pipeline demo" in said
    info = plinth.default_client().pipelines.get_pipeline("demo")
    assert info.entrypoint == f"{package}.churn:pipeline"  # a module stays a module
    assert "✓ train succeeded" in invoke("run", "demo")
