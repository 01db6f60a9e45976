"""``plinth models ...`` against versions registered through the Python API in PLINTH_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main
from plinth.registry.gates import Gate
from plinth.registry.types import ModelVersion
from plinth.tracking.types import Lineage

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RNG = np.random.default_rng(3)
X = pd.DataFrame({"tenure": RNG.integers(1, 60, 40), "spend": RNG.normal(50.0, 10.0, 40)})
Y = (X["spend"] + X["tenure"] / 4 > 58).astype(np.int64)

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["models", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def invoke_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["plinth", "models", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


@pytest.fixture
def churn(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModelVersion]:
    """churn v1 (from an object) and v2 (from a run, PRODUCTION, @champion) with gates;
    fraud v1 without a signature."""
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no table cell folds
    monkeypatch.setattr("plinth.cli.out", Console(width=200))  # whatever the worker's terminal
    monkeypatch.setattr(
        "plinth.tracking.lineage.capture_lineage",
        lambda seed=None: Lineage(git_commit=COMMIT, git_dirty=False, entry_point="train.py"),
    )
    model = LogisticRegression().fit(X, Y)
    v1 = plinth.register_model(model, name="churn", input_example=X[:5])
    with plinth.start_run(experiment="churn", name="lr-c1", capture_environment=False) as run:
        run.log_params({"C": 1.0, "penalty": "l2"}, group="hyper")
        run.log_metric("auc", 0.91)
        run.log_input("train", "s3://data/churn/train.parquet", digest="sha256:feed", rows=40)
        v2 = run.log_model(model, input_example=X[:5], registered_model="churn")
    assert v2 is not None
    plinth.set_stage("churn", 1, "PRODUCTION", reason="first model")
    plinth.set_stage("churn", 2, "PRODUCTION", reason="beats v1 on holdout")
    plinth.set_alias("churn", "champion", version=2)
    registry = plinth.default_client().registry
    registry.update_registered_model(
        "churn", description="Predicts **churn**", tags={"team": "risk"}
    )
    registry.set_gates("churn", [Gate("metric", expression="auc >= 0.8")])
    plinth.register_model(model, name="fraud")
    return {"v1": v1, "v2": plinth.get_model_version("churn", 2)}


# -- reading ---------------------------------------------------------------------------


def test_list(churn: dict[str, ModelVersion]) -> None:
    found = invoke_json("list")
    assert [m["name"] for m in found] == ["churn", "fraud"]
    assert found[0]["latest_version"] == 2
    assert found[0]["production_version"] == 2
    assert found[0]["aliases"] == {"champion": 2}
    assert [m["name"] for m in invoke_json("list", "--like", "fr%")] == ["fraud"]
    table = invoke("list")
    assert "churn" in table and "fraud" in table and "champion=2" in table


def test_show_a_model_with_its_versions(churn: dict[str, ModelVersion]) -> None:
    shown = invoke_json("show", "churn")
    assert shown["model"]["description"] == "Predicts **churn**"
    assert shown["model"]["tags"] == {"team": "risk"}
    assert shown["gates"][0]["expression"] == "auc >= 0.8"
    versions = [(v["version"], v["stage"], v["aliases"]) for v in shown["versions"]]
    assert versions == [(2, "PRODUCTION", ["champion"]), (1, "ARCHIVED", [])]
    assert shown["versions"][0]["run_id"] == churn["v2"].run_id
    text = invoke("show", "churn")
    for fact in ("Predicts **churn**", "team=risk", "champion=2", "auc >= 0.8", "ARCHIVED"):
        assert fact in text
    assert str(churn["v2"].run_id) in text and "sklearn" in text


def test_show_a_version_tells_the_whole_story(churn: dict[str, ModelVersion]) -> None:
    v2 = churn["v2"]
    shown = invoke_json("show", "churn", "--version", "2")
    assert (shown["version"], shown["stage"], shown["aliases"]) == (2, "PRODUCTION", ["champion"])
    assert shown["run_id"] == v2.run_id
    assert shown["manifest"]["signature"]["inputs"] == [
        {"name": "tenure", "dtype": "int64"},
        {"name": "spend", "dtype": "float64"},
    ]
    assert shown["lineage"]["code"]["git_commit"] == COMMIT
    assert shown["lineage"]["datasets"][0]["uri"] == "s3://data/churn/train.parquet"
    assert shown["lineage"]["metrics"] == {"auc": 0.91}
    text = invoke("show", "churn", "--version", "2")
    digest = v2.manifest.files["model/model.skops"]
    for fact in (
        "models:/churn/2",
        "PRODUCTION",
        "@champion",
        "LogisticRegression",
        f"source run: {v2.run_id} (lr-c1 in churn)",
        f"git_commit={COMMIT}",
        "tenure",
        "float64",
        "s3://data/churn/train.parquet",
        "sha256:feed",
        "penalty",
        '"l2"',
        "0.91",
        f"scikit-learn=={v2.manifest.requirements['scikit-learn']}",
        f"model/model.skops │ {digest[:12]} ",
    ):
        assert fact in text, fact
    assert "pickled" not in text  # scikit-learn's package is skops, not a pickle
    assert digest not in text  # short


def test_show_a_version_without_lineage_or_signature(churn: dict[str, ModelVersion]) -> None:
    text = invoke("show", "fraud", "--version", "1")
    assert "source run: - (none)" in text
    assert "signature: none" in text
    assert invoke_json("show", "fraud", "--version", "1")["manifest"]["signature"] is None


def test_history_oldest_first(churn: dict[str, ModelVersion]) -> None:
    rows = invoke_json("history", "churn")
    assert [(r["action"], r["version"], r["from_value"], r["to_value"]) for r in rows[:6]] == [
        ("register", 1, None, "DEVELOPMENT"),
        ("register", 2, None, "DEVELOPMENT"),
        ("stage", 1, "DEVELOPMENT", "PRODUCTION"),
        ("stage", 1, "PRODUCTION", "ARCHIVED"),
        ("stage", 2, "DEVELOPMENT", "PRODUCTION"),
        ("alias", 2, None, "2"),
    ]
    assert [r["action"] for r in rows[6:]] == ["description", "tags", "gates"]
    text = invoke("history", "churn")
    assert "beats v1 on holdout" in text and "replaced by v2" in text
    assert "DEVELOPMENT → PRODUCTION" in text and "@champion: - → 2" in text
    assert text.index("first model") < text.index("beats v1 on holdout")


# -- changing --------------------------------------------------------------------------


def test_stage(churn: dict[str, ModelVersion]) -> None:
    text = invoke("stage", "churn", "1", "shadow", "--allow-archived", "--reason", "mirror")
    assert text == "models:/churn/1 is now SHADOW\n"
    assert plinth.model_history("churn")[-1].reason == "mirror"
    moved = invoke_json("stage", "churn", "1", "DEVELOPMENT")
    assert (moved["version"], moved["stage"]) == (1, "DEVELOPMENT")


def test_alias_and_unalias(churn: dict[str, ModelVersion]) -> None:
    text = invoke("alias", "churn", "challenger", "1", "--reason", "try v1 again")
    assert text == "@challenger -> models:/churn/1 (ARCHIVED)\n"
    assert plinth.get_model_version("models:/churn@challenger").version == 1
    assert invoke_json("alias", "churn", "challenger", "2")["aliases"] == ["challenger", "champion"]
    assert invoke_json("unalias", "churn", "challenger") == {
        "alias": "challenger",
        "model": "churn",
        "removed": True,
    }
    assert invoke("unalias", "churn", "champion") == "removed @champion from churn\n"
    assert plinth.get_model_version("churn", 2).aliases == []
    assert plinth.model_history("churn")[-1].action == "unalias"


def test_rollback(churn: dict[str, ModelVersion]) -> None:
    restored = invoke_json("rollback", "churn", "--reason", "v2 drifts")
    assert (restored["version"], restored["stage"]) == (1, "PRODUCTION")
    assert plinth.get_model_version("churn", 2).stage.value == "ARCHIVED"
    last = plinth.model_history("churn")[-1]
    assert (last.action, last.version, last.reason) == ("rollback", 1, "v2 drifts")
    assert invoke("rollback", "churn") == "rolled back churn: models:/churn/2 is PRODUCTION again\n"


def test_delete(churn: dict[str, ModelVersion]) -> None:
    assert invoke("delete", "churn", "1", "--reason", "obsolete") == "deleted models:/churn/1\n"
    assert [v["version"] for v in invoke_json("show", "churn")["versions"]] == [2]
    last = plinth.model_history("churn")[-1]
    assert (last.action, last.version, last.reason) == ("delete", 1, "obsolete")
    deleted = invoke_json("delete", "fraud", "1")
    assert deleted == {"deleted": True, "model": "fraud", "version": 1}


# -- errors ----------------------------------------------------------------------------


def test_an_unknown_model_is_a_one_line_error(
    churn: dict[str, ModelVersion],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(monkeypatch, "show", "nope") == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "error: registered model 'nope' does not exist\n")
    assert run_main(monkeypatch, "show", "churn", "--version", "9") == 1
    assert capsys.readouterr().err == "error: model 'churn' has no version 9\n"


def test_an_invalid_stage_is_a_usage_error(
    churn: dict[str, ModelVersion],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(monkeypatch, "stage", "churn", "1", "live") == 2
    err = capsys.readouterr().err
    assert "'live' is not one of" in err and "Traceback" not in err
    assert plinth.get_model_version("churn", 1).stage.value == "ARCHIVED"


def test_refusals_name_the_reason(
    churn: dict[str, ModelVersion],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(monkeypatch, "delete", "churn", "2") == 1
    assert capsys.readouterr().err == (
        "error: models:/churn/2 is in PRODUCTION: promote another version or roll back first\n"
    )
    assert plinth.get_model_version("churn", 2).stage.value == "PRODUCTION"
    assert run_main(monkeypatch, "stage", "churn", "1", "staging") == 1
    assert "is ARCHIVED" in capsys.readouterr().err
    assert run_main(monkeypatch, "stage", "churn", "1", "staging", "--allow-archived") == 1
    assert "auc >= 0.8" in capsys.readouterr().err  # v1 has no auc: the gate refuses it


def test_errors_of_the_process_are_one_line_on_stderr(churn: dict[str, ModelVersion]) -> None:
    env = {**os.environ, "COLUMNS": "40"}
    done = subprocess.run(
        [sys.executable, "-m", "plinth", "models", "delete", "churn", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "error: models:/churn/2 is in PRODUCTION: promote another version or roll back first\n"
    )
