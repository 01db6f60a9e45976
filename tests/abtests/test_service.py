"""The A/B experiment contract, on every backend (SQLite, PostgreSQL, a server over HTTP):
design, validation, lifecycle, recorded changes, minimal reassignment and layers; then
permissions on a server with authentication on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plinth.abtests.buckets import BUCKETS
from plinth.abtests.service import AbTestService
from plinth.abtests.types import Arm, Canary, Experiment, Guardrail, Kpi, KpiKind, Mode, Status
from plinth.auth.types import Role
from plinth.client import Client
from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "purchase")


def arms(control: float = 0.5) -> list[Arm]:
    return [
        Arm("champion", control, model_uri="models:/churn@champion", control=True),
        Arm("challenger", round(1 - control, 10), model_uri="models:/churn/3"),
    ]


def create(ab: AbTestService, name: str = "churn-v3", **kw: Any) -> Experiment:
    spec: dict[str, Any] = {
        "hypothesis": "v3 keeps more customers",
        "primary": CONVERSION,
        "arms": arms(),
        "mde": 0.02,
        **kw,
    }
    return ab.create_abtest(name, **spec)


def test_create_get_and_list(client: Client) -> None:
    ab = client.abtests
    made = create(
        ab,
        guardrails=[Guardrail("latency_p99", max_value=250.0)],
        mode=Mode.CANARY,
        canary=Canary(steps=[0.5, 1.0]),  # a canary starts at most at its first step
        reason="first design",
    )
    assert (made.status, made.version, made.mode) == (Status.DRAFT, 1, Mode.CANARY)
    assert made.owner and len(made.salt) == 32
    assert made.allocation.counts() == {"champion": 5000, "challenger": 5000}
    assert made.control.name == "champion"
    assert ab.get_abtest("churn-v3") == made
    with pytest.raises(InvalidArgument, match=r"arms: the shares must add up to 1"):
        create(ab, "third", arms=[Arm("a", 0.7, url="http://h", control=True), arms()[1]])
    other = create(ab, "other2", arms=[Arm("a", 0.5, url="http://h/p", control=True), arms()[1]])
    assert other.salt != made.salt
    first = ab.list_abtests(max_results=1)
    assert [e.name for e in first] == ["churn-v3"] and first.next_page_token
    assert [e.name for e in ab.list_abtests(page_token=first.next_page_token)] == ["other2"]
    ab.start_abtest("other2")
    assert [e.name for e in ab.list_abtests(status=Status.RUNNING)] == ["other2"]
    with pytest.raises(AlreadyExists, match="'churn-v3' already exists"):
        create(ab)
    with pytest.raises(NotFound, match="A/B experiment 'nope' does not exist"):
        ab.get_abtest("nope")


def test_a_bad_design_is_refused_naming_the_field(client: Client) -> None:
    ab = client.abtests
    kpi = {"name": "rev", "kind": "ratio", "event": "revenue"}
    with pytest.raises(InvalidArgument, match=r"primary.denominator_event: a ratio KPI"):
        create(ab, primary=kpi)
    with pytest.raises(InvalidArgument, match=r"alpha: must be between 0 and 1"):
        create(ab, alpha=1.5)
    assert ab.list_abtests().items == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name"}, r"experiment name 'bad name' is not valid"),
        ({"hypothesis": " "}, r"hypothesis: say what"),
        ({"arms": arms()[:1]}, r"arms: an experiment needs at least 2 arms"),
        ({"arms": [arms()[0], arms()[0]]}, r"arms\[1\].name: 'champion' names two arms"),
        (
            {"arms": [arms()[0], Arm("b", 0.5, model_uri="models:/churn/3", control=True)]},
            r"arms: exactly one arm is the control .* got 2: champion, b",
        ),
        (
            {"arms": [Arm("a", 0.5, model_uri="models:/c/1"), Arm("b", 0.5, url="http://h")]},
            r"arms: exactly one arm is the control .* got none",
        ),
        (
            {"arms": [arms()[0], Arm("b", 0.5, model_uri="models:/c/1", url="http://h")]},
            r"arms\[1\]: give exactly one of model_uri",
        ),
        ({"arms": [arms()[0], Arm("b", 0.5)]}, r"arms\[1\]: give exactly one of model_uri"),
        (
            {"arms": [arms()[0], Arm("b", 0.5, model_uri="churn")]},
            r"arms\[1\].model_uri: model URI 'churn' must look like",
        ),
        ({"arms": [arms()[0], Arm("b", 0.5, url="ftp://h")]}, r"arms\[1\].url: 'ftp://h' is not"),
        (
            {"arms": [arms()[0], Arm("b", 0.5, url="http://h:99999/m")]},
            r"arms\[1\].url: 'http://h:99999/m' is not a URL .*Port out of range",
        ),
        (
            {"arms": [arms()[0], Arm("b", 0.5, url="http://h/mod\u00e8le")]},
            r"arms\[1\].url: .* non-ASCII characters \(percent-encode them\)",
        ),
        (
            {"arms": [arms()[0], Arm("b", 0.5, url="http://h/x?a=b")]},
            r"arms\[1\].url: 'http://h/x\?a=b' has a query or fragment",
        ),
        (
            {"arms": [arms()[0], Arm("b", 0.5, url="http://h/x#top")]},
            r"arms\[1\].url: 'http://h/x#top' has a query or fragment",
        ),
        (
            {"arms": [arms()[0], Arm("b", 0.5, url="http://h:0/x")]},
            r"arms\[1\].url: 'http://h:0/x' has port 0",
        ),
        (
            {"arms": [Arm("a", -0.5, url="http://h", control=True), Arm("b", 1.5, url="http://h")]},
            r"arms\[0\].share: must be between 0 and 1, got -0.5",
        ),
        (
            {"arms": arms(0.3)[:1] + arms(0.5)[1:]},
            r"the shares must add up to 1, they add up to 0.8",
        ),
        ({"mde": 0}, r"mde: the minimum detectable effect must be a number above 0"),
        ({"power": 0.0}, r"power: must be between 0 and 1"),
        ({"primary": Kpi("c", KpiKind.MEAN, "buy", "visit")}, r"primary.denominator_event: only"),
        ({"primary": Kpi("c", KpiKind.MEAN, "")}, r"primary.event: '' is not valid"),
        ({"guardrails": [Guardrail("error_rate")]}, r"guardrails\[0\]: give max_drop"),
        (
            {"guardrails": [Guardrail("error_rate", 0.1), Guardrail("error_rate", 0.2)]},
            r"guardrails\[1\].metric: 'error_rate' has two guardrails",
        ),
        ({"guardrails": [Guardrail("revenue", max_drop=-1)]}, r"guardrails\[0\].max_drop"),
        ({"traffic": 0.5}, r"traffic: 0.5 is a share of a layer's units: give a layer"),
        ({"layer": "home", "traffic": 0}, r"traffic: the share of its layer's units"),
        ({"layer": "home", "traffic": 0.12345}, r"traffic: 0.12345 is not a whole number"),
        ({"mode": "sideways"}, r"mode: Input should be 'ab', 'shadow', 'canary' or 'bandit'"),
        ({"arms": [{"name": "a", "share": "lots"}]}, r"arms\[0\].share: Input should be"),
    ],
)
def test_design_rules(service: AbTestService, change: dict[str, Any], message: str) -> None:
    ab = service
    name = change.pop("name", "exp")
    with pytest.raises(InvalidArgument, match=message):
        create(ab, name, **change)


def test_lifecycle_moves_only_along_its_arrows(client: Client) -> None:
    ab = client.abtests
    create(ab)
    for action, words in (
        (
            ab.pause_abtest,
            "cannot pause A/B experiment 'churn-v3': it is draft; it has not started",
        ),
        (ab.resume_abtest, "cannot resume .* it is draft"),
        (ab.stop_abtest, "cannot stop .* it is draft; it has not started, there is nothing"),
    ):
        with pytest.raises(Conflict, match=words):
            action("churn-v3")
    started = ab.start_abtest("churn-v3", reason="approved")
    assert started.status is Status.RUNNING and started.started_at is not None
    with pytest.raises(Conflict, match=r"cannot start .* it is running"):
        ab.start_abtest("churn-v3")
    with pytest.raises(Conflict, match=r"cannot resume .* it is running already"):
        ab.resume_abtest("churn-v3")
    assert ab.pause_abtest("churn-v3").status is Status.PAUSED
    with pytest.raises(Conflict, match="it is paused; it was started already: resume it"):
        ab.start_abtest("churn-v3")
    assert ab.resume_abtest("churn-v3").status is Status.RUNNING
    stopped = ab.stop_abtest("churn-v3", reason="enough data")
    assert stopped.status is Status.STOPPED and stopped.stopped_at is not None
    assert stopped.salt == started.salt and stopped.allocation == started.allocation
    for action in (ab.start_abtest, ab.resume_abtest, ab.pause_abtest, ab.stop_abtest):
        with pytest.raises(Conflict, match="it is stopped; a stopped experiment is final"):
            action("churn-v3")
    with pytest.raises(Conflict, match="'churn-v3' is stopped: it cannot change any more"):
        ab.update_abtest("churn-v3", hypothesis="too late", reason="x")
    history = ab.abtest_history("churn-v3")
    assert [(v.version, v.action) for v in history] == [
        (1, "create"),
        (2, "start"),
        (3, "pause"),
        (4, "resume"),
        (5, "stop"),
    ]
    assert history[1].reason == "approved" and history[4].reason == "enough data"
    assert history[1].changes == {"status": "draft -> running"}
    assert history[0].experiment.status is Status.DRAFT
    assert ab.get_abtest("churn-v3").version == 5


def test_a_running_experiment_changes_only_what_it_may_and_each_change_is_recorded(
    client: Client,
) -> None:
    ab = client.abtests
    create(ab)
    draft = ab.update_abtest("churn-v3", mde=0.01, alpha=0.01)  # a draft changes freely
    assert (draft.mde, draft.alpha, draft.version) == (0.01, 0.01, 2)
    ab.start_abtest("churn-v3")
    with pytest.raises(Conflict, match=r"only its shares, guardrails and hypothesis .* not mde"):
        ab.update_abtest("churn-v3", mde=0.05, reason="bigger")
    swapped = [arms()[0], Arm("challenger", 0.5, model_uri="models:/churn/4")]
    with pytest.raises(Conflict, match="not arms"):
        ab.update_abtest("churn-v3", arms=swapped, reason="v4 is better")
    with pytest.raises(InvalidArgument, match=r"reason: say why .* while it is running"):
        ab.update_abtest("churn-v3", hypothesis="v3 keeps many more")
    with pytest.raises(InvalidArgument, match="shares: no arm named 'v9'"):
        ab.update_abtest("churn-v3", shares={"v9": 0.1}, reason="typo")
    with pytest.raises(InvalidArgument, match="shares must add up to 1"):
        ab.update_abtest("churn-v3", shares={"challenger": 0.9}, reason="half done")
    unchanged = ab.update_abtest("churn-v3", hypothesis="v3 keeps more customers", reason="x")
    assert unchanged.version == 3  # nothing changed, nothing recorded
    rails = [Guardrail("error_rate", max_value=0.01), Guardrail("conversion", max_drop=0.05)]
    changed = ab.update_abtest(
        "churn-v3",
        hypothesis="v3 keeps many more",
        guardrails=rails,
        shares={"champion": 0.8, "challenger": 0.2},
        reason="ramp down after an incident",
    )
    assert changed.version == 4 and changed.guardrails == rails
    assert changed.shares == {"champion": 0.8, "challenger": 0.2}
    last = ab.abtest_history("churn-v3")[-1]
    assert (last.action, last.reason) == ("update", "ramp down after an incident")
    assert last.changed_by == changed.owner
    assert last.changes["shares"] == "champion 0.5 -> 0.8, challenger 0.5 -> 0.2"
    assert last.changes["hypothesis"] == "v3 keeps more customers -> v3 keeps many more"
    assert last.changes["guardrails"] == "none -> error_rate <= 0.01; conversion drop <= 0.05"
    assert set(last.changes) == {"shares", "hypothesis", "guardrails"}
    assert last.experiment == changed


def test_a_new_share_moves_only_the_units_it_must(client: Client) -> None:
    ab = client.abtests
    three = [*arms(0.4), Arm("v4", 0.0, model_uri="models:/churn/4")]
    three[1] = replace(three[1], share=0.6)
    before = create(ab, arms=three).allocation.owners()
    ab.start_abtest("churn-v3")
    after = ab.update_abtest(
        "churn-v3", shares={"champion": 0.2, "v4": 0.2}, reason="a second challenger"
    ).allocation.owners()
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    # 20 % of the units go from champion to v4; the challenger's keep their arm
    assert len(moved) == BUCKETS // 5 and set(moved) == {("champion", "v4")}
    back = ab.update_abtest("churn-v3", shares={"champion": 0.4, "v4": 0.0}, reason="undo")
    again = [(o, n) for o, n in zip(after, back.allocation.owners(), strict=True) if o != n]
    assert len(again) == BUCKETS // 5 and set(again) == {("v4", "champion")}
    assert back.salt == ab.abtest_history("churn-v3")[0].experiment.salt


def test_experiments_of_one_layer_never_share_a_unit(client: Client) -> None:
    ab = client.abtests
    for name, traffic in (("a", 0.5), ("b", 0.3), ("c", 0.3)):
        create(ab, name, layer="home", traffic=traffic)
    assert ab.get_abtest("a").layer_ranges == []  # a draft holds none of the layer
    a, b = ab.start_abtest("a"), ab.start_abtest("b")
    assert a.layer_salt == b.layer_salt and a.layer_salt is not None
    assert _size(a.layer_ranges) == 5000 and _size(b.layer_ranges) == 3000
    assert not _buckets(a.layer_ranges) & _buckets(b.layer_ranges)
    with pytest.raises(Conflict, match=r"takes 0.3 of layer 'home', which has 0.2 free"):
        ab.start_abtest("c")
    assert ab.get_abtest("c").status is Status.DRAFT
    ab.pause_abtest("a")  # a paused experiment keeps its units
    with pytest.raises(Conflict, match=r"which has 0.2 free"):
        ab.start_abtest("c")
    ab.stop_abtest("a")
    assert ab.get_abtest("a").layer_ranges == []
    c = ab.start_abtest("c")
    assert _buckets(c.layer_ranges) <= _buckets(a.layer_ranges)  # only freed units
    assert ab.get_abtest("b").layer_ranges == b.layer_ranges  # b's units never moved
    elsewhere = create(ab, "d", layer="search", traffic=0.9)
    assert ab.start_abtest(elsewhere.name).layer_salt != a.layer_salt  # a layer of its own


def _size(ranges: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in ranges)


def _buckets(ranges: list[tuple[int, int]]) -> set[int]:
    return {at for start, end in ranges for at in range(start, end)}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AbTestService]:
    """One store for the cases that are all refused (nothing is stored)."""
    from plinth.store.engine import Store

    store = Store(f"sqlite:///{tmp_path_factory.mktemp('rules') / 'plinth.db'}")
    yield AbTestService(store)
    store.dispose()


# -- permissions on a server with authentication on ------------------------------------------


class Server:
    def __init__(self, home: Path) -> None:
        from fastapi.testclient import TestClient

        from plinth.auth.service import AuthService
        from plinth.config import load_settings
        from plinth.server.app import create_app
        from plinth.store.engine import open_store

        settings = load_settings(home=home, auth=True, private_by_default=True)
        self.http = TestClient(create_app(settings))
        self.auth = AuthService(open_store(settings.resolved_store_uri))

    def user(self, name: str, role: Role) -> dict[str, str]:
        self.auth.create_user(name, role=role)
        return {"authorization": f"Bearer {self.auth.create_token('t', user=name).secret}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(tmp_path / "server")
    with made.http:
        yield made


def _spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "hypothesis": "v3 keeps more customers",
        "primary": {"name": "conversion", "kind": "proportion", "event": "purchase"},
        "arms": [
            {"name": "a", "share": 0.5, "model_uri": "models:/churn/2", "control": True},
            {"name": "b", "share": 0.5, "model_uri": "models:/churn/3"},
        ],
        "mde": 0.02,
    }


def test_a_viewer_cannot_start_and_a_private_experiment_stays_hidden(server: Server) -> None:
    alice = server.user("alice", Role.EDITOR)
    mallory = server.user("mallory", Role.EDITOR)
    victor = server.user("victor", Role.VIEWER)
    assert server.http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
    made = server.http.post("/api/v1/abtests", json=_spec("churn-v3"), headers=alice)
    assert made.status_code == 200, made.text
    assert made.json()["owner"] == "alice"  # the caller, never the body
    refused = server.http.post("/api/v1/abtests", json=_spec("mine"), headers=victor)
    assert refused.status_code == 403 and "editor role" in refused.json()["message"]
    server.auth.grant("abtest", "churn-v3", "user", "victor", "viewer")
    assert server.http.get("/api/v1/abtests/churn-v3", headers=victor).status_code == 200
    start = server.http.post("/api/v1/abtests/churn-v3/start", json={}, headers=victor)
    assert start.status_code == 403, start.text
    assert "needs the editor permission" in start.json()["message"]
    hidden = server.http.get("/api/v1/abtests/churn-v3", headers=mallory)
    assert hidden.status_code == 404
    assert hidden.json()["message"] == "A/B experiment 'churn-v3' does not exist"
    assert (
        server.http.post("/api/v1/abtests/churn-v3/stop", json={}, headers=mallory).status_code
        == 404
    )
    listed = server.http.get("/api/v1/abtests", headers=mallory).json()
    assert listed["items"] == []
    assert [
        e["name"] for e in server.http.get("/api/v1/abtests", headers=victor).json()["items"]
    ] == ["churn-v3"]
    started = server.http.post("/api/v1/abtests/churn-v3/start", json={}, headers=alice)
    assert started.json()["status"] == "running"
    history = server.http.get("/api/v1/abtests/churn-v3/history", headers=victor).json()
    assert [(v["action"], v["changed_by"]) for v in history] == [
        ("create", "alice"),
        ("start", "alice"),
    ]


def test_an_experiment_names_only_models_its_designer_may_read(server: Server) -> None:
    """Else an editor could route to, count the traffic of and promote a private model."""
    alice = server.user("alice", Role.EDITOR)
    mallory = server.user("mallory", Role.EDITOR)
    assert server.http.post("/api/v1/models", json={"name": "churn"}, headers=alice).is_success
    for who in (mallory, alice):  # hidden from mallory; alice's does not exist in any form
        spec = _spec("probe") if who is mallory else _spec("ghost")
        if who is alice:
            spec["arms"][1]["model_uri"] = "models:/nowhere/1"
        refused = server.http.post("/api/v1/abtests", json=spec, headers=who)
        assert refused.status_code == 404, refused.text
        assert refused.json()["message"].startswith("arms[")  # names the field
        assert "does not exist" in refused.json()["message"]  # the same words either way
    made = server.http.post("/api/v1/abtests", json=_spec("mine"), headers=alice)
    assert made.status_code == 200, made.text
    # mallory may read alice's experiment, not her model: the plan counts none of its
    # traffic and does not name it
    server.auth.grant("abtest", "mine", "user", "mallory", "viewer")
    plan = server.http.get(
        "/api/v1/abtests/mine/plan", params={"baseline": 0.1}, headers=mallory
    ).json()
    assert plan["traffic_method"] == "you may not read the arms' models"
    assert plan["days"] is None
    own = server.http.get("/api/v1/abtests/mine/plan", params={"baseline": 0.1}, headers=alice)
    assert "prediction logs of churn" in own.json()["traffic_method"]
    # nor may mallory move an arm onto it
    arms = _spec("x")["arms"]
    server.auth.grant("abtest", "mine", "user", "mallory", "editor")
    changed = server.http.post("/api/v1/abtests/mine", json={"arms": arms}, headers=mallory)
    assert changed.status_code == 404 and "arms[0].model_uri" in changed.json()["message"]
