"""Champion/challenger adjudication of one run (``Client.adjudicate``): against every
backend (SQLite, PostgreSQL, a server over HTTP), its idempotence under a key and the
crash windows of an attempt that died part way, gates and permissions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.client import Client
from plinth.registry.gates import Gate
from plinth.registry.types import Stage
from plinth.store.engine import Store
from plinth.store.schema import pipeline_runs, pipelines
from tests.backends import local_client

Data = tuple[pd.DataFrame, pd.Series]


def logged(client: Client, model: Any, data: Data, auc: float, experiment: str = "churn") -> str:
    with client.start_run(experiment=experiment) as run:
        run.log_metric("val_auc", auc)
        run.log_model(model, input_example=data[0][:5])
    return run.id


def pipeline_run(
    store: Store,
    pipeline: str = "retrain",
    retry_of: int | None = None,
    alert_id: int | None = None,
) -> int:
    """A row of the pipeline_runs table (and its pipeline's, the first time), as the
    pipelines' scheduler queues one: what a decision may claim to come from."""
    with store.write() as conn:
        if conn.execute(pipelines.select().where(pipelines.c.name == pipeline)).first() is None:
            conn.execute(
                pipelines.insert().values(
                    name=pipeline,
                    entrypoint="flows:retrain",
                    experiment=pipeline,
                    owner="admin",
                    created_at=0,
                    updated_at=0,
                )
            )
        made = conn.execute(
            pipeline_runs.insert()
            .values(
                pipeline=pipeline,
                status="running",
                trigger="retry" if retry_of is not None else "manual",
                alert_id=alert_id,
                retry_of=retry_of,
                queued_at=0,
                not_before=0,
                created_by="admin",
            )
            .returning(pipeline_runs.c.id)
        )
        return int(made.scalar_one())


def decisions_in_history(client: Client, name: str = "churn") -> list[Any]:
    return [h for h in client.model_history(name) if h.action == "decision"]


def promotions(client: Client, name: str = "churn") -> list[tuple[int | None, str | None]]:
    return [
        (h.version, h.reason)
        for h in client.model_history(name)
        if h.action == "stage" and h.to_value == "PRODUCTION"
    ]


def production(client: Client, name: str = "churn") -> int:
    return client.get_model_version(f"models:/{name}@production").version


class TestOutcomes:
    def test_no_champion_then_better_then_worse_on_the_same_holdout(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        weak = logged(client, weak_model, churn_data, 0.6)
        first = client.adjudicate("churn", weak, "val_auc", holdout=churn_data)
        assert (first.outcome, first.version, first.challenger_version) == ("promoted", 1, 1)
        assert first.champion_version is None and first.champion_score is None
        assert first.challenger_run_id == weak and first.id is not None and first.at is not None

        strong = logged(client, churn_model, churn_data, 0.9)
        second = client.adjudicate("churn", strong, "val_auc", holdout=churn_data)
        assert (second.outcome, second.version, second.champion_version) == ("promoted", 2, 1)
        # the champion is scored on the holdout the challenger is: v1 scores as it did
        assert second.champion_score == first.challenger_score
        assert second.challenger_score is not None and second.champion_score is not None
        assert second.challenger_score > second.champion_score
        holdout = second.evidence["holdout"]
        assert holdout["rows"] == len(churn_data[1]) and holdout["production_version"] == 1
        assert production(client) == 2

        weak_again = logged(client, weak_model, churn_data, 0.95)  # a high logged metric
        third = client.adjudicate("churn", weak_again, "val_auc", holdout=churn_data)
        assert (third.outcome, third.version, third.challenger_version) == ("kept", None, 3)
        assert third.champion_score == second.challenger_score
        assert client.get_model_version("churn", 3).stage is Stage.DEVELOPMENT  # registered
        assert production(client) == 2

        history = decisions_in_history(client)
        assert [(h.version, h.to_value) for h in history] == [
            (1, "promoted"),
            (2, "promoted"),
            (3, "kept"),
        ]
        assert history[-1].details["evidence"]["holdout"]["production_version"] == 2
        stored = client.list_decisions(name="churn").items
        assert [d.outcome for d in stored] == ["kept", "promoted", "promoted"]  # newest first
        assert stored[0] == third

    def test_without_a_holdout_the_logged_metrics_compare(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        client.adjudicate("churn", logged(client, churn_model, churn_data, 0.8), "val_auc")
        worse = client.adjudicate("churn", logged(client, weak_model, churn_data, 0.7), "val_auc")
        assert (worse.outcome, worse.challenger_score, worse.champion_score) == ("kept", 0.7, 0.8)
        assert worse.evidence["scored_on"] == "logged metrics"
        better = client.adjudicate("churn", logged(client, weak_model, churn_data, 0.85), "val_auc")
        assert better.outcome == "promoted" and production(client) == 3
        lower = client.adjudicate(
            "churn", logged(client, weak_model, churn_data, 0.5), "val_auc", direction="min"
        )
        assert lower.outcome == "promoted"  # with direction "min", lower is better

    def test_bad_arguments(self, client: Client, churn_model: Any, churn_data: Data) -> None:
        run_id = logged(client, churn_model, churn_data, 0.8)
        with pytest.raises(plinth.InvalidArgument, match="'max' or 'min'"):
            client.adjudicate("churn", run_id, "val_auc", direction="up")
        with pytest.raises(plinth.InvalidArgument, match="no metric 'rmse'"):
            client.adjudicate("churn", run_id, "rmse")
        with pytest.raises(plinth.NotFound, match="no-such-run"):
            client.adjudicate("churn", "no-such-run", "val_auc")
        assert client.list_decisions().items == []


class TestIdempotence:
    def test_the_same_key_twice_promotes_once_and_decides_once(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        client.adjudicate("churn", logged(client, weak_model, churn_data, 0.6), "val_auc")
        run_id = logged(client, churn_model, churn_data, 0.9)
        key = "job-7:champion"
        first = client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key=key)
        again = client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key=key)
        assert first.outcome == "promoted" and again == first
        assert client.registry.get_decision(key) == first
        assert [v for v, _ in promotions(client)] == [1, 2]
        assert len(decisions_in_history(client)) == 2
        with pytest.raises(plinth.Conflict, match="already decided about model 'churn'"):
            client.adjudicate("fraud", run_id, "val_auc", key=key)
        assert "decision_id" in decisions_in_history(client)[-1].details
        with pytest.raises(plinth.NotFound, match="job-8"):
            client.registry.get_decision("job-8:champion")

    def test_a_recorded_key_is_refused_by_the_service(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        decided = client.adjudicate(
            "churn", logged(client, churn_model, churn_data, 0.9), "val_auc", key="k1"
        )
        with pytest.raises(plinth.Conflict, match="'k1' is already recorded"):
            client.registry.record_decision("churn", decided)
        assert len(decisions_in_history(client)) == 1

    def test_a_version_registered_by_a_dead_attempt_is_reused(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        run_id = logged(client, churn_model, churn_data, 0.9)
        run = client.get_run(run_id)
        # the earlier attempt registered the run's model and died
        client.registry.create_model_version(
            "churn", f"{run.experiment_id}/{run_id}/artifacts/model", run_id
        )
        decided = client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k")
        assert (decided.outcome, decided.challenger_version) == ("promoted", 1)
        assert [v.version for v in client.registry.list_model_versions("churn").items] == [1]

    def test_a_promotion_a_dead_attempt_made_is_recorded_not_repeated(
        self,
        client: Client,
        churn_model: Any,
        weak_model: Any,
        churn_data: Data,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        client.adjudicate("churn", logged(client, weak_model, churn_data, 0.6), "val_auc")
        run_id = logged(client, churn_model, churn_data, 0.9)

        def die(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("killed before recording")

        with monkeypatch.context() as patch:
            patch.setattr(client.registry, "record_decision", die)
            with pytest.raises(RuntimeError, match="killed"):
                client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k")
        assert production(client) == 2 and client.list_decisions().items[0].version == 1

        decided = client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k")
        assert (decided.outcome, decided.version, decided.champion_version) == ("promoted", 2, 1)
        assert decided.challenger_score is not None and decided.champion_score is not None
        assert decided.challenger_score > decided.champion_score
        assert "by an earlier attempt" in decided.reason
        assert "recovered_from_history" in decided.evidence
        assert [v for v, _ in promotions(client)] == [1, 2]  # promoted once
        assert client.adjudicate("churn", run_id, "val_auc", key="k") == decided

        # under another key the run is simply the champion already: kept, nothing moves
        other = client.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k2")
        assert (other.outcome, other.challenger_version) == ("kept", 2)
        assert "already the champion" in other.reason
        assert [v for v, _ in promotions(client)] == [1, 2]


class TestGates:
    def test_a_refusing_gate_keeps_the_champion_and_the_version_registered(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        client.adjudicate("churn", logged(client, weak_model, churn_data, 0.6), "val_auc")
        client.registry.set_gates("churn", [Gate("metric", "val_auc >= 0.95")])
        decided = client.adjudicate(
            "churn", logged(client, churn_model, churn_data, 0.9), "val_auc", holdout=churn_data
        )
        assert (decided.outcome, decided.version, decided.challenger_version) == ("kept", None, 2)
        assert "not promoted" in decided.reason and "val_auc >= 0.95" in decided.reason
        assert "val_auc >= 0.95" in decided.evidence["gate_failed"]
        assert client.get_model_version("churn", 2).stage is Stage.DEVELOPMENT
        assert production(client) == 1

    def test_a_not_worse_gate_reads_the_holdout_evidence(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        client.adjudicate("churn", logged(client, weak_model, churn_data, 0.6), "val_auc")
        client.registry.set_gates("churn", [Gate("not_worse", metric="val_auc")])
        decided = client.adjudicate(
            "churn", logged(client, churn_model, churn_data, 0.9), "val_auc", holdout=churn_data
        )
        assert decided.outcome == "promoted"
        stage_change = [h for h in client.model_history("churn") if h.to_value == "PRODUCTION"][-1]
        gates = {g["gate"]: g["passed"] for g in stage_change.details["gates"]}
        assert gates["not worse than production on val_auc"] is True
        assert stage_change.details["evidence"]["holdout"]["production_version"] == 1


BOB = Principal("bob", Role.EDITOR, via="token")
CAROL = Principal("carol", Role.VIEWER, via="token")


class TestPermissions:
    @pytest.fixture
    def local(self, tmp_path: Path) -> Client:
        return local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))

    @pytest.fixture
    def auth(self, local: Client) -> AuthService:
        service = AuthService(local.tracking.store)
        for principal in (BOB, CAROL):
            service.create_user(principal.name, principal.role)
        return service

    def test_an_editor_without_promote_cannot_promote(
        self,
        local: Client,
        auth: AuthService,
        churn_model: Any,
        weak_model: Any,
        churn_data: Data,
    ) -> None:
        local.adjudicate("churn", logged(local, weak_model, churn_data, 0.6), "val_auc")
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB):
            run_id = logged(local, churn_model, churn_data, 0.9, experiment="bobs")
            with pytest.raises(plinth.PermissionDenied, match="promoter"):
                local.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k")
        assert production(local) == 1
        assert [d.challenger_version for d in local.list_decisions().items] == [1]
        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB):  # the retry reuses the version registered before
            decided = local.adjudicate("churn", run_id, "val_auc", holdout=churn_data, key="k")
        assert (decided.outcome, decided.version, decided.actor) == ("promoted", 2, "bob")

    def test_decisions_are_read_with_their_model(
        self, local: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        local.adjudicate("churn", logged(local, churn_model, churn_data, 0.9), "val_auc", key="a")
        local.adjudicate("secret", logged(local, churn_model, churn_data, 0.9), "val_auc", key="b")
        auth.revoke_grant(Kind.MODEL, "secret", "everyone", "*")
        with acting_as(CAROL):
            assert [d.model_name for d in local.list_decisions().items] == ["churn"]
            assert local.list_decisions(name="secret").items == []
            assert local.registry.get_decision("a").model_name == "churn"
            with pytest.raises(plinth.NotFound, match="no decision is recorded with key 'b'"):
                local.registry.get_decision("b")
            with pytest.raises(plinth.PermissionDenied):
                local.registry.record_decision("churn", local.registry.get_decision("a"))

    def test_pages(self, local: Client, churn_model: Any, churn_data: Data) -> None:
        run_id = logged(local, churn_model, churn_data, 0.9)
        runs = [pipeline_run(local.tracking.store) for _ in range(2)]
        keys = [f"pipeline-run:{runs[n % 2]}:k{n}" for n in range(5)]
        for n, key in enumerate(keys):
            local.adjudicate("churn", run_id, "val_auc", key=key, pipeline_run=runs[n % 2])
        first = local.list_decisions(max_results=2)
        second = local.list_decisions(max_results=2, page_token=first.next_page_token)
        third = local.list_decisions(max_results=2, page_token=second.next_page_token)
        found = [d.key for d in [*first.items, *second.items, *third.items]]
        assert found == keys[::-1] and third.next_page_token is None
        assert [d.key for d in local.list_decisions(pipeline_run=runs[1]).items] == [
            keys[3],
            keys[1],
        ]
