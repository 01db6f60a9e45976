"""The registry's pages: models, a model, a version; stage moves through the gates,
aliases and rollback as forms; bad input as pages; what a user may see and do."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth.auth.types import Kind, Role
from plinth.registry.gates import Gate
from plinth.registry.service import RegistryService
from plinth.registry.types import ModelVersion, Stage
from tests.backends import local_client
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

Fitted = tuple[Any, pd.DataFrame]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"age": rng.integers(18, 80, 80).astype("int64"), "spend": rng.normal(100, 30, 80)}
    )
    return LogisticRegression().fit(frame, (frame.spend > 100).astype(int)), frame


def seed(
    dashboard: Dashboard, fitted: Fitted, name: str = "churn", aucs: tuple[float, ...] = (0.9, 0.6)
) -> list[ModelVersion]:
    """One version per AUC, each from its own run, and a gate that wants 0.8."""
    model, frame = fitted
    settings = dashboard.settings
    made = []
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        for auc in aucs:
            with client.start_run(experiment=name, name=f"auc-{auc}") as run:
                run.log_metric("auc", auc)
                run.log_input("customers", "s3://lake/customers", digest="sha256:ab", rows=80)
                found = run.log_model(model, input_example=frame[:5], registered_model=name)
                assert found is not None
                made.append(found)
        client.registry.set_gates(name, [Gate("metric", expression="auc >= 0.8")])
    return made


def registry(dashboard: Dashboard) -> RegistryService:
    found: RegistryService = dashboard.app.state.dashboard.registry
    return found


def stage_of(dashboard: Dashboard, version: int, name: str = "churn") -> Stage:
    return registry(dashboard).get_model_version(name, version).stage


def text(page: Any) -> str:
    """A page's text without markup, in one line."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)).replace("&gt;", ">")


VERSION = "/ui/models/churn/versions/{}"


# -- pages -------------------------------------------------------------------------------


def test_the_models_page_lists_versions_by_stage_and_aliases(
    any_dashboard: Dashboard, fitted: Fitted
) -> None:
    seed(any_dashboard, fitted)
    service = registry(any_dashboard)
    service.set_stage("churn", 1, Stage.PRODUCTION, "first")
    service.set_alias("churn", "champion", 1)
    service.create_registered_model("fraud", description="catches cheats")
    page = any_dashboard.http.get("/ui/models")
    assert page.status_code == 200
    row = next(r for r in page.text.split("<tr>") if 'href="/ui/models/churn"' in r)
    assert 'href="/ui/models/churn/versions/1" aria-label="churn version 1 (PRODUCTION)"' in row
    assert "churn version 2 (DEVELOPMENT)" in row and "@champion → v1" in row
    assert "catches cheats" in page.text
    found = any_dashboard.http.get("/ui/models?q=fra")
    assert "fraud" in found.text and "/ui/models/churn" not in found.text
    assert "No registered models whose name contains “zzz”" in (
        any_dashboard.http.get("/ui/models?q=zzz").text
    )


def test_the_models_page_pages(dashboard: Dashboard) -> None:
    for i in range(27):
        registry(dashboard).create_registered_model(f"m{i:02d}")
    first = dashboard.http.get("/ui/models")
    assert "/ui/models/m24" in first.text and "/ui/models/m25" not in first.text
    assert 'href="/ui/models?page=2" rel="next"' in first.text
    second = dashboard.http.get("/ui/models?page=2")
    assert "/ui/models/m25" in second.text and "/ui/models/m26" in second.text
    assert 'rel="next"' not in second.text


def test_the_model_page_shows_versions_gates_and_history(
    any_dashboard: Dashboard, fitted: Fitted
) -> None:
    made = seed(any_dashboard, fitted)
    service = registry(any_dashboard)
    service.update_registered_model("churn", description="who leaves", tags={"team": "risk"})
    service.set_stage("churn", 1, Stage.STAGING, "looks good")
    service.set_alias("churn", "candidate", 2, "to try")
    page = any_dashboard.http.get("/ui/models/churn")
    assert page.status_code == 200
    assert "who leaves" in page.text and "team=risk" in page.text
    assert f'href="/ui/runs/{made[0].run_id}">auc-0.9</a>' in page.text
    assert "status-staging" in page.text and "@candidate" in page.text
    shown = text(page)
    assert "auc >= 0.8" in shown  # the gate configured
    assert "DEVELOPMENT → STAGING looks good auc >= 0.8: passed (auc = 0.9)" in shown
    assert "@candidate: — → v2 to try" in shown
    assert shown.index("@candidate") < shown.index("DEVELOPMENT → STAGING")  # newest first
    assert "Roll back" not in shown  # nothing in PRODUCTION


def test_the_version_page_shows_lineage_signature_and_metrics(
    any_dashboard: Dashboard, fitted: Fitted
) -> None:
    made = seed(any_dashboard, fitted)
    page = any_dashboard.http.get(VERSION.format(1))
    assert page.status_code == 200
    shown = text(page)
    assert "<h1>churn v1</h1>" in page.text and "status-development" in page.text
    assert f'href="/ui/runs/{made[0].run_id}">auc-0.9</a>' in page.text
    assert "age int64" in shown and "spend float64" in shown  # the signature's inputs
    assert "auc 0.9" in shown  # the run's metric
    assert "s3://lake/customers" in shown and "sha256:ab" in shown
    assert made[0].manifest_sha256 and made[0].manifest_sha256 in page.text
    for file, digest in made[0].manifest.files.items():
        assert file in page.text and digest in page.text
    assert "sklearn" in shown and "LogisticRegression" in shown


# -- bad input ---------------------------------------------------------------------------


BAD_ADDRESSES = [
    ("/ui/models/nope", 404, "registered model &#39;nope&#39; does not exist"),
    ("/ui/models/nope/versions/1", 404, "does not exist"),
    ("/ui/models/churn/versions/9", 404, "model &#39;churn&#39; has no version 9"),
    ("/ui/models/churn/versions/two", 422, "a model version is a whole number"),
    ("/ui/models/churn/versions/-1", 422, "a model version is a whole number"),
    ("/ui/models?page=0", 422, "page must be 1 or more"),
    ("/ui/models?page=x", 422, "page"),
    ("/ui/models/churn?page=0", 422, "page must be 1 or more"),
]


def test_bad_addresses_are_pages_with_the_error(dashboard: Dashboard) -> None:
    registry(dashboard).create_registered_model("churn")
    for path, status, message in BAD_ADDRESSES:
        page = dashboard.http.get(path)
        assert page.status_code == status, path
        assert "text/html" in page.headers["content-type"] and message in page.text, path


def test_a_bad_form_is_shown_again_with_the_error(dashboard: Dashboard, fitted: Fitted) -> None:
    seed(dashboard, fitted)
    here = VERSION.format(1)
    unknown = dashboard.post(f"{here}/stage", {"stage": "LIVE", "reason": "x"}, csrf_from=here)
    assert unknown.status_code == 422 and "stage &#39;LIVE&#39; is not one of" in unknown.text
    blank = dashboard.post(f"{here}/stage", {"stage": "STAGING", "reason": " "}, csrf_from=here)
    assert blank.status_code == 422 and "give a reason" in blank.text
    assert '<option value="STAGING" selected>' in blank.text  # the form as it was sent
    alias = dashboard.post(f"{here}/aliases", {"alias": "1st", "reason": "x"}, csrf_from=here)
    assert alias.status_code == 422 and "alias &#39;1st&#39; is not valid" in alias.text
    assert 'name="alias" value="1st"' in alias.text
    missing = dashboard.post(f"{here}/aliases", {"alias": "prod-ish"}, csrf_from=here)
    assert missing.status_code == 422 and "give a reason" in missing.text
    gone = dashboard.post(
        "/ui/models/churn/versions/7/stage", {"stage": "STAGING", "reason": "x"}, csrf_from=here
    )
    assert gone.status_code == 404
    assert stage_of(dashboard, 1) is Stage.DEVELOPMENT
    assert registry(dashboard).get_registered_model("churn").aliases == {}


# -- actions -----------------------------------------------------------------------------


def test_a_move_through_the_gates_redirects_with_a_notice(
    dashboard: Dashboard, fitted: Fitted
) -> None:
    seed(dashboard, fitted)
    here = VERSION.format(1)
    moved = dashboard.post(f"{here}/stage", {"stage": "staging", "reason": "ready"}, csrf_from=here)
    assert moved.status_code == 303
    assert moved.headers["location"] == f"{here}?done=stage"
    assert stage_of(dashboard, 1) is Stage.STAGING
    page = dashboard.http.get(moved.headers["location"])
    assert 'role="status"><p>v1 is now STAGING</p>' in page.text
    last = registry(dashboard).model_history("churn")[-1]
    assert (last.action, last.to_value, last.reason) == ("stage", "STAGING", "ready")


def test_a_refused_gate_shows_each_gates_result(dashboard: Dashboard, fitted: Fitted) -> None:
    seed(dashboard, fitted)
    here = VERSION.format(2)
    refused = dashboard.post(
        f"{here}/stage", {"stage": "PRODUCTION", "reason": "ship it"}, csrf_from=here
    )
    assert refused.status_code == 409
    assert "GATE_FAILED" in refused.text
    shown = text(refused)
    assert "Gate results" in shown
    assert "signature passed has a signature" in shown
    assert "auc >= 0.8 refused auc = 0.6" in shown
    assert 'name="reason" value="ship it"' in refused.text
    assert stage_of(dashboard, 2) is Stage.DEVELOPMENT
    assert [h.action for h in registry(dashboard).model_history("churn")][-1] == "gates"


def test_an_archived_version_comes_back_only_when_asked(
    dashboard: Dashboard, fitted: Fitted
) -> None:
    seed(dashboard, fitted, aucs=(0.9,))
    registry(dashboard).set_stage("churn", 1, Stage.ARCHIVED, "old")
    here = VERSION.format(1)
    assert "Bring back from ARCHIVED" in dashboard.http.get(here).text
    form = {"stage": "STAGING", "reason": "again"}
    refused = dashboard.post(f"{here}/stage", form, csrf_from=here)
    assert refused.status_code == 409 and "is ARCHIVED" in refused.text
    back = dashboard.post(f"{here}/stage", {**form, "allow_archived": "1"}, csrf_from=here)
    assert back.status_code == 303 and stage_of(dashboard, 1) is Stage.STAGING


def test_aliases_are_set_and_removed(dashboard: Dashboard, fitted: Fitted) -> None:
    seed(dashboard, fitted)
    here = VERSION.format(2)
    done = dashboard.post(
        f"{here}/aliases", {"alias": "challenger", "reason": "a/b test"}, csrf_from=here
    )
    assert done.status_code == 303 and "challenger" in done.headers["location"]
    assert registry(dashboard).get_registered_model("churn").aliases == {"challenger": 2}
    entry = registry(dashboard).model_history("churn")[-1]
    assert (entry.action, entry.reason, entry.details) == (
        "alias",
        "a/b test",
        {"alias": "challenger"},
    )
    page = dashboard.http.get(here)
    assert 'aria-label="Remove alias challenger"' in page.text
    other = VERSION.format(1)
    wrong = dashboard.post(f"{other}/aliases/challenger/delete", {}, csrf_from=other)
    assert wrong.status_code == 404 and "v1 of model &#39;churn&#39; has no alias" in wrong.text
    removed = dashboard.post(f"{here}/aliases/challenger/delete", {}, csrf_from=here)
    assert removed.status_code == 303
    assert registry(dashboard).get_registered_model("churn").aliases == {}
    assert "@challenger removed (was v2)" in text(dashboard.http.get("/ui/models/churn"))


def test_rollback_restores_the_previous_production_version(
    dashboard: Dashboard, fitted: Fitted
) -> None:
    seed(dashboard, fitted, aucs=(0.9, 0.95))
    service = registry(dashboard)
    model_page = "/ui/models/churn"
    service.set_stage("churn", 1, Stage.PRODUCTION, "first")
    assert "No earlier PRODUCTION version" in dashboard.http.get(model_page).text
    # no form to take the token from: a version page's
    nothing = dashboard.post(
        f"{model_page}/rollback", {"reason": "oops"}, csrf_from=VERSION.format(1)
    )
    assert nothing.status_code == 409 and "no earlier PRODUCTION version" in nothing.text
    service.set_stage("churn", 2, Stage.PRODUCTION, "better")
    assert "Roll back to v1" in dashboard.http.get(model_page).text
    blank = dashboard.post(f"{model_page}/rollback", {"reason": ""}, csrf_from=model_page)
    assert blank.status_code == 422 and "give a reason" in blank.text
    assert stage_of(dashboard, 2) is Stage.PRODUCTION
    done = dashboard.post(f"{model_page}/rollback", {"reason": "v2 drifts"}, csrf_from=model_page)
    assert done.status_code == 303
    assert (stage_of(dashboard, 1), stage_of(dashboard, 2)) == (Stage.PRODUCTION, Stage.ARCHIVED)
    page = dashboard.http.get(done.headers["location"])
    assert "rolled back: v1 is PRODUCTION again" in page.text
    assert "ARCHIVED → PRODUCTION v2 drifts" in text(page)


def test_actions_without_the_csrf_token_are_refused(dashboard: Dashboard, fitted: Fitted) -> None:
    seed(dashboard, fitted)
    dashboard.csrf(VERSION.format(1))  # the browser has its cookie
    posts = [
        (f"{VERSION.format(1)}/stage", {"stage": "STAGING", "reason": "x"}),
        (f"{VERSION.format(1)}/aliases", {"alias": "best", "reason": "x"}),
        ("/ui/models/churn/rollback", {"reason": "x"}),
    ]
    for path, form in posts:
        answer = dashboard.http.post(path, data=form)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert stage_of(dashboard, 1) is Stage.DEVELOPMENT
    assert registry(dashboard).get_registered_model("churn").aliases == {}


# -- who may see and do what -------------------------------------------------------------


def test_a_viewer_sees_no_actions_and_is_refused(secured: Dashboard, fitted: Fitted) -> None:
    seed(secured, fitted)
    registry(secured).set_stage("churn", 1, Stage.PRODUCTION, "first")
    secured.user("carol", Role.VIEWER)
    secured.sign_in("carol")
    here = VERSION.format(1)
    page = secured.http.get(here)
    assert page.status_code == 200 and "<h1>churn v1</h1>" in page.text
    assert 'action="' not in page.text.split("<main", 1)[1].split("</main>")[0]
    assert "Roll back" not in secured.http.get("/ui/models/churn").text
    refused = secured.post(f"{here}/stage", {"stage": "ARCHIVED", "reason": "x"}, csrf_from=here)
    assert refused.status_code == 403 and "PERMISSION_DENIED" in refused.text
    alias = secured.post(f"{here}/aliases", {"alias": "best", "reason": "x"}, csrf_from=here)
    assert alias.status_code == 403
    assert stage_of(secured, 1) is Stage.PRODUCTION
    assert registry(secured).get_registered_model("churn").aliases == {}


def test_each_grant_offers_its_own_actions(secured: Dashboard, fitted: Fitted) -> None:
    seed(secured, fitted)
    secured.user("bob", Role.EDITOR)
    secured.auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
    secured.sign_in("bob")
    here = VERSION.format(1)
    page = secured.http.get(here)
    options = re.findall(r'<option value="(\w+)"', page.text)
    assert options == ["STAGING", "SHADOW", "ARCHIVED"]  # PRODUCTION takes a promoter
    assert "Set alias" not in page.text and "Remove alias" not in page.text
    refused = secured.post(f"{here}/stage", {"stage": "PRODUCTION", "reason": "x"}, csrf_from=here)
    assert refused.status_code == 403 and "promoter" in refused.text
    moved = secured.post(f"{here}/stage", {"stage": "STAGING", "reason": "x"}, csrf_from=here)
    assert moved.status_code == 303
    secured.auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
    page = secured.http.get(here)
    assert "PRODUCTION" in re.findall(r'<option value="(\w+)"', page.text)
    assert "Set alias" in page.text


def test_a_private_model_is_not_shown_to_others(secured: Dashboard, fitted: Fitted) -> None:
    seed(secured, fitted, aucs=(0.9,))
    registry(secured).create_registered_model("public")
    secured.auth.revoke_grant(Kind.MODEL, "churn", "everyone", "*")
    secured.user("carol", Role.VIEWER)
    secured.sign_in("carol")
    listed = secured.http.get("/ui/models")
    assert "/ui/models/public" in listed.text and "/ui/models/churn" not in listed.text
    for path in ("/ui/models/churn", VERSION.format(1)):
        hidden = secured.http.get(path)
        assert hidden.status_code == 404 and "does not exist" in hidden.text
    move = secured.post(
        f"{VERSION.format(1)}/stage", {"stage": "STAGING", "reason": "x"}, csrf_from="/ui/models"
    )
    assert move.status_code == 404


def test_a_link_cannot_put_words_in_the_notice(dashboard: Dashboard, fitted: Fitted) -> None:
    seed(dashboard, fitted)
    here = "/ui/models/churn/versions/1"
    spoof = dashboard.http.get(f"{here}?done=Your+session+expired.+Sign+in+at+evil.example")
    assert spoof.status_code == 200 and "evil.example" not in spoof.text
    # an alias notice names the alias only when the version holds it
    claimed = dashboard.http.get(f"{here}?done=alias&alias=champion")
    assert "now points to" not in claimed.text
