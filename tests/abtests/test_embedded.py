"""Embedded mode with real registered models and a real store: the router's assignment
(compared with a router serving the same experiment), the experiment kept for a few
seconds (clock driven by the test), predictions with their arm and model version,
exposures in the router's log and counted by results, fallback to control, shadow mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

import plinth
import plinth.abtests
from plinth.abtests.embedded import ExperimentCache, Predictor, ShadowPrediction
from plinth.abtests.router import assign_arm
from plinth.abtests.router_cli import RouterConfig, create_router_service
from plinth.abtests.traffic import exposures_uri
from plinth.abtests.types import Arm, Experiment, Kpi, KpiKind, Mode, Status, Unit
from plinth.client import Client, connect, set_default_client
from plinth.errors import InvalidArgument, NotFound, Unavailable
from tests.abtests.test_router import ArmService, serving, units_of
from tests.backends import FAST_FLUSH, local_client, running_server
from tests.serving.conftest import EXAMPLE, constant
from tests.test_import import _heavy_modules_after

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "buy")
ROW = [{"age": 41, "spend": 2.5}]


class Broken:
    """A model with a bug (not bad input): it fails on anyone aged 41 (``ROW``), and
    answers its input example (so it can be registered)."""

    def predict(self, frame: pd.DataFrame) -> Any:
        if (frame["age"] == 41).any():
            raise RuntimeError("the challenger is broken")
        return (frame["age"] * 0).to_numpy()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts")) as c:
        c.register_model(constant(0), "churn", input_example=EXAMPLE)
        c.register_model(constant(1), "churn", input_example=EXAMPLE)
        yield c


def running(client: Client, name: str = "exp", b: str = "models:/churn/2", **kw: Any) -> Experiment:
    """Control serves churn v1 (always 0), arm ``b`` serves ``b`` (v2: always 1)."""
    client.abtests.create_abtest(
        name,
        hypothesis="v2 converts more",
        primary=CONVERSION,
        arms=[
            Arm("control", 0.5, model_uri="models:/churn/1", control=True),
            Arm("b", 0.5, model_uri=b),
        ],
        mde=0.02,
        **kw,
    )
    return client.abtests.start_abtest(name)


def exposures(client: Client, name: str = "exp") -> list[dict[str, Any]]:
    uri = exposures_uri(client.settings.resolved_artifact_uri, name)
    return list(DeltaTable(uri).to_pyarrow_table().to_pylist())


def test_assign_is_the_routers_answer(client: Client) -> None:
    exp = running(client)
    set_default_client(client)
    units = [f"user-{i}" for i in range(60)]
    champion, challenger = ArmService("control", 1), ArmService("b", 2)
    with contextlib.ExitStack() as stack:
        urls = {s.name: stack.enter_context(serving(s.app()))[0] for s in (champion, challenger)}
        config = RouterConfig(arm_urls=urls)
        router, _ = stack.enter_context(serving(create_router_service(config, client)))
        routed = [
            httpx.post(f"{router}/exp/predict", json=ROW, headers={"x-plinth-unit": u})
            for u in units
        ]
    arms = [plinth.abtests.assign("exp", u) for u in units]
    assert arms == [answer.json()["arm"] for answer in routed]
    assert set(arms) == {"control", "b"}
    # an integer id is its decimal text, as the router reads a JSON unit_id
    assert [plinth.abtests.assign("exp", i) for i in range(50)] == [
        assign_arm(exp, str(i))[0] for i in range(50)
    ]
    with pytest.raises(InvalidArgument, match="unit_id: give the unit's id as text"):
        plinth.abtests.assign("exp", True)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="'nope' does not exist"):
        plinth.abtests.assign("nope", "user-1")


def test_the_experiment_is_kept_for_a_few_seconds(client: Client) -> None:
    exp = running(client)
    clock = Clock()
    cache = ExperimentCache(client.abtests.get_abtest, seconds=2.0, clock=clock)
    b_unit = units_of(exp, "b", 1)[0]
    assert assign_arm(cache.get("exp"), b_unit)[0] == "b"
    client.abtests.pause_abtest("exp")
    clock.now += 1.9  # within the period: the view it read
    assert cache.get("exp").status is Status.RUNNING
    clock.now += 0.2  # past it: read again, and a paused experiment serves control
    assert cache.get("exp").status is Status.PAUSED
    assert assign_arm(cache.get("exp"), b_unit) == ("control", False)


def test_the_default_clients_experiments(client: Client, tmp_path: Path) -> None:
    exp = running(client)
    b_unit = units_of(exp, "b", 1)[0]
    set_default_client(client)
    assert plinth.abtests.assign("exp", b_unit) == "b"
    other = local_client(f"sqlite:///{tmp_path / 'other.db'}", str(tmp_path / "other"))
    set_default_client(other)  # a new default client: its own experiments, none cached
    with pytest.raises(NotFound):
        plinth.abtests.assign("exp", b_unit)


def test_a_failing_read_keeps_the_last_view(tmp_path: Path) -> None:
    clock = Clock()
    with running_server(tmp_path / "server") as url:
        remote = connect(url, **FAST_FLUSH)  # type: ignore[arg-type]
        remote.abtests.create_abtest(
            "exp",
            hypothesis="h",
            primary=CONVERSION,
            arms=[Arm("a", 0.5, url="http://a", control=True), Arm("b", 0.5, url="http://b")],
            mde=0.02,
        )
        cache = ExperimentCache(remote.abtests.get_abtest, seconds=2.0, clock=clock)
        seen = cache.get("exp")
    clock.now += 10  # the server is gone: the last view serves
    assert cache.get("exp") == seen
    with pytest.raises(Unavailable, match="is unreachable"):
        cache.get("never-seen")
    remote.close()


def test_predictions_carry_the_arm_and_version_and_are_exposures(client: Client) -> None:
    exp = running(client)
    units = units_of(exp, "b", 3) + units_of(exp, "control", 3)
    with Predictor("exp", client=client, poll_seconds=0) as predictor:
        answers = [predictor.predict(u, ROW, request_id=f"r-{u}") for u in units]
        prediction, arm, version = answers[0]
        assert (list(prediction), arm, version) == ([1], "b", 2)
        assert list(client.load_model("models:/churn/2").predict(ROW)) == [1]
        assert [(list(p), a, v) for p, a, v in answers[3:]] == [([0], "control", 1)] * 3
        # every input shape plinth serve takes, and a DataFrame
        assert list(
            predictor.predict(units[0], {"columns": {"age": [1, 2], "spend": [1, 2]}})[0]
        ) == [1, 1]
        assert list(predictor.predict(units[0], pd.DataFrame(ROW))[0]) == [1]
        with pytest.raises(InvalidArgument, match="spend"):
            predictor.predict(units[0], [{"age": 41}])
        with pytest.raises(InvalidArgument, match="unit_id"):
            predictor.predict(None, ROW)
    rows = exposures(client)
    assert len(rows) == 8  # the refused input logged nothing
    first = next(r for r in rows if r["request_id"] == f"r-{units[0]}")
    assert (first["unit"], first["arm"], first["model_version"], first["outcome"]) == (
        units[0],
        "b",
        "2",
        "ok",
    )
    assert first["latency_ms"] > 0
    for unit in units:  # the same log results read: each unit in its arm
        client.log_event("exp", "buy", unit=unit)
    results = client.abtests.abtest_results("exp")
    assert results.units_by_arm == {"control": 3, "b": 3}


def test_units_outside_the_experiment_are_not_exposures(client: Client) -> None:
    exp = running(client)
    client.abtests.pause_abtest("exp")
    with Predictor("exp", client=client, poll_seconds=0) as predictor:
        answer = predictor.predict(units_of(exp, "b", 1)[0], ROW)
        assert (answer.arm, answer.model_version) == ("control", 1)
    assert not DeltaTable.is_deltatable(exposures_uri(client.settings.resolved_artifact_uri, "exp"))


def test_an_experiment_by_request_assigns_by_the_request_id(client: Client) -> None:
    exp = running(client, unit=Unit.REQUEST)
    request = units_of(exp, "b", 1)[0]
    with Predictor("exp", client=client, poll_seconds=0) as predictor:
        assert predictor.predict(None, ROW, request_id=request).arm == "b"
        predictor.predict(None, ROW)  # a new request id, and the unit is that id
    rows = exposures(client)
    assert len(rows) == 2 and all(r["unit"] == r["request_id"] for r in rows)
    assert request in {r["unit"] for r in rows}


def test_a_failing_arm_falls_back_to_control(client: Client) -> None:
    broken = client.register_model(Broken(), "broken", input_example=EXAMPLE)
    exp = running(client, b=f"models:/broken/{broken.version}")
    b_units = units_of(exp, "b", 2)
    with Predictor("exp", client=client, poll_seconds=0, trust_pickle=True) as predictor:
        answers = [predictor.predict(u, ROW) for u in b_units]
        assert [(list(p), a, v) for p, a, v in answers] == [([0], "control", 1)] * 2
        assert predictor.fallbacks == {"b": 2}
    rows = exposures(client)
    # intent to treat: the unit is in arm b, control's version answered
    assert {(r["arm"], r["model_version"], r["outcome"]) for r in rows} == {
        ("b", "1", "fallback:server_error")
    }


def test_service_arms_are_refused_naming_the_arm(client: Client) -> None:
    client.abtests.create_abtest(
        "svc",
        hypothesis="h",
        primary=CONVERSION,
        arms=[
            Arm("control", 0.5, model_uri="models:/churn/1", control=True),
            Arm("b", 0.5, url="http://127.0.0.1:9/"),
        ],
        mde=0.02,
    )
    with pytest.raises(InvalidArgument, match="arm 'b' of A/B experiment 'svc' is the service"):
        Predictor("svc", client=client, poll_seconds=0)


def test_shadow_mode_answers_with_control_and_mirrors_to_the_challenger(
    client: Client,
) -> None:
    exp = running(client, mode=Mode.SHADOW)
    b_units = units_of(exp, "b", 3)
    mirrored: list[ShadowPrediction] = []
    with Predictor("exp", client=client, poll_seconds=0, on_shadow=mirrored.append) as predictor:
        answers = [predictor.predict(u, ROW) for u in [*b_units, *units_of(exp, "control", 2)]]
    assert {(a.arm, a.model_version) for a in answers} == {("control", 1)}
    assert [(s.arm, s.unit, s.outcome, list(s.prediction)) for s in mirrored] == [
        ("b", u, "ok", [1]) for u in b_units
    ]
    assert predictor.shadow_calls == {("b", "ok"): 3}
    assert {(r["arm"], r["model_version"]) for r in exposures(client)} == {("control", "1")}


def test_importing_the_package_loads_no_heavy_library() -> None:
    assert _heavy_modules_after("import plinth.abtests") == []


def test_unit_and_request_ids_are_checked(client: Client) -> None:
    exp = running(client)
    set_default_client(client)
    # numpy's integers are integers: their decimal text, as the router reads a JSON unit_id
    assert plinth.abtests.assign("exp", np.int64(12)) == assign_arm(exp, "12")[0]
    for bad, why in [("", "non-empty"), ("u" * 501, "at most 500"), ("\ud800", "surrogate")]:
        with pytest.raises(InvalidArgument, match=rf"unit_id: .*{why}"):
            plinth.abtests.assign("exp", bad)
    with Predictor("exp", client=client, poll_seconds=0) as predictor:
        assert predictor.predict(np.int64(12), ROW).arm == assign_arm(exp, "12")[0]
        with pytest.raises(InvalidArgument, match=r"unit_id: .*non-empty"):
            predictor.predict("", ROW)
        with pytest.raises(InvalidArgument, match="unit_id: at most 500"):
            predictor.predict("u" * 5_000_000, ROW)
        with pytest.raises(InvalidArgument, match="request_id: at most 500"):
            predictor.predict("u1", ROW, request_id="r" * 501)
        with pytest.raises(InvalidArgument, match="request_id: text"):
            predictor.predict("u1", ROW, request_id=7)  # type: ignore[arg-type]
    assert len(exposures(client)) == 1
