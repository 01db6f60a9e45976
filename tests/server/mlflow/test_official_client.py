"""The official ``mlflow`` client, unmodified and in its own venv, against a real ``plinth
server``: each scenario of ``client_scenarios/`` runs as a plain script with
``MLFLOW_TRACKING_URI`` pointing at the server and asserts as it goes; then Plinth's own
client checks that what the script logged is ordinary Plinth data.

The client's venv comes from ``scripts/mlflow-client-venv`` (``scripts/test`` makes it and
sets ``PLINTH_TEST_MLFLOW_PYTHON``); without that variable these tests are skipped. The
scenarios (all but ``auth``, which needs Plinth's tokens) pass against MLflow's own server
(``mlflow server`` 3.17, client 3.18: run one with MLFLOW_TRACKING_URI set to it), so a
failure here is Plinth's.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.auth.service import AuthService
from plinth.auth.types import Role
from plinth.client import Client, connect
from plinth.registry.types import Stage
from plinth.store.engine import open_store
from plinth.tracking.types import RunStatus
from tests.backends import running_server

MLFLOW_PYTHON = os.environ.get("PLINTH_TEST_MLFLOW_PYTHON", "")
SCENARIOS = Path(__file__).parent / "client_scenarios"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not MLFLOW_PYTHON,
        reason="PLINTH_TEST_MLFLOW_PYTHON is not set (scripts/mlflow-client-venv prints it)",
    ),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Client]]:
    """A Plinth server on loopback and a Plinth client of it."""
    with (
        running_server(tmp_path / "server") as url,
        connect(url, home=tmp_path / "client") as plinth,
    ):
        yield url, plinth


def run_scenario(
    name: str,
    url: str,
    cwd: Path,
    extra_env: dict[str, str] | None = None,
    script: Path | None = None,
) -> dict[str, Any]:
    """Runs ``client_scenarios/<name>.py`` (or ``script``) with the mlflow client's python;
    the JSON object it printed last."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PLINTH_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        MLFLOW_TRACKING_URI=url,
        # a failing call fails at once instead of being retried for minutes
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    proc = subprocess.run(
        [MLFLOW_PYTHON, str(script or SCENARIOS / f"{name}.py")],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        pytest.fail(f"scenario {name} failed (exit {proc.returncode}):\n{tail}", pytrace=False)
    facts: dict[str, Any] = json.loads(lines[-1])
    return facts


def test_experiments(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("experiments", url, tmp_path)
    exp = plinth.get_experiment(facts["experiment_id"])
    assert (exp.name, exp.tags) == (facts["name"], facts["tags"])
    assert exp.deleted_at is None  # deleted, then restored
    assert facts["name"] in [e.name for e in plinth.list_experiments()]


def test_runs(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("runs", url, tmp_path)
    run = plinth.get_run(facts["baseline"])
    assert run.params == {"default": {"lr": "0.1", "depth": "3", "solver": "lbfgs"}}
    metrics = {k: m.last for k, m in run.metrics.items()}
    assert metrics == {"loss": 0.2, "acc": 0.8, "f1": 0.7, "after": 1.0}  # after: reopened
    assert (run.name, run.status) == ("baseline", RunStatus.FINISHED)
    assert (run.experiment_id, run.experiment_name) == (
        facts["experiment_id"],
        facts["experiment_name"],
    )
    assert (run.tags["team"], run.tags["owner"]) == ("churn", "ana")
    (dataset,) = run.inputs
    assert (dataset.name, dataset.context, dataset.source_type) == (
        "churn-train",
        "training",
        "code",
    )
    history = plinth.get_metric_history(run.id, "loss")
    assert [(p.step, p.value) for p in history] == [(s, 1.0 / (s + 1)) for s in range(5)]

    cand = plinth.get_run(facts["candidate"])
    assert (cand.name, cand.status) == ("candidate-2", RunStatus.FAILED)
    assert cand.params == {"default": {"lr": "0.2", "depth": "5", "solver": "saga"}}
    assert cand.metrics["loss"].count == 100
    # Plinth's own search language finds them, and not the deleted run
    found = plinth.search_runs("params.default.solver = 'saga'", experiments=[run.experiment_id])
    assert [r.id for r in found] == [cand.id]
    active = plinth.search_runs(experiments=[run.experiment_id])
    assert sorted(r.id for r in active) == sorted([run.id, cand.id])
    assert plinth.get_run(facts["deleted"]).deleted_at is not None
    assert plinth.get_run(facts["default_run"]).experiment_name == "Default"


def test_artifacts(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("artifacts", url, tmp_path)
    run_id = facts["run_id"]
    root = {(e.path, e.is_dir) for e in plinth.list_artifacts(run_id)}
    assert {("a.txt", False), ("data", True), ("bin", True), ("config.json", False)} <= root
    assert plinth.read_artifact(run_id, "a.txt") == b"alpha\n"
    assert plinth.read_artifact(run_id, "data/sub/c.csv") == b"x,y\n1,2\n"
    assert len(plinth.read_artifact(run_id, "bin/blob.bin")) == facts["blob_size"]


def test_models(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("models", url, tmp_path)
    version = plinth.get_model_version(facts["model"], 1)
    assert (version.run_id, version.flavor) == (facts["run_id"], "mlflow")
    assert version.aliases == ["champion"]
    assert (version.tags["validated"], version.description) == ("yes", "first fit")
    assert [v.version for v in plinth.registry.list_model_versions(facts["model"])] == [1]
    assert plinth.get_run(facts["run_id"]).params == {"default": {"C": "1.0"}}


def test_error_shape_and_limits(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("errors", url, tmp_path)
    run = plinth.get_run(facts["run_id"])
    assert (run.params, {k: m.last for k, m in run.metrics.items()}) == ({}, {"m": 0.5})


def test_everyday_usage(server: tuple[str, Client], tmp_path: Path) -> None:
    url, plinth = server
    facts = run_scenario("usage", url, tmp_path)
    auto = plinth.get_run(facts["autolog_run"])
    assert auto.params["default"]["C"] == "0.5"
    assert "training_accuracy_score" in auto.metrics
    assert plinth.get_run(facts["odd_run"]).params == {"default": {"päram with space": "välue"}}
    assert plinth.get_model_version(facts["model"], 1).stage == Stage.PRODUCTION


def test_tokens_and_permissions(tmp_path: Path) -> None:
    home = tmp_path / "server"
    with running_server(home, auth=True) as url:
        auth = AuthService(open_store(f"sqlite:///{(home / 'plinth.db').resolve()}"))
        auth.create_user("ed", role=Role.EDITOR)
        auth.create_user("vi", role=Role.VIEWER)
        tokens = {
            "PLINTH_TEST_EDITOR_TOKEN": auth.create_token("t", user="ed").secret,
            "PLINTH_TEST_VIEWER_TOKEN": auth.create_token("t", user="vi").secret,
        }
        facts = run_scenario("auth", url, tmp_path, tokens)
        with connect(url, token=tokens["PLINTH_TEST_VIEWER_TOKEN"], home=tmp_path / "c") as vi:
            run = vi.get_run(facts["run_id"])
    assert (run.owner, run.params) == ("ed", {"default": {"p": "1"}})
    # the viewer's refused writes are in the security log like any other refusal
    assert auth.list_security_events(actor="vi", event="permission_denied")


def test_the_readme_example(server: tuple[str, Client], tmp_path: Path) -> None:
    """The README's MLflow example, as written, with the official client."""
    from tests.test_readme import example

    url, plinth = server
    script = tmp_path / "readme_mlflow.py"
    script.write_text(example("## MLflow compatibility") + "\nimport json\nprint(json.dumps({}))\n")
    run_scenario("readme", url, tmp_path, script=script)
    (run,) = plinth.search_runs(experiments=["churn-mlflow"]).items
    assert (run.name, run.params) == ("logreg", {"default": {"C": "0.5", "max_iter": "200"}})
    history = plinth.get_metric_history(run.id, "val_auc")
    assert [p.step for p in history] == list(range(10)), history
    version = plinth.registry.resolve("models:/churn-mlflow@champion")
    assert (version.version, version.run_id, version.manifest.flavor) == (1, run.id, "mlflow")
