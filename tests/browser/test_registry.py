"""The registry's pages in a real browser: models, a model, a version; a promotion, a
refusal by a gate with each gate's result, an alias, a rollback; at phone size too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth.config import load_settings
from plinth.registry.gates import Gate
from plinth.registry.types import Stage
from tests.backends import local_client, running_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module: churn v1..v3 (AUC 0.9, 0.6, 0.95, a gate wanting 0.8)
    and fraud, whose v2 replaced v1 in PRODUCTION. Each test acts on its own versions."""
    from sklearn.linear_model import LogisticRegression

    home = tmp_path_factory.mktemp("registry") / "server"
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"age": rng.integers(18, 80, 60).astype("int64"), "spend": rng.normal(100, 30, 60)}
    )
    model = LogisticRegression().fit(frame, (frame.spend > 100).astype(int))
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
            for name, aucs in (("churn", (0.9, 0.6, 0.95)), ("fraud", (0.9, 0.92))):
                for auc in aucs:
                    with client.start_run(experiment=name, name=f"auc-{auc}") as run:
                        run.log_metric("auc", auc)
                        run.log_model(model, input_example=frame[:5], registered_model=name)
            client.registry.update_registered_model("churn", description="who leaves")
            client.registry.set_gates("churn", [Gate("metric", expression="auc >= 0.8")])
            client.set_stage("fraud", 1, Stage.PRODUCTION, reason="first")
            client.set_stage("fraud", 2, Stage.PRODUCTION, reason="better")
        yield url


def heading(browser: Any) -> str:
    text: str = browser.page.get_by_role("heading", level=1).inner_text()
    return text


def test_from_the_models_to_a_model_and_a_version(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/models")
    assert heading(browser) == "Models"
    page.get_by_label("Name contains").fill("chu")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ui/models?q=chu")
    models = page.get_by_role("region", name="Registered models")
    assert models.get_by_role("link", name="fraud").count() == 0
    models.get_by_role("link", name="churn", exact=True).click()
    page.wait_for_url("**/ui/models/churn")
    browser.check_accessible()
    assert heading(browser) == "churn"
    assert page.get_by_text("who leaves").is_visible()
    assert page.get_by_text("auc >= 0.8").first.is_visible()
    browser.shot("registry-model", full_page=True)
    page.get_by_role("region", name="Versions").get_by_role("link", name="v3", exact=True).click()
    page.wait_for_url("**/ui/models/churn/versions/3")
    browser.check_accessible()
    assert heading(browser) == "churn v3"
    inputs = page.get_by_role("region", name="Inputs")
    assert inputs.get_by_role("cell", name="spend").is_visible()
    assert page.get_by_role("region", name="Metrics").get_by_role("cell", name="0.95").is_visible()
    run_link = page.get_by_role("link", name="auc-0.95")
    assert "/ui/runs/" in (run_link.get_attribute("href") or "")


def test_promote_to_staging_with_a_reason(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/models/churn/versions/1")
    page.get_by_label("Move to stage").select_option("STAGING")
    page.get_by_label("Reason for the move").fill("passed review")
    page.get_by_role("button", name="Move", exact=True).click()
    page.wait_for_url("**/ui/models/churn/versions/1?done=*")
    assert page.get_by_role("status").inner_text() == "v1 is now STAGING"
    assert page.get_by_text("STAGING", exact=True).first.is_visible()
    browser.check_accessible()


def test_a_refused_gate_shows_each_gates_result(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/models/churn/versions/2")
    page.get_by_label("Move to stage").select_option("PRODUCTION")
    page.get_by_label("Reason for the move").fill("ship it")
    page.get_by_role("button", name="Move", exact=True).click()
    page.wait_for_load_state("networkidle")
    browser.errors.clear()  # the browser logs the 409 of that answer
    assert "GATE_FAILED" in page.get_by_role("alert").inner_text()
    results = page.get_by_role("region", name="Gate results")
    rows = results.get_by_role("row").all_inner_texts()
    assert any("signature" in r and "passed" in r for r in rows), rows
    assert any("auc >= 0.8" in r and "refused" in r and "auc = 0.6" in r for r in rows), rows
    assert page.get_by_label("Reason for the move").input_value() == "ship it"
    browser.check_accessible()
    browser.shot("registry-gate-refused", full_page=True)


def test_set_an_alias_and_read_it_in_the_history(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/models/churn/versions/3")
    page.get_by_label("Alias", exact=True).fill("champion")
    page.get_by_label("Reason for the alias").fill("best AUC")
    page.get_by_role("button", name="Set alias").click()
    page.wait_for_url("**/ui/models/churn/versions/3?done=*")
    assert page.get_by_role("status").inner_text() == "@champion now points to v3"
    assert page.get_by_role("button", name="Remove alias champion").is_visible()
    page.get_by_role("link", name="churn", exact=True).click()
    page.wait_for_url("**/ui/models/churn")
    history = page.get_by_role("region", name="History")
    rows = history.get_by_role("row").all_inner_texts()
    assert any("@champion: — → v3" in r and "best AUC" in r for r in rows), rows
    assert any("register" in r for r in rows) and any("gates" in r for r in rows)


def test_roll_back_to_the_previous_production_version(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/models/fraud")
    page.get_by_label("Reason for the rollback").fill("v2 drifts")
    page.get_by_role("button", name="Roll back to v1").click()
    page.wait_for_url("**/ui/models/fraud?done=*")
    assert page.get_by_role("status").inner_text() == "rolled back: v1 is PRODUCTION again"
    rows = page.get_by_role("region", name="History").get_by_role("row").all_inner_texts()
    assert "rollback" in rows[1] and "v2 drifts" in rows[1], rows  # the newest entry first
    browser.check_accessible()


def test_the_registry_pages_fit_a_phone(server: str, page_for: Any) -> None:
    browser = page_for(server)
    browser.phone()
    for path in ("/ui/models", "/ui/models/churn", "/ui/models/churn/versions/3"):
        browser.goto(path)
        browser.fits()
