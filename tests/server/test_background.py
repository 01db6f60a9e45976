"""The server's background work: the A/B controller's thread runs while the app runs,
holding the controller's lease, and stops (giving the lease up) when the app stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plinth.abtests.controller import LEASE, ControllerLoop
from plinth.abtests.types import Arm, Kpi, KpiKind, Mode
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.store import lease
from tests.backends import local_client

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def test_the_controller_runs_while_the_server_runs(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = load_settings(home=tmp_path / "home", abtest_controller_seconds=0.05)
    app = create_app(settings, background=True)
    loop: ControllerLoop = app.state.abtest_controller
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        ab = client.abtests
        ab.create_abtest(
            "exp",
            hypothesis="h",
            primary=Kpi("conversion", KpiKind.PROPORTION, "buy"),
            arms=[Arm("a", 1.0, url="http://a", control=True), Arm("b", 0.0, url="http://b")],
            mde=0.02,
            mode=Mode.CANARY,
        )
        ab.start_abtest("exp")
        assert not loop.alive
        with TestClient(app):
            assert loop.alive
            deadline = time.monotonic() + 60  # a bound on waiting, not what is tested
            while ab.get_abtest("exp").version < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            held = lease.current(ab.store, LEASE)
            assert held is not None and held.holder == loop.holder
        assert not loop.alive
        assert lease.current(ab.store, LEASE) is None  # given up on the way out
        last = ab.abtest_history("exp")[-1]
        assert (last.action, last.changed_by) == ("canary-step", "controller")
        assert ab.get_abtest("exp").shares == {"a": 0.99, "b": 0.01}


def test_no_controller_unless_asked_for(tmp_path: Path) -> None:
    on = load_settings(home=tmp_path / "home")
    assert on.abtest_controller_seconds == 10
    assert not hasattr(create_app(on).state, "abtest_controller")  # not a background app
    off = load_settings(home=tmp_path / "home", abtest_controller_seconds=0)
    assert not hasattr(create_app(off, background=True).state, "abtest_controller")
    assert hasattr(create_app(on, background=True).state, "abtest_controller")


def test_the_setting_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLINTH_ABTEST_CONTROLLER_SECONDS", "2.5")
    assert load_settings(home=tmp_path).abtest_controller_seconds == 2.5
    monkeypatch.setenv("PLINTH_ABTEST_CONTROLLER_SECONDS", "-1")
    with pytest.raises(Exception, match="abtest_controller_seconds"):
        load_settings(home=tmp_path)


def test_health_tells_the_controllers_state(tmp_path: Path) -> None:
    import json

    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from plinth.store.schema import abtests

    settings = load_settings(home=tmp_path / "home", abtest_controller_seconds=0.05)
    app = create_app(settings, background=True)
    loop: ControllerLoop = app.state.abtest_controller
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        ab = client.abtests
        ab.create_abtest(
            "broken",
            hypothesis="h",
            primary=Kpi("conversion", KpiKind.PROPORTION, "buy"),
            arms=[Arm("a", 0.5, url="http://a", control=True), Arm("b", 0.5, url="http://b")],
            mde=0.02,
        )
        ab.start_abtest("broken")
        with ab.store.write() as conn:  # a design this replica cannot read
            conn.execute(update(abtests).values(config=json.dumps({"name": "broken"})))
        with TestClient(app) as http:
            deadline = time.monotonic() + 60  # a bound on waiting, not what is tested
            while loop.state()["passes"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            state = http.get("/health").json()["abtest_controller"]
            assert state["running"] is True and state["holds_lease"] is True
            assert state["passes"] >= 1 and state["last_pass_at"] is not None
            assert state["failure"] is None
            [error] = state["errors"]
            assert error.startswith("broken: ")
        assert http.get("/health").json()["abtest_controller"]["running"] is False
    assert "abtest_controller" not in TestClient(create_app(settings)).get("/health").json()


def test_plinth_logs_show_in_the_servers_output(capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import logging.config

    from plinth.server.app import log_config

    config = log_config()
    names = ["", *config["loggers"]]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    saved_propagate = {n: logging.getLogger(n).propagate for n in names}
    try:
        logging.config.dictConfig(config)  # as uvicorn.run(log_config=...) does
        logging.getLogger("plinth.abtests.controller").warning("experiment 'x': error: boom")
        logging.getLogger("plinth.abtests.controller").info("x canary-step: went up")
        logging.getLogger("plinth.abtests.controller").debug("not shown")
        said = capsys.readouterr().err
    finally:
        for n, (handlers, level) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = saved_propagate[n]
    assert "plinth.abtests.controller: experiment 'x': error: boom" in said
    assert "WARNING" in said and "x canary-step: went up" in said
    assert "not shown" not in said
