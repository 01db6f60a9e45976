"""A/B experiments end to end, every part a real process on loopback as people run them:
two ``plinth serve`` model services (two registered sklearn versions), a ``plinth server``,
and two ``plinth router`` processes reading the experiments through the server. Then
routed answers, sticky assignment across the routers and a restart, shadow mode, late and
re-sent events, an arm killed with SIGKILL, and ``plinth ab promote``.

The tests run in file order on one set of processes (module scope); each sends its own
units, and ``Lab.sent`` keeps every unit routed in experiment ``e2e`` so the results can be
checked to the unit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

import plinth
from plinth.abtests.embedded import Predictor
from plinth.abtests.traffic import ExposureLog, exposures_uri
from plinth.abtests.types import Arm, Kpi, KpiKind, Mode
from plinth.cli import app
from plinth.client import Client, connect, set_default_client
from plinth.registry.types import Stage
from tests.backends import FAST_FLUSH, free_port, local_client
from tests.serving.conftest import EXAMPLE, constant, logistic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = [{"age": 20, "spend": 1.0}]  # control (logistic) says 0 here, the challenger 1
REVENUE = Kpi("revenue", KpiKind.MEAN, "revenue")


class Lab:
    """The processes, their URLs, a client of the server, and the units routed in ``e2e``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.home = folder / "home"
        self.processes: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        self.ports: dict[str, int] = {}
        self.sent: set[str] = set()
        self.client: Client | None = None
        self.http = httpx.Client(timeout=10)  # one: a new client each call costs a TLS setup

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
        return {**env, "PLINTH_HOME": str(self.home), **extra}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *args: str, **env: str) -> None:
        """``plinth ARGS --port P`` in a process group of its own, its output to a file."""
        port = self.ports.setdefault(name, free_port())
        out = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "plinth", *args, "--port", str(port)],
            env=self.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = (process, out)

    def wait(self, name: str, path: str) -> None:
        process, _ = self.processes[name]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.log(name)}")
            try:
                if self.http.get(self.url(name) + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{name} did not become ready:\n{self.log(name)}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process, out = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        out.close()

    def metric(self, name: str, metric: str, **labels: str) -> float:
        """The sum of ``metric``'s samples with ``labels`` in process ``name``'s /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        scrape = self.http.get(f"{self.url(name)}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def route(self, router: str, unit: str, name: str = "e2e") -> httpx.Response:
        answer = self.http.post(
            f"{self.url(router)}/{name}/predict", json=ROW, headers={"x-plinth-unit": unit}
        )
        assert answer.status_code == 200, answer.text
        if name == "e2e":
            self.sent.add(unit)
        return answer


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("e2e"))
    home = made.home
    with local_client(f"sqlite:///{home / 'plinth.db'}", str(home / "artifacts")) as local:
        local.register_model(logistic(), "churn", input_example=EXAMPLE)
        local.register_model(constant(1), "churn", input_example=EXAMPLE)
        local.set_stage("churn", 1, "PRODUCTION", reason="the champion")
        arms = [
            Arm("control", 0.5, model_uri="models:/churn@production", control=True),
            Arm("challenger", 0.5, model_uri="models:/churn/2"),
        ]
        for name, mode in (("e2e", Mode.AB), ("e2e-shadow", Mode.SHADOW)):
            local.abtests.create_abtest(
                name, hypothesis="v2 earns more", primary=REVENUE, arms=arms, mde=0.05, mode=mode
            )
            local.abtests.start_abtest(name, reason="go")
    try:
        # all at once: a router reads the experiments through the server, again every
        # --refresh-seconds until the server is up
        made.start("server", "server")
        made.start("control", "serve", "models:/churn@production")
        made.start("challenger", "serve", "models:/churn/2")
        for router in ("router-1", "router-2"):
            start_router(made, router)
        made.wait("server", "/health")
        made.client = connect(made.url("server"), **FAST_FLUSH)  # type: ignore[arg-type]
        for name in ("control", "challenger"):
            made.wait(name, "/ready")
        for router in ("router-1", "router-2"):
            wait_router(made, router)
        yield made
    finally:
        if made.client is not None:
            made.client.close()
        for name in list(made.processes):
            made.stop(name)
        made.http.close()


def wait_router(lab: Lab, name: str) -> None:
    lab.wait(name, "/health")
    poll(
        lambda: lab.http.get(f"{lab.url(name)}/health").json()["experiments"] == 2,
        f"{name} read the experiments",
    )


def start_router(lab: Lab, name: str) -> None:
    lab.start(
        name,
        "router",
        "--arm-url",
        f"control={lab.url('control')}",
        "--arm-url",
        f"challenger={lab.url('challenger')}",
        "--refresh-seconds",
        "0.5",
        PLINTH_URI=lab.url("server"),
    )


def poll(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def units(arm: str, n: int, prefix: str) -> list[str]:
    """``n`` units the embedded assignment puts in ``arm`` (through the default client)."""
    found = (
        f"{prefix}-{i}"
        for i in range(10_000)
        if plinth.abtests.assign("e2e", f"{prefix}-{i}") == arm
    )
    return [next(found) for _ in range(n)]


@pytest.fixture(autouse=True)
def through_the_server(lab: Lab) -> None:
    assert lab.client is not None
    set_default_client(lab.client)  # plinth.log_event and plinth.abtests.assign use it


def test_routed_answers_carry_the_arm_and_equal_the_arms_own(lab: Lab) -> None:
    answers = {f"user-{i}": lab.route("router-1", f"user-{i}") for i in range(30)}
    own = {
        arm: lab.http.post(f"{lab.url(arm)}/predict", json=ROW).json()
        for arm in ("control", "challenger")
    }
    assert (own["control"]["predictions"], own["challenger"]["predictions"]) == ([0], [1])
    seen: Counter[str] = Counter()
    for unit, answer in answers.items():
        body, arm = answer.json(), answer.json()["arm"]
        seen[arm] += 1
        assert arm == plinth.abtests.assign("e2e", unit)  # embedded mode agrees
        assert (body["experiment"], body["model_version"]) == ("e2e", own[arm]["model_version"])
        assert body["predictions"] == own[arm]["predictions"]
        assert answer.headers["x-plinth-arm"] == arm
        assert answer.headers["x-plinth-model-version"] == str(own[arm]["model_version"])
    assert set(seen) == {"control", "challenger"}
    # embedded mode, through the server: the same arms, versions and predictions in process
    log = ExposureLog(str(lab.home / "artifacts"))  # the server's artifact root
    with Predictor("e2e", client=lab.client, poll_seconds=0, exposure_log=log) as predictor:
        for unit, answer in list(answers.items())[:10]:
            prediction, arm, version = predictor.predict(unit, ROW)
            body = answer.json()
            assert (list(prediction), arm, version) == (
                body["predictions"],
                body["arm"],
                body["model_version"],
            )
    log.close()


def test_assignment_is_sticky_across_routers_and_a_restart(lab: Lab) -> None:
    users = [f"user-{i}" for i in range(30)]

    def arms(router: str) -> list[str]:
        return [lab.route(router, u).json()["arm"] for u in users]

    first = arms("router-1")
    assert arms("router-2") == first
    lab.stop("router-2")
    start_router(lab, "router-2")  # the same port, a new process
    wait_router(lab, "router-2")
    assert arms("router-2") == first


def test_shadow_mode_answers_with_control_and_mirrors_to_the_challenger(lab: Lab) -> None:
    def challenger_predictions() -> float:
        return lab.metric("challenger", "plinth_requests_total", route="/predict")

    before = challenger_predictions()
    shadow_units = [f"shadow-{i}" for i in range(20)]
    answers = [lab.route("router-1", u, "e2e-shadow").json() for u in shadow_units]
    assert {(a["arm"], a["model_version"], tuple(a["predictions"])) for a in answers} == {
        ("control", 1, (0,))
    }
    mirrored = sum(
        1 for u in shadow_units if plinth.abtests.assign("e2e-shadow", u) == "challenger"
    )
    assert 0 < mirrored < len(shadow_units)
    labels = {"experiment": "e2e-shadow", "arm": "challenger", "outcome": "ok"}
    poll(
        lambda: lab.metric("router-1", "plinth_router_shadow_calls_total", **labels) == mirrored,
        "the router counted every mirrored call",
    )
    poll(  # the challenger's own count
        lambda: challenger_predictions() - before == mirrored,
        "the challenger counted every mirrored call",
    )
    uri = exposures_uri(str(lab.home / "artifacts"), "e2e-shadow")

    def logged() -> list[dict[str, Any]]:
        if not DeltaTable.is_deltatable(uri):
            return []
        return list(DeltaTable(uri).to_pyarrow_table().to_pylist())

    poll(lambda: len(logged()) == len(shadow_units), "every shadow exposure was written")
    assert {(r["arm"], r["model_version"]) for r in logged()} == {("control", "1")}


def test_late_and_re_sent_events_count_once(lab: Lab) -> None:
    assert lab.client is not None
    ab = lab.client.abtests
    buyers = units("challenger", 12, "late") + units("control", 12, "late")
    before_ms = int(time.time() * 1000)
    request_ids = {u: lab.route("router-1", u).headers["x-request-id"] for u in buyers}
    # the events happen now, just after the exposures; they arrive later, once the routers
    # wrote the exposures (and results read them)
    now_ms = int(time.time() * 1000)
    expected_units = Counter(plinth.abtests.assign("e2e", u) for u in lab.sent)
    poll(
        lambda: ab.abtest_results("e2e").units_by_arm == expected_units,
        "the exposures of every routed unit were written",
    )
    challengers, controls = buyers[:12], buyers[12:]
    events: list[dict[str, Any]] = [
        {"experiment": "e2e", "name": "revenue", "event_id": f"c-{u}", "at_ms": now_ms,
         "value": 10.0 + i % 5, "unit": u}
        for i, u in enumerate(challengers[:11])
    ]  # fmt: skip
    # the last challenger's revenue names only the request it came from
    last = challengers[11]
    events.append(
        {"experiment": "e2e", "name": "revenue", "event_id": f"c-{last}", "at_ms": now_ms,
         "value": 15.0, "request_id": request_ids[last]}
    )  # fmt: skip
    events.append(
        {"experiment": "e2e", "name": "revenue", "event_id": f"k-{controls[0]}", "at_ms": now_ms,
         "value": 1.0, "unit": controls[0]}
    )  # fmt: skip
    # before the unit's first exposure: not counted
    events.append(
        {"experiment": "e2e", "name": "revenue", "event_id": f"early-{controls[1]}",
         "at_ms": before_ms - 60_000, "value": 1000.0, "unit": controls[1]}
    )  # fmt: skip
    posted = lab.http.post(
        f"{lab.url('server')}/api/v1/abtests/e2e/events", json={"events": events}
    )
    assert posted.status_code == 200, posted.text
    # a retry of one and a copy of another, through plinth.log_event: the same event ids
    lab.http.post(
        f"{lab.url('server')}/api/v1/abtests/e2e/events", json={"events": events[:1]}
    ).raise_for_status()
    plinth.log_event("e2e", "revenue", 13.0, unit=challengers[3], event_id=f"c-{challengers[3]}")
    found = ab.abtest_results("e2e")
    assert found.units_by_arm == expected_units
    challenger_revenue = sum(10.0 + i % 5 for i in range(11)) + 15.0
    assert found.summaries["challenger"].estimate == pytest.approx(
        challenger_revenue / expected_units["challenger"]
    )
    assert found.summaries["control"].estimate == pytest.approx(1.0 / expected_units["control"])


def test_an_arm_killed_mid_test_costs_no_request(lab: Lab) -> None:
    victims = units("challenger", 5, "kill")
    assert {lab.route("router-1", u).json()["arm"] for u in victims} == {"challenger"}
    lab.stop("challenger", signal.SIGKILL)
    later = victims + units("control", 5, "kill")
    for router in ("router-1", "router-2"):
        answers = [lab.route(router, u).json() for u in later]  # every one a 200
        assert {(a["arm"], a["model_version"], tuple(a["predictions"])) for a in answers} == {
            ("control", 1, (0,))
        }
        fallbacks = {"experiment": "e2e", "arm": "challenger", "reason": "unreachable"}
        assert lab.metric(router, "plinth_router_fallbacks_total", **fallbacks) == len(victims)


def test_promote_moves_the_winner_to_production(lab: Lab) -> None:
    assert lab.client is not None
    # the command in this process (a subprocess would only add its start-up), through the
    # default client: the server
    done = CliRunner().invoke(app, ["ab", "promote", "e2e", "--reason", "v2 earns more"])
    assert done.exit_code == 0, done.output
    assert "promoted arm challenger of e2e: churn v2 is PRODUCTION" in done.stdout
    assert lab.client.get_model_version("churn", 2).stage is Stage.PRODUCTION
    assert lab.client.get_model_version("churn", 1).stage is Stage.ARCHIVED
    last = lab.client.model_history("churn")[-1]
    assert (last.action, last.version, last.to_value) == ("stage", 2, "PRODUCTION")
    assert last.reason.startswith("winner of A/B experiment 'e2e' (arm 'challenger'")
    assert lab.client.abtests.abtest_history("e2e")[-1].action == "promote"
