"""The A/B controller on real stores and hand-made exposure and event logs: canary steps on a
clock passed in, rollback on a broken guardrail, bandit re-allocation with its floor, the
automatic stop, two controllers at once, and every action in the experiment's history."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from plinth.abtests import controller
from plinth.abtests.results import Results
from plinth.abtests.service import AbTestService
from plinth.abtests.types import (
    Arm,
    Bandit,
    Canary,
    ControllerAction,
    Experiment,
    Guardrail,
    Kpi,
    KpiKind,
    Mode,
    Status,
)
from plinth.auth.types import Role
from plinth.client import Client
from plinth.errors import Conflict, InvalidArgument
from plinth.store import lease
from plinth.store.engine import open_store
from tests.abtests.test_results import T0, events, exposures
from tests.backends import empty_tables, local_client

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "buy")
UNITS = 400  # per arm


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    artifacts = str(tmp_path / "artifacts")
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'plinth.db'}"
    else:
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
    with local_client(uri, artifacts) as client:
        yield client


def running(ab: AbTestService, mode: Mode, challenger: float, **kw: Any) -> Experiment:
    ab.create_abtest(
        "exp",
        hypothesis="b converts more",
        primary=CONVERSION,
        arms=[
            Arm("control", round(1 - challenger, 10), url="http://control", control=True),
            Arm("b", challenger, url="http://b"),
        ],
        mode=mode,
        **{"mde": 0.02, **kw},
    )
    return ab.start_abtest("exp")


def outcomes(root: Path, converted: dict[str, int]) -> None:
    """``UNITS`` units per arm, the first ``converted[arm]`` of them buying once."""
    exposures(root, [(T0, f"{arm}-{i}", arm) for arm in converted for i in range(UNITS)])
    buys = [
        {"unit": f"{arm}-{i}", "event_id": f"{arm}-{i}"}
        for arm, n in converted.items()
        for i in range(n)
    ]
    events(root, buys)


def started(exp: Experiment) -> datetime:
    assert exp.started_at is not None
    return exp.started_at


def only(actions: list[ControllerAction]) -> ControllerAction:
    [found] = actions
    return found


def test_a_canary_steps_up_on_its_schedule(local: Client) -> None:
    ab = local.abtests
    canary = Canary(steps=[0.1, 0.5], every_seconds=600)
    t0 = started(running(ab, Mode.CANARY, 0.0, canary=canary))
    first = only(controller.run_once(ab, t0))  # the first step at once
    assert (first.action, first.version) == ("canary-step", 3)
    assert first.changes == {"shares": "control 1 -> 0.9, b 0 -> 0.1", "step": "1 of 2"}
    assert ab.get_abtest("exp").shares == {"control": 0.9, "b": 0.1}
    early = only(controller.run_once(ab, t0 + timedelta(seconds=599)))
    assert early.action == "wait" and early.reason.startswith("next step (b 0.5) at")
    assert ab.get_abtest("exp").version == 3
    second = only(controller.run_once(ab, t0 + timedelta(seconds=600)))
    assert second.action == "canary-step" and second.reason.startswith("canary step 2 of 2: b")
    assert ab.get_abtest("exp").shares == {"control": 0.5, "b": 0.5}
    done = only(controller.run_once(ab, t0 + timedelta(hours=5)))
    assert done.action == "wait" and done.reason.startswith("canary complete: b at 0.5")
    history = ab.abtest_history("exp")
    assert [(v.action, v.changed_by) for v in history[2:]] == [("canary-step", "controller")] * 2
    assert history[3].changed_at == t0 + timedelta(seconds=600)  # the controller's clock
    assert history[3].reason.startswith("canary step 2 of 2: b 0.1 -> 0.5; no guardrail broken")
    allocation = ab.get_abtest("exp").allocation.counts()
    assert allocation == {"control": 5000, "b": 5000}


def test_a_broken_guardrail_rolls_the_canary_back(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    guard = [Guardrail("conversion", max_drop=0.1)]
    canary = Canary(steps=[0.05, 0.5])
    t0 = started(running(ab, Mode.CANARY, 0.05, guardrails=guard, canary=canary))
    outcomes(tmp_path / "artifacts", {"control": 120, "b": 10})  # b converts far less
    rolled = only(controller.run_once(ab, t0 + timedelta(hours=2)))
    assert rolled.action == "rollback"
    assert rolled.reason.startswith("rollback: guardrail conversion broken in arm b:")
    assert rolled.changes["shares"] == "control 0.95 -> 1, b 0.05 -> 0"
    assert rolled.changes["status"] == "running -> stopped"
    after = ab.get_abtest("exp")
    assert after.status is Status.STOPPED and after.allocation.counts()["b"] == 0
    last = ab.abtest_history("exp")[-1]
    assert (last.action, last.changed_by, last.reason) == ("rollback", "controller", rolled.reason)
    assert controller.run_once(ab, t0 + timedelta(hours=3)) == []  # stopped: left alone


def test_a_guardrail_not_broken_lets_the_canary_go_on(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    guard = [Guardrail("conversion", max_drop=0.1)]
    canary = Canary(steps=[0.05, 0.2], every_seconds=60)
    t0 = started(running(ab, Mode.CANARY, 0.05, guardrails=guard, canary=canary))
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 44})
    stepped = only(controller.run_once(ab, t0 + timedelta(seconds=60)))
    assert stepped.action == "canary-step" and ab.get_abtest("exp").shares["b"] == 0.2


def test_a_bandit_moves_traffic_to_the_better_arm_above_the_floor(
    local: Client, tmp_path: Path
) -> None:
    ab = local.abtests
    t0 = started(running(ab, Mode.BANDIT, 0.5, bandit=Bandit(every_seconds=600, floor=0.1)))
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 80})
    early = only(controller.run_once(ab, t0 + timedelta(seconds=599)))
    assert early.action == "wait" and early.reason.startswith("next re-allocation at")
    moved = only(controller.run_once(ab, t0 + timedelta(seconds=600)))
    assert moved.action == "reallocate"
    assert ab.get_abtest("exp").shares == {"control": 0.1, "b": 0.9}  # control at its floor
    assert moved.changes["shares"] == "control 0.5 -> 0.1, b 0.5 -> 0.9"
    control, b = (part.split() for part in moved.changes["probability_best"].split(", "))
    assert control[0] == "control" and b[0] == "b" and float(b[1]) > 0.99  # 8 % beats 16 %
    assert float(control[1]) + float(b[1]) == pytest.approx(1)
    assert moved.changes["units"] == "control 400, b 400"
    assert "Thompson sampling on conversion: arm b is best with probability" in moved.reason
    last = ab.abtest_history("exp")[-1]
    assert (last.action, last.changed_by) == ("reallocate", "controller")
    again = only(controller.run_once(ab, t0 + timedelta(seconds=900)))
    assert again.action == "wait"  # the next one is due 600 s after this one


def test_a_close_bandit_splits_by_probability(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    t0 = started(running(ab, Mode.BANDIT, 0.5, bandit=Bandit(every_seconds=60, floor=0.2)))
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 43})
    only(controller.run_once(ab, t0 + timedelta(seconds=60)))
    shares = ab.get_abtest("exp").shares
    # P(b best) is 0.636 here; 10,000 draws miss it by 0.005 at one standard error
    assert 0.6 < shares["b"] < 0.67 and shares["control"] >= 0.2
    assert sum(shares.values()) == pytest.approx(1, abs=1e-12)


def test_reallocate_now_through_the_service(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    running(ab, Mode.BANDIT, 0.5)
    with pytest.raises(Conflict, match=r"now: no re-allocation yet: arm control, b has fewer"):
        ab.reallocate_abtest("exp")
    outcomes(tmp_path / "artifacts", {"control": 40, "b": 80})
    done = ab.reallocate_abtest("exp", reason="looked at it")
    assert done.action == "reallocate" and done.reason.startswith("looked at it (Thompson")
    assert ab.abtest_history("exp")[-1].changed_by != "controller"  # the caller's own
    assert ab.get_abtest("exp").shares == {"control": 0.05, "b": 0.95}  # default floor


def test_every_running_experiment_gets_the_auto_stop(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    t0 = started(running(ab, Mode.AB, 0.5, guardrails=[Guardrail("conversion", max_drop=0.1)]))
    outcomes(tmp_path / "artifacts", {"control": 120, "b": 10})
    stopped = only(controller.run_once(ab, t0))
    assert stopped.action == "stop"
    assert stopped.reason.startswith("auto-stop: guardrail conversion broken in arm b")
    assert stopped.changes == {"status": "running -> stopped"}
    assert ab.get_abtest("exp").shares == {"control": 0.5, "b": 0.5}  # not a canary: no rollback
    assert ab.abtest_history("exp")[-1].changed_by == "controller"


def test_a_stale_decision_is_not_applied(local: Client) -> None:
    ab = local.abtests
    exp = running(ab, Mode.CANARY, 0.0)
    at = started(exp)
    shares = {"b": 0.01, "control": 0.99}
    first = ab.apply_control("exp", "canary-step", exp.version, at, "step", shares=shares)
    assert first is not None and first.version == exp.version + 1
    again = ab.apply_control("exp", "canary-step", exp.version, at, "step", shares=shares)
    assert again is None  # decided from the version before the step: not taken twice
    assert [v.action for v in ab.abtest_history("exp")].count("canary-step") == 1


def test_two_controllers_at_once_take_one_step(local: Client) -> None:
    ab = local.abtests
    t0 = started(running(ab, Mode.CANARY, 0.0))
    start = threading.Barrier(2)
    found: list[list[ControllerAction]] = []

    def control() -> None:
        start.wait(timeout=30)
        found.append(controller.run_once(ab, t0))

    threads = [threading.Thread(target=control) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    actions = sorted(a.action for done in found for a in done)
    assert actions == ["canary-step", "wait"]
    history = ab.abtest_history("exp")
    assert [v.action for v in history] == ["create", "start", "canary-step"]
    assert ab.get_abtest("exp").shares == {"control": 0.99, "b": 0.01}


def test_one_experiment_failing_leaves_the_others_controlled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "art")) as client:
        ab = AbTestService(client.abtests.store)  # no artifact root: no results to read
        t0 = started(running(ab, Mode.CANARY, 0.0))
        with caplog.at_level("WARNING", logger="plinth.abtests.controller"):
            failed = only(controller.run_once(ab, t0))
        assert failed.action == "error" and "no artifact root" in failed.reason
        assert ab.get_abtest("exp").version == 2
    [logged] = [r for r in caplog.records if r.name == "plinth.abtests.controller"]
    assert logged.levelname == "WARNING"
    assert logged.getMessage().startswith("A/B controller: experiment 'exp': error: this A/B")


def test_the_schedule_is_designed_and_checked(local: Client) -> None:
    ab = local.abtests
    canary = running(ab, Mode.CANARY, 0.0)
    assert canary.canary == Canary() and canary.bandit is None  # defaults filled
    spec: dict[str, Any] = {
        "hypothesis": "h",
        "primary": CONVERSION,
        "arms": [Arm("a", 0.5, url="http://a", control=True), Arm("b", 0.5, url="http://b")],
        "mde": 0.02,
    }
    plain = ab.create_abtest("plain", **spec)
    assert plain.canary is None and plain.bandit is None
    bandit = ab.create_abtest("bandit", mode="bandit", bandit={"floor": 0.2}, **spec)
    assert bandit.bandit == Bandit(every_seconds=3600, floor=0.2)
    changed = ab.update_abtest("bandit", mode="canary", shares={"a": 1, "b": 0})  # a draft
    assert changed.canary == Canary() and changed.bandit is None
    ab.update_abtest("exp", canary=Canary([0.01, 0.3], 60), reason="faster")
    last = ab.abtest_history("exp")[-1]
    assert last.changes == {
        "canary": "steps 0.01, 0.05, 0.2, 0.5 every 3600 s -> steps 0.01, 0.3 every 60 s"
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"mode": "canary", "canary": {"steps": []}}, r"canary.steps: give the challenger's"),
        ({"mode": "canary", "canary": {"steps": [0.1, 0.1]}}, r"canary.steps\[1\]: the steps"),
        ({"mode": "canary", "canary": {"steps": [0.2, 0.1]}}, r"steps\[1\]: .* 0.1 follows 0.2"),
        ({"mode": "canary", "canary": {"steps": [0, 0.1]}}, r"canary.steps\[0\]: a share above"),
        ({"mode": "canary", "canary": {"steps": [0.5, 1.5]}}, r"canary.steps\[1\]: a share"),
        ({"mode": "canary", "canary": {"every_seconds": 0}}, r"canary.every_seconds: the sec"),
        ({"mode": "canary", "canary": {"every_seconds": 59}}, r"every_seconds: .* from 60 .*59"),
        ({"mode": "canary", "canary": {"every_seconds": 1e12}}, r"31536000 \(365 days\), got 1000000000000\.0"),
        ({"mode": "bandit", "bandit": {"every_seconds": 0.001}}, r"bandit.every_seconds: .*60"),
        ({"mode": "canary", "canary": {"steps": "x"}}, r"canary.steps: Input should be"),
        ({"canary": {"steps": [0.1]}}, r"canary: only a canary experiment .*the mode is ab"),
        ({"mode": "bandit", "bandit": {"floor": 0.6}}, r"bandit.floor: .* 1/arms \(0.5 for 2"),
        ({"mode": "bandit", "bandit": {"floor": -0.1}}, r"bandit.floor: the least share"),
        ({"mode": "bandit", "bandit": {"every_seconds": -1}}, r"bandit.every_seconds: the sec"),
        ({"mode": "shadow", "bandit": {"floor": 0.1}}, r"bandit: only a bandit experiment"),
        (
            {"mode": "canary", "arms": [Arm("a", 0.5, url="http://a", control=True)] * 1
             + [Arm(n, 0.25, url="http://b") for n in ("b", "c")]},
            r"arms: a canary has two arms",
        ),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_refused_naming_the_field(
    local: Client, given: dict[str, Any], message: str
) -> None:
    spec: dict[str, Any] = {
        "hypothesis": "h",
        "primary": CONVERSION,
        "arms": [Arm("a", 0.5, url="http://a", control=True), Arm("b", 0.5, url="http://b")],
        "mde": 0.02,
        **given,
    }
    with pytest.raises(InvalidArgument, match=message):
        local.abtests.create_abtest("exp", **spec)
    assert local.abtests.list_abtests().items == []


def test_old_stored_designs_without_a_schedule_still_load(local: Client) -> None:
    import json

    from sqlalchemy import select, update

    from plinth.store.schema import abtests

    ab = local.abtests
    running(ab, Mode.CANARY, 0.0)
    with ab.store.write() as conn:
        config = json.loads(conn.execute(select(abtests.c.config)).scalar_one())
        del config["canary"], config["bandit"]
        conn.execute(update(abtests).values(config=json.dumps(config)))
    old = ab.get_abtest("exp")
    assert old.canary is None and old.mode is Mode.CANARY
    stepped = only(controller.run_once(ab, started(old)))  # the default schedule applies
    assert stepped.action == "canary-step" and ab.get_abtest("exp").shares["b"] == 0.01


def test_on_buckets_keeps_the_floor_and_adds_up_to_one() -> None:
    shares = controller.on_buckets({"a": 0.04999999, "b": 0.3333333, "c": 0.61666671}, 0.05)
    assert shares == {"a": 0.05, "b": 0.3333, "c": 0.6167}
    assert sum(int(s * 10_000 + 0.5) for s in shares.values()) == 10_000


def test_only_the_lease_holder_controls(local: Client) -> None:
    ab = local.abtests
    running(ab, Mode.CANARY, 0.0)
    one, other = controller.ControllerLoop(ab, 10), controller.ControllerLoop(ab, 10)
    assert (one.lease_seconds, controller.ControllerLoop(ab, 30).lease_seconds) == (60, 90)
    assert one.run_pass() and [a.action for a in one.done] == ["canary-step"]
    assert not other.run_pass()  # the other replica waits its turn
    assert lease.release(ab.store, controller.LEASE, one.holder)
    assert other.run_pass()  # free again: taken
    assert not one.run_pass()  # it finds the lease taken
    assert [v.changed_by for v in ab.abtest_history("exp")].count("controller") == 1


def test_a_tick_over_http_acts_as_the_controller(tmp_path: Path) -> None:
    from plinth.client import connect
    from tests.backends import FAST_FLUSH, running_server

    with running_server(tmp_path / "home") as url, connect(url, **FAST_FLUSH) as remote:  # type: ignore[arg-type]
        ab = remote.abtests
        running(ab, Mode.CANARY, 0.0)
        [done] = ab.tick_abtests()
        assert (done.action, done.version) == ("canary-step", 3)
        assert done.changes["shares"] == "control 1 -> 0.99, b 0 -> 0.01"
        last = ab.abtest_history("exp")[-1]
        assert (last.action, last.changed_by) == ("canary-step", "controller")
        with pytest.raises(Conflict, match="only a running bandit experiment"):
            ab.reallocate_abtest("exp")


def test_only_an_admin_may_tick(tmp_path: Path) -> None:
    from tests.abtests.test_service import Server

    server = Server(tmp_path / "server")
    with server.http:
        editor = server.user("alice", Role.EDITOR)
        refused = server.http.post("/api/v1/abtest-controller/tick", headers=editor, json={})
        assert refused.status_code == 403, refused.text
        admin = server.user("root", Role.ADMIN)
        answered = server.http.post("/api/v1/abtest-controller/tick", headers=admin, json={})
        assert answered.status_code == 200 and answered.json() == []


def test_only_the_challengers_broken_guardrail_rolls_a_canary_back() -> None:
    from dataclasses import replace

    from plinth.abtests.checks import GuardrailCheck
    from tests.abtests.test_results import experiment

    exp = replace(experiment(), mode=Mode.CANARY)

    def check(breached: bool, significant: bool) -> GuardrailCheck:
        return GuardrailCheck(
            "two-proportion z-test", False, False, 250.0, 90.0, (60.0, 120.0),
            breached, significant, f"p99 over 250 ms ({breached}, {significant})",
        )  # fmt: skip

    def results(**by_arm: GuardrailCheck) -> Results:
        found = Results("exp", datetime.now(UTC), CONVERSION, "control", {}, 0)
        return replace(found, guardrails={"latency_p99": by_arm})

    assert controller.rollback_reasons(exp, results(control=check(True, True))) == []
    assert controller.rollback_reasons(exp, results(b=check(True, False))) == []  # not yet sure
    assert controller.rollback_reasons(exp, results(b=check(True, True))) == [
        "guardrail latency_p99 broken in arm b: p99 over 250 ms (True, True)"
    ]


def test_on_buckets_lifts_a_share_rounded_under_the_floor() -> None:
    assert controller.on_buckets({"a": 0.0499, "b": 0.9501}, 0.05) == {"a": 0.05, "b": 0.95}
    assert controller.on_buckets({"a": 0.0, "b": 0.0, "c": 1.0}, 0.5) == {
        "a": 0.3333, "b": 0.3333, "c": 0.3334,
    }  # fmt: skip


def test_a_pass_ends_when_its_lease_is_lost(local: Client) -> None:
    ab = local.abtests
    for name in ("one", "two"):
        ab.create_abtest(
            name,
            hypothesis="h",
            primary=CONVERSION,
            arms=[Arm("a", 1, url="http://a", control=True), Arm("b", 0, url="http://b")],
            mde=0.02,
            mode=Mode.CANARY,
        )
        ab.start_abtest(name)
    answers = iter([True, True, False])  # before "one", before its step, before "two"
    done = controller.run_once(ab, keep_going=lambda: next(answers))
    assert [(a.experiment, a.action) for a in done] == [("one", "canary-step")]
    assert ab.get_abtest("two").version == 2  # left for the lease's next holder
    loop = controller.ControllerLoop(ab, 10)
    assert lease.acquire(ab.store, controller.LEASE, loop.holder, 60)
    assert loop.still_held()  # what the pass asks before each experiment
    assert lease.release(ab.store, controller.LEASE, loop.holder)  # lapsed, and taken over:
    assert lease.acquire(ab.store, controller.LEASE, "someone else", 60)
    assert not loop.still_held()
    assert not loop.run_pass() and ab.get_abtest("two").version == 2


def test_a_start_is_recorded_at_its_started_at(local: Client) -> None:
    # the schedule counts from the start's version: the two times are one
    exp = running(local.abtests, Mode.BANDIT, 0.5)
    assert local.abtests.abtest_history("exp")[-1].changed_at == exp.started_at


# -- the reviewer's cases ----------------------------------------------------------------------


def _stored(ab: AbTestService, name: str, edit: Any) -> None:
    """Rewrite ``name``'s stored design by hand (as an older or newer replica left it)."""
    import json

    from sqlalchemy import select, update

    from plinth.store.schema import abtests

    with ab.store.write() as conn:
        row = abtests.c.name == name
        config = json.loads(conn.execute(select(abtests.c.config).where(row)).scalar_one())
        text = edit(config)
        conn.execute(update(abtests).where(row).values(config=text or json.dumps(config)))


def _backdate_start(ab: AbTestService, name: str, seconds: float) -> None:
    from sqlalchemy import update

    from plinth.store.schema import abtest_versions

    v = abtest_versions.c
    with ab.store.write() as conn:
        conn.execute(
            update(abtest_versions)
            .where(v.name == name, v.action == "start")
            .values(changed_at=v.changed_at - int(seconds * 1000))
        )


def test_a_tiny_mde_still_stops_on_a_broken_guardrail(local: Client, tmp_path: Path) -> None:
    ab = local.abtests
    with pytest.raises(InvalidArgument, match=r"mde: 1e-17 is too small an effect to detect"):
        running(ab, Mode.AB, 0.5, guardrails=[Guardrail("conversion", max_drop=0.1)], mde=1e-17)
    running(ab, Mode.AB, 0.5, guardrails=[Guardrail("conversion", max_drop=0.1)])
    _stored(ab, "exp", lambda config: config.update(mde=1e-17))  # designed before the check
    with pytest.raises(InvalidArgument, match=r"effect: an effect size of 0 is too small"):
        ab.plan_abtest("exp", baseline=0.1)
    outcomes(tmp_path / "artifacts", {"control": 120, "b": 10})
    checked = ab.check_abtest("exp")  # (read only: stopped by the controller below)
    assert checked.stopped and "planned sample: " in " ".join(checked.notes)


def test_a_tiny_mde_and_a_broken_guardrail_stop_under_the_controller(
    local: Client, tmp_path: Path
) -> None:
    ab = local.abtests
    t0 = started(running(ab, Mode.AB, 0.5, guardrails=[Guardrail("conversion", max_drop=0.1)]))
    _stored(ab, "exp", lambda config: config.update(mde=1e-17))
    outcomes(tmp_path / "artifacts", {"control": 120, "b": 10})
    stopped = only(controller.run_once(ab, t0))
    assert stopped.action == "stop", stopped.reason
    assert stopped.reason.startswith("auto-stop: guardrail conversion broken in arm b")


def test_a_canary_held_back_by_hand_stays_held(local: Client) -> None:
    ab = local.abtests
    canary = Canary(steps=[0.1, 0.5], every_seconds=600)
    t0 = started(running(ab, Mode.CANARY, 0.0, canary=canary))
    assert only(controller.run_once(ab, t0)).action == "canary-step"
    ab.update_abtest("exp", shares={"b": 0.0, "control": 1.0}, reason="b looks odd")
    for later in (timedelta(seconds=1), timedelta(hours=10)):
        held = only(controller.run_once(ab, t0 + later))
        assert held.action == "wait" and held.reason.startswith("held: ")
        assert "pause and resume the experiment" in held.reason
    assert ab.get_abtest("exp").shares == {"control": 1.0, "b": 0.0}
    ab.pause_abtest("exp")
    ab.resume_abtest("exp")  # the operator lets it go on, from the share it has
    again = only(controller.run_once(ab, t0 + timedelta(hours=11)))
    assert again.action == "canary-step" and ab.get_abtest("exp").shares["b"] == 0.1


def test_a_canary_held_between_steps_takes_no_step_at_once(local: Client) -> None:
    ab = local.abtests
    canary = Canary(steps=[0.1, 0.5], every_seconds=600)
    t0 = started(running(ab, Mode.CANARY, 0.0, canary=canary))
    only(controller.run_once(ab, t0))
    ab.update_abtest("exp", shares={"b": 0.05, "control": 0.95}, reason="halve it")
    held = only(controller.run_once(ab, t0 + timedelta(seconds=600)))
    assert held.action == "wait" and ab.get_abtest("exp").shares["b"] == 0.05
    ab.update_abtest("exp", canary=Canary([0.1, 0.5], 900), reason="slower, go on")
    going = only(controller.run_once(ab, t0 + timedelta(seconds=601)))
    assert going.action == "canary-step" and ab.get_abtest("exp").shares["b"] == 0.1


def test_a_bandits_schedule_counts_from_a_share_set_by_hand(local: Client) -> None:
    ab = local.abtests
    running(ab, Mode.BANDIT, 0.5, bandit=Bandit(every_seconds=600, floor=0.1))
    _backdate_start(ab, "exp", 3600)  # started an hour ago: a re-allocation is due
    ab.update_abtest("exp", shares={"b": 0.4, "control": 0.6}, reason="by hand")
    changed = ab.abtest_history("exp")[-1].changed_at
    waits = only(controller.run_once(ab, changed + timedelta(seconds=599)))
    assert waits.action == "wait" and waits.reason.startswith("next re-allocation at")
    due = only(controller.run_once(ab, changed + timedelta(seconds=600)))
    assert due.reason.startswith("no re-allocation yet")  # due now; no results to go on


def test_a_stop_ends_the_loops_pass_and_frees_its_lease(local: Client) -> None:
    ab = local.abtests
    running(ab, Mode.CANARY, 0.0)
    loop = controller.ControllerLoop(ab, 10)
    assert lease.acquire(ab.store, controller.LEASE, loop.holder, 60)
    assert loop.still_held()
    loop.stop()  # never started: nothing to wait for
    assert not loop.still_held()  # what the pass asks before each experiment and action
    assert not loop.run_pass()
    assert ab.get_abtest("exp").version == 2  # no step taken after the stop
    assert lease.current(ab.store, controller.LEASE) is None  # given up with the pass


def test_the_lease_is_asked_again_right_before_acting(local: Client) -> None:
    ab = local.abtests
    running(ab, Mode.CANARY, 0.0)
    answers = iter([True, False])  # held when the experiment is read, lost while deciding
    assert controller.run_once(ab, keep_going=lambda: next(answers)) == []
    assert ab.get_abtest("exp").version == 2


def test_one_unreadable_design_leaves_the_others_controlled(local: Client) -> None:
    ab = local.abtests
    for name in ("one", "two", "zed"):
        ab.create_abtest(
            name,
            hypothesis="h",
            primary=CONVERSION,
            arms=[Arm("a", 1, url="http://a", control=True), Arm("b", 0, url="http://b")],
            mde=0.02,
            mode=Mode.CANARY,
        )
        ab.start_abtest(name)
    # "one" was written by a newer replica (a schedule field this one does not know);
    # "two" cannot be read at all
    _stored(ab, "one", lambda config: config["canary"].update(jitter_seconds=5))
    _stored(ab, "two", lambda config: "{not json")
    done = {a.experiment: a for a in controller.run_once(ab, datetime.now(UTC))}
    assert (done["one"].action, done["zed"].action) == ("canary-step", "canary-step")
    assert done["two"].action == "error"
    assert ab.get_abtest("one").shares["b"] == 0.01
    with pytest.raises(InvalidArgument, match=r"canary.jitter_seconds: Unexpected keyword"):
        ab.update_abtest("zed", canary={"jitter_seconds": 5}, reason="typo refused")


def test_a_period_stored_before_the_bounds_does_not_overflow(local: Client) -> None:
    ab = local.abtests
    canary = Canary(steps=[0.1, 0.5], every_seconds=600)
    t0 = started(running(ab, Mode.CANARY, 0.0, canary=canary))
    only(controller.run_once(ab, t0))
    _stored(ab, "exp", lambda config: config["canary"].update(every_seconds=1e12))
    waits = only(controller.run_once(ab, t0 + timedelta(days=300)))
    assert waits.action == "wait" and waits.reason.startswith("next step (b 0.5) at")


def test_a_bandit_keeps_every_arm_at_its_floor(local: Client) -> None:
    ab = local.abtests
    with pytest.raises(InvalidArgument, match=r"arms\[1\].share: a bandit keeps every arm .* 0\b"):
        running(ab, Mode.BANDIT, 0.0, bandit=Bandit(floor=0.1))
    running(ab, Mode.BANDIT, 0.5, bandit=Bandit(floor=0.1))
    with pytest.raises(InvalidArgument, match=r"arms\[0\].share: .*'control' has 0.05"):
        ab.update_abtest("exp", shares={"control": 0.05, "b": 0.95}, reason="too far")
    assert ab.get_abtest("exp").shares == {"control": 0.5, "b": 0.5}
    moved = ab.update_abtest("exp", shares={"control": 0.1, "b": 0.9}, reason="at the floor")
    assert moved.shares == {"control": 0.1, "b": 0.9}


def test_a_canary_starts_at_most_at_its_first_step(local: Client) -> None:
    ab = local.abtests
    with pytest.raises(InvalidArgument, match=r"arms\[1\].share: a canary's challenger 'b'"):
        running(ab, Mode.CANARY, 0.5)
    ab.create_abtest(
        "exp",
        hypothesis="h",
        primary=CONVERSION,
        arms=[Arm("control", 1, url="http://a", control=True), Arm("b", 0, url="http://b")],
        mde=0.02,
        mode=Mode.CANARY,
    )

    def half(config: dict[str, Any]) -> None:  # a draft stored before the rule
        config["arms"][0]["share"] = config["arms"][1]["share"] = 0.5

    _stored(ab, "exp", half)
    with pytest.raises(InvalidArgument, match=r"starts at most at its first step"):
        ab.start_abtest("exp")
    assert ab.get_abtest("exp").status is Status.DRAFT


def test_the_controller_reports_the_change_it_recorded(local: Client) -> None:
    ab = local.abtests
    exp = running(ab, Mode.CANARY, 0.0)
    recorded = ab.apply_control(
        "exp", "canary-step", exp.version, None, "step", shares={"b": 0.01, "control": 0.99}
    )
    assert recorded is not None and (recorded.version, recorded.action) == (3, "canary-step")
    assert recorded.changes == {"shares": "control 1 -> 0.99, b 0 -> 0.01"}
    assert recorded.changed_at == ab.abtest_history("exp")[-1].changed_at  # the lock's clock


def test_a_canary_plans_for_its_final_split(local: Client) -> None:
    ab = local.abtests
    running(ab, Mode.CANARY, 0.0)  # the challenger at 0 for now
    planned = ab.plan_abtest("exp", baseline=0.1)
    assert planned.sample.arms == 2 and planned.sample.per_arm > 0


def test_a_pass_compacts_the_logs_of_a_running_experiment(
    local: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake import DeltaTable

    from plinth.abtests import compaction
    from plinth.abtests.traffic import exposures_uri

    monkeypatch.setattr(compaction.compact_logs, "__kwdefaults__", {"min_files": 10})
    ab = local.abtests
    t0 = started(running(ab, Mode.AB, 0.5))
    root = tmp_path / "artifacts"
    for i in range(12):  # twelve small appends, as a router's seconds would make
        exposures(root, [(T0, f"u{i}-{arm}", arm) for arm in ("control", "b")])
    before = ab.abtest_results("exp").units_by_arm
    uri = exposures_uri(str(root), "exp")
    assert len(DeltaTable(uri).file_uris()) == 12
    controller.run_once(ab, t0)
    assert len(DeltaTable(uri).file_uris()) == 1
    assert ab.abtest_results("exp").units_by_arm == before == {"control": 12, "b": 12}
