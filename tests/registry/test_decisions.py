"""What may be recorded as a champion/challenger decision and how adjudication guards it:
one adjudication of a model at a time (a lease), a champion that cannot be compared is
kept, non-finite scores are refused, and ``record_decision`` refuses forged claims (a
promotion that did not happen, another pipeline's run or keys, another model's key)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.client import Client
from plinth.registry.client import RegistryClient
from plinth.registry.types import Decision, Stage
from plinth.store import lease
from plinth.store.sql import now_ms
from tests.backends import local_client
from tests.registry.test_adjudicate import Data, logged, pipeline_run, production

BOB = Principal("bob", Role.EDITOR, via="token")


@pytest.fixture
def local(tmp_path: Path) -> Client:
    return local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))


@pytest.fixture
def auth(local: Client) -> AuthService:
    service = AuthService(local.tracking.store)
    service.create_user(BOB.name, BOB.role)
    return service


def claim(outcome: str = "kept", **fields: Any) -> Decision:
    decision = Decision(outcome, "churn", "val_auc", "max", None, 0.9, None, None, None, "why")
    return replace(decision, **fields)


def versions(client: Client, name: str = "churn") -> list[int]:
    return [v.version for v in client.registry.list_model_versions(name).items]


class TestOneAtATime:
    def test_a_held_lease_refuses_a_second_adjudication_of_the_model(
        self, local: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        run_id = logged(local, churn_model, churn_data, 0.9)
        store = local.tracking.store
        assert lease.acquire(store, "adjudicate:churn", "another-worker", 60)
        with pytest.raises(plinth.Conflict, match="another adjudication of model 'churn'"):
            local.adjudicate("churn", run_id, "val_auc", key="k")
        assert versions(local) == [1] and production(local) == 1
        # another model is not held up
        assert local.adjudicate("fraud", run_id, "val_auc").outcome == "promoted"
        lease.release(store, "adjudicate:churn", "another-worker")
        decided = local.adjudicate("churn", run_id, "val_auc", key="k")
        assert (decided.outcome, decided.version) == ("promoted", 2)
        assert lease.current(store, "adjudicate:churn") is None  # given up once over

    def test_an_attempt_that_lost_its_lease_neither_promotes_nor_records(
        self,
        local: Client,
        churn_model: Any,
        weak_model: Any,
        churn_data: Data,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        run_id = logged(local, churn_model, churn_data, 0.9)
        store, scores = local.tracking.store, RegistryClient._scores

        def stalled(self: RegistryClient, *args: Any, **kwargs: Any) -> Any:
            # the attempt stalls past its lease and a retried attempt takes the lease over
            later = now_ms() + 10**9
            assert lease.acquire(store, "adjudicate:churn", "the-retry", 60, now=later)
            return scores(self, *args, **kwargs)

        monkeypatch.setattr(RegistryClient, "_scores", stalled)
        with pytest.raises(plinth.Conflict, match="lost its lease"):
            local.adjudicate("churn", run_id, "val_auc", key="k")
        assert production(local) == 1
        assert [d.version for d in local.list_decisions().items] == [1]
        held = lease.current(store, "adjudicate:churn", now=now_ms() + 10**9)
        assert held is not None and held.holder == "the-retry"  # not given up by the loser


class TestScores:
    def test_a_champion_without_the_metric_is_kept_not_beaten(
        self, local: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        with local.start_run(experiment="churn") as run:
            run.log_metric("auc", 0.95)
            run.log_model(churn_model, input_example=churn_data[0][:5])
        assert local.adjudicate("churn", run.id, "auc").outcome == "promoted"
        decided = local.adjudicate("churn", logged(local, weak_model, churn_data, 0.51), "val_auc")
        assert (decided.outcome, decided.champion_version, decided.champion_score) == (
            "kept",
            1,
            None,
        )
        assert "v1, which has no 'val_auc'" in decided.reason and "holdout" in decided.reason
        assert "none" not in decided.reason
        assert production(local) == 1 and decided.challenger_version == 2

    def test_a_non_finite_challenger_score_is_refused(
        self, local: Client, weak_model: Any, churn_data: Data
    ) -> None:
        for bad in (float("nan"), float("inf")):
            run_id = logged(local, weak_model, churn_data, bad)
            with pytest.raises(plinth.InvalidArgument, match=f"run {run_id}'s 'val_auc' is"):
                local.adjudicate("churn", run_id, "val_auc")
        assert local.list_decisions().items == []
        assert local.registry.search_model_versions(name="churn") == []

    def test_a_nan_champion_score_is_refused_naming_the_champion(
        self, local: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        nan_run = logged(local, weak_model, churn_data, float("nan"))
        run = local.get_run(nan_run)
        local.registry.create_model_version(
            "churn", f"{run.experiment_id}/{nan_run}/artifacts/model", nan_run
        )
        local.registry.set_stage("churn", 1, Stage.PRODUCTION)
        with pytest.raises(plinth.InvalidArgument, match=r"champion v1.*nan.*operator"):
            local.adjudicate("churn", logged(local, churn_model, churn_data, 0.99), "val_auc")
        assert production(local) == 1 and local.list_decisions().items == []


class TestRecordDecision:
    def test_an_editor_without_promote_records_nothing(
        self, local: Client, auth: AuthService, weak_model: Any, churn_data: Data
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB), pytest.raises(plinth.PermissionDenied, match="promoter"):
            local.registry.record_decision("churn", claim(challenger_version=1))
        assert len(local.list_decisions().items) == 1

    def test_a_promotion_names_the_production_version(
        self, local: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.5), "val_auc")  # v2
        record = local.registry.record_decision
        with pytest.raises(plinth.InvalidArgument, match="not one of promoted, kept"):
            record("churn", claim("retired"))
        with pytest.raises(plinth.InvalidArgument, match="no version 99"):
            record("churn", claim("promoted", version=99, challenger_version=99))
        with pytest.raises(plinth.InvalidArgument, match=r"PRODUCTION version .* \(v1\), not v2"):
            record("churn", claim("promoted", version=2, challenger_version=2))
        with pytest.raises(plinth.InvalidArgument, match="not no version"):
            record("churn", claim("promoted"))
        with pytest.raises(plinth.InvalidArgument, match=r"champion_version: .* no version 7"):
            record("churn", claim(challenger_version=2, champion_version=7))
        assert len(local.list_decisions().items) == 2
        done = record("churn", claim("promoted", version=1, challenger_version=1, key="again"))
        assert (done.outcome, done.version) == ("promoted", 1)

    def test_pipeline_claims_need_the_run_its_pipeline_and_its_keys(
        self, local: Client, auth: AuthService, weak_model: Any, churn_data: Data
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        store = local.tracking.store
        first = pipeline_run(store, alert_id=3)
        retry = pipeline_run(store, retry_of=first, alert_id=3)
        record = local.registry.record_decision
        with pytest.raises(plinth.InvalidArgument, match="belong to a pipeline run"):
            record("churn", claim(key=f"pipeline-run:{first}:champion"))
        with pytest.raises(plinth.InvalidArgument, match="belong to a pipeline run"):
            record("churn", claim(alert_id=3))
        with pytest.raises(plinth.InvalidArgument, match="no pipeline run 999"):
            record("churn", claim(key="pipeline-run:999:x", pipeline_run=999))
        with pytest.raises(plinth.InvalidArgument, match=f"beginning 'pipeline-run:{first}:'"):
            record("churn", claim(key=f"pipeline-run:{retry}:x", pipeline_run=retry))
        with pytest.raises(plinth.InvalidArgument, match=f"beginning 'pipeline-run:{first}:'"):
            record("churn", claim(key="mine", pipeline_run=first))
        with pytest.raises(plinth.InvalidArgument, match="triggered by alert 3"):
            record("churn", claim(key=f"pipeline-run:{first}:x", pipeline_run=retry, alert_id=4))

        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB), pytest.raises((plinth.NotFound, plinth.PermissionDenied)):
            record("churn", claim(key=f"pipeline-run:{first}:x", pipeline_run=retry))
        auth.grant(Kind.PIPELINE, "retrain", "user", "bob", "editor")
        with acting_as(BOB):
            done = record(
                "churn", claim(key=f"pipeline-run:{first}:x", pipeline_run=retry, alert_id=3)
            )
        assert (done.key, done.pipeline_run, done.alert_id, done.actor) == (
            f"pipeline-run:{first}:x",
            retry,
            3,
            "bob",
        )
        assert [d.key for d in local.list_decisions(pipeline_run=retry).items] == [done.key]

    def test_a_key_of_another_model_is_not_taken_for_its_own(
        self, local: Client, churn_model: Any, churn_data: Data, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        run_id = logged(local, churn_model, churn_data, 0.9)
        local.adjudicate("churn", run_id, "val_auc")
        local.adjudicate("fraud", run_id, "val_auc", key="k")
        with pytest.raises(plinth.Conflict, match="'k' is already recorded"):
            local.registry.record_decision("churn", claim(key="k"))
        # the key was recorded by another model's adjudication after this one looked it up
        monkeypatch.setattr(RegistryClient, "_decision_or_none", lambda self, key: None)
        with pytest.raises(plinth.Conflict, match="already decided about model 'fraud'"):
            local.adjudicate("churn", run_id, "val_auc", key="k")
        assert [d.key for d in local.list_decisions(name="churn").items] == [None]

    def test_an_editor_adjudicates_a_new_model_under_the_lease(
        self, local: Client, auth: AuthService, weak_model: Any, churn_data: Data
    ) -> None:
        with acting_as(BOB):
            run_id = logged(local, weak_model, churn_data, 0.6, experiment="bobs")
            decided = local.adjudicate("bobs-model", run_id, "val_auc")
        assert (decided.outcome, decided.version, decided.actor) == ("promoted", 1, "bob")
