"""``plinth ab tick`` and the canary/bandit schedule in a spec file and in ``plinth ab show``,
against the store in PLINTH_HOME."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.abtests.traffic import exposures_uri
from tests.cli.test_abtests import invoke, run_main, wide  # noqa: F401  (wide: autouse)

SPEC: dict[str, Any] = {
    "name": "canary",
    "hypothesis": "v3 keeps more customers",
    "primary": {"name": "conversion", "kind": "proportion", "event": "buy"},
    "arms": [
        {"name": "champion", "share": 1, "url": "http://127.0.0.1:8000/predict", "control": True},
        {"name": "challenger", "share": 0, "url": "http://127.0.0.1:8001/predict"},
    ],
    "mde": 0.03,
    "mode": "canary",
    "canary": {"steps": [0.2, 0.6], "every_seconds": 120},
}


def spec_file(tmp_path: Path, spec: dict[str, Any]) -> str:
    path = tmp_path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_canary_from_its_spec_to_a_tick(tmp_path: Path) -> None:
    invoke("create", spec_file(tmp_path, SPEC))
    shown = invoke("show", "canary")
    assert "challenger share 0.2, 0.6, a step every 2 min" in shown
    bandit = {**SPEC, "name": "bandit", "mode": "bandit", "canary": None}
    bandit["bandit"] = {"every_seconds": 3600, "floor": 0.1}
    bandit["arms"] = [{**SPEC["arms"][0], "share": 0.5}, {**SPEC["arms"][1], "share": 0.5}]
    invoke("create", spec_file(tmp_path, bandit))
    assert "re-allocated every 1 h, floor 0.1 per arm" in invoke("show", "bandit")
    assert "no running experiment" in invoke("tick")
    invoke("start", "canary")
    ticked = invoke("tick")
    for words in ("canary-step", "champion 1 -> 0.8, challenger 0 -> 0.2", "canary step 1 of 2"):
        assert words in ticked, words
    again = json.loads(invoke("tick", "--json"))
    assert [(a["experiment"], a["action"]) for a in again] == [("canary", "wait")]
    assert again[0]["reason"].startswith("next step (challenger 0.6) at")
    history = json.loads(invoke("history", "canary", "--json"))
    assert [(v["action"], v["changed_by"]) for v in history][-1] == ("canary-step", "controller")


def test_a_bad_schedule_in_a_spec_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {**SPEC, "canary": {"steps": [0.5, 0.2]}}
    assert run_main(monkeypatch, "create", spec_file(tmp_path, bad)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: canary.steps[1]: the steps must increase"), err
    typo = {**SPEC, "canary": {"step": [0.5]}}
    assert run_main(monkeypatch, "create", spec_file(tmp_path, typo)) == 1
    assert "canary.step: " in capsys.readouterr().err
    assert plinth.default_client().abtests.list_abtests().items == []


def test_tick_exits_1_when_an_experiment_cannot_be_controlled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("create", spec_file(tmp_path, SPEC))
    invoke("start", "canary")
    client = plinth.default_client()
    log = Path(exposures_uri(str(client.abtests.root_uri), "canary")) / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("not a delta log")
    assert run_main(monkeypatch, "tick") == 1
    captured = capsys.readouterr()
    assert "error" in captured.out and "could not control canary" in captured.err
    assert client.abtests.get_abtest("canary").version == 2  # nothing changed


def test_reallocate_a_bandit_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.abtests.test_controller import outcomes

    bandit = {**SPEC, "name": "exp", "mode": "bandit", "canary": None}
    bandit["arms"] = [{**SPEC["arms"][0], "share": 0.5}, {**SPEC["arms"][1], "share": 0.5}]
    invoke("create", spec_file(tmp_path, bandit))
    invoke("start", "exp")
    client = plinth.default_client()
    outcomes(Path(str(client.abtests.root_uri)), {"champion": 40, "challenger": 80})
    said = invoke("reallocate", "exp", "--reason", "a look")
    for words in ("exp: re-allocated (version 3)", "champion 0.5 -> 0.05", "probability_best"):
        assert words in said, words
    assert client.abtests.get_abtest("exp").shares == {"champion": 0.05, "challenger": 0.95}
    invoke("stop", "exp")
    assert run_main(monkeypatch, "reallocate", "exp") == 1
    assert "only a running bandit experiment" in capsys.readouterr().err
