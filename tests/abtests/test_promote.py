"""Promoting an experiment's winner through the registry's gates, and the automatic stop
(planned sample reached, guardrail broken), with real registered models and hand-made
exposure and event logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from plinth.abtests.types import Arm, Guardrail, Kpi, KpiKind, Status
from plinth.auth.types import Role
from plinth.client import Client
from plinth.errors import Conflict, GateFailed, InvalidArgument
from plinth.registry.gates import Gate
from plinth.registry.types import Stage
from tests.abtests.test_events import _root
from tests.abtests.test_results import T0, events, exposures
from tests.abtests.test_service import Server
from tests.backends import local_client

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "buy")
UNITS = 400  # per arm


@pytest.fixture(scope="module")
def model() -> tuple[Any, pd.DataFrame]:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    return LogisticRegression().fit(frame, [0, 0, 1, 1]), frame


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Client]:
    with local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts")) as c:
        yield c


def running(client: Client, model: tuple[Any, pd.DataFrame], **kw: Any) -> None:
    """Model ``churn`` v1 in PRODUCTION and v2 in DEVELOPMENT; experiment ``exp`` running
    between them (control serves v1, ``b`` serves v2)."""
    fitted, frame = model
    for _ in range(2):
        client.register_model(fitted, "churn", input_example=frame)
    client.set_stage("churn", 1, "PRODUCTION", reason="first")
    spec: dict[str, Any] = {
        "hypothesis": "v2 converts more",
        "primary": CONVERSION,
        "arms": [
            Arm("control", 0.5, model_uri="models:/churn@production", control=True),
            Arm("b", 0.5, model_uri="models:/churn/2"),
        ],
        "mde": 0.02,
        **kw,
    }
    client.abtests.create_abtest("exp", **spec)
    client.abtests.start_abtest("exp")


def outcomes(root: Path, converted: dict[str, int]) -> None:
    """``UNITS`` units per arm, the first ``converted[arm]`` of them buying once."""
    exposures(root, [(T0, f"{arm}-{i}", arm) for arm in converted for i in range(UNITS)])
    buys = [
        {"unit": f"{arm}-{i}", "event_id": f"{arm}-{i}"}
        for arm, n in converted.items()
        for i in range(n)
    ]
    events(root, buys)


def test_promote_moves_the_winner_to_production_with_both_trails(
    client: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(client, model)
    outcomes(_root(client, tmp_path), {"control": 40, "b": 120})
    done = client.abtests.promote_abtest("exp", reason="b converts 3x")
    assert done.arm == "b"
    assert (done.model_version.model_name, done.model_version.version) == ("churn", 2)
    assert done.model_version.stage is Stage.PRODUCTION
    assert client.get_model_version("churn", 1).stage is Stage.ARCHIVED
    assert done.experiment.status is Status.STOPPED and done.experiment.stopped_at
    last = client.abtests.abtest_history("exp")[-1]
    assert (last.action, last.reason) == ("promote", "b converts 3x") and last.changed_by
    assert last.changes["promoted"] == "arm b: models:/churn/2 -> PRODUCTION"
    assert last.changes["status"] == "running -> stopped"
    entry = client.model_history("churn")[-1]
    assert (entry.action, entry.version, entry.to_value) == ("stage", 2, "PRODUCTION")
    assert (
        entry.reason == "winner of A/B experiment 'exp' (arm 'b', models:/churn/2): b converts 3x"
    )


def test_no_significant_winner_is_refused_unless_the_arm_is_named(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model, layer="home", traffic=0.5)
    assert local.abtests.get_abtest("exp").layer_ranges  # it holds half of the layer
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 50})  # better, not significantly
    with pytest.raises(
        Conflict, match=r"no significant winner .* b: lift \+0.025, adjusted p 0\.2"
    ):
        local.abtests.promote_abtest("exp")
    assert local.get_model_version("churn", 2).stage is Stage.DEVELOPMENT
    assert local.abtests.get_abtest("exp").status is Status.RUNNING
    with pytest.raises(InvalidArgument, match="has no arm 'c'"):
        local.abtests.promote_abtest("exp", arm="c")
    done = local.abtests.promote_abtest("exp", arm="b", reason="cheaper to serve")
    assert (done.arm, done.model_version.version) == ("b", 2)
    assert local.get_model_version("churn", 2).stage is Stage.PRODUCTION
    assert done.experiment.layer_ranges == []  # stopped by the promotion: the layer's units free


def test_a_refusing_gate_changes_nothing(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model)
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 120})
    local.registry.set_gates("churn", [Gate("metric", expression="auc >= 0.8")])
    before = local.abtests.get_abtest("exp")
    trail = local.model_history("churn")
    with pytest.raises(GateFailed, match=r"auc >= 0\.8: the version has no metric 'auc'"):
        local.abtests.promote_abtest("exp")
    assert local.abtests.get_abtest("exp") == before
    assert local.model_history("churn") == trail
    assert local.get_model_version("churn", 1).stage is Stage.PRODUCTION


def test_a_draft_cannot_promote(local: Client, model: tuple[Any, pd.DataFrame]) -> None:
    running(local, model)
    local.abtests.create_abtest(
        "draft", "h", CONVERSION, local.abtests.get_abtest("exp").arms, mde=0.02
    )
    with pytest.raises(Conflict, match="it has not started"):
        local.abtests.promote_abtest("draft", arm="b")


def test_check_stops_on_a_broken_guardrail(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model, guardrails=[Guardrail("conversion", max_drop=0.1)])
    outcomes(tmp_path / "artifacts", {"control": 120, "b": 10})
    found = local.abtests.check_abtest("exp")
    assert found.stopped and found.status is Status.STOPPED
    assert [r.split(":")[0] for r in found.reasons] == ["guardrail conversion broken in arm b"]
    assert found.planned_per_arm is not None and found.planned_per_arm > UNITS
    last = local.abtests.abtest_history("exp")[-1]
    assert (last.action, last.changes["status"]) == ("stop", "running -> stopped")
    assert last.reason.startswith("auto-stop: guardrail conversion broken in arm b")
    again = local.abtests.check_abtest("exp")
    assert not again.stopped and "only a running or paused" in again.notes[0]


def test_check_stops_when_the_planned_sample_is_reached(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model, mde=0.2)  # 0.10 -> 0.30 needs few units per arm
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 44})
    found = local.abtests.check_abtest("exp")
    assert found.stopped and found.units_by_arm == {"control": UNITS, "b": UNITS}
    assert found.planned_per_arm is not None and found.planned_per_arm < UNITS
    assert found.reasons[0].startswith(
        f"planned sample reached: every arm has at least {found.planned_per_arm}"
    )
    assert local.abtests.get_abtest("exp").status is Status.STOPPED


def test_check_changes_nothing_otherwise(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model, guardrails=[Guardrail("conversion", max_drop=0.5)])
    before = local.abtests.get_abtest("exp")
    empty = local.abtests.check_abtest("exp")  # no exposures yet: nothing to judge
    assert not empty.stopped and "no units yet" in empty.notes[0]
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 44})
    found = local.abtests.check_abtest("exp")
    assert not found.stopped and found.reasons == [] and found.status is Status.RUNNING
    assert found.planned_per_arm is not None and found.planned_per_arm > UNITS
    assert local.abtests.get_abtest("exp") == before


def test_a_viewer_cannot_promote_or_check(tmp_path: Path) -> None:
    server = Server(tmp_path / "server")
    with server.http:
        alice = server.user("alice", Role.EDITOR)
        victor = server.user("victor", Role.VIEWER)
        spec = {
            "name": "exp",
            "hypothesis": "h",
            "primary": {"name": "conversion", "kind": "proportion", "event": "buy"},
            "arms": [
                {"name": "a", "share": 0.5, "url": "http://a", "control": True},
                {"name": "b", "share": 0.5, "model_uri": "models:/churn/1"},
            ],
            "mde": 0.02,
        }
        # alice's own model: an experiment names only models its designer may read
        assert server.http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
        assert server.http.post("/api/v1/abtests", json=spec, headers=alice).status_code == 200
        server.auth.grant("abtest", "exp", "user", "victor", "viewer")
        for action in ("promote", "check"):
            refused = server.http.post(f"/api/v1/abtests/exp/{action}", json={}, headers=victor)
            assert refused.status_code == 403, refused.text


def test_a_sample_ratio_mismatch_refuses_promotion_unless_forced(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path
) -> None:
    running(local, model)
    root = tmp_path / "artifacts"
    outcomes(root, {"control": 40, "b": 120})  # a clear winner, 400 units each ...
    exposures(root, [(T0, f"extra-{i}", "b") for i in range(100)])  # ... but b got 500
    with pytest.raises(Conflict, match=r"sample ratio mismatch.*control 400, b 500.*p = 0\.00"):
        local.abtests.promote_abtest("exp")
    with pytest.raises(Conflict, match="sample ratio mismatch"):
        local.abtests.promote_abtest("exp", arm="b")  # naming the arm is no way round it
    assert local.get_model_version("churn", 2).stage is Stage.DEVELOPMENT
    assert local.abtests.get_abtest("exp").status is Status.RUNNING
    done = local.abtests.promote_abtest("exp", force=True, reason="the extra units were bots")
    assert done.arm == "b" and done.model_version.stage is Stage.PRODUCTION


def test_promote_force_from_the_cli(
    local: Client, model: tuple[Any, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from plinth.cli import app

    running(local, model)
    root = tmp_path / "artifacts"
    outcomes(root, {"control": 40, "b": 120})
    exposures(root, [(T0, f"extra-{i}", "b") for i in range(100)])
    monkeypatch.setattr("plinth.cli.abtests._service", lambda: local.abtests)
    refused = CliRunner().invoke(app, ["ab", "promote", "exp"])
    assert refused.exit_code != 0 and isinstance(refused.exception, Conflict)
    assert "sample ratio mismatch" in str(refused.exception)
    done = CliRunner().invoke(app, ["ab", "promote", "exp", "--force"])
    assert done.exit_code == 0, done.output
    assert "promoted arm b of exp" in done.output
