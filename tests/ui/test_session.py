"""Signing in to the dashboard: sessions in HTTP-only cookies, CSRF on every action, the
failure limit, and pages that never take the API's place (or the API the cookie)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.auth.types import Role
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def test_pages_send_a_stranger_to_the_sign_in_page_and_back(secured: Dashboard) -> None:
    answer = secured.http.get("/ui/experiments?q=churn")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/sign-in?next=%2Fui%2Fexperiments%3Fq%3Dchurn"
    secured.user("bob")
    form = {"user": "bob", "password": "s3cret-passw0rd", "csrf": secured.csrf()}
    signed = secured.http.post("/ui/sign-in", data={**form, "next": "/ui/experiments?q=churn"})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/experiments?q=churn"
    cookie = next(h for h in signed.headers.get_list("set-cookie") if "plinth_session=" in h)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    page = secured.http.get("/ui/experiments?q=churn")
    assert page.status_code == 200 and "Signed in as <strong>bob</strong>" in page.text


def test_the_session_cookie_is_no_key_to_the_api(secured: Dashboard) -> None:
    secured.user("bob")
    secured.sign_in("bob")
    session = secured.http.cookies.get("plinth_session")
    assert session
    refused = secured.http.get(
        "/api/v1/experiments", headers={"cookie": f"plinth_session={session}"}
    )
    assert refused.status_code == 401


def test_a_wrong_password_is_a_page_with_the_error_and_no_session(secured: Dashboard) -> None:
    secured.user("bob")
    form = {"user": "bob", "password": "wrong", "csrf": secured.csrf(), "next": "/ui/"}
    answer = secured.http.post("/ui/sign-in", data=form)
    assert answer.status_code == 401
    assert "wrong user name or password" in answer.text
    assert "plinth_session" not in answer.headers.get("set-cookie", "")


def test_sign_out_revokes_the_session(secured: Dashboard) -> None:
    secured.user("bob")
    secured.sign_in("bob")
    session = secured.http.cookies.get("plinth_session")
    out = secured.post("/ui/sign-out", {}, csrf_from="/ui/")
    assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in"
    [token] = secured.auth.list_tokens(user="bob")
    assert token.label == "dashboard session" and token.revoked_at is not None
    secured.http.cookies.clear()
    again = secured.http.get("/ui/", headers={"cookie": f"plinth_session={session}"})
    assert again.status_code == 303 and again.headers["location"].startswith("/ui/sign-in")


def test_a_token_signs_in_and_stays_valid_after_sign_out(secured: Dashboard) -> None:
    secured.user("carol", Role.VIEWER)
    token = secured.auth.create_token("laptop", user="carol").secret
    bad = secured.http.post("/ui/sign-in", data={"token": "plt_nope", "csrf": secured.csrf()})
    assert bad.status_code == 401
    good = secured.http.post("/ui/sign-in", data={"token": token, "csrf": secured.csrf()})
    assert good.status_code == 303
    assert "carol" in secured.http.get("/ui/").text
    secured.post("/ui/sign-out", {}, csrf_from="/ui/")
    [kept] = secured.auth.list_tokens(user="carol")
    assert kept.revoked_at is None  # the user's own token is theirs to revoke


def test_actions_need_the_csrf_token_of_the_browser(secured: Dashboard) -> None:
    secured.user("bob")
    secured.csrf()  # the cookie is set
    missing = secured.http.post("/ui/sign-in", data={"user": "bob", "password": "s3cret-passw0rd"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    forged = secured.http.post(
        "/ui/sign-in", data={"user": "bob", "password": "s3cret-passw0rd", "csrf": "x" * 43}
    )
    assert forged.status_code == 403
    cross = secured.http.post(
        "/ui/sign-in",
        data={"user": "bob", "password": "s3cret-passw0rd", "csrf": secured.csrf()},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross.status_code == 403
    assert secured.auth.list_tokens(user="bob") == []


def test_sign_in_goes_back_only_to_a_page_of_the_dashboard(secured: Dashboard) -> None:
    secured.user("bob")
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/users", "/ui/\\x"):
        form = {
            "user": "bob",
            "password": "s3cret-passw0rd",
            "csrf": secured.csrf(),
            "next": target,
        }
        answer = secured.http.post("/ui/sign-in", data=form)
        assert answer.headers["location"] == "/ui/", target


def test_failed_sign_ins_are_limited(secured: Dashboard) -> None:
    secured.user("bob")
    csrf = secured.csrf()
    for _ in range(20):
        form = {"user": "bob", "password": "wrong", "csrf": csrf}
        assert secured.http.post("/ui/sign-in", data=form).status_code == 401
    right = {"user": "bob", "password": "s3cret-passw0rd", "csrf": csrf}
    assert secured.http.post("/ui/sign-in", data=right).status_code == 429


def test_forged_session_cookies_count_as_failures(secured: Dashboard) -> None:
    for i in range(20):
        answer = secured.http.get("/ui/", headers={"cookie": f"plinth_session=plt_forged{i}"})
        assert answer.status_code == 303
    assert secured.http.get("/ui/", headers={"cookie": "plinth_session=plt_x"}).status_code == 429


def test_cookies_are_secure_when_asked(tmp_path: Path) -> None:
    made = Dashboard(tmp_path / "server", auth=True, cookie_secure=True)
    with made.http:
        made.user("bob")
        page = made.http.get("/ui/sign-in")
        assert "Secure" in page.headers["set-cookie"]
        csrf = made.http.cookies.get("plinth_csrf")
        form = {"user": "bob", "password": "s3cret-passw0rd", "csrf": csrf}
        # the client keeps Secure cookies to itself over plain HTTP: send the one it got
        answer = made.http.post("/ui/sign-in", data=form, headers={"cookie": f"plinth_csrf={csrf}"})
        assert answer.status_code == 303
        for header in answer.headers.get_list("set-cookie"):
            assert "Secure" in header, header


def test_pages_forbid_scripts_from_elsewhere_and_framing(dashboard: Dashboard) -> None:
    page = dashboard.http.get("/ui/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"


def test_without_authentication_the_dashboard_opens_directly(dashboard: Dashboard) -> None:
    assert dashboard.http.get("/").headers["location"] == "/ui/"
    assert dashboard.http.get("/ui/sign-in").headers["location"] == "/ui/"
    assert dashboard.http.get("/ui/").status_code == 200


def test_an_unknown_page_is_a_not_found_page(dashboard: Dashboard) -> None:
    answer = dashboard.http.get("/ui/no/such/page")
    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]
    assert "no page at /ui/no/such/page" in answer.text


def test_the_experiments_page_lists_them_on_each_store(any_dashboard: Dashboard) -> None:
    tracking = any_dashboard.app.state.dashboard.tracking
    tracking.create_experiment("churn", description="who leaves")
    tracking.create_experiment("fraud")
    page = any_dashboard.http.get("/ui/experiments?q=chu")
    assert page.status_code == 200
    assert "who leaves" in page.text and "fraud" not in page.text


def test_the_identity_providers_id_token_signs_in_until_it_expires(tmp_path: Path) -> None:
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))

    def id_token(expires_in: int) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://idp.test", "aud": "plinth", "sub": "id-erin",
            "preferred_username": "erin", "groups": ["ml-team"], "iat": now,
            "exp": now + expires_in,
        }  # fmt: skip
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    made = Dashboard(
        tmp_path / "server",
        auth=True,
        oidc_jwks=str(jwks),
        oidc_issuer="https://idp.test",
        oidc_audience="plinth",
        oidc_editor_groups=["ml-team"],
    )
    with made.http:
        form = {"token": id_token(300), "csrf": made.csrf()}
        assert made.http.post("/ui/sign-in", data=form).status_code == 303
        assert "Signed in as <strong>erin</strong> (editor)" in made.http.get("/ui/").text
        stale = {"token": id_token(-3600), "csrf": made.csrf()}
        refused = made.http.post("/ui/sign-in", data=stale)
        assert refused.status_code == 401 and "expired" in refused.text.lower()


def test_a_dead_session_is_cleared_from_the_browser(secured: Dashboard) -> None:
    secured.user("bob")
    secured.sign_in("bob")
    [token] = secured.auth.list_tokens(user="bob")
    secured.auth.revoke_token(token.id)
    for path in ("/ui/experiments", "/ui/no/such/page"):  # a page, and an error page
        answer = secured.http.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/sign-in")
        cleared = answer.headers["set-cookie"]
        assert "plinth_session=" in cleared and "Path=/ui" in cleared and "Max-Age=0" in cleared
        secured.sign_in("bob")
        [token] = [t for t in secured.auth.list_tokens(user="bob") if t.revoked_at is None]
        secured.auth.revoke_token(token.id)


def test_signing_in_again_ends_the_session_it_replaces(secured: Dashboard) -> None:
    secured.user("bob")
    secured.sign_in("bob")
    secured.sign_in("bob")
    tokens = secured.auth.list_tokens(user="bob")
    assert len(tokens) == 2 and sum(t.revoked_at is None for t in tokens) == 1
