"""``plinth serve --auth``: a token with read access to the model may predict; no token,
a refused token or a token without access may not; health and metrics stay open."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.client import Client, connect
from plinth.errors import Unauthenticated
from plinth.serving.auth import PredictAccess
from tests.backends import running_server
from tests.serving.conftest import EXAMPLE, logistic, service

ROW = {"age": 41, "spend": 2.5}


@pytest.fixture
def tokens(client: Client) -> dict[str, str]:
    client.register_model(logistic(), "churn", input_example=EXAMPLE)
    auth = AuthService(client.tracking.store)
    for user in ("app", "stranger"):
        auth.create_user(user, role=Role.VIEWER, kind="service")
    auth.revoke_grant(Kind.MODEL, "churn", "everyone", "*")
    auth.grant(Kind.MODEL, "churn", "user", "app", "viewer")
    return {u: auth.create_token("serve", user=u).secret for u in ("app", "stranger")}


def test_a_token_with_read_access_may_predict(client: Client, tokens: dict[str, str]) -> None:
    with service(client, "models:/churn/1", poll_seconds=0, auth=True) as http:
        allowed = http.post(
            "/predict", json=ROW, headers={"authorization": f"Bearer {tokens['app']}"}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["predictions"] == [1]
        missing = http.post("/predict", json=ROW)
        assert missing.status_code == 401 and missing.json()["error_code"] == "UNAUTHENTICATED"
        stranger = http.post(
            "/predict", json=ROW, headers={"authorization": f"Bearer {tokens['stranger']}"}
        )
        assert stranger.status_code == 403, stranger.text
        forged = http.post("/predict", json=ROW, headers={"authorization": "Bearer plt_forged"})
        assert forged.status_code == 401
        oip = http.post(
            "/v2/models/churn/infer",
            json={"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [41]}]},
        )
        assert oip.status_code == 401
        for open_path in ("/health", "/ready", "/v2/health/ready", "/metrics"):
            assert http.get(open_path).status_code == 200, open_path


def test_without_auth_the_service_stays_open(client: Client, tokens: dict[str, str]) -> None:
    with service(client, "models:/churn/1", poll_seconds=0) as http:
        assert http.post("/predict", json=ROW).status_code == 200


def test_a_revoked_token_stops_working_once_its_decision_expires(
    client: Client, tokens: dict[str, str]
) -> None:
    now = [0.0]
    access = PredictAccess(client, lambda: "churn", ttl=1.0, clock=lambda: now[0])
    assert access.decide(tokens["app"]) is None
    auth = AuthService(client.tracking.store)
    token_id = next(t.id for t in auth.list_tokens(user="app"))
    auth.revoke_token(token_id)
    assert access.cached(tokens["app"]) == (True, None)  # remembered for ttl seconds
    now[0] = 1.5
    assert access.cached(tokens["app"])[0] is False
    refusal = access.decide(tokens["app"])
    assert refusal is not None and refusal.error_code == "UNAUTHENTICATED"


def test_one_request_refreshes_an_expired_decision_while_the_others_use_it(
    client: Client, tokens: dict[str, str]
) -> None:
    now = [0.0]
    access = PredictAccess(client, lambda: "churn", ttl=1.0, clock=lambda: now[0])
    assert access.decide(tokens["app"]) is None
    now[0] = 1.5
    assert access.cached(tokens["app"]) == (False, None)  # this request refreshes it
    assert access.cached(tokens["app"]) == (True, None)  # the others go on meanwhile
    assert access.decide(tokens["app"]) is None
    assert access.cached(tokens["app"]) == (True, None)
    now[0] = 3.0
    assert access.cached(tokens["app"])[0] is False
    now[0] = 9.0  # that refresh never finished: another request takes it on
    assert access.cached(tokens["app"])[0] is False


def test_a_local_service_records_a_tokens_use_once_a_minute(
    client: Client, tokens: dict[str, str]
) -> None:
    now = [0.0]
    access = PredictAccess(client, lambda: "churn", ttl=1.0, clock=lambda: now[0])
    for step in range(5):
        now[0] = step * 2.0
        assert access.decide(tokens["app"]) is None
    used = AuthService(client.tracking.store).list_security_events(event="token_used")
    assert len(used) == 1


def test_a_service_fed_by_a_server_asks_it_with_the_callers_token(tmp_path: Path) -> None:
    home = tmp_path / "server"
    with running_server(home, auth=True) as url:
        local = connect(
            store_uri=f"sqlite:///{(home / 'plinth.db').resolve()}",
            artifact_uri=str((home / "artifacts").resolve()),
            home=home,
        )
        local.register_model(logistic(), "churn", input_example=EXAMPLE)
        auth = AuthService(local.tracking.store)
        auth.create_user("serve-bot", role=Role.VIEWER, kind="service")
        auth.create_user("app", role=Role.VIEWER, kind="service")
        auth.create_user("stranger", role=Role.VIEWER, kind="service")
        auth.revoke_grant(Kind.MODEL, "churn", "everyone", "*")
        for user in ("serve-bot", "app"):
            auth.grant(Kind.MODEL, "churn", "user", user, "viewer")
        bot, app, stranger = (
            auth.create_token("t", user=u).secret for u in ("serve-bot", "app", "stranger")
        )
        # the service fetches the model with its own service account's token
        remote = connect(url, token=bot)
        with service(remote, "models:/churn/1", poll_seconds=0, auth=True) as http:
            ok = http.post("/predict", json=ROW, headers={"authorization": f"Bearer {app}"})
            assert ok.status_code == 200, ok.text
            no = http.post("/predict", json=ROW, headers={"authorization": f"Bearer {stranger}"})
            assert no.status_code == 403, no.text
        remote.close()
        with connect(url) as anonymous, pytest.raises(Unauthenticated):
            anonymous.get_model_version("models:/churn/1")


def test_made_up_tokens_are_limited_and_not_kept(client: Client, tokens: dict[str, str]) -> None:
    with service(client, "models:/churn/1", poll_seconds=0, auth=True) as http:
        for i in range(20):
            guess = http.post("/predict", json=ROW, headers={"authorization": f"Bearer plt_{i}"})
            assert guess.status_code == 401
        limited = http.post(
            "/predict", json=ROW, headers={"authorization": f"Bearer {tokens['app']}"}
        )
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    checks = PredictAccess(client, lambda: "churn")
    assert checks.decide("plt_made_up") is not None
    assert checks._decisions == {}  # a refused made-up token is not remembered
